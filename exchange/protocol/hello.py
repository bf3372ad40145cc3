"""The HELLO frame of EXM/1: what a security server presents to its peer once per connection,
and again when it changes (new OCSP responses, a new key).

Its meta is ``{"v": 1, "server": ID, "certs": [base64url DER], "ocsp": {x5t#S256: base64url
DER}}``: the signing certificates of the members it signs for, and fresh OCSP responses for its
own certificates (the authentication certificate's too: Python's ssl cannot staple in the TLS
handshake). ``server`` is informative only; the peer is identified by its TLS certificate.

This module only parses and builds; whether a certificate or response is acceptable is
:mod:`exchange.trustcore.peers`' decision. No IO.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from exchange.protocol.canonical import b64url, b64url_decode
from exchange.protocol.frames import FrameError

MAX_CERTS: Final = 32
"""Signing certificates one HELLO may present."""
MAX_STAPLES: Final = 2 * MAX_CERTS + 1


@dataclass(frozen=True, slots=True)
class Hello:
    """A parsed HELLO: the certificates presented and the stapled OCSP responses by
    ``x5t#S256`` (entries that are not base64url are left out: their certificate then has no
    staple)."""

    certs: tuple[x509.Certificate, ...]
    staples: Mapping[str, bytes]

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Hello:
        """Parse a HELLO's meta; :class:`FrameError` if it is malformed."""
        raw = meta.get("certs", [])
        if not isinstance(raw, list) or len(raw) > MAX_CERTS:
            raise FrameError(f"HELLO certs must be a list of at most {MAX_CERTS} certificates")
        if not all(isinstance(c, str) for c in raw):
            raise FrameError("HELLO certs must be base64url DER certificates")
        try:
            certs = tuple(x509.load_der_x509_certificate(b64url_decode(c)) for c in raw)
        except ValueError:
            raise FrameError("HELLO carries a malformed certificate") from None
        ocsp = meta.get("ocsp", {})
        if not isinstance(ocsp, dict) or len(ocsp) > MAX_STAPLES:
            raise FrameError("HELLO ocsp must be an object of base64url OCSP responses")
        staples: dict[str, bytes] = {}
        for thumb, value in ocsp.items():
            if isinstance(value, str):
                try:
                    staples[thumb] = b64url_decode(value)
                except ValueError:
                    continue
        return cls(certs, staples)


def hello_meta(
    server: str, certs: Sequence[x509.Certificate], staples: Mapping[str, bytes]
) -> dict[str, Any]:
    """The meta of the HELLO a security server sends."""
    return {
        "v": 1,
        "server": server,
        "certs": [b64url(c.public_bytes(Encoding.DER)) for c in certs],
        "ocsp": {thumb: b64url(der) for thumb, der in staples.items()},
    }
