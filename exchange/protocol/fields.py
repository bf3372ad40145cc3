"""The X-Road fields a request carries, one rule each, for both ends of an exchange.

The consumer applies these rules to what an information system sends (``X-Road-*`` headers in
REST, the envelope's header in SOAP) and the provider applies the very same rules to what a
peer security server signed (:meth:`exchange.protocol.messages.SignedRequest.from_payload`), so
nothing the consumer would refuse is logged, cached for replay or forwarded by the provider.

- :func:`message_id`: 1-255 characters of ``A-Z a-z 0-9 . _ : -`` (a UUID fits; no empty id).
- :func:`text` (user id, purpose, issue): 1-1024 characters of printable text
  (:func:`exchange.protocol.syntax.is_text`: no C0 or C1 control, no DEL, no line or paragraph
  separator, no bidirectional control), without surrounding white space.
- :func:`represented_party`: text whose ``/``-separated parts are not empty.
- :func:`method`: an upper-case HTTP method token (RFC 9110 §9.1: methods are case-sensitive
  and the standard ones are upper-case; a backend must never judge ``get`` as ``GET``).

A rule raises :class:`FieldError`; each caller turns it into its side's error
(``Client.InvalidHeader`` on the consumer, ``Server.ServerProxy.InvalidMessage`` on the provider).

No IO.
"""

from __future__ import annotations

import re
from typing import Final

from exchange.protocol.syntax import is_text

MAX_MESSAGE_ID: Final = 255
MAX_TEXT: Final = 1024
MAX_METHOD: Final = 32

_MESSAGE_ID: Final = re.compile(rf"[A-Za-z0-9._:\-]{{1,{MAX_MESSAGE_ID}}}")
_METHOD: Final = re.compile(rf"[A-Z][A-Z_\-]{{0,{MAX_METHOD - 1}}}")


class FieldError(ValueError):
    """A request field breaks its rule (the message names the field and the rule)."""


def message_id(value: str) -> str:
    """The message id, unchanged, if it is 1-255 characters of ``A-Z a-z 0-9 . _ : -``."""
    if _MESSAGE_ID.fullmatch(value) is None:
        raise FieldError(
            f"invalid message id: 1-{MAX_MESSAGE_ID} characters of A-Z a-z 0-9 . _ : -"
        )
    return value


def text(value: str, name: str) -> str:
    """``value`` unchanged if it is 1-1024 characters of printable text without surrounding
    white space (see the module docstring)."""
    if (
        not value
        or len(value) > MAX_TEXT
        or value[0].isspace()
        or value[-1].isspace()
        or not is_text(value)
    ):
        raise FieldError(
            f"invalid {name}: 1-{MAX_TEXT} printable characters (no control, line separator "
            "or bidirectional control characters, no surrounding spaces)"
        )
    return value


def optional_text(value: str | None, name: str) -> str | None:
    """None, or :func:`text`."""
    return None if value is None else text(value, name)


def represented_party(value: str) -> str:
    """``[class/]code`` (or longer): :func:`text` whose ``/``-separated parts are not empty."""
    text(value, "represented party")
    if any(not part.strip() for part in value.split("/")):
        raise FieldError("invalid represented party: a part between '/' is empty")
    return value


def optional_represented_party(value: str | None) -> str | None:
    return None if value is None else represented_party(value)


def method(value: str) -> str:
    """An upper-case method token of at most 32 characters, unchanged."""
    if _METHOD.fullmatch(value) is None:
        raise FieldError(
            f"invalid method: an upper-case token of at most {MAX_METHOD} characters "
            "(A-Z, '-', '_')"
        )
    return value
