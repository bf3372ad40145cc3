"""Signing certificates presented by peer security servers, validated once and cached.

A peer presents its members' signing certificates in its HELLO frame. Each is admitted only if
(1) it chains to an approved CA of the current global configuration, (2) it is valid now,
(3) it has the signing profile, and (4) it names the member it signs for. Verification of each
message then costs a dictionary lookup and an expiry comparison, not an X.509 validation.

No IO.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.errors import ExchangeError
from exchange.identifiers import MemberId
from exchange.protocol.jws import cert_thumbprint
from exchange.trust.profiles import check_sign_profile, member_id_of_signing_cert
from exchange.trust.validation import verify_chain


class SignerCertificateError(ExchangeError):
    code = "Server.ServerProxy.InvalidCertificate"
    status = 403


@dataclass(frozen=True, slots=True)
class SignerCert:
    thumbprint: str
    member: MemberId
    cert: x509.Certificate
    public_key: ec.EllipticCurvePublicKey
    not_after: float
    not_before: float


class SignerCertRegistry:
    """Thumbprint → validated signing certificate, for the current set of approved CAs."""

    __slots__ = ("_by_thumb", "_cas", "on_admit")

    def __init__(
        self,
        cas: Sequence[x509.Certificate],
        on_admit: Callable[[x509.Certificate], None] | None = None,
    ) -> None:
        self._cas = list(cas)
        self._by_thumb: dict[str, SignerCert] = {}
        self.on_admit = on_admit

    def set_cas(self, cas: Sequence[x509.Certificate]) -> None:
        """A new set of approved CAs invalidates every earlier admission."""
        if [cert_thumbprint(c) for c in cas] != [cert_thumbprint(c) for c in self._cas]:
            self._cas = list(cas)
            self._by_thumb.clear()

    def admit(self, cert: x509.Certificate, now: float) -> SignerCert:
        thumb = cert_thumbprint(cert)
        known = self._by_thumb.get(thumb)
        if known is not None:
            self.check_time(known, now)
            return known
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        try:
            # (1)+(2) chains to an approved CA and is valid now
            verify_chain(cert, self._cas, when)
            # (3) signing profile, never an authentication certificate
            check_sign_profile(cert)
            # (4) the member it signs for
            member = member_id_of_signing_cert(cert)
        except ExchangeError as exc:
            raise SignerCertificateError(f"signing certificate refused: {exc.message}") from None
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise SignerCertificateError("signing certificate refused: not an EC P-256 key")
        info = SignerCert(
            thumbprint=thumb,
            member=member,
            cert=cert,
            public_key=key,
            not_after=cert.not_valid_after_utc.timestamp(),
            not_before=cert.not_valid_before_utc.timestamp(),
        )
        self._by_thumb[thumb] = info
        if self.on_admit is not None:
            self.on_admit(cert)
        return info

    @staticmethod
    def check_time(info: SignerCert, now: float) -> None:
        if now > info.not_after:
            raise SignerCertificateError("signing certificate has expired")
        if now < info.not_before:
            raise SignerCertificateError("signing certificate is not yet valid")
