"""Canonical bytes for everything we sign or hash (docs/design.md §5).

Canonical form: JSON with sorted keys, no insignificant whitespace, UTF-8, non-ASCII kept as is.
Signed documents hold only strings, integers, booleans, null, lists and objects; floats are
refused because their text form is not canonical across implementations.

No IO.
"""

from __future__ import annotations

import binascii
import hashlib
from typing import Any

import orjson

from exchange.errors import BadRequest

# passthrough: dataclasses and datetimes are refused (TypeError), never serialised implicitly
_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def canonical_bytes(document: Any, *, typed: bool = False) -> bytes:
    """Sorted-key compact UTF-8 JSON of ``document``; floats are refused.

    ``typed=True`` skips the walk that looks for floats, for documents built by this package
    from typed dataclass fields that cannot hold a float (the signed request and response, frame
    meta): on the hot path the walk costs more than the serialisation.
    """
    if not typed:
        _refuse_floats(document)
    return orjson.dumps(document, option=_OPTS)


def _refuse_floats(value: Any) -> None:
    if isinstance(value, float):
        raise TypeError("floats are not allowed in canonical documents")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError("object keys must be strings")
            _refuse_floats(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _refuse_floats(v)


def loads(data: bytes | str) -> Any:
    """Parse JSON; malformed input is a ``Client.BadRequest``."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
# The helpers below call binascii as the base64 module does, without its layers of wrappers:
# they run several times per message.


def b64(data: bytes) -> str:
    """Standard base64 (RFC 4648 §4), padded."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return (
        binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode("ascii")
    )


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url (RFC 7515 §2); any other character is a ``ValueError``.

    binascii's strict mode refuses every character outside the standard alphabet, so only the
    three the translation would hide or the padding would excuse (``+``, ``/``, ``=``) are
    looked for first: a regular expression over the text cost more than the decoding."""
    if "+" in text or "/" in text or "=" in text:
        raise ValueError("not unpadded base64url")
    try:
        raw = (text + "=" * (-len(text) % 4)).encode("ascii").translate(_FROM_URLSAFE)
        return binascii.a2b_base64(raw, strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ValueError("not unpadded base64url") from None


def sha256_b64url(data: bytes) -> str:
    return b64url(hashlib.sha256(data).digest())


def sha512_b64(data: bytes) -> str:
    """Standard base64 SHA-512, the form of ``X-Road-Request-Hash``."""
    return b64(hashlib.sha512(data).digest())
