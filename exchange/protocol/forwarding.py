"""What may pass between HTTP and EXM/1: the headers that travel end to end, and the statuses.

An exchange crosses four HTTP connections' worth of hops: information system → consumer server,
(signed request over EXM/1) → provider server → backend, and back. Framing and hop-by-hop
headers belong to one connection (RFC 9110 §7.6.1; RFC 9112 §6.1-6.3): if one were carried to
the next connection, a ``Content-Length: 0`` signed by a rogue provider would end the consumer's
answer early and turn the rest of the body into the answer to the information system's next
pipelined request. So, in every direction:

- :func:`end_to_end` keeps only the headers that travel (PR-REST §4.3): not ``Connection`` nor
  any header it names, not ``Content-Length``, ``Transfer-Encoding``, ``Upgrade``,
  ``Keep-Alive``, ``TE``, ``Trailer``, ``Proxy-*`` or ``HTTP2-Settings``, not the headers that
  describe the origin (``Host``, ``User-Agent``, ``Server``, ``Date``, ``Expect``), and not the
  ``X-Road-*`` headers (they travel as signed fields);
- :func:`check_signed_headers` refuses a signed request or response holding any header
  :func:`end_to_end` would not keep: an honest peer never signs one;
- :func:`check_status` refuses a status outside 200-599: a 1xx is no final answer and 101
  would switch the caller's connection to another protocol; anything else is not HTTP.

A rule raises :class:`~exchange.protocol.fields.FieldError`; callers turn it into their side's
error.

No IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from exchange.protocol.fields import FieldError
from exchange.protocol.syntax import match_field_value, match_token

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "http2-settings",
    }
)
"""RFC 9110 §7.6.1 and RFC 9112 §6: headers that belong to one connection (``Proxy-*`` too)."""

ORIGIN_HEADERS: Final = frozenset({"host", "user-agent", "server", "expect", "date"})
"""PR-REST §4.3: headers that describe the origin connection or software, not passed on."""

XROAD_PREFIX: Final = "x-road-"
PROXY_PREFIX: Final = "proxy-"
MIN_STATUS: Final = 200
MAX_STATUS: Final = 599
_NEVER_TRAVEL: Final = HOP_BY_HOP | ORIGIN_HEADERS
_NEVER_TRAVEL_PREFIXES: Final = (PROXY_PREFIX, XROAD_PREFIX)


def is_end_to_end(name: str) -> bool:
    """Whether a header of this (lower-case) name may travel past the connection it came on,
    leaving aside the names a ``Connection`` header lists."""
    return name not in _NEVER_TRAVEL and not name.startswith(_NEVER_TRAVEL_PREFIXES)


def _connection_options(values: Sequence[str]) -> frozenset[str]:
    """The header names the ``Connection`` header values list (RFC 9110 §7.6.1)."""
    return frozenset(option.strip().lower() for value in values for option in value.split(","))


def end_to_end(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers that travel on, names lower-cased, order and repeats kept.

    Raises :class:`FieldError` for a header that is not HTTP (a name that is not a token, a
    value with control characters) among them.
    """
    # one pass (it runs on every request and response): the headers a ``Connection`` header
    # names, and so whether a header that is not HTTP travels, are known only at the end
    kept: list[tuple[str, str]] = []
    connection: list[str] = []
    bad: list[tuple[str, str]] = []
    for name, value in headers:
        lname = name.lower()
        if lname in _NEVER_TRAVEL or lname.startswith(_NEVER_TRAVEL_PREFIXES):
            if lname == "connection":
                connection.append(value)
            continue
        if match_token(name) is None or match_field_value(value) is None:
            bad.append((lname, name))
        kept.append((lname, value))
    if connection:
        named = _connection_options(connection)
        kept = [(lname, value) for lname, value in kept if lname not in named]
        bad = [(lname, name) for lname, name in bad if lname not in named]
    if bad:
        raise FieldError(f"header {bad[0][1][:60]!r} has a value that is not text")
    return kept


def check_signed_headers(headers: Iterable[tuple[str, str]]) -> None:
    """A signed document's headers are HTTP and each one travels end to end."""
    for name, value in headers:
        if match_token(name) is None or match_field_value(value) is None:
            raise FieldError("a signed header is not valid HTTP")
        lname = name.lower()
        if lname in _NEVER_TRAVEL or lname.startswith(_NEVER_TRAVEL_PREFIXES):
            raise FieldError(f"the signed headers hold {name[:60]!r}, which never travels")


def check_status(status: int) -> int:
    """``status`` unchanged if it is a final HTTP status (200-599)."""
    if not MIN_STATUS <= status <= MAX_STATUS:
        raise FieldError(f"status {status} is not a final HTTP status (200-599)")
    return status
