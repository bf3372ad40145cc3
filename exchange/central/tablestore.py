"""One table of the central registry's SQLite file, on its own connection: the IO shell shared by
the stores of registration requests and of service declarations.

It opens the file of an existing registry (checked with :meth:`Registry.open`), sets the busy
timeout and creates the subclass's table; it knows nothing of what the table holds. Writes go
through :func:`exchange.transaction.write_transaction`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Self

from exchange.central.registry import Registry


class TableStore:
    """Blocking: call it from a worker thread in async code; one store per thread."""

    schema: ClassVar[str]
    """The ``CREATE TABLE IF NOT EXISTS`` statement of the subclass's table."""

    def __init__(self, db_path: Path) -> None:
        self._conn = sqlite3.connect(db_path, isolation_level=None)
        try:
            self._conn.execute("PRAGMA busy_timeout = 5000")
            self._conn.execute(self.schema)
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    @contextlib.contextmanager
    def open(cls, db_path: str | Path) -> Iterator[Self]:
        """Open the store of an existing central registry (checked with :meth:`Registry.open`)."""
        Registry.open(db_path).close()
        store = cls(Path(db_path))
        try:
            yield store
        finally:
            store.close()

    def close(self) -> None:
        self._conn.close()
