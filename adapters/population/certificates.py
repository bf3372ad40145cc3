"""Certificates of residence: issued by Interior from the registry, signed, numbered, recorded.

A certificate states who lives where (the person's names and registered address) on the day it
is issued, for :data:`VALIDITY_DAYS`; it is a signed document
(:mod:`exchange.trust.documents`, type ``exchange-residence-certificate+jwt``) the clerk prints
and anyone can verify offline. Each one is recorded in its own SQLite file (the registry file
is reference data, rebuilt at will), numbered without gaps per year (``MOI-RC-2026-000001``),
with the clerk who asked for it; an ``Idempotency-Key`` makes a retry answer the same
certificate. The dead get no certificate of residence.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

import orjson

from adapters.population.model import Person, ResidenceCertificate
from adapters.sdk import Conflict
from adapters.sdk.idempotency import SCHEMA as IDEMPOTENCY_SCHEMA
from adapters.sdk.idempotency import Idempotent, once
from adapters.sdk.numbers import COUNTERS_SCHEMA, next_number
from exchange.trust.documents import RESIDENCE_CERTIFICATE, DocumentSigner

VALIDITY_DAYS: Final = 90
SERIES: Final = "MOI-RC"
TIME_ZONE: Final = "Asia/Hebron"
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS certificates (
    certificate_number TEXT PRIMARY KEY,
    year INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    national_id TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    client TEXT NOT NULL,
    message_id TEXT,
    answer TEXT NOT NULL,
    UNIQUE (year, seq)
);
CREATE TRIGGER IF NOT EXISTS certificates_are_kept BEFORE UPDATE ON certificates
BEGIN SELECT RAISE(ABORT, 'certificates are never changed'); END;
CREATE TRIGGER IF NOT EXISTS certificates_are_not_deleted BEFORE DELETE ON certificates
BEGIN SELECT RAISE(ABORT, 'certificates are never deleted'); END;
"""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def create_certificate_store(path: Path) -> Path:
    """Create the certificates file at ``path`` (kept as it is if it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path)
    try:
        conn.executescript(SCHEMA + COUNTERS_SCHEMA + IDEMPOTENCY_SCHEMA)
    finally:
        conn.close()
    return path


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateIssuer:
    """Issues, signs and records certificates of residence in one SQLite file."""

    def __init__(
        self,
        path: Path,
        signer: DocumentSigner,
        *,
        clock: Callable[[], dt.datetime] = _utc_now,
        time_zone: str = TIME_ZONE,
    ) -> None:
        self.path = create_certificate_store(Path(path))
        self.signer = signer
        self.clock = clock
        self.zone = ZoneInfo(time_zone)

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = _connect(self.path)
        try:
            yield conn
        finally:
            conn.close()

    def count(self) -> int:
        with self._conn() as conn:
            return int(conn.execute("SELECT count(*) FROM certificates").fetchone()[0])

    def issue(
        self,
        person: Person,
        *,
        clerk: str,
        client: str,
        message_id: str | None,
        idem: Idempotent | None,
    ) -> tuple[int, ResidenceCertificate]:
        """(201, a new certificate for ``person``), or (200, the one this key was given)."""
        if person["status"] != "alive":
            raise Conflict(
                f"{person['national_id']} is recorded as deceased: no certificate of residence",
                code="person_deceased",
            )

        def work(conn: sqlite3.Connection, now: dt.datetime) -> ResidenceCertificate:
            local = now.astimezone(self.zone)
            seq = next_number(conn, SERIES, local.year)
            certificate: ResidenceCertificate = {
                "certificate_number": f"{SERIES}-{local.year}-{seq:06d}",
                "national_id": person["national_id"],
                "name_ar": person["name_ar"],
                "name_en": person["name_en"],
                "address": person["address"],
                "issued_at": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "valid_until": (local.date() + dt.timedelta(days=VALIDITY_DAYS)).isoformat(),
                "document": "",
            }
            claims = {k: v for k, v in certificate.items() if k != "document"}
            claims |= {"requested_by": clerk, "client": client, "exchange_id": message_id}
            certificate["document"] = self.signer.sign(RESIDENCE_CERTIFICATE, claims, now)
            conn.execute(
                "INSERT INTO certificates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (certificate["certificate_number"], local.year, seq, person["national_id"],
                 certificate["issued_at"], clerk, client, message_id,
                 orjson.dumps(certificate).decode()),
            )  # fmt: skip
            return certificate

        with self._conn() as conn:
            return once(conn, idem, self.clock, work)
