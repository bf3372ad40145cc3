"""The CA's register of issued certificates and their revocations, in SQLite (WAL).

One row per certificate the CA issued: serial number (hex), issuer and subject (RFC 4514),
profile (``auth``, ``sign``, ``ocsp`` ...), validity end, SHA-256 fingerprint, the certificate
itself, and its status, ``good`` or ``revoked`` with the revocation time and reason (RFC 5280
§5.3.1 reason codes). The OCSP responder answers from :meth:`RevocationStore.status`; a serial
that was never recorded is "unknown" to it (RFC 6960 §2.2).

A revocation is final: it is never undone and its time and reason are not changed. The CA's CLI
and the OCSP responder may share the file from different processes; a revocation is visible to
the responder as soon as :meth:`RevocationStore.revoke` returns.

Blocking (sqlite3). One connection guarded by a lock, so a responder may call it from a worker
thread. It issues, signs and serves nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cryptography import x509

from exchange.errors import ConfigurationError
from exchange.transaction import open_versioned_store, write_transaction
from exchange.trust.keys import cert_pem, fingerprint
from exchange.trust.ocsp import CertStatus
from exchange.trust.validation import name_text

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE issued (
    serial      TEXT PRIMARY KEY,
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    profile     TEXT NOT NULL,
    not_after   TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    cert_pem    TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'good' CHECK (status IN ('good', 'revoked')),
    revoked_at  TEXT,
    reason      TEXT,
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
"""

_COLUMNS: Final = "serial, subject, profile, not_after, fingerprint, status, revoked_at, reason"


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """One row of the register."""

    serial: int
    subject: str
    profile: str
    not_after: dt.datetime
    fingerprint: str
    status: Literal["good", "revoked"]
    revoked_at: dt.datetime | None
    reason: x509.ReasonFlags | None

    @property
    def cert_status(self) -> CertStatus:
        return CertStatus(serial=self.serial, revoked_at=self.revoked_at, reason=self.reason)


def parse_reason(reason: x509.ReasonFlags | str) -> x509.ReasonFlags:
    """A revocation reason from its RFC 5280 §5.3.1 name (``keyCompromise``, ``superseded`` ...).

    ``removeFromCRL`` is refused: it undoes a hold, and a revocation here is final.
    """
    try:
        flag = reason if isinstance(reason, x509.ReasonFlags) else x509.ReasonFlags(reason)
    except ValueError:
        names = ", ".join(
            f.value for f in x509.ReasonFlags if f != x509.ReasonFlags.remove_from_crl
        )
        raise ConfigurationError(
            f"unknown revocation reason {reason!r}; use one of: {names}"
        ) from None
    if flag == x509.ReasonFlags.remove_from_crl:
        raise ConfigurationError("removeFromCRL is not a revocation reason; revocations are final")
    return flag


def _hex(serial: int) -> str:
    return f"{serial:x}"


def _time(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return value.astimezone(dt.UTC).replace(microsecond=0).isoformat()


REVOCATIONS_FILE = "revocations.sqlite"


def record_in_ca_dir(ca_dir: str | Path, cert: x509.Certificate, profile: str) -> None:
    """Record an issued certificate in the CA directory's register (what its OCSP responder
    answers from): a certificate the register does not know is "unknown", never "good"."""
    with RevocationStore(Path(ca_dir) / REVOCATIONS_FILE) as store:
        store.record_issued(cert, profile)


class RevocationStore:
    """The register in the SQLite file at ``path``; created there unless ``create`` is False."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise ConfigurationError(f"revocation database {self.path} does not exist")
        self._lock = threading.Lock()
        self._conn = _open(self.path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RevocationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record_issued(self, cert: x509.Certificate, profile: str) -> IssuedCertificate:
        """Record that the CA issued ``cert`` as ``profile``; recording it again changes nothing.

        A different certificate with a recorded serial number is refused (RFC 5280 §4.1.2.2:
        serials are unique per CA).
        """
        if not profile:
            raise ValueError("profile must not be empty")
        row = {
            "serial": _hex(cert.serial_number),
            "issuer": name_text(cert.issuer),
            "subject": name_text(cert.subject),
            "profile": profile,
            "not_after": _time(cert.not_valid_after_utc),
            "fingerprint": fingerprint(cert),
            "cert_pem": cert_pem(cert),
            "recorded_at": _time(dt.datetime.now(dt.UTC)),
        }
        with self._write():
            existing = self._select("serial", row["serial"])
            if existing is None:
                self._conn.execute(
                    f"INSERT INTO issued ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                    tuple(row.values()),
                )
                existing = self._select("serial", row["serial"])
        assert existing is not None
        if existing.fingerprint != row["fingerprint"]:
            raise ConfigurationError(
                f"serial {row['serial']} is already recorded for another certificate "
                f"({existing.subject})"
            )
        return existing

    def revoke(
        self,
        serial_or_cert: int | x509.Certificate,
        reason: x509.ReasonFlags | str,
        when: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """Revoke a recorded certificate as of ``when`` (default now) for ``reason``.

        A certificate (rather than a serial) not yet recorded is recorded first, as profile
        ``unrecorded``. Revoking twice is refused.
        """
        flag = parse_reason(reason)
        revoked_at = _time(when or dt.datetime.now(dt.UTC))
        if isinstance(serial_or_cert, x509.Certificate):
            self.record_issued(serial_or_cert, "unrecorded")
            serial = serial_or_cert.serial_number
        else:
            serial = serial_or_cert
        with self._write():
            current = self._select("serial", _hex(serial))
            _check_revocable(serial, current)
            self._conn.execute(
                "UPDATE issued SET status = 'revoked', revoked_at = ?, reason = ? WHERE serial = ?",
                (revoked_at, flag.value, _hex(serial)),
            )
            revoked = self._select("serial", _hex(serial))
        assert revoked is not None
        return revoked

    def status(self, serial: int) -> CertStatus | None:
        """The status of ``serial`` for the OCSP responder; None if the CA never issued it."""
        found = self.get(serial)
        return None if found is None else found.cert_status

    def get(self, serial: int) -> IssuedCertificate | None:
        with self._lock:
            return self._select("serial", _hex(serial))

    def find(self, cert: x509.Certificate) -> IssuedCertificate | None:
        """The row of exactly this certificate (by fingerprint)."""
        with self._lock:
            return self._select("fingerprint", fingerprint(cert))

    def issued(self) -> list[IssuedCertificate]:
        """Every recorded certificate, oldest record first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM issued ORDER BY recorded_at, serial"
            ).fetchall()
        return [_row(r) for r in rows]

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """Under the lock, in ``BEGIN IMMEDIATE``: another process writing waits for the lock."""
        with self._lock, write_transaction(self._conn):
            yield

    def _select(
        self, column: Literal["serial", "fingerprint"], value: str
    ) -> IssuedCertificate | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM issued WHERE {column} = ?", (value,)
        ).fetchone()
        return None if row is None else _row(row)


def _check_revocable(serial: int, current: IssuedCertificate | None) -> None:
    if current is None:
        raise ConfigurationError(
            f"serial {_hex(serial)} is not recorded as issued by this CA; "
            "give the certificate instead of its serial"
        )
    if current.revoked_at is not None:
        why = current.reason.value if current.reason else "no reason"
        raise ConfigurationError(
            f"certificate {current.subject} (serial {_hex(serial)}) was already revoked at "
            f"{current.revoked_at.isoformat()} ({why})"
        )


def _row(row: tuple[str, ...]) -> IssuedCertificate:
    serial, subject, profile, not_after, fp, status, revoked_at, reason = row
    return IssuedCertificate(
        serial=int(serial, 16),
        subject=subject,
        profile=profile,
        not_after=dt.datetime.fromisoformat(not_after),
        fingerprint=fp,
        status="revoked" if status == "revoked" else "good",
        revoked_at=dt.datetime.fromisoformat(revoked_at) if revoked_at else None,
        reason=x509.ReasonFlags(reason) if reason else None,
    )


def _open(path: Path) -> sqlite3.Connection:
    """Open (creating) the register; :class:`ConfigurationError` if the file is something else."""
    return open_versioned_store(path, _SCHEMA, SCHEMA_VERSION, "a revocation database")
