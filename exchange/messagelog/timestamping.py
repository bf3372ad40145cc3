"""Time-stamped tree heads: the security server's half of docs/design.md §8.

A :class:`TreeHeadStamper` signs a tree head of the message log and has an approved TSA
time-stamp it (RFC 3161): once at start, then on the global configuration's interval
(``settings.timestamping_interval_seconds``), on demand (:meth:`TreeHeadStamper.stamp_now`) and
at shutdown. The stamped digest is SHA-256 of the tree head's compact JWS
(:func:`exchange.messagelog.store.tree_head_digest`); the approved TSAs are tried in the
configuration's order and the first verified token is kept in the log. A head whose size is
stamped already is not stamped again.

When time-stamping fails the server keeps serving and retries on the next interval. Once it has
failed for longer than ``[messagelog] timestamping_failure_limit`` seconds since the last success
(the start counts as one), :meth:`TreeHeadStamper.refusal` says why exchanges must be refused,
until a stamp succeeds again, as X-Road's message log does. With no approved TSA in the global
configuration nothing is stamped and nothing is refused.

This module does not verify stored tokens (auditor tooling) nor speak RFC 3161 itself
(``exchange.trust.tsa_service``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from exchange.errors import ExchangeError
from exchange.globalconf.document import GlobalConf
from exchange.messagelog.store import MessageLog, StoredTimestamp, TreeHead, tree_head_digest
from exchange.trust.timestamp import TimestampError
from exchange.trust.tsa_service import TimestampClient

log = logging.getLogger("exchange.messagelog.timestamping")

DEFAULT_INTERVAL_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 10.0


class TreeHeadStamper:
    """Keeps the message log's tree heads time-stamped and tracks how long that has failed."""

    def __init__(
        self,
        message_log: MessageLog,
        conf: Callable[[], GlobalConf | None],
        *,
        clock: Callable[[], float],
        failure_limit: float,
    ) -> None:
        self._log = message_log
        self._conf = conf
        self._clock = clock
        self.failure_limit = failure_limit
        self._lock = asyncio.Lock()
        self._told_no_tsa = False
        self.last_success = clock()
        self.failing_since: float | None = None

    async def run(self) -> None:
        """Stamp now, then on every interval, until cancelled."""
        while True:
            await self.stamp_now()
            await asyncio.sleep(self.interval())

    def interval(self) -> float:
        conf = self._conf()
        if conf is None:
            return DEFAULT_INTERVAL_SECONDS
        return float(conf.settings.timestamping_interval_seconds)

    async def stamp_now(
        self, *, timeout: float = REQUEST_TIMEOUT_SECONDS
    ) -> StoredTimestamp | None:
        """Sign a tree head over the whole log and time-stamp it unless that size is stamped.

        Returns the latest stored time-stamp, or None when there is no approved TSA or every
        approved TSA failed (recorded in :attr:`failing_since`; never raised).
        """
        async with self._lock:
            conf = self._conf()
            if conf is None or not conf.approved_tsas:
                self._no_tsa()
                return None
            self._told_no_tsa = False
            try:
                head = await self._log.sign_tree_head()
                stamp = await self._stamped(head, conf, timeout)
            except ExchangeError as exc:
                self._failed(exc)
                return None
            self._succeeded()
            return stamp

    async def _stamped(self, head: TreeHead, conf: GlobalConf, timeout: float) -> StoredTimestamp:
        latest = self._log.latest_timestamp()
        if latest is not None and latest.size >= head.size:
            return latest
        digest = tree_head_digest(head)
        failures = []
        async with TimestampClient(clock=self._clock) as client:
            for tsa in conf.approved_tsas:
                try:
                    token, info = await client.request(
                        digest,
                        tsa.url,
                        tsa_certs=conf.tsa_certs(),
                        ca_certs=conf.ca_certs(),
                        timeout=timeout,
                    )
                except TimestampError as exc:
                    failures.append(f"{tsa.name}: {exc.message}")
                    continue
                gen_time_ms = int(info.gen_time.timestamp() * 1000)
                return await self._log.add_timestamp(head.size, token, tsa.name, gen_time_ms)
        raise TimestampError(
            f"no approved TSA time-stamped the tree head of size {head.size}: "
            + "; ".join(failures)
        )

    def _no_tsa(self) -> None:
        self.failing_since = None
        self.last_success = self._clock()
        if not self._told_no_tsa:
            log.warning("no approved TSA in the global configuration: tree heads are not stamped")
            self._told_no_tsa = True

    def _failed(self, exc: ExchangeError) -> None:
        if self.failing_since is None:
            self.failing_since = self._clock()
        log.error("time-stamping the message log failed (will retry): %s", exc.message)

    def _succeeded(self) -> None:
        if self.failing_since is not None:
            log.info("time-stamping the message log works again")
        self.failing_since = None
        self.last_success = self._clock()

    def refusal(self) -> str | None:
        """Why exchanges must be refused now, or None while time-stamping is within its limit."""
        if self.failing_since is None:
            return None
        failed_for = self._clock() - self.last_success
        if failed_for <= self.failure_limit:
            return None
        return (
            f"the message log has not been time-stamped for {failed_for:.0f} s "
            f"(limit {self.failure_limit:.0f} s): exchanges are refused until a TSA answers"
        )

    def health(self) -> dict[str, Any]:
        return {
            "last_success": _iso(self.last_success),
            "last_stamped_size": self._log.latest_timestamped_size(),
            "failing_since": _iso(self.failing_since) if self.failing_since is not None else None,
        }


def _iso(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).isoformat()
