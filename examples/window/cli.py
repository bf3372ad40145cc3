"""``python -m examples.window``: serve the app, make clerk accounts.

Exit status: 0 success; 2 usage or configuration error (a bad username, a weak password, a
state directory that cannot be used). Errors are one line without a traceback unless
``--debug`` is given.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click
from aiohttp import web

from examples.window import accounts
from examples.window.config import WindowConfig
from examples.window.db import connect

P = ParamSpec("P")
R = TypeVar("R")
EXIT_USAGE = 2


def _errors(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        try:
            return func(*args, **kwargs)
        except (accounts.AccountError, ValueError, OSError, sqlite3.Error) as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
def main(debug: bool) -> None:
    """The unified window: the post-office clerk's web app.

    \b
    Example:
      python -m examples.window add-clerk --state-dir window --username amal
      python -m examples.window serve --consumer-url http://127.0.0.1:8080 --state-dir window
    """
    os.umask(0o077)


@main.command()
@click.option(
    "--consumer-url", required=True, help="The post office security server's consumer port."
)
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where clerks, sessions and the history are kept (SQLite).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="0 picks a free port (printed on the READY line).")  # fmt: skip
@click.option("--secure-cookies", is_flag=True,
              help="Mark cookies Secure and send HSTS (when served behind HTTPS).")  # fmt: skip
@_errors
def serve(consumer_url: str, state_dir: Path, host: str, port: int, secure_cookies: bool) -> None:
    """Serve the window until SIGINT or SIGTERM; prints READY {"url": ...} once listening.

    \b
    Example:
      python -m examples.window serve --consumer-url http://127.0.0.1:8080 --state-dir window
    """
    from examples.window.web import create_app

    config = WindowConfig(consumer_url=consumer_url, state_dir=state_dir,
                          secure_cookies=secure_cookies)  # fmt: skip
    asyncio.run(_serve(create_app(config), host, port))


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        url = f"http://[{bound_host}]:{bound_port}" if ":" in bound_host else (
            f"http://{bound_host}:{bound_port}")  # fmt: skip
        print("READY " + json.dumps({"url": url}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


@main.command("add-clerk")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--username", required=True, help="Also the X-Road-UserId of the clerk's exchanges.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@_errors
def add_clerk(state_dir: Path, username: str, password_stdin: bool) -> None:
    """Make a clerk account (the password is asked for, or read from standard input).

    \b
    Example:
      python -m examples.window add-clerk --state-dir window --username amal
      printf '%s' "$PASSWORD" | python -m examples.window add-clerk --state-dir window \\
          --username amal --password-stdin
    """
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    accounts.check_username(username)
    hashed = accounts.hash_password(password)
    conn = connect(state_dir / "window.sqlite")
    try:
        accounts.add_clerk(conn, username, hashed, time.time())
    finally:
        conn.close()
    click.echo(f"clerk {username} added")
