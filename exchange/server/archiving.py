"""Retention: the running server moves old records of its message log to signed archive files.

Every ``[retention] archive_interval`` seconds, the records older than ``retention_days`` (and
covered by a time-stamped tree head) go to archive files (:mod:`exchange.messagelog.archive`),
in a thread, so reading, zipping and signing never block the event loop. A failure is logged,
never raised: the log stays as it was and the next run retries. ``state`` is what ``/health``
shows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from exchange.errors import ExchangeError
from exchange.messagelog.archive import ArchiveIndexEntry, ArchivingBusy, archive_log, archived_end
from exchange.protocol.jws import Signer
from exchange.server.config import ServerConfig
from exchange.utc import utc

log = logging.getLogger("exchange.server")


class LogArchiver:
    def __init__(
        self,
        config: Callable[[], ServerConfig],
        signer: Callable[[], Signer],
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._signer = signer
        self._clock = clock
        self.state: dict[str, Any] = {"last_run": None, "last_error": None, "archived": 0}

    async def run(self) -> None:
        """One run every ``archive_interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self._config().retention.interval)
            await self.archive_now()

    async def archive_now(self) -> list[ArchiveIndexEntry]:
        """One archiving run; the archive files written (none when it failed or was busy)."""
        config = self._config()
        retention = config.retention
        days = retention.days if retention.days is not None else 0.0
        cutoff_ms = int((self._clock() - days * 86400) * 1000)
        try:
            written = await asyncio.to_thread(
                archive_log,
                config.log_path,
                retention.archive_dir,
                self._signer(),
                older_than_ms=cutoff_ms,
                max_records=retention.max_records,
                now=self._clock,
            )
        except ArchivingBusy:
            log.info("an operator's archiving run is in progress; archiving on the next interval")
            return []
        except (ExchangeError, OSError) as exc:
            log.error("archiving the message log failed (will retry): %s", exc)
            self.state["last_error"] = str(exc)
            return []
        self.state["last_run"] = utc(self._clock()).isoformat()
        self.state["last_error"] = None
        self.state["archived"] = await asyncio.to_thread(archived_end, config.log_path)
        for entry in written:
            log.info(
                "archived message log records %d..%d to %s",
                entry.first_seq,
                entry.end_seq - 1,
                retention.archive_dir / entry.file,
            )
        return written
