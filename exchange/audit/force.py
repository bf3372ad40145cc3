"""Time-stamp a tree head on the spot, for an evidence bundle (X-Road's "force").

A running security server is asked with SIGUSR1 (it signs a head over its whole log and has it
time-stamped at once); a stopped one is stamped here, with its own signing key and the approved
TSAs of the global configuration it holds. Either way the new token is in the server's log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from exchange.errors import ConfigurationError
from exchange.globalconf.verifier import load_stored
from exchange.messagelog.store import MessageLog, open_readonly
from exchange.protocol.jws import Signer
from exchange.server.config import ServerConfig, pid_file_of
from exchange.server.core import passphrase_from_env
from exchange.server.timestamping import TreeHeadStamper
from exchange.trust.keys import load_certificate, load_private_key


def _running_pid(config: ServerConfig) -> int | None:
    try:
        pid = int(pid_file_of(config.path).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _sizes(config: ServerConfig) -> tuple[int, int]:
    """(records in the log, size of the latest time-stamped tree head)."""
    conn = open_readonly(config.log_path)
    try:
        # the next seq, not a count: archived records have left the table
        (records,) = conn.execute(
            "SELECT coalesce(max(seq) + 1, (SELECT max(size) FROM tree_heads), 0) FROM records"
        ).fetchone()
        row = conn.execute("SELECT max(size) FROM timestamps").fetchone()
    finally:
        conn.close()
    return int(records), int(row[0] or 0)


async def stamp_on_the_spot(config: ServerConfig, *, timeout: float = 20.0) -> None:
    """Make a time-stamped tree head cover every record now in the log."""
    records, stamped = _sizes(config)
    if stamped >= records:
        return
    pid = _running_pid(config)
    if pid is not None:
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while _sizes(config)[1] < records:  # the server writes the token into its log
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the running server did not time-stamp a tree head within {timeout:g} s "
                    "(is an approved TSA reachable? see the server's log)"
                )
            await asyncio.sleep(0.1)
        return
    await _stamp_offline(config)


async def _stamp_offline(config: ServerConfig) -> None:
    owner = next((s for s in config.signing if s.member == config.owner), config.signing[0])
    passphrase = passphrase_from_env(config)
    signer = Signer(load_private_key(owner.key, passphrase), load_certificate(owner.cert))
    conf = load_stored(config.anchor, config.globalconf_state, int(time.time()))
    if conf is None:
        raise ConfigurationError(
            f"{config.globalconf_state} does not exist: the server has never received a global "
            "configuration, so it knows no approved TSA"
        )
    log = MessageLog(config.log_path, signer)
    log.open()
    try:
        stamper = TreeHeadStamper(log, lambda: conf, clock=time.time, failure_limit=float("inf"))
        if await stamper.stamp_now() is None:
            raise ConfigurationError(
                "no approved TSA could time-stamp the tree head (see the messages above)"
            )
    finally:
        log.close()
