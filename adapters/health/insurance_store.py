"""Health insurance policies in SQLite: generating a synthetic set, reading a person's status.

A policy holder has a scheme (government or private) valid until a date; their spouse and
their children under 18 are covered as dependants. Generated from the population registry: each
living adult holds a policy of a scheme picked at random (some with none, some lapsed). No HTTP.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from adapters.health.model import Dependant, InsuranceStatus
from exchange.errors import ConfigurationError

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS policies (
    national_id TEXT PRIMARY KEY,
    scheme TEXT NOT NULL CHECK (scheme IN ('government', 'private', 'none')),
    valid_until TEXT
);
CREATE TABLE IF NOT EXISTS dependants (
    holder_id TEXT NOT NULL REFERENCES policies (national_id),
    national_id TEXT NOT NULL,
    relation TEXT NOT NULL CHECK (relation IN ('spouse', 'child')),
    PRIMARY KEY (holder_id, national_id)
);
CREATE INDEX IF NOT EXISTS dependants_by_person ON dependants (national_id);
"""


@dataclass(frozen=True, slots=True)
class Resident:
    """What the generator needs of a person in the population registry."""

    national_id: str
    date_of_birth: dt.date
    alive: bool
    spouse_id: str | None
    parent_ids: tuple[str, ...]


def read_residents(registry: Path, limit: int | None = None) -> list[Resident]:
    """The people of a population registry file (see :mod:`adapters.population.store`)."""
    uri = f"{registry.resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        rows = conn.execute(
            "SELECT national_id, date_of_birth, date_of_death, spouse_id, father_id, mother_id"
            " FROM persons ORDER BY national_id LIMIT ?",
            (-1 if limit is None else limit,),
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise ConfigurationError(f"{registry} is not a population registry ({exc})") from None
    finally:
        conn.close()

    def nid(value: int | None) -> str | None:
        return None if value is None else f"{value:09d}"

    return [
        Resident(f"{n:09d}", dt.date.fromisoformat(born), died is None, nid(spouse),
                 tuple(p for p in (nid(father), nid(mother)) if p is not None))
        for n, born, died, spouse, father, mother in rows
    ]  # fmt: skip


def _adult(person: Resident, today: dt.date) -> bool:
    return (today - person.date_of_birth).days >= 18 * 365


def generate(path: Path, residents: list[Resident], *, today: dt.date, seed: int = 0) -> int:
    """Write policies for the living adults of ``residents`` into ``path``; how many."""
    rng = random.Random(seed)
    living = {p.national_id: p for p in residents if p.alive}
    policies: list[tuple[str, str, str | None]] = []
    dependants: list[tuple[str, str, str]] = []
    for person in living.values():
        if not _adult(person, today):
            continue
        draw = rng.random()
        if draw < 0.25:
            policies.append((person.national_id, "none", None))
            continue
        scheme = "government" if draw < 0.8 else "private"
        lapsed = rng.random() < 0.1
        days = -rng.randint(1, 300) if lapsed else rng.randint(30, 700)
        policies.append((person.national_id, scheme, (today + dt.timedelta(days=days)).isoformat()))
        spouse = living.get(person.spouse_id or "")
        if spouse is not None and rng.random() < 0.5:
            dependants.append((person.national_id, spouse.national_id, "spouse"))
    holders = {nid for nid, scheme, _ in policies if scheme != "none"}
    for person in living.values():
        covered_by = [p for p in person.parent_ids if p in holders]
        if not _adult(person, today) and covered_by:
            dependants.append((covered_by[0], person.national_id, "child"))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        conn.executemany("INSERT OR REPLACE INTO policies VALUES (?, ?, ?)", policies)
        conn.executemany("INSERT OR REPLACE INTO dependants VALUES (?, ?, ?)", dependants)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return len(policies)


class InsuranceStore:
    """Reads policies from one SQLite file (read-only); every call opens its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigurationError(
                f"no insurance policies at {self.path} (create them with: "
                "python -m adapters.health insurance generate --db FILE --registry REGISTRY)"
            )
        with self._conn() as conn:
            try:
                conn.execute("SELECT count(*) FROM policies").fetchone()
            except sqlite3.DatabaseError as exc:
                raise ConfigurationError(
                    f"{self.path} holds no insurance policies ({exc})"
                ) from exc

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            yield conn
        finally:
            conn.close()

    def count(self) -> int:
        with self._conn() as conn:
            return int(conn.execute("SELECT count(*) FROM policies").fetchone()[0])

    def status(self, national_id: str, today: dt.date) -> InsuranceStatus:
        """The person's insurance on ``today``: their own policy, or the one they are a
        dependant under, or none."""
        with self._conn() as conn:
            own = conn.execute(
                "SELECT scheme, valid_until FROM policies WHERE national_id = ?", (national_id,)
            ).fetchone()
            if own is not None:
                rows = conn.execute(
                    "SELECT national_id, relation FROM dependants WHERE holder_id = ?"
                    " ORDER BY relation DESC, national_id",
                    (national_id,),
                ).fetchall()
                covered: list[Dependant] = [{"national_id": n, "relation": r} for n, r in rows]
                return _status(national_id, own[0], own[1], today, covered)
            holder = conn.execute(
                "SELECT p.scheme, p.valid_until FROM dependants AS d"
                " JOIN policies AS p ON p.national_id = d.holder_id"
                " WHERE d.national_id = ? ORDER BY p.valid_until DESC LIMIT 1",
                (national_id,),
            ).fetchone()
        if holder is not None:
            return _status(national_id, holder[0], holder[1], today, [])
        return _status(national_id, "none", None, today, [])


def _status(
    national_id: str,
    scheme: str,
    valid_until: str | None,
    today: dt.date,
    dependants: list[Dependant],
) -> InsuranceStatus:
    insured = scheme != "none" and valid_until is not None and valid_until >= today.isoformat()
    return {
        "national_id": national_id,
        "insured": insured,
        "scheme": scheme,  # type: ignore[typeddict-item]
        "valid_until": valid_until,
        "dependants": dependants,
    }
