"""Shared CLI plumbing: the console, exit codes, and turning errors into messages.

Exit status (docs/design.md §11): 0 success; 1 a check failed (verification failed, request denied);
2 usage or configuration error.

Every command but the long-running servers is :func:`reports`: ``--json`` prints one JSON
document on stdout, an error as ``{"error": {"code", "message", "exit_code"}}``; commands are
:class:`ExchangeCommand` s in :class:`ExchangeGroup` s, so that click's own usage errors come out
so too (docs/operator.md, "JSON output").

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
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from exchange.errors import (
    AccessDenied,
    ConfigurationError,
    ExchangeError,
    InvalidIdentifier,
    VerificationFailed,
)
from exchange.terminal import json_text, printable

DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
"""Seconds per unit of the durations options take (``45s``, ``90m``, ``12h``, ``30d``)."""

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
    """2 for a configuration error and for an identifier the operator typed wrong (wherever the
    command parses it), 1 otherwise."""
    if isinstance(exc, VerificationFailed | AccessDenied):
        return EXIT_CHECK_FAILED
    if isinstance(exc, ConfigurationError | InvalidIdentifier):
        return EXIT_USAGE
    return EXIT_CHECK_FAILED


# --- errors, for people and as JSON -------------------------------------------------------------

JSON_HELP = 'Print one JSON document on stdout; an error as {"error": {"code", "message", ...}}.'


@dataclass(frozen=True, slots=True)
class Failure:
    """An error as a command reports it: a stable code, the message, the exit status."""

    code: str
    message: str
    exit_code: int

    def to_dict(self) -> dict[str, Any]:
        """The one error document of every command under ``--json``."""
        return {"error": {"code": self.code, "message": self.message, "exit_code": self.exit_code}}


def failure_of(exc: BaseException) -> Failure | None:
    """What a command reports for ``exc``; None for what is not a reportable error (a bug).

    Codes: an :class:`~exchange.errors.ExchangeError`'s X-Road code
    (``Server.ConfigurationError``, ``Verification.Failed``, ...); ``Usage`` and
    ``Usage.<click error>`` (``Usage.MissingParameter``, ``Usage.BadParameter``,
    ``Usage.NoSuchOption``, ...) for the command line; ``System.<error>``
    (``System.FileNotFoundError``, ``System.PermissionError``, ``System.OperationalError`` of
    SQLite, ...) for the operating system and databases.
    """
    if isinstance(exc, ExchangeError):
        return Failure(exc.code, exc.message, exit_code_for(exc))
    if isinstance(exc, click.ClickException):
        name = type(exc).__name__
        code = "Usage" if name == "UsageError" else f"Usage.{name}"
        return Failure(code, exc.format_message(), exc.exit_code)
    if isinstance(exc, OSError | sqlite3.Error):
        return Failure(f"System.{type(exc).__name__}", str(exc), EXIT_USAGE)
    return None


def _debugging() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("debug"))


def _handled(func: Callable[P, R], as_json: Callable[[dict[str, Any]], bool]) -> Callable[P, R]:
    """``func`` with its errors reported (as JSON when ``as_json(kwargs)``): one line on stderr for
    people, one document on stdout for programs; tracebacks only with --debug."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:  # the reader stopped early (`exchange ... | head`): not an error
            _quiet_stdout()
            sys.exit(EXIT_BROKEN_PIPE)
        except (ExchangeError, OSError, sqlite3.Error, click.ClickException) as exc:
            failure = failure_of(exc)
            if failure is None or _debugging():
                raise
            if as_json(kwargs):
                print_json(failure.to_dict())
            elif isinstance(exc, click.ClickException):
                raise  # click shows it, with the usage line
            else:
                err_console.print(f"[red]error:[/red] {markup_text(failure.message)}", markup=True)
            sys.exit(failure.exit_code)

    return wrapper


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Print ``ExchangeError``s, ``OSError``s and SQLite errors as one clear line; tracebacks
    only with --debug. For the long-running servers, which take no ``--json``; every other
    command is :func:`reports`."""
    return _handled(func, lambda kwargs: False)


REPORTS = "__exchange_reports__"
"""The mark :func:`reports` leaves on a command's callback (:func:`is_reporting`)."""


def reports(func: Callable[P, R]) -> Callable[P, R]:
    """Give a command ``--json`` (its ``as_json`` parameter) and report its errors.

    Under ``--json`` the command prints one JSON document on stdout (it calls :func:`print_json`
    once), and an error, a usage error raised by the command included, is printed there as
    ``{"error": {"code", "message", "exit_code"}}`` (:class:`Failure`) with the same exit status
    (1 a check failed, 2 usage or configuration). Usage errors click finds while parsing the
    command line are reported so by :class:`ExchangeCommand`. Without ``--json``, as
    :func:`handle_errors`.
    """
    handled = _handled(func, lambda kwargs: bool(kwargs.get("as_json")))
    setattr(handled, REPORTS, True)
    return click.option("--json", "as_json", is_flag=True, help=JSON_HELP)(handled)


def is_reporting(command: click.Command) -> bool:
    """Whether ``command`` is :func:`reports`: ``--json``, and its errors reported as JSON."""
    return bool(getattr(command.callback, REPORTS, False)) and has_json_option(command)


def has_json_option(command: click.Command) -> bool:
    return any(param.name == "as_json" and "--json" in param.opts for param in command.params)


def _asks_for_json(args: list[str]) -> bool:
    """``--json`` among the arguments (before a ``--`` that ends the options)."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def _report_usage_error(exc: click.ClickException) -> NoReturn:
    failure = failure_of(exc)
    assert failure is not None
    print_json(failure.to_dict())
    raise click.exceptions.Exit(failure.exit_code)


class ExchangeCommand(click.Command):
    """A command whose command-line errors (a missing option, a bad value, an unknown option) are
    a JSON error document when ``--json`` is among its arguments and it takes ``--json``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        wants_json = has_json_option(self) and _asks_for_json(args)
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as exc:
            if not wants_json or ctx.resilient_parsing:
                raise
            _report_usage_error(exc)


class ExchangeGroup(click.Group):
    """A group of :class:`ExchangeCommand` s (and of groups like itself): an unknown command
    under ``--json`` is a JSON error document too."""

    command_class = ExchangeCommand
    group_class = type

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            if not _asks_for_json(args) or ctx.resilient_parsing:
                raise
            _report_usage_error(exc)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def print_json(data: Any) -> None:
    """``data`` as indented JSON with sorted keys (paths as text), shown as :func:`json_text`."""
    import orjson

    text = orjson.dumps(
        data, default=_jsonable, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    ).decode()
    click.echo(json_text(text))


def _jsonable(value: object) -> str:
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


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
