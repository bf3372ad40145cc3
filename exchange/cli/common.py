"""Shared CLI plumbing: the console, exit codes, and turning errors into messages.

Exit status (docs/design.md §11): 0 success; 1 a check failed (verification failed, request denied);
2 usage or configuration error.

Everything printed goes through :data:`console`, :data:`err_console`, :func:`echo` or
:func:`print_json`, which escape what a terminal would act on (:mod:`exchange.terminal`):
logged and peer-supplied text is shown, never obeyed. Rich markup is off unless a call asks for
it, and then every value put into the markup goes through :func:`markup_text`.
"""

from __future__ import annotations

import functools
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from exchange.errors import (
    AccessDenied,
    ConfigurationError,
    ExchangeError,
    VerificationFailed,
)
from exchange.terminal import json_text, printable

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # as a shell reports a command killed by SIGPIPE


class _Console(Console):
    """Rich's console; every string it renders is :func:`~exchange.terminal.printable` first
    (rich itself drops only BEL, BS, VT, FF and CR)."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)

    def on_broken_pipe(self) -> None:
        """The reader stopped early (`exchange ... | head`): stop quietly (rich exits 1)."""
        self.quiet = True
        _quiet_stdout()
        raise SystemExit(EXIT_BROKEN_PIPE)


console = _Console(highlight=False, soft_wrap=True, markup=False)
err_console = _Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

P = ParamSpec("P")
R = TypeVar("R")


def exit_code_for(exc: ExchangeError) -> int:
    if isinstance(exc, VerificationFailed | AccessDenied):
        return EXIT_CHECK_FAILED
    if isinstance(exc, ConfigurationError):
        return EXIT_USAGE
    return EXIT_CHECK_FAILED


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Print ``ExchangeError``s and ``OSError``s as one clear line; tracebacks only with --debug."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        ctx = click.get_current_context(silent=True)
        debug = bool(ctx and ctx.find_root().params.get("debug"))
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:  # the reader stopped early (`exchange ... | head`): not an error
            _quiet_stdout()
            sys.exit(EXIT_BROKEN_PIPE)
        except ExchangeError as exc:
            if debug:
                raise
            err_console.print(f"[red]error:[/red] {markup_text(exc.message)}", markup=True)
            sys.exit(exit_code_for(exc))
        except (OSError, sqlite3.Error) as exc:
            if debug:
                raise
            err_console.print(f"[red]error:[/red] {markup_text(exc)}", markup=True)
            sys.exit(EXIT_USAGE)

    return wrapper


def handle_errors_json(func: Callable[P, R]) -> Callable[P, R]:
    """:func:`handle_errors` for a command with ``--json`` (its ``as_json`` parameter): with it,
    an error is also printed on stdout as ``{"ok": false, "error": ..., "exit_code": ...}``."""
    plain = handle_errors(func)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not kwargs.get("as_json"):
            return plain(*args, **kwargs)
        ctx = click.get_current_context(silent=True)
        if ctx and ctx.find_root().params.get("debug"):
            return func(*args, **kwargs)
        try:
            return func(*args, **kwargs)
        except ExchangeError as exc:
            _json_error(exc.message, exit_code_for(exc))
        except (OSError, sqlite3.Error) as exc:
            _json_error(str(exc), EXIT_USAGE)

    return wrapper


def _json_error(message: str, code: int) -> NoReturn:
    print_json({"ok": False, "error": message, "exit_code": code})
    sys.exit(code)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def print_json(data: Any) -> None:
    import orjson

    text = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    click.echo(json_text(text))


def markup_text(value: object) -> str:
    """``value`` as text to put into rich markup: its brackets are shown, not obeyed."""
    return escape(str(value))


def echo(text: str) -> None:
    """``click.echo`` of :func:`~exchange.terminal.printable` text."""
    click.echo(printable(text))


def cancel_on_sigterm() -> None:
    """SIGTERM cancels the running task (the server's), after telling systemd it is stopping."""
    import asyncio

    from exchange import sdnotify

    task = asyncio.current_task()
    assert task is not None

    def stop() -> None:
        sdnotify.stopping()
        task.cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
