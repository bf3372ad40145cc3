"""Which certificates a message log holds may sign for it, as an auditor's tools and the store
judge them: :class:`CertLookup`.

A log keeps the certificates of every signature it holds (the requests', the responses', its own
tree heads') in its ``certs`` table, by ``x5t#S256``, read here only (:func:`certificates_of_log`,
and :func:`signer_certificates` for those some tokens name); an evidence bundle or a proof file
carries them by the same name. None of them is trusted: a certificate counts only once one of the
CAs the caller trusts issued it, and only while it was valid.

Used by :mod:`exchange.messagelog.verify` (``exchange log verify``), the evidence bundles of
:mod:`exchange.audit.bundle` and the proof files of :mod:`exchange.audit.proofcheck` (over the
certificates they carry), :mod:`exchange.messagelog.store` (the latest tree head, before the
store signs over it), and to take certificates out of a log: proof files
(:mod:`exchange.messagelog.proofs`), evidence bundles, ``exchange log heads``
(:mod:`exchange.messagelog.heads`). Reads ``certs`` only.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509

from exchange.protocol.jws import JwsError, cert_thumbprint, unverified_header
from exchange.trust.keys import cert_from_pem, cert_pem
from exchange.trust.validation import CertificateError, describe, issuers, verify_chain
from exchange.trustcore.messages import CertifiedKey, certified_signer


class CertLookup:
    """Certificates by thumbprint from a log, a bundle or a proof file, trusted only when a
    trusted CA issued them (through approved intermediates), and only at times when they and
    their CAs were all valid.

    ``pem_of`` finds the PEM stored under a thumbprint in the certificates at hand (None when
    they hold none); ``holder`` names them in errors.
    """

    def __init__(
        self,
        pem_of: Callable[[str], object],
        trusted_cas: Sequence[x509.Certificate],
        *,
        holder: str = "the log",
    ) -> None:
        self._pem_of = pem_of
        self._holder = holder
        self._trusted_cas = tuple(trusted_cas)
        self._certs: dict[str, x509.Certificate | None] = {}
        self._misplaced: dict[str, x509.Certificate] = {}
        self._verdicts: dict[str, _Verdict] = {}
        self._signers: dict[str, CertifiedKey | str] = {}

    def get(self, thumbprint: str) -> x509.Certificate | None:
        """The certificate with this x5t#S256, if the certificates at hand hold it (not a trust
        decision): another certificate stored under that thumbprint is none."""
        if thumbprint not in self._certs:
            cert = _parse_pem(self._pem_of(thumbprint))
            if cert is not None and cert_thumbprint(cert) != thumbprint:
                self._misplaced[thumbprint], cert = cert, None
            self._certs[thumbprint] = cert
        return self._certs[thumbprint]

    def trusted(self, thumbprint: str, at: dt.datetime | None = None) -> x509.Certificate:
        """The certificate, if it is at hand, a trusted CA issued it and it may sign, and
        (given ``at``) it and its CAs were valid then; else JwsError."""
        # (1) the certificates at hand hold the one this x5t#S256 names (SHA-256 of its DER)
        cert = self.get(thumbprint)
        if cert is None:
            if thumbprint in self._misplaced:
                other = describe(self._misplaced[thumbprint])
                raise JwsError(
                    f"the certificate stored under {thumbprint} ({other}) is not the certificate "
                    f"{thumbprint} names (another certificate put in its place)"
                )
            raise JwsError(f"signing certificate {thumbprint} is not in {self._holder}")
        # (2) issued by a trusted CA (the library's path validation), allowed to sign
        if thumbprint not in self._verdicts:
            self._verdicts[thumbprint] = _judge(cert, self._trusted_cas)
        verdict = self._verdicts[thumbprint]
        if verdict.refusal is not None:
            raise JwsError(f"signing certificate {thumbprint} {verdict.refusal}")
        # (3) it and every CA on its path were valid at the time it signed
        if at is not None and not verdict.valid_from <= at <= verdict.valid_until:
            raise JwsError(
                f"signing certificate {thumbprint} was not valid at {at.isoformat()}"
                f"{_which_was_not(cert, verdict.cas, at)}"
            )
        return cert

    def signer_key(self, thumbprint: str, at: dt.datetime | None = None) -> CertifiedKey:
        """The trusted signing key with this thumbprint at ``at``: a certificate at hand that
        a trusted CA issued, valid then, with the signing profile and its member; else JwsError."""
        cert = self.trusted(thumbprint, at)
        known = self._signers.get(thumbprint)
        if known is None:
            try:
                known = certified_signer(cert)
            except JwsError as exc:
                known = f"certificate {thumbprint}: {exc.message}"
            self._signers[thumbprint] = known
        if isinstance(known, str):
            raise JwsError(known)
        return known

    def at(self, when: dt.datetime | None) -> _KeysAt:
        """The :class:`~exchange.trustcore.messages.SignerKeys` of this log at ``when``."""
        return _KeysAt(self, when)


def certificates_of_log(conn: sqlite3.Connection) -> Callable[[str], object]:
    """A :class:`CertLookup` source: the PEM of a thumbprint in the log's ``certs`` table, as
    stored. The one reader of that table: what is taken out of it goes through a lookup."""

    def pem_of(thumbprint: str) -> object:
        row = conn.execute("SELECT pem FROM certs WHERE thumbprint = ?", (thumbprint,)).fetchone()
        return row[0] if row else None

    return pem_of


def signer_certificates(conn: sqlite3.Connection, tokens: Sequence[str]) -> dict[str, str]:
    """PEM by ``x5t#S256`` of the certificates the JWS ``tokens`` name, those the log holds:
    only the certificate a thumbprint names (another one stored in its place is left out)."""
    held = CertLookup(certificates_of_log(conn), ())
    found: dict[str, str] = {}
    for token in tokens:
        try:
            thumb = unverified_header(token).get("x5t#S256")
        except JwsError:
            continue
        if isinstance(thumb, str) and thumb not in found and (cert := held.get(thumb)):
            found[thumb] = cert_pem(cert)
    return found


_NEVER_FROM: Final = dt.datetime.max.replace(tzinfo=dt.UTC)
_NEVER_UNTIL: Final = dt.datetime.min.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What :func:`_judge` found: a refusal, or the CAs up to a root and when all were valid."""

    refusal: str | None
    cas: tuple[x509.Certificate, ...] = ()
    valid_from: dt.datetime = _NEVER_FROM
    valid_until: dt.datetime = _NEVER_UNTIL


def _judge(cert: x509.Certificate, trusted_cas: Sequence[x509.Certificate]) -> _Verdict:
    path = issuers(cert, trusted_cas)
    if path is None:
        return _Verdict("is not issued by a trusted CA")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return _Verdict("has no KeyUsage extension")
    if not usage.digital_signature:
        return _Verdict("is not allowed to sign (KeyUsage lacks digitalSignature)")
    # the span in which the certificate and all its CAs were valid (RFC 5280 §6.1.3 (a)(2))
    valid_from = max(c.not_valid_before_utc for c in (cert, *path))
    valid_until = min(c.not_valid_after_utc for c in (cert, *path))
    if valid_from > valid_until:
        return _Verdict("was never valid while its issuing CA was")
    # the path as the live path validates it (constraints, path length, the CAs' key usage),
    # at a time when every certificate on it was valid
    try:
        verify_chain(cert, trusted_cas, valid_from)
    except CertificateError as exc:
        return _Verdict(f"does not chain to a trusted CA: {exc.internal or exc.message}")
    return _Verdict(None, path, valid_from, valid_until)


def _which_was_not(
    cert: x509.Certificate, cas: tuple[x509.Certificate, ...], at: dt.datetime
) -> str:
    """Why ``cert`` was not valid at ``at`` when its own dates allow it: a CA's."""
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        return ""
    for ca in cas:
        if at > ca.not_valid_after_utc:
            expired = ca.not_valid_after_utc.isoformat()
            return f" (issuing CA certificate expired at {expired}: {describe(ca)})"
        if at < ca.not_valid_before_utc:
            start = ca.not_valid_before_utc.isoformat()
            return f" (issuing CA certificate not yet valid, from {start}: {describe(ca)})"
    return ""


@dataclass(frozen=True, slots=True)
class _KeysAt:
    lookup: CertLookup
    when: dt.datetime | None

    def signer_key(self, thumbprint: str) -> CertifiedKey:
        return self.lookup.signer_key(thumbprint, self.when)


def _parse_pem(pem: object) -> x509.Certificate | None:
    try:
        return cert_from_pem(pem) if isinstance(pem, str | bytes) else None
    except ValueError:
        return None
