"""The population registry's SQLite file: bulk writing it and reading people from it.

:func:`build_registry` writes the people of :func:`~adapters.population.generator.generate_people`
into a new file: large ``executemany`` transactions with ``journal_mode=WAL`` and
``synchronous=OFF`` while loading, secondary indexes built once at the end, statistics gathered for
the query planner, then the file is switched back to a rollback journal so that it is one
self-contained file that read-only servers can open. It is written under a temporary name and
renamed into place, so a reader never sees half a registry.

:class:`PopulationStore` reads it: point lookups by national ID (the table's integer primary key),
family and address views, and a name / date-of-birth search, each served from one indexed lookup
per person. It keeps a small pool of read-only connections so that it can be called from the event
loop and from worker threads alike; it never writes.

This module does not speak HTTP (see :mod:`adapters.population.app`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

from adapters.population.generator import (
    REFERENCE_DATE,
    PersonRow,
    generate_people,
    valid_national_id,
)
from adapters.population.model import Person
from exchange.durable import fsync_path
from exchange.errors import ConfigurationError

SCHEMA_VERSION: Final = 1
MAX_SEARCH_LIMIT: Final = 100
MAX_NAME_LENGTH: Final = 200
_BATCH_ROWS: Final = 50_000
_ARABIC: Final = re.compile(r"[\u0600-\u06FF]")
_ISO_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")

_TABLE: Final = """
CREATE TABLE persons (
    national_id INTEGER PRIMARY KEY,
    first_ar TEXT NOT NULL,
    father_ar TEXT NOT NULL,
    grandfather_ar TEXT NOT NULL,
    family_ar TEXT NOT NULL,
    full_ar TEXT NOT NULL,
    first_en TEXT NOT NULL,
    father_en TEXT NOT NULL,
    grandfather_en TEXT NOT NULL,
    family_en TEXT NOT NULL COLLATE NOCASE,
    full_en TEXT NOT NULL COLLATE NOCASE,
    sex TEXT NOT NULL CHECK (sex IN ('M', 'F')),
    date_of_birth TEXT NOT NULL,
    place_of_birth TEXT NOT NULL,
    governorate TEXT NOT NULL,
    locality TEXT NOT NULL,
    street TEXT NOT NULL,
    building TEXT NOT NULL,
    marital_status TEXT NOT NULL,
    father_id INTEGER,
    mother_id INTEGER,
    spouse_id INTEGER,
    date_of_death TEXT
)"""

_INDEXES: Final = (
    "CREATE INDEX persons_father ON persons (father_id) WHERE father_id IS NOT NULL",
    "CREATE INDEX persons_mother ON persons (mother_id) WHERE mother_id IS NOT NULL",
    "CREATE INDEX persons_full_en ON persons (full_en)",
    "CREATE INDEX persons_family_en ON persons (family_en)",
    "CREATE INDEX persons_full_ar ON persons (full_ar)",
    "CREATE INDEX persons_family_ar ON persons (family_ar)",
    "CREATE INDEX persons_date_of_birth ON persons (date_of_birth)",
)

_COLUMNS: Final = ", ".join(PersonRow._fields)
_SELECT: Final = f"SELECT {_COLUMNS} FROM persons"
_INSERT: Final = (
    f"INSERT INTO persons ({_COLUMNS}) VALUES ({', '.join('?' * len(PersonRow._fields))})"
)


# --- writing -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuildReport:
    """What :func:`build_registry` wrote."""

    path: Path
    count: int
    deceased: int
    married: int
    seed: int
    reference_date: date
    seconds: float


def build_registry(
    path: Path,
    count: int,
    *,
    seed: int = 0,
    reference_date: date = REFERENCE_DATE,
    replace: bool = False,
    on_progress: Callable[[str, int], None] | None = None,
) -> BuildReport:
    """Generate ``count`` people into a new registry file at ``path``.

    ``on_progress(phase, people_written)`` is called after each batch (phase ``"people"``) and
    before the indexes are built (phase ``"indexes"``). Refuses to overwrite an existing file
    unless ``replace``.
    """
    if path.exists() and not replace:
        raise ConfigurationError(f"{path} already exists; choose another file or replace it")
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    people = generate_people(count, seed=seed, reference_date=reference_date)
    partial = path.with_name(path.name + ".partial")
    _remove_database(partial)
    conn = sqlite3.connect(partial, isolation_level=None)
    try:
        _bulk_load_settings(conn)
        conn.execute(_TABLE)
        deceased, married = _load(conn, _batches(people), on_progress)
        if on_progress is not None:
            on_progress("indexes", count)
        meta = {"schema_version": SCHEMA_VERSION, "count": count, "seed": seed}
        _finish(conn, {**meta, "reference_date": reference_date.isoformat()})
    except BaseException:
        conn.close()
        _remove_database(partial)
        raise
    conn.close()
    fsync_path(partial)
    os.replace(partial, path)
    seconds = time.perf_counter() - started
    return BuildReport(path, count, deceased, married, seed, reference_date, seconds)


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")


def _bulk_load_settings(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    conn.execute("PRAGMA temp_store = MEMORY")


def _batches(blocks: Iterator[list[PersonRow]]) -> Iterator[list[PersonRow]]:
    batch: list[PersonRow] = []
    for block in blocks:
        batch.extend(block)
        if len(batch) >= _BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def _load(
    conn: sqlite3.Connection,
    batches: Iterator[list[PersonRow]],
    on_progress: Callable[[str, int], None] | None,
) -> tuple[int, int]:
    written = deceased = married = 0
    for batch in batches:
        conn.execute("BEGIN")
        conn.executemany(_INSERT, batch)
        conn.execute("COMMIT")
        written += len(batch)
        deceased += sum(row.date_of_death is not None for row in batch)
        married += sum(row.marital_status == "married" for row in batch)
        if on_progress is not None:
            on_progress("people", written)
    return deceased, married


def _finish(conn: sqlite3.Connection, meta: dict[str, Any]) -> None:
    conn.execute("BEGIN")
    for statement in _INDEXES:
        conn.execute(statement)
    conn.execute("CREATE TABLE registry_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.executemany(
        "INSERT INTO registry_meta VALUES (?, ?)", [(k, str(v)) for k, v in meta.items()]
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode = DELETE")


# --- reading -------------------------------------------------------------------------------------


def _optional_id(value: int | None) -> str | None:
    return None if value is None else f"{value:09d}"


def person_from_row(row: Sequence[Any]) -> Person:
    """The service's JSON shape of one ``persons`` row (columns in :class:`PersonRow` order)."""
    (nid, first_ar, father_ar, grandfather_ar, family_ar, full_ar,
     first_en, father_en, grandfather_en, family_en, full_en,
     sex, born, birthplace, governorate, locality, street, building,
     marital, father_id, mother_id, spouse_id, died) = row  # fmt: skip
    return {
        "national_id": f"{nid:09d}",
        "name_ar": {
            "first": first_ar,
            "father": father_ar,
            "grandfather": grandfather_ar,
            "family": family_ar,
            "full": full_ar,
        },
        "name_en": {
            "first": first_en,
            "father": father_en,
            "grandfather": grandfather_en,
            "family": family_en,
            "full": full_en,
        },
        "sex": sex,
        "date_of_birth": born,
        "place_of_birth": birthplace,
        "governorate": governorate,
        "locality": locality,
        "address": {
            "governorate": governorate,
            "locality": locality,
            "street": street,
            "building": building,
        },
        "marital_status": marital,
        "father_id": _optional_id(father_id),
        "mother_id": _optional_id(mother_id),
        "spouse_id": _optional_id(spouse_id),
        "date_of_death": died,
        "status": "alive" if died is None else "deceased",
    }


def _key(national_id: str) -> int:
    if not valid_national_id(national_id):
        raise ValueError("a national ID is nine digits with a valid check digit")
    return int(national_id)


def _search_date(text: str) -> str:
    try:
        if _ISO_DATE.fullmatch(text):
            return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    raise ValueError("date_of_birth must be a date written YYYY-MM-DD")


class PopulationStore:
    """Read-only access to a registry file through a small pool of SQLite connections.

    Every method may be called from any thread; each call holds one connection for its duration.
    National IDs are passed and returned as 9-digit strings; a malformed one raises ``ValueError``.
    """

    def __init__(self, path: Path, *, connections: int = 4) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigurationError(
                f"no population registry at {self.path} "
                f"(create one with: exchange registry generate --db {self.path} --count 100000)"
            )
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._connections: list[sqlite3.Connection] = []
        try:
            for _ in range(connections):
                self._connections.append(self._connect())
                self._pool.put(self._connections[-1])
            self.meta = self._read_meta()
        except BaseException:
            self.close()
            raise
        self.count = int(self.meta["count"])
        self.reference_date = date.fromisoformat(self.meta["reference_date"])

    def _connect(self) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA mmap_size = 1073741824")
        return conn

    def _read_meta(self) -> dict[str, str]:
        try:
            with self._connection() as conn:
                rows = conn.execute("SELECT key, value FROM registry_meta").fetchall()
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(f"{self.path} is not a population registry ({exc})") from exc
        meta = dict(rows)
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise ConfigurationError(
                f"{self.path} has registry schema {meta.get('schema_version')}, "
                f"expected {SCHEMA_VERSION}; generate it again"
            )
        return meta

    def close(self) -> None:
        for conn in self._connections:
            conn.close()

    def __enter__(self) -> PopulationStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        conn = self._pool.get()
        try:
            yield conn
        finally:
            self._pool.put(conn)

    @staticmethod
    def _by_id(conn: sqlite3.Connection, national_id: int | None) -> Person | None:
        if national_id is None:
            return None
        row = conn.execute(f"{_SELECT} WHERE national_id = ?", (national_id,)).fetchone()
        return None if row is None else person_from_row(row)

    # --- the views the service offers

    def get_person(self, national_id: str) -> Person | None:
        """The person with this national ID, or ``None``."""
        key = _key(national_id)
        with self._connection() as conn:
            return self._by_id(conn, key)

    def address(self, national_id: str) -> dict[str, str] | None:
        """This person's home ``{"governorate", "locality", "street", "building"}``, or ``None``."""
        key = _key(national_id)
        with self._connection() as conn:
            row = conn.execute(
                "SELECT governorate, locality, street, building FROM persons WHERE national_id = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return {"governorate": row[0], "locality": row[1], "street": row[2], "building": row[3]}

    def family(self, national_id: str) -> dict[str, Any] | None:
        """``{"person", "parents", "spouse", "children"}`` for this person, or ``None``.

        ``parents`` lists those of father and mother who are in the registry (father first);
        ``children`` are ordered by date of birth.
        """
        key = _key(national_id)
        with self._connection() as conn:
            found = conn.execute(f"{_SELECT} WHERE national_id = ?", (key,)).fetchone()
            if found is None:
                return None
            row = PersonRow(*found)
            parent_column = "father_id" if row.sex == "M" else "mother_id"
            children = conn.execute(
                f"{_SELECT} WHERE {parent_column} = ? ORDER BY date_of_birth, national_id", (key,)
            ).fetchall()
            father_id, mother_id, spouse_id = row.father_id, row.mother_id, row.spouse_id
            relatives = {
                relative[0]: person_from_row(relative)
                for relative in conn.execute(
                    f"{_SELECT} WHERE national_id IN (?, ?, ?)", (father_id, mother_id, spouse_id)
                )
            }
        return {
            "person": person_from_row(row),
            "parents": [relatives[i] for i in (father_id, mother_id) if i in relatives],
            "spouse": relatives.get(spouse_id),
            "children": [person_from_row(child) for child in children],
        }

    def search(
        self, *, name: str | None = None, date_of_birth: str | None = None, limit: int = 20
    ) -> list[Person]:
        """People whose full name or family name is ``name`` and/or born on ``date_of_birth``.

        Latin names compare case-insensitively, Arabic ones exactly (after collapsing spaces);
        a name containing Arabic letters is looked up among the Arabic names. At least one
        criterion is required; ``limit`` is 1 to :data:`MAX_SEARCH_LIMIT`.
        """
        clauses: list[str] = []
        params: list[str | int] = []
        if name is not None:
            wanted = " ".join(name.split())
            if not wanted or len(wanted) > MAX_NAME_LENGTH:
                raise ValueError(f"name must be 1 to {MAX_NAME_LENGTH} characters")
            script = "ar" if _ARABIC.search(wanted) else "en"
            clauses.append(f"(full_{script} = ? OR family_{script} = ?)")
            params += [wanted, wanted]
        if date_of_birth is not None:
            clauses.append("date_of_birth = ?")
            params.append(_search_date(date_of_birth))
        if not clauses:
            raise ValueError("give a name, a date_of_birth or both")
        if not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise ValueError(f"limit must be 1 to {MAX_SEARCH_LIMIT}")
        sql = f"{_SELECT} WHERE {' AND '.join(clauses)} LIMIT ?"
        with self._connection() as conn:
            rows = conn.execute(sql, (*params, limit)).fetchall()
        return [person_from_row(row) for row in rows]

    def sample(self, count: int = 5, *, locality: str | None = None) -> list[Person]:
        """Living married adults with both parents and children in the registry, for demos.

        Picked at evenly spread points of the ID range, so they come from different families.
        """
        adult = (self.reference_date - timedelta(days=18 * 365 + 5)).isoformat()
        sql = (
            f"{_SELECT} AS p WHERE national_id >= ? AND date_of_death IS NULL"
            " AND marital_status = 'married' AND father_id IS NOT NULL AND mother_id IS NOT NULL"
            " AND date_of_birth <= ? AND (? IS NULL OR locality = ?)"
            " AND (EXISTS (SELECT 1 FROM persons WHERE father_id = p.national_id)"
            " OR EXISTS (SELECT 1 FROM persons WHERE mother_id = p.national_id))"
            " ORDER BY national_id LIMIT 1"
        )
        found: dict[int, Person] = {}
        with self._connection() as conn:
            low, high = conn.execute(
                "SELECT min(national_id), max(national_id) FROM persons"
            ).fetchone()
            if low is None:
                return []
            for step in range(count):
                start = low + (high - low) * step // count
                row = conn.execute(sql, (start, adult, locality, locality)).fetchone()
                if row is not None:
                    found.setdefault(row[0], person_from_row(row))
        return list(found.values())
