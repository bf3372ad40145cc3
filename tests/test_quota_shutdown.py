"""The quota store is never written by two threads at once, nor closed under a write.

A flush cancelled while its worker thread writes (server shutdown) used to release its lock at
once: the final flush then wrote on the same SQLite connection from a second thread and the
store was closed under the first, which crashed the process (a segmentation fault in sqlite3,
seen at the end of a test session).
"""

from __future__ import annotations

import asyncio
import threading
import time
from fractions import Fraction
from pathlib import Path

from exchange.server.quota_store import PersistentQuota, QuotaStore


class _WatchedStore(QuotaStore):
    """The real store; each write is slow and counts how many run at once."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.running = 0
        self.most = 0
        self.guard = threading.Lock()

    def save(self, entries: dict[tuple[str, str], Fraction], now: float) -> None:  # type: ignore[override]
        with self.guard:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.2)
            super().save(entries, now)
        finally:
            with self.guard:
                self.running -= 1


async def test_stop_waits_for_a_cancelled_write(tmp_path: Path) -> None:
    quota = PersistentQuota(tmp_path / "quota.sqlite", time.time, flush_seconds=3600)
    quota.store = _WatchedStore(tmp_path / "quota.sqlite")
    quota.start()
    writing = asyncio.create_task(quota.flush())
    await asyncio.sleep(0.05)  # the worker thread is inside save()
    writing.cancel()
    await quota.stop()  # the final flush and the close come after the cancelled write
    assert quota.store.most == 1
    assert writing.cancelled()
