"""Signed documents a ministry hands to a citizen: a certificate of residence, a receipt, a refund.

A document is a compact JWS (RFC 7515), ES256, over canonical bytes. Its protected header names
the document's type in ``typ`` (RFC 8725 §3.11: a receipt cannot pass as a certificate, nor any
document as a signed exchange message) and carries the signer's certificate chain in ``x5c``
(RFC 7515 §4.1.6: standard base64 DER, the signer's certificate first) and its thumbprint in
``x5t#S256``. Its payload is a JSON object: the document's fields, ``iss`` (the member that
signed, e.g. ``PS/GOV/MOF``) and ``iat`` (seconds since the epoch, RFC 7519 §4.1.6). So any JOSE
library verifies the signature with the key of ``x5c[0]``; :func:`verify_document` also decides
whether that key is to be trusted, from trust material the verifier brings (never from ``x5c``).

The signing key is the ministry's own document key, certified by an approved CA with the member
signing profile (``urn:x-road:member:...``); it is not the security server's key.

What a verified document does not prove: that the signer's certificate was not revoked when it
signed (there is no OCSP response in it), nor when it signed beyond the signer's own ``iat``.

No IO: the trusted CAs are parameters.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.errors import VerificationFailed
from exchange.identifiers import MemberId
from exchange.protocol.canonical import canonical_bytes, loads
from exchange.protocol.jws import (
    ALGORITHM,
    JwsError,
    cert_thumbprint,
    sign_compact,
    unverified_header,
    verify_by_cert,
)
from exchange.trust.profiles import check_sign_profile, member_id_of_signing_cert
from exchange.trust.validation import CertificateError, verify_chain

RESIDENCE_CERTIFICATE: Final = "exchange-residence-certificate+jwt"
RECEIPT: Final = "exchange-receipt+jwt"
REFUND: Final = "exchange-refund+jwt"
TYPE_NAMES: Final = {
    "residence-certificate": RESIDENCE_CERTIFICATE,
    "receipt": RECEIPT,
    "refund": REFUND,
}
DOCUMENT_TYPES: Final = frozenset(TYPE_NAMES.values())
_MAX_CHAIN: Final = 4
_RESERVED: Final = frozenset({"iss", "iat"})


class DocumentError(VerificationFailed):
    """A signed document did not verify; the message says which check failed."""

    code = "Verification.InvalidDocument"


@dataclass(frozen=True, slots=True)
class DocumentSigner:
    """A member's document-signing key and its certificate chain (the signer's first)."""

    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]
    member: MemberId = field(init=False)
    _x5c: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.chain:
            raise ValueError("a document signer needs its certificate")
        check_sign_profile(self.chain[0])
        if self.chain[0].public_key() != self.key.public_key():
            raise ValueError("the key is not the key of the signing certificate")
        object.__setattr__(self, "member", member_id_of_signing_cert(self.chain[0]))
        der = (c.public_bytes(serialization.Encoding.DER) for c in self.chain)
        object.__setattr__(self, "_x5c", tuple(base64.b64encode(d).decode() for d in der))

    def sign(self, typ: str, claims: Mapping[str, Any], now: dt.datetime) -> str:
        """The compact JWS of ``claims`` as a ``typ`` document signed at ``now``."""
        if typ not in DOCUMENT_TYPES:
            raise ValueError(f"unknown document type {typ!r}")
        if _RESERVED & set(claims):
            raise ValueError("iss and iat are set by the signer")
        header = {
            "alg": ALGORITHM,
            "typ": typ,
            "x5c": list(self._x5c),
            "x5t#S256": cert_thumbprint(self.chain[0]),
        }
        payload = {**claims, "iss": str(self.member), "iat": int(now.timestamp())}
        return sign_compact(self.key, header, canonical_bytes(payload))


@dataclass(frozen=True, slots=True)
class VerifiedDocument:
    """A document whose signature, signer and type verified."""

    typ: str
    issuer: MemberId
    issued_at: dt.datetime
    claims: dict[str, Any]
    signer: x509.Certificate
    ca: x509.Certificate


def _chain(header: Mapping[str, Any]) -> list[x509.Certificate]:
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not 1 <= len(x5c) <= _MAX_CHAIN:
        raise DocumentError(f"the header carries no x5c certificate chain (1 to {_MAX_CHAIN})")
    certs = []
    for index, item in enumerate(x5c):
        try:
            certs.append(x509.load_der_x509_certificate(base64.b64decode(item, validate=True)))
        except (TypeError, ValueError, binascii.Error):
            raise DocumentError(f"x5c[{index}] is not a base64 DER certificate") from None
    return certs


def verify_document(
    token: str,
    trusted_cas: Sequence[x509.Certificate],
    *,
    typ: str | None = None,
    issuer: MemberId | None = None,
) -> VerifiedDocument:
    """Verify a signed document against the approved CAs; raise :class:`DocumentError`.

    ``typ`` and ``issuer``, when given, are what the verifier expects the document to be.
    """
    try:
        header = unverified_header(token)
    except JwsError as exc:
        raise DocumentError(exc.message) from None
    # (1) a document type we know, and the one expected
    found = header.get("typ")
    if found not in DOCUMENT_TYPES:
        raise DocumentError(f"not a signed document: typ is {str(found)[:64]!r}")
    if typ is not None and found != typ:
        raise DocumentError(f"a {found} document, not a {typ}")
    # (2) the signer's certificate, from x5c, has the member signing profile
    signer = _chain(header)[0]
    try:
        check_sign_profile(signer)
        member = member_id_of_signing_cert(signer)
    except CertificateError as exc:
        raise DocumentError(f"the signer's certificate is {exc.message}") from None
    # (3) the signature verifies with that certificate's key (alg ES256, x5t#S256 is its own)
    try:
        payload = loads(verify_by_cert(token, signer, "the x5c signer certificate").payload)
    except JwsError as exc:
        raise DocumentError(exc.message) from None
    except ValueError:
        raise DocumentError("the payload is not JSON") from None
    # (4) the payload names the certificate's member as issuer and says when it was signed
    if not isinstance(payload, dict):
        raise DocumentError("the payload is not a JSON object")
    iat = payload.get("iat")
    if payload.get("iss") != str(member):
        raise DocumentError(f"iss {str(payload.get('iss'))[:64]!r} is not the signer, {member}")
    if not isinstance(iat, int) or isinstance(iat, bool) or not 0 <= iat < 2**40:
        raise DocumentError("iat is not a time in seconds")
    issued_at = dt.datetime.fromtimestamp(iat, dt.UTC)
    # (5) the certificate was issued by an approved CA (the verifier's, never x5c's) and it and
    #     its CA were valid when the document was signed
    try:
        ca = verify_chain(signer, trusted_cas, issued_at)
    except CertificateError as exc:
        raise DocumentError(f"the signer's certificate: {exc.message}") from None
    # (6) signed by the member expected
    if issuer is not None and member != issuer:
        raise DocumentError(f"signed by {member}, not {issuer}")
    claims = {k: v for k, v in payload.items() if k not in _RESERVED}
    return VerifiedDocument(found, member, issued_at, claims, signer, ca)
