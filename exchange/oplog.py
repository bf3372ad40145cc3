"""The operator's log of every server: text or JSON lines, a configurable level, and the message id
of the exchange a line is about.

Each server's configuration has a ``[logging]`` table (:class:`LoggingSection`): ``format = "text"``
(the default) or ``"json"`` (one JSON object a line: ``time``, ``level``, ``logger``, ``message``,
``message_id`` when the line is about an exchange, and the exception's traceback if any),
``level = "info"`` (or debug, warning, error, critical). :func:`configure_logging` installs it on
the root logger, writing to standard error (the journal, under systemd). Lines are shown as text
on a terminal, never obeyed (:mod:`exchange.terminal`): peers' words reach them.

The exchange pipelines call :func:`exchange_started` with the message id when an exchange starts
(and :func:`exchange_finished` with the token it returned when it ends); every log line written
meanwhile in that task, by any module, carries the id, since asyncio copies context variables into
each task. This module neither reads files nor knows any server.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from dataclasses import dataclass
from typing import Any, Final, Literal, TextIO

from pydantic import field_validator
from pythonjsonlogger.orjson import OrjsonFormatter

from exchange.configfile import Schema
from exchange.terminal import PrintableFormatter, json_text

LogFormat = Literal["text", "json"]
LEVELS: Final = ("debug", "info", "warning", "error", "critical")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s:%(message_id_text)s %(message)s"

_message_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "exchange_message_id", default=None
)


@dataclass(frozen=True, slots=True)
class LogSettings:
    """How a server writes its log (``[logging]``)."""

    format: LogFormat = "text"
    level: str = "info"


class LoggingSection(Schema):
    """``[logging]`` of any server's configuration file."""

    format: LogFormat = "text"
    level: str = "info"

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in LEVELS:
            raise ValueError(f"must be one of {', '.join(LEVELS)}, not {value!r}")
        return value.lower()

    def settings(self) -> LogSettings:
        return LogSettings(format=self.format, level=self.level)


# --- the exchange a line is about ------------------------------------------------------------


def exchange_started(message_id: str | None) -> contextvars.Token[str | None]:
    """From now on, in this task, every log line carries ``message_id``."""
    return _message_id.set(message_id)


def exchange_finished(token: contextvars.Token[str | None]) -> None:
    """Lines are no longer about the exchange :func:`exchange_started` returned ``token`` for."""
    _message_id.reset(token)


def current_message_id() -> str | None:
    return _message_id.get()


class _MessageIdFilter(logging.Filter):
    """Puts the current exchange's message id on every record (``None`` outside exchanges)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message_id = getattr(record, "message_id", None) or _message_id.get()
        record.message_id = message_id
        record.message_id_text = f" [{message_id}]" if message_id else ""
        return True


# --- installing it ---------------------------------------------------------------------------


class JsonLineFormatter(OrjsonFormatter):
    """One JSON object a line; keys ``level``, ``logger``, ``message``, ``message_id`` (in an
    exchange), ``exc_info`` (the traceback, if any) and ``time`` (ISO 8601, UTC)."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s %(message_id)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data.pop("message_id_text", None)
        if log_data.get("message_id") is None:
            log_data.pop("message_id", None)

    def format(self, record: logging.LogRecord) -> str:
        # a peer's words reach log lines: read on a terminal, they are shown, not obeyed
        return json_text(super().format(record))


def formatter_for(settings: LogSettings) -> logging.Formatter:
    if settings.format == "json":
        formatter: logging.Formatter = JsonLineFormatter()
    else:
        formatter = PrintableFormatter(TEXT_FORMAT)
    return formatter


def configure_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Make the root logger write ``settings``' format at its level to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter_for(settings))
    handler.addFilter(_MessageIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
