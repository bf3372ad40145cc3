"""SIM registrations in SQLite: register one (idempotently), list a person's.

A number is registered once (``UNIQUE``), a person holds at most :data:`MAX_SIMS_PER_PERSON`;
each registration is one ``BEGIN IMMEDIATE`` transaction, so two registrations of one number at
once give one registration and one ``msisdn_taken``. Each call opens its own connection; the
adapter runs these methods in its thread pool. No HTTP.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import uuid_utils

from adapters.sdk import Conflict
from adapters.sdk.idempotency import SCHEMA as IDEMPOTENCY_SCHEMA
from adapters.sdk.idempotency import Idempotent, once
from adapters.telecom.model import Operator, SimRegistration
from exchange.errors import ConfigurationError

MAX_SIMS_PER_PERSON: Final = 5
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS sims (
    registration_id TEXT PRIMARY KEY,
    national_id TEXT NOT NULL,
    msisdn TEXT NOT NULL UNIQUE,
    operator TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    registered_by TEXT NOT NULL,
    client TEXT NOT NULL,
    message_id TEXT
);
CREATE INDEX IF NOT EXISTS sims_of_person ON sims (national_id);
"""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def create_store(path: Path) -> Path:
    """Create the SIM registry file at ``path`` (kept as it is if it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path)
    try:
        conn.executescript(SCHEMA + IDEMPOTENCY_SCHEMA)
    finally:
        conn.close()
    return path


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SimStore:
    """The SIM registry file; every method is one transaction on its own connection."""

    def __init__(self, path: Path, *, clock: Callable[[], dt.datetime] = _utc_now) -> None:
        self.path = Path(path)
        self.clock = clock
        if not self.path.is_file():
            raise ConfigurationError(
                f"no SIM registry at {self.path} "
                "(create it with: python -m adapters.telecom init --db FILE)"
            )
        with self._conn() as conn:
            try:
                conn.execute("SELECT count(*) FROM sims").fetchone()
                conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()
            except sqlite3.DatabaseError as exc:
                raise ConfigurationError(f"{self.path} holds no SIM registry ({exc})") from exc

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = _connect(self.path)
        try:
            yield conn
        finally:
            conn.close()

    def count(self) -> int:
        with self._conn() as conn:
            return int(conn.execute("SELECT count(*) FROM sims").fetchone()[0])

    def register(
        self,
        national_id: str,
        msisdn: str,
        operator: Operator,
        *,
        clerk: str,
        client: str,
        message_id: str | None,
        idem: Idempotent | None,
    ) -> tuple[int, SimRegistration]:
        """(201, the registration), or (200, the one this idempotency key made)."""

        def work(conn: sqlite3.Connection, now: dt.datetime) -> SimRegistration:
            return _register(conn, now, national_id, msisdn, operator, clerk, client, message_id)

        with self._conn() as conn:
            return once(conn, idem, self.clock, work)

    def of_person(self, national_id: str) -> list[SimRegistration]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT registration_id, msisdn, operator, registered_at, registered_by"
                " FROM sims WHERE national_id = ? ORDER BY registered_at, registration_id",
                (national_id,),
            ).fetchall()
        return [
            {"registration_id": rid, "national_id": national_id, "msisdn": msisdn,
             "operator": operator, "registered_at": at, "registered_by": by}
            for rid, msisdn, operator, at, by in rows
        ]  # fmt: skip


def _register(
    conn: sqlite3.Connection,
    now: dt.datetime,
    national_id: str,
    msisdn: str,
    operator: Operator,
    clerk: str,
    client: str,
    message_id: str | None,
) -> SimRegistration:
    if conn.execute("SELECT 1 FROM sims WHERE msisdn = ?", (msisdn,)).fetchone():
        raise Conflict(f"{msisdn} is registered already", code="msisdn_taken")
    (held,) = conn.execute(
        "SELECT count(*) FROM sims WHERE national_id = ?", (national_id,)
    ).fetchone()
    if held >= MAX_SIMS_PER_PERSON:
        raise Conflict(
            f"a person holds at most {MAX_SIMS_PER_PERSON} SIM cards", code="too_many_sims"
        )
    registration: SimRegistration = {
        "registration_id": str(uuid_utils.uuid7()),
        "national_id": national_id,
        "msisdn": msisdn,
        "operator": operator,
        "registered_at": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "registered_by": clerk,
    }
    conn.execute(
        "INSERT INTO sims VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (registration["registration_id"], national_id, msisdn, operator,
         registration["registered_at"], clerk, client, message_id),
    )  # fmt: skip
    return registration
