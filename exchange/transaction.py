"""One SQLite write transaction, the way every store here writes: ``BEGIN IMMEDIATE`` takes the
write lock up front, so a concurrent writer (another process on the same file) waits for it
instead of failing halfway; any failure, even of the ``COMMIT``, rolls back.

For connections opened with ``isolation_level=None`` (explicit transactions). IO only.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


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
