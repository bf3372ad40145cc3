"""Vaccination records in SQLite: generating a synthetic set, reading a person's, adding one.

Records are keyed by national ID (the population registry's IDs, or any valid ones). The
generator follows the Palestinian Ministry of Health's routine schedule loosely (BCG and
hepatitis B at birth, the hexavalent series, polio, MMR, later boosters) with dates after the
person's birth and before a reference date. One connection per call: the adapter runs these
functions in its thread pool, never on the event loop. No HTTP here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from adapters.health.model import Vaccination
from exchange.errors import ConfigurationError

REFERENCE_DATE: Final = dt.date(2024, 12, 31)
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS vaccinations (
    id INTEGER PRIMARY KEY,
    national_id TEXT NOT NULL,
    vaccine TEXT NOT NULL,
    dose INTEGER NOT NULL CHECK (dose >= 1),
    date TEXT NOT NULL,
    facility TEXT NOT NULL,
    lot TEXT NOT NULL,
    recorded_by TEXT
);
CREATE INDEX IF NOT EXISTS vaccinations_person ON vaccinations (national_id, date);
"""
# (vaccine code, dose, age in days at which it is given)
SCHEDULE: Final = (
    ("BCG", 1, 0), ("HepB", 1, 0), ("Hexa", 1, 61), ("OPV", 1, 61), ("Hexa", 2, 122),
    ("OPV", 2, 122), ("Hexa", 3, 183), ("OPV", 3, 183), ("MMR", 1, 365), ("MMR", 2, 548),
    ("DTaP", 4, 548), ("Td", 5, 2190), ("Td", 6, 5475),
)  # fmt: skip
VACCINES: Final = frozenset({code for code, _, _ in SCHEDULE} | {"COVID-19", "Influenza"})
FACILITIES: Final = (
    "Biddu Primary Health Centre", "Ramallah Central Clinic", "Nablus Maternal and Child Health",
    "Hebron Health Directorate", "Jenin Primary Health Centre", "Bethlehem Child Health Centre",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Person:
    """Who to generate records for: a national ID and a date of birth."""

    national_id: str
    date_of_birth: dt.date


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, isolation_level=None)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def generate(
    path: Path, people: Iterable[Person], *, seed: int = 0, reference: dt.date = REFERENCE_DATE
) -> int:
    """Write synthetic records for ``people`` into ``path`` (created if needed); return how many.

    Each person gets the routine doses due by ``reference``, a few missed at random, and
    sometimes a COVID-19 or influenza dose.
    """
    rng = random.Random(seed)
    rows = []
    for person in people:
        for code, dose, age in SCHEDULE:
            when = person.date_of_birth + dt.timedelta(days=age + rng.randint(0, 20))
            if when <= reference and rng.random() > 0.04:
                rows.append(_row(rng, person.national_id, code, dose, when))
        if rng.random() < 0.3 and person.date_of_birth < dt.date(2005, 1, 1):
            when = dt.date(2021, 3, 1) + dt.timedelta(days=rng.randint(0, 400))
            rows.append(_row(rng, person.national_id, "COVID-19", 1, when))
    conn = _connect(path, readonly=False)
    try:
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO vaccinations (national_id, vaccine, dose, date, facility, lot)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return len(rows)


def _row(
    rng: random.Random, national_id: str, code: str, dose: int, when: dt.date
) -> tuple[str, str, int, str, str, str]:
    lot = f"{code[:3].upper()}{rng.randint(10_000, 99_999)}"
    return national_id, code, dose, when.isoformat(), rng.choice(FACILITIES), lot


class VaccinationStore:
    """Reads and adds records in one SQLite file; every call opens its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigurationError(
                f"no vaccination records at {self.path} "
                "(create them with: python -m adapters.health generate --db FILE)"
            )
        with self._conn(readonly=True) as conn:
            try:
                conn.execute("SELECT count(*) FROM vaccinations").fetchone()
            except sqlite3.DatabaseError as exc:
                raise ConfigurationError(
                    f"{self.path} holds no vaccination records ({exc})"
                ) from exc

    @contextlib.contextmanager
    def _conn(self, *, readonly: bool) -> Iterator[sqlite3.Connection]:
        conn = _connect(self.path, readonly=readonly)
        try:
            yield conn
        finally:
            conn.close()

    def count(self) -> int:
        with self._conn(readonly=True) as conn:
            return int(conn.execute("SELECT count(*) FROM vaccinations").fetchone()[0])

    def of_person(self, national_id: str, vaccine: str | None = None) -> list[Vaccination]:
        """A person's records, oldest first (only ``vaccine``'s if given)."""
        sql = (
            "SELECT vaccine, dose, date, facility, lot FROM vaccinations WHERE national_id = ?"
            " AND (? IS NULL OR vaccine = ?) ORDER BY date, id"
        )
        with self._conn(readonly=True) as conn:
            rows = conn.execute(sql, (national_id, vaccine, vaccine)).fetchall()
        return [
            {"vaccine": v, "dose": d, "date": day, "facility": f, "lot": lot}
            for v, d, day, f, lot in rows
        ]

    def add(self, national_id: str, record: Vaccination, recorded_by: str | None) -> None:
        with self._conn(readonly=False) as conn:
            conn.execute(
                "INSERT INTO vaccinations"
                " (national_id, vaccine, dose, date, facility, lot, recorded_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (national_id, record["vaccine"], record["dose"], record["date"],
                 record["facility"], record["lot"], recorded_by),
            )  # fmt: skip
