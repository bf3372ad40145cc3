"""Which certificates a message log holds may sign for it, as an auditor's tools and the store
judge them: :class:`CertLookup`.

A log keeps the certificates of every signature it holds (the requests', the responses', its own
tree heads') in its ``certs`` table, by ``x5t#S256``. The file is not trusted: a certificate of it
counts only once one of the CAs the caller trusts issued it, and only while it was valid.

Used by :mod:`exchange.messagelog.verify` (``exchange log verify``), the evidence bundles of
:mod:`exchange.audit.bundle` (over the bundle's certificates) and :mod:`exchange.messagelog.store`
(the latest tree head, before the store signs over it). Reads ``certs`` only.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from exchange.protocol.jws import JwsError
from exchange.trust.keys import cert_from_pem
from exchange.trust.validation import find_issuer
from exchange.trustcore.messages import CertifiedKey, certified_signer


class CertLookup:
    """Certificates stored in the log, trusted only when issued directly by a trusted CA."""

    def __init__(self, conn: sqlite3.Connection, trusted_cas: Sequence[x509.Certificate]) -> None:
        self._conn = conn
        self._trusted_cas = tuple(trusted_cas)
        self._certs: dict[str, x509.Certificate | None] = {}
        self._verdicts: dict[str, str | None] = {}
        self._signers: dict[str, CertifiedKey | str] = {}

    def get(self, thumbprint: str) -> x509.Certificate | None:
        """The certificate with this x5t#S256, if the log holds it (not a trust decision)."""
        if thumbprint not in self._certs:
            row = self._conn.execute(
                "SELECT pem FROM certs WHERE thumbprint = ?", (thumbprint,)
            ).fetchone()
            self._certs[thumbprint] = _parse_pem(row[0]) if row else None
        return self._certs[thumbprint]

    def trusted(self, thumbprint: str, at: dt.datetime | None = None) -> x509.Certificate:
        """The certificate, if it is in the log, chains to a trusted CA and signs; else JwsError."""
        cert = self.get(thumbprint)
        if cert is None:
            raise JwsError(f"signing certificate {thumbprint} is not in the log")
        if thumbprint not in self._verdicts:
            self._verdicts[thumbprint] = self._judge(cert)
        verdict = self._verdicts[thumbprint]
        if verdict is not None:
            raise JwsError(f"signing certificate {thumbprint} {verdict}")
        if at is not None and not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise JwsError(f"signing certificate {thumbprint} was not valid at {at.isoformat()}")
        return cert

    def signer_key(self, thumbprint: str, at: dt.datetime | None = None) -> CertifiedKey:
        """The trusted signing key with this thumbprint at ``at``: a certificate of the log that
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

    def _judge(self, cert: x509.Certificate) -> str | None:
        if find_issuer(cert, self._trusted_cas) is None:
            return "is not issued by a trusted CA"
        try:
            usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            return "has no KeyUsage extension"
        if not usage.digital_signature:
            return "is not allowed to sign (KeyUsage lacks digitalSignature)"
        return None


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
