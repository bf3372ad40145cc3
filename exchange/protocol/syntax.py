"""HTTP/1.1 syntax checks for what we put into requests we write (RFC 9110 §5.1, §5.5, §9.1;
RFC 3986 §3.3-3.4).

Whatever reaches the backend request line or header block has passed these checks, whether it
came from an information system or from a signed request of a peer security server: a token
method, token header names, header values without CR, LF or NUL, a path and query of visible
ASCII without ``#`` (non-ASCII must be percent-encoded). Nothing can split a request or make the
policy judge one path while the backend serves another.

No IO.
"""

from __future__ import annotations

import re
from typing import Final

LAYOUT_CONTROLS: Final = (
    "\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
)
"""Characters that change how the text around them is shown without being seen: the line and
paragraph separators (U+2028, U+2029), the bidirectional marks, embeddings, overrides and isolates
(Unicode UAX #9 §2: ALM, LRM, RLM, LRE-RLO, LRI-PDI) and the zero-width no-break space."""

_VALUE_RANGES: Final = ((0x20, 0x7E), (0xA0, 0xD7FF), (0xE000, 0xFFFF))
"""The characters of a header value: visible ASCII and space, and the rest of the basic plane
but C1 controls and surrogates."""


def _char_class(ranges: tuple[tuple[int, int], ...], without: str = "") -> str:
    """A regular-expression character class of ``ranges`` (code points, inclusive) less the
    characters of ``without``."""
    kept = []
    for low, high in ranges:
        start = low
        for point in sorted(ord(c) for c in without if low <= ord(c) <= high):
            if start < point:
                kept.append((start, point - 1))
            start = point + 1
        if start <= high:
            kept.append((start, high))
    return "[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in kept) + "]"


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
_VALUE = re.compile(_char_class(_VALUE_RANGES) + "*")
_TEXT = re.compile(_char_class(_VALUE_RANGES, without=LAYOUT_CONTROLS) + "*")
_PATH = re.compile(r"(?:/[\x21\x22\x24-\x3e\x40-\x7e]*)*")
_QUERY = re.compile(r"[\x21\x22\x24-\x7e]*")

match_token: Final = _TOKEN.fullmatch
""":func:`is_token` as the match itself (``None``: no token), for loops over every header."""
match_field_value: Final = _VALUE.fullmatch
""":func:`is_field_value` as the match itself (``None``: not a header value)."""


def is_token(text: str) -> bool:
    """A method or header name."""
    return _TOKEN.fullmatch(text) is not None


def is_field_value(text: str) -> bool:
    """A header value: no control characters (so no CR, LF, NUL), no lone surrogates."""
    return _VALUE.fullmatch(text) is not None


def is_text(text: str) -> bool:
    """A header value (:func:`is_field_value`) without :data:`LAYOUT_CONTROLS`: text that shows
    as what it is, in a log, a terminal or a web page."""
    return _TEXT.fullmatch(text) is not None


def is_path(text: str) -> bool:
    """Empty or ``/``-separated segments of visible ASCII without ``?`` and ``#``."""
    return _PATH.fullmatch(text) is not None


def is_query(text: str) -> bool:
    """Visible ASCII without ``#``."""
    return _QUERY.fullmatch(text) is not None
