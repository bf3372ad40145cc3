"""One SQLite write transaction, the way every store here writes: ``BEGIN IMMEDIATE`` takes the
write lock up front, so a concurrent writer (another process on the same file) waits for it
instead of failing halfway; any failure, even of the ``COMMIT``, rolls back.

For connections opened with ``isolation_level=None`` (explicit transactions), as
:func:`open_versioned_store` opens them. IO only.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from exchange.errors import ConfigurationError


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` .. ``COMMIT``; on any failure, a rollback and the failure raised."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def open_versioned_store(path: Path, schema: str, version: int, what: str) -> sqlite3.Connection:
    """Open (creating) a store whose schema is ``schema`` at ``PRAGMA user_version`` ``version``:
    WAL, ``synchronous = FULL``, a 5 s busy timeout. An empty file gets the schema; a file that
    is not such a store (another version, not SQLite) is a :class:`ConfigurationError` naming it
    as not ``what`` (e.g. "an enrolment token store")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        with write_transaction(conn):
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if found == 0 and tables == 0:
                for statement in schema.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {int(version)}")
            elif found != version:
                raise ConfigurationError(f"{path} is not {what} (schema {found})")
    except sqlite3.DatabaseError:
        conn.close()
        raise ConfigurationError(f"{path} is not {what}") from None
    except BaseException:
        conn.close()
        raise
    return conn
