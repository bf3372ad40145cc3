"""Certificate validation against the approved CAs, and a cache of certificates already validated.

:func:`verify_chain` decides whether one end-entity certificate (an authentication or signing
certificate) was issued directly by one of the approved CAs of the global configuration and is
within its validity period, and that of its CA, at an explicit ``now``. Exchange's PKI has one
level below the approved CAs, so there is no path building through intermediates.

:class:`CertificateCache` keeps what :func:`verify_chain` accepted, keyed by the JWS ``x5t#S256``
thumbprint, so the per-message path re-checks only the validity periods (a few comparisons)
instead of a signature. It forgets everything when the set of approved CAs changes.

This module does not check revocation (OCSP is checked by its own module), nor fingerprint
registration in the global configuration, nor which profile a certificate has (see
``exchange.trust.profiles``; the cache can be given a profile check to run once per certificate).

Sans-IO: no files, no sockets; ``now`` is always a parameter (timezone-aware UTC).
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from exchange.errors import Fault, ProviderServerError
from exchange.protocol.jws import cert_thumbprint


class CertificateError(ProviderServerError):
    """A certificate is not acceptable: foreign CA, expired, not yet valid, wrong profile."""

    code = "Server.ServerProxy.InvalidCertificate"
    status = 403
    fault = Fault.PEER


class CertificateProfileError(CertificateError):
    """A certificate is used for what its profile does not allow (e.g. a signing cert for TLS)."""


def name_text(name: x509.Name) -> str:
    """``name`` in RFC 4514 form, with serialNumber spelled out rather than as 2.5.4.5."""
    return name.rfc4514_string({NameOID.SERIAL_NUMBER: "serialNumber"})


def describe(cert: x509.Certificate) -> str:
    """A short name for messages: the subject in RFC 4514 form."""
    return name_text(cert.subject) or f"serial {cert.serial_number:x}"


def check_validity(cert: x509.Certificate, now: dt.datetime, what: str = "certificate") -> None:
    """Raise :class:`CertificateError` unless ``now`` is within the validity period.

    RFC 5280 §4.1.2.5: the period includes both ``notBefore`` and ``notAfter``.
    """
    not_after = cert.not_valid_after_utc
    if now > not_after:
        raise CertificateError(
            f"{what} expired at {not_after.isoformat()}",
            internal=f"{what} {describe(cert)} expired at {not_after.isoformat()}",
        )
    not_before = cert.not_valid_before_utc
    if now < not_before:
        raise CertificateError(
            f"{what} not yet valid (valid from {not_before.isoformat()})",
            internal=f"{what} {describe(cert)} not yet valid (valid from {not_before.isoformat()})",
        )


def find_issuer(
    cert: x509.Certificate, trusted_cas: Iterable[x509.Certificate]
) -> x509.Certificate | None:
    """The approved CA whose name and key issued ``cert``, or None.

    RFC 5280 §6.1.3 (a)(1) signature and (a)(4) issuer name, for a path of length one.
    """
    for ca in trusted_cas:
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


def verify_chain(
    cert: x509.Certificate, trusted_cas: Sequence[x509.Certificate], now: dt.datetime
) -> x509.Certificate:
    """Validate ``cert`` against the approved CAs at ``now`` and return the CA that issued it.

    Raises :class:`CertificateError` with the exact reason.
    """
    # (1) issued directly by an approved CA: issuer name matches and the CA's key signed it
    ca = find_issuer(cert, trusted_cas)
    if ca is None:
        raise CertificateError(
            "certificate not issued by an approved CA",
            internal=f"certificate {describe(cert)} (issuer {name_text(cert.issuer)}) "
            "not issued by an approved CA",
        )
    # (2) the certificate is within its validity period at now
    check_validity(cert, now)
    # (3) so is the CA that issued it
    check_validity(ca, now, "issuing CA certificate")
    return ca


@dataclass(frozen=True, slots=True)
class ValidatedCertificate:
    """A certificate :func:`verify_chain` accepted, with its issuing CA and ``x5t#S256``."""

    cert: x509.Certificate
    ca: x509.Certificate
    thumbprint: str

    def check_validity(self, now: dt.datetime) -> None:
        check_validity(self.cert, now)
        check_validity(self.ca, now, "issuing CA certificate")


ProfileCheck = Callable[[x509.Certificate], None]


class CertificateCache:
    """Certificates validated against one set of approved CAs, keyed by ``x5t#S256``.

    An entry is kept until its certificate (or CA) expires, it is pushed out by ``max_entries``
    newer ones (least recently used first), or the approved CA set changes. Each lookup
    re-checks the validity periods against the ``now`` it is given. ``profile_check``, when
    given (e.g. ``check_sign_profile``), runs once before a certificate is cached.

    Not thread-safe: use it from one event loop.
    """

    def __init__(
        self,
        trusted_cas: Sequence[x509.Certificate],
        *,
        profile_check: ProfileCheck | None = None,
        max_entries: int = 10_000,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._profile_check = profile_check
        self._max_entries = max_entries
        self._entries: OrderedDict[str, ValidatedCertificate] = OrderedDict()
        self._trusted_cas: tuple[x509.Certificate, ...] = ()
        self._ca_fingerprints: frozenset[str] = frozenset()
        self.set_trusted_cas(trusted_cas)

    @property
    def trusted_cas(self) -> tuple[x509.Certificate, ...]:
        return self._trusted_cas

    def __len__(self) -> int:
        return len(self._entries)

    def set_trusted_cas(self, trusted_cas: Sequence[x509.Certificate]) -> None:
        """Install a new approved CA set; the cache is emptied only if the set differs."""
        fingerprints = frozenset(cert_thumbprint(ca) for ca in trusted_cas)
        if fingerprints != self._ca_fingerprints:
            self._entries.clear()
        self._trusted_cas = tuple(trusted_cas)
        self._ca_fingerprints = fingerprints

    def get(self, thumbprint: str, now: dt.datetime) -> ValidatedCertificate | None:
        """The cached entry for ``thumbprint`` if it is still valid at ``now``; None if unknown.

        A known certificate that is no longer valid is forgotten and its reason raised as
        :class:`CertificateError`.
        """
        entry = self._entries.get(thumbprint)
        if entry is None:
            return None
        try:
            entry.check_validity(now)
        except CertificateError:
            del self._entries[thumbprint]
            raise
        self._entries.move_to_end(thumbprint)
        return entry

    def validate(self, cert: x509.Certificate, now: dt.datetime) -> ValidatedCertificate:
        """Validate ``cert`` (from the cache when it is there) and return its entry."""
        thumbprint = cert_thumbprint(cert)
        cached = self.get(thumbprint, now)
        if cached is not None:
            return cached
        ca = verify_chain(cert, self._trusted_cas, now)
        if self._profile_check is not None:
            self._profile_check(cert)
        entry = ValidatedCertificate(cert=cert, ca=ca, thumbprint=thumbprint)
        self._entries[thumbprint] = entry
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return entry
