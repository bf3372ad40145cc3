"""Quota state that survives a restart: the limiter's TATs in SQLite (``quota.sqlite``).

:class:`QuotaStore` is the file: one row per ``(grant id, client id)`` with the exact theoretical
arrival time of :mod:`exchange.policy.quota` (a fraction, as text) and, for pruning, the same
time as a float. :class:`PersistentQuota` is what the security server holds: it loads the file at
start into a :class:`~exchange.policy.quota.QuotaLimiter`, counts requests in memory, and writes
the keys counted since the last write once a second in a worker thread (never on the event
loop), and once more at stop.

What a crash can lose: the counting of at most the last flush interval (one second), so after a
crash a client may get that second's requests again. A clean stop loses nothing. Rows whose
bucket is full again are deleted at each write, so the file holds only clients that used their
quota recently. The file is in the server's state directory; WAL with ``synchronous=NORMAL``: a
power loss may lose the last write, which is within what a crash may lose anyway.

This module does not judge requests (that is the limiter) nor decide which rate applies (that is
the access policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Final

from exchange.errors import ConfigurationError
from exchange.policy.model import Rate
from exchange.policy.quota import QuotaKey, QuotaLimiter
from exchange.transaction import write_transaction

log = logging.getLogger("exchange.server.quota")

FLUSH_SECONDS: Final = 1.0
QUOTA_FILE: Final = "quota.sqlite"
"""The quota store's file name in the server's state directory."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS quota (
    grant_id TEXT NOT NULL,
    client TEXT NOT NULL,
    tat TEXT NOT NULL,
    tat_seconds REAL NOT NULL,
    PRIMARY KEY (grant_id, client)
) WITHOUT ROWID
"""


class QuotaStore:
    """The SQLite file of quota state. One writer; calls may come from a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def open(self) -> dict[QuotaKey, Fraction]:
        """Open (creating if needed) and return every stored TAT."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot open the quota store {self.path}: {exc}") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            rows = conn.execute("SELECT grant_id, client, tat FROM quota").fetchall()
        except sqlite3.Error as exc:
            conn.close()
            raise ConfigurationError(f"the quota store {self.path} is unusable: {exc}") from None
        self._conn = conn
        return {(grant_id, client): Fraction(tat) for grant_id, client, tat in rows}

    def save(self, entries: Mapping[QuotaKey, Fraction], now: float) -> None:
        """Write ``entries`` and delete rows whose bucket is full again at ``now``, atomically."""
        conn = self._connection()
        rows = [(g, c, str(tat), float(tat)) for (g, c), tat in entries.items()]
        with write_transaction(conn):
            conn.executemany("INSERT OR REPLACE INTO quota VALUES (?, ?, ?, ?)", rows)
            conn.execute("DELETE FROM quota WHERE tat_seconds <= ?", (now,))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the quota store is not open")
        return self._conn


class PersistentQuota:
    """A :class:`QuotaLimiter` loaded from and written back to a :class:`QuotaStore`."""

    def __init__(
        self, path: Path, clock: Callable[[], float], *, flush_seconds: float = FLUSH_SECONDS
    ) -> None:
        self.store = QuotaStore(path)
        self.limiter = QuotaLimiter()
        self.clock = clock
        self.flush_seconds = flush_seconds
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        """Load the stored state and begin writing it back every ``flush_seconds``."""
        self.limiter = QuotaLimiter(self.store.open())
        self._task = asyncio.create_task(self._run())

    def check_or_raise(self, key: QuotaKey, rate: Rate) -> None:
        """Count a request for ``key`` now, or raise :class:`.QuotaExceeded`."""
        self.limiter.check_or_raise(key, rate, self.clock())

    async def flush(self) -> None:
        """Write the keys counted since the last write, in a worker thread."""
        async with self._lock:
            now = self.clock()
            dirty = self.limiter.take_dirty()
            self.limiter.prune(now)
            write = asyncio.ensure_future(asyncio.to_thread(self.store.save, dirty, now))
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                # the thread goes on writing: hold the lock until it is done, so that no other
                # write or the close overlaps it on the same connection (that crashed sqlite3)
                with contextlib.suppress(Exception):
                    await write
                self.limiter.mark_dirty(dirty)
                raise
            except BaseException:
                self.limiter.mark_dirty(dirty)
                raise

    async def stop(self) -> None:
        """Stop the writer, write what is left and close the file."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        try:
            await self.flush()
        finally:
            self.store.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except (sqlite3.Error, OSError) as exc:
                log.error("writing the quota store %s failed: %s", self.store.path, exc)
