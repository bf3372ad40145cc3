"""Time-stamp a tree head on the spot, for an evidence bundle (X-Road's "force").

A running security server is asked with SIGUSR1 (it signs a head over its whole log and has it
time-stamped at once); a stopped one is stamped here, with its own signing key and the approved
TSAs of the global configuration it holds, which the caller loads (:class:`OfflineStamping`).
Either way the new token is in the server's log.

This module reads no server configuration: the command line passes the paths and, for a stopped
server, the key and the configuration.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from exchange.errors import ConfigurationError
from exchange.globalconf.document import GlobalConf
from exchange.identifiers import SecurityServerId
from exchange.messagelog.store import MessageLog, open_readonly
from exchange.messagelog.timestamping import TreeHeadStamper
from exchange.pidfile import live_pid
from exchange.protocol.jws import Signer


@dataclass(frozen=True, slots=True)
class OfflineStamping:
    """What stamping a stopped server's log takes: its owner's signing key and the global
    configuration it holds (the approved TSAs)."""

    owner: SecurityServerId
    signer: Signer
    conf: GlobalConf


def _sizes(log_path: Path) -> tuple[int, int]:
    """(records in the log, size of the latest time-stamped tree head)."""
    conn = open_readonly(log_path)
    try:
        # the next seq, not a count: archived records have left the table
        (records,) = conn.execute(
            "SELECT coalesce(max(seq) + 1, (SELECT max(size) FROM tree_heads), 0) FROM records"
        ).fetchone()
        row = conn.execute("SELECT max(size) FROM timestamps").fetchone()
    finally:
        conn.close()
    return int(records), int(row[0] or 0)


async def stamp_on_the_spot(
    log_path: Path,
    pid_file: Path,
    offline: Callable[[], OfflineStamping],
    *,
    timeout: float = 20.0,
) -> None:
    """Make a time-stamped tree head cover every record now in the log at ``log_path``: asked of
    the server whose pid ``pid_file`` holds if it runs, else done here with ``offline()``."""
    records, stamped = _sizes(log_path)
    if stamped >= records:
        return
    pid = live_pid(pid_file)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGUSR1)
        except PermissionError:
            raise ConfigurationError(
                f"the server (pid {pid}) runs as another user: export its evidence as that user"
            ) from None
        deadline = time.monotonic() + timeout
        while _sizes(log_path)[1] < records:  # the server writes the token into its log
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the running server did not time-stamp a tree head within {timeout:g} s "
                    "(is an approved TSA reachable? see the server's log)"
                )
            await asyncio.sleep(0.1)
        return
    await _stamp_offline(log_path, offline())


async def _stamp_offline(log_path: Path, stamping: OfflineStamping) -> None:
    log = MessageLog(log_path, stamping.signer, owner=stamping.owner)
    conf = stamping.conf
    log.open(trusted_cas=conf.ca_certs())
    try:
        stamper = TreeHeadStamper(log, lambda: conf, clock=time.time, failure_limit=float("inf"))
        if await stamper.stamp_now() is None:
            raise ConfigurationError(
                "no approved TSA could time-stamp the tree head (see the messages above)"
            )
    finally:
        log.close()
