"""Compact JWS (RFC 7515) over canonical bytes, ES256 (RFC 7518 §3.4).

The protected header names the signer's certificate by ``x5t#S256`` (RFC 7515 §4.1.8: base64url
SHA-256 of the DER certificate), so a verifier looks the certificate up instead of trusting one
carried in the message. Verification returns the exact payload bytes that were signed.

The compact serialisation is three base64url segments; the cryptography is the ``cryptography``
package's. We do not route the hot path through PyJWT because its base64url segment check is a
per-character Python loop (about 100 µs per verify of a 1 KiB token, more than the ECDSA verify
itself); the tests cross-check every token we make against PyJWT, so any JOSE library verifies it.

No IO.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from exchange.errors import ExchangeError
from exchange.protocol.canonical import b64url, b64url_decode, canonical_bytes, loads

ALGORITHM = "ES256"
_ECDSA = ec.ECDSA(hashes.SHA256())
_MAX_TOKEN = 64 * 2**20


class JwsError(ExchangeError):
    """A JWS did not parse or verify; callers re-raise with their own X-Road code."""

    code = "Server.InvalidSignatureValue"
    status = 400


# thumbprints by certificate object; the entry holds the certificate, so its id is not reused
_THUMBPRINTS: dict[int, tuple[x509.Certificate, str]] = {}
_THUMBPRINTS_MAX = 4096


def cert_thumbprint(cert: x509.Certificate) -> str:
    """``x5t#S256`` of a certificate: base64url SHA-256 of its DER form.

    Remembered per certificate object: the OCSP freshness check looks up both of a peer's
    certificates by thumbprint at every message, and re-encoding a certificate to hash it (as
    ``hash(cert)`` also does) costs more than the lookup.
    """
    known = _THUMBPRINTS.get(id(cert))
    if known is not None and known[0] is cert:
        return known[1]
    thumbprint = b64url(cert.fingerprint(hashes.SHA256()))
    if len(_THUMBPRINTS) >= _THUMBPRINTS_MAX:
        _THUMBPRINTS.clear()
    _THUMBPRINTS[id(cert)] = (cert, thumbprint)
    return thumbprint


@dataclass(frozen=True, slots=True)
class Signer:
    """A P-256 signing key with its certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    thumbprint: str = field(init=False)
    _header_b64: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        thumb = cert_thumbprint(self.cert)
        object.__setattr__(self, "thumbprint", thumb)
        header = canonical_bytes({"alg": ALGORITHM, "x5t#S256": thumb})
        object.__setattr__(self, "_header_b64", b64url(header))

    def sign(self, payload: bytes) -> str:
        signing_input = f"{self._header_b64}.{b64url(payload)}"
        der = self.key.sign(signing_input.encode("ascii"), _ECDSA)
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def sign_compact(key: ec.EllipticCurvePrivateKey, header: Mapping[str, Any], payload: bytes) -> str:
    """A compact JWS of ``payload`` under the protected ``header`` (its ``alg`` must be ES256)."""
    if header.get("alg") != ALGORITHM:
        raise ValueError(f"the header's alg must be {ALGORITHM}")
    signing_input = f"{b64url(canonical_bytes(dict(header)))}.{b64url(payload)}"
    r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), _ECDSA))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@dataclass(frozen=True, slots=True)
class VerifiedJws:
    header: dict[str, Any]
    payload: bytes

    def document(self) -> Any:
        return loads(self.payload)


def _split(token: str) -> tuple[str, str, str]:
    if not isinstance(token, str) or len(token) > _MAX_TOKEN or not token.isascii():
        raise JwsError("malformed JWS: not a compact token")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwsError("malformed JWS: expected three dot-separated segments")
    return parts[0], parts[1], parts[2]


def _decode(segment: str, what: str) -> bytes:
    try:
        return b64url_decode(segment)
    except (binascii.Error, ValueError):
        raise JwsError(f"malformed JWS: bad base64url in {what}") from None


def unverified_header(token: str) -> dict[str, Any]:
    return _header(_split(token)[0])


# parsed protected headers by their segment: there are few (one per signing certificate), and
# each verification would otherwise decode and parse the same one again. Only headers of the
# size ours are: the cache is filled before any signature is checked, so whatever a peer sends
# must not stay (red team: 200 padded headers of under 1 MiB held 3.8 GB for good)
_HEADERS: dict[str, dict[str, Any]] = {}
_HEADERS_MAX = 256
_CACHED_HEADER_MAX = 256
"""Characters of a header segment that is cached; ``{"alg":"ES256","x5t#S256":...}`` is 96."""


def _header(header_b64: str) -> dict[str, Any]:
    known = _HEADERS.get(header_b64)
    if known is None:
        try:
            known = loads(_decode(header_b64, "header"))
        except ExchangeError:
            raise JwsError("malformed JWS: header is not JSON") from None
        if not isinstance(known, dict):
            raise JwsError("malformed JWS: header is not an object")
        if len(header_b64) > _CACHED_HEADER_MAX:
            return known
        if len(_HEADERS) >= _HEADERS_MAX:
            _HEADERS.clear()
        _HEADERS[header_b64] = known
    return dict(known)


def unverified_payload(token: str) -> bytes:
    """The payload bytes without checking the signature (for display and diagnosis only)."""
    return _decode(_split(token)[1], "payload")


def verify(token: str, key_for: Callable[[str], ec.EllipticCurvePublicKey]) -> VerifiedJws:
    """Verify ``token``; ``key_for(x5t#S256)`` returns the signer's public key or raises."""
    header_b64, payload_b64, sig_b64 = _split(token)
    header = _header(header_b64)
    # (1) only the algorithm we sign with; never "none", never a key-confusion downgrade
    if header.get("alg") != ALGORITHM:
        raise JwsError(f"unsupported JWS algorithm {header.get('alg')!r}")
    # (2) critical header parameters we do not understand make the JWS invalid (RFC 7515 §4.1.11)
    if "crit" in header:
        raise JwsError("JWS uses critical header parameters")
    thumb = header.get("x5t#S256")
    if not isinstance(thumb, str):
        raise JwsError("JWS header has no x5t#S256 certificate thumbprint")
    # (3) the signer's key comes from the caller's trust decision, not from the token
    key = key_for(thumb)
    raw = _decode(sig_b64, "signature")
    if len(raw) != 64:
        raise JwsError("malformed JWS: ES256 signature must be 64 bytes")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        key.verify(der, f"{header_b64}.{payload_b64}".encode("ascii"), _ECDSA)
    except InvalidSignature:
        raise JwsError("signature does not verify") from None
    return VerifiedJws(header=header, payload=_decode(payload_b64, "payload"))


def verify_by_cert(token: str, cert: x509.Certificate, name: str) -> VerifiedJws:
    """Verify ``token`` as signed by the key of ``cert``, a certificate the signed document
    carries (``name`` says which, in the error). Whether ``cert`` is trusted is the caller's
    separate check."""
    expected = cert_thumbprint(cert)

    def key_for(thumbprint: str) -> ec.EllipticCurvePublicKey:
        if thumbprint != expected:
            raise JwsError(f"x5t#S256 {thumbprint[:64]!r} is not the thumbprint of {name}")
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise JwsError(f"the key of {name} is not an EC key")
        return key

    return verify(token, key_for)
