"""Certificate validation against the approved CAs, and a cache of certificates already validated.

:func:`verify_chain` decides whether one end-entity certificate (an authentication or signing
certificate) chains to an approved CA of the global configuration at an explicit ``now``. The
approved CA certificates are of two kinds: self-issued roots, the trust anchors, and
intermediate CAs, which are published so that a path can be built through them but are
trusted only through an approved root. Path building, signatures, validity periods (RFC 5280
§4.1.2.5, inclusive), basic constraints and path length (§4.2.1.9), the CAs' key usage
keyCertSign (§4.2.1.3) and signature algorithms are cryptography's (``x509.verification``,
RFC 5280 §6 with the CA/Browser Forum's profile for CA certificates). For the end-entity
certificate it is given a permissive extension policy that refuses only a CA certificate: which
key usage and extended key usage an authentication or signing certificate has is our profile
check's (``exchange.trust.profiles``), because the library's end-entity policy demands the
serverAuth/clientAuth key purpose that a signing certificate must never have (RFC 9336).

When the library refuses, the reason given is ours, found after the fact (expired, not yet
valid, not issued by an approved CA, an expired CA), with the library's own in the internal
text; the decision is the library's alone.

:class:`CertificateCache` keeps what :func:`verify_chain` accepted, keyed by the JWS ``x5t#S256``
thumbprint, so the per-message path re-checks only the validity periods of the certificate and
its CAs (a few comparisons) instead of a path. It forgets everything when the set of approved
CAs changes.

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
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

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


MAX_CHAIN_DEPTH: Final = 4
"""Intermediate CAs between an end-entity certificate and an approved root, at most."""


def _is_self_issued(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _directly_issued_by(
    cert: x509.Certificate, cas: Iterable[x509.Certificate]
) -> x509.Certificate | None:
    for ca in cas:
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


def issuers(
    cert: x509.Certificate, trusted_cas: Iterable[x509.Certificate]
) -> tuple[x509.Certificate, ...] | None:
    """The approved CAs from ``cert``'s issuer up to an approved root, by names and signatures
    only (no validity, no extensions), or None when ``cert`` does not reach an approved root.

    RFC 5280 §6.1.3 (a)(1) signature and (a)(4) issuer name along the path. For callers that
    judge time otherwise (an auditor's tool at a record's time, the OCSP issuer lookup);
    :func:`verify_chain` is the full validation.
    """
    cas = list(trusted_cas)
    path: list[x509.Certificate] = []
    current = cert
    for _ in range(MAX_CHAIN_DEPTH + 1):
        issuer = _directly_issued_by(current, (c for c in cas if c not in path))
        if issuer is None:
            return None
        path.append(issuer)
        if _is_self_issued(issuer):
            return tuple(path)
        current = issuer
    return None


def find_issuer(
    cert: x509.Certificate, trusted_cas: Iterable[x509.Certificate]
) -> x509.Certificate | None:
    """The approved CA whose name and key issued ``cert`` (a root, or an intermediate that
    itself reaches an approved root, see :func:`issuers`), or None."""
    path = issuers(cert, trusted_cas)
    return None if path is None else path[0]


def _end_entity(
    policy: Policy, cert: x509.Certificate, value: x509.BasicConstraints | None
) -> None:
    # RFC 5280 §4.2.1.9: an end-entity certificate does not assert cA
    if value is not None and value.ca:
        raise ValueError("a CA certificate is not an end-entity certificate")


_EE_POLICY: Final = ExtensionPolicy.permit_all().may_be_present(
    x509.BasicConstraints, Criticality.AGNOSTIC, _end_entity
)
_CA_POLICY: Final = ExtensionPolicy.webpki_defaults_ca()


def roots_and_intermediates(
    trusted_cas: Iterable[x509.Certificate],
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """The approved CA certificates split into the self-issued roots (the trust anchors) and the
    intermediates (trusted only through a root), for verifiers that build paths themselves."""
    cas = list(trusted_cas)
    roots = [ca for ca in cas if _is_self_issued(ca)]
    return roots, [ca for ca in cas if ca not in roots]


@dataclass(frozen=True, slots=True)
class _Verifier:
    """The approved CA set split into trust anchors (roots) and intermediates."""

    store: Store | None
    intermediates: list[x509.Certificate]

    @classmethod
    def of(cls, trusted_cas: Sequence[x509.Certificate]) -> _Verifier:
        roots, others = roots_and_intermediates(trusted_cas)
        return cls(Store(roots) if roots else None, others)

    def chain(self, cert: x509.Certificate, now: dt.datetime) -> list[x509.Certificate]:
        """The validated path ``cert`` .. root; VerificationError (or ValueError) if none."""
        if self.store is None:
            raise VerificationError("no approved root CA")
        verifier = (
            PolicyBuilder()
            .store(self.store)
            .time(now)
            .max_chain_depth(MAX_CHAIN_DEPTH)
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
            .build_client_verifier()
        )
        return list(verifier.verify(cert, self.intermediates).chain)


def _explain(
    cert: x509.Certificate,
    trusted_cas: Sequence[x509.Certificate],
    now: dt.datetime,
    reason: str,
) -> CertificateError:
    """Why the library refused ``cert``, in our words."""
    path = issuers(cert, trusted_cas)
    if path is None:
        return CertificateError(
            "certificate not issued by an approved CA",
            internal=f"certificate {describe(cert)} (issuer {name_text(cert.issuer)}) "
            f"not issued by an approved CA: {reason}",
        )
    try:
        check_validity(cert, now)
        for ca in path:
            check_validity(ca, now, "issuing CA certificate")
    except CertificateError as exc:
        return exc
    return CertificateError(
        "certificate chain does not validate",
        internal=f"certificate {describe(cert)}: {reason}",
    )


def verify_chain(
    cert: x509.Certificate, trusted_cas: Sequence[x509.Certificate], now: dt.datetime
) -> x509.Certificate:
    """Validate ``cert`` against the approved CAs at ``now`` and return the CA that issued it.

    Raises :class:`CertificateError` with the reason.
    """
    return _validated_path(cert, _Verifier.of(trusted_cas), trusted_cas, now)[0]


def _validated_path(
    cert: x509.Certificate,
    verifier: _Verifier,
    trusted_cas: Sequence[x509.Certificate],
    now: dt.datetime,
) -> tuple[x509.Certificate, ...]:
    """The issuing CAs of ``cert`` up to an approved root, validated at ``now``."""
    # (1) a path from cert through approved intermediates to an approved root, every
    #     certificate on it valid at now, CA constraints and signatures checked (cryptography)
    # (2) cert itself is an end-entity certificate
    try:
        chain = verifier.chain(cert, now)
    except (VerificationError, ValueError) as exc:
        raise _explain(cert, trusted_cas, now, str(exc)) from None
    return tuple(chain[1:]) if len(chain) > 1 else (chain[0],)


@dataclass(frozen=True, slots=True)
class ValidatedCertificate:
    """A certificate :func:`verify_chain` accepted, its CAs up to the root and ``x5t#S256``."""

    cert: x509.Certificate
    cas: tuple[x509.Certificate, ...]
    thumbprint: str

    @property
    def ca(self) -> x509.Certificate:
        """The CA that issued the certificate."""
        return self.cas[0]

    def check_validity(self, now: dt.datetime) -> None:
        check_validity(self.cert, now)
        for ca in self.cas:
            check_validity(ca, now, "issuing CA certificate")


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
        self._verifier = _Verifier.of(())
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
        self._verifier = _Verifier.of(self._trusted_cas)
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
        cas = _validated_path(cert, self._verifier, self._trusted_cas, now)
        if self._profile_check is not None:
            self._profile_check(cert)
        entry = ValidatedCertificate(cert=cert, cas=cas, thumbprint=thumbprint)
        self._entries[thumbprint] = entry
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return entry
