"""What the CLI prints is shown to the operator, never obeyed by the terminal.

Logged fields, peer certificates' names, a peer's error messages and evidence files are written
by others. Printed raw, ``ESC [ 2 J`` clears the operator's screen, an OSC 8 sequence makes a
link, C1 controls act on some terminals, U+2028 starts a line that looks like another record and
a right-to-left override reorders what follows. Every character that a terminal would act on or
that changes how the text around it shows is printed as a visible escape instead:

- C0 controls, DEL and C1 controls as ``\\xNN`` (``\\n`` and ``\\t`` only in :func:`one_value`,
  where a line break would pass for the next field);
- the line and paragraph separators, bidirectional controls and the zero-width no-break space
  (:data:`exchange.protocol.syntax.LAYOUT_CONTROLS`) and lone surrogates as ``\\uNNNN``.

:func:`printable` is applied to every string the CLI's consoles render and to every line
:func:`echo` writes; :func:`one_value` to a single field; :func:`json_text` keeps JSON valid and
equal in value (the characters become ``\\uNNNN`` escapes); :class:`PrintableFormatter` does it for
the text log lines of every server (:mod:`exchange.oplog`).
"""

from __future__ import annotations

import logging
import re
from typing import Final

from exchange.protocol.syntax import LAYOUT_CONTROLS

_INVISIBLE: Final = f"\\x7f-\\x9f\\ud800-\\udfff{LAYOUT_CONTROLS}"
_IN_LINES: Final = re.compile(f"[\\x00-\\x08\\x0b-\\x1f{_INVISIBLE}]")
_IN_A_VALUE: Final = re.compile(f"[\\x00-\\x1f{_INVISIBLE}]")
_IN_JSON: Final = re.compile(f"[{_INVISIBLE}]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: str) -> str:
    """``text`` with every control escaped but line breaks and tabs (our own layout)."""
    return _IN_LINES.sub(_visible, text)


def one_value(text: str) -> str:
    """One field on one line: every control escaped, line breaks and tabs too."""
    return _IN_A_VALUE.sub(_visible, text)


def json_text(text: str) -> str:
    """JSON text (as orjson writes it: C0 controls already escaped) with DEL, C1 controls, layout
    controls and lone surrogates as ``\\uNNNN`` escapes: the same JSON value, shown as text."""
    return _IN_JSON.sub(_json_escape, text)


class PrintableFormatter(logging.Formatter):
    """A log formatter whose lines are :func:`printable` (a traceback keeps its lines)."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))
