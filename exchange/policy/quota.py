"""Quotas per client per grant (docs/design.md §7, ``rate = "N/period"``): a sans-IO limiter.

The limiter is the Generic Cell Rate Algorithm (GCRA; ATM Forum Traffic Management 4.0), which is
a token bucket of capacity N refilled at N per period, kept as one number per key: the
*theoretical arrival time* (TAT). A key is ``(grant id, client id)``, so every client of a group
grant has its own quota. What a rate ``N/period`` guarantees:

- a burst of N requests at one instant is allowed, the next one refused;
- afterwards one request is allowed every ``period / N`` seconds, so over any span of length L at
  most ``N + L * N / period`` requests are allowed (a fixed window of one period therefore sees
  at most ``2N - 1``; the long-run average is N per period);
- a refusal says exactly when the next request would be allowed (``Retry-After``);
- refused requests are not counted.

Times are exact (:class:`fractions.Fraction`), so ``period / N`` never rounds a burst to N - 1.
When a grant's rate is lowered while a client is far ahead, its TAT is capped at one period
ahead, so a policy change never blocks a client for longer than the new period.

This module keeps state in memory and does no IO; ``now`` is explicit. Persistence (load at
start, batched writes) is :mod:`exchange.server.quota_store`; the provider server calls
:meth:`QuotaLimiter.check` after an allowed policy decision.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from fractions import Fraction

from exchange.errors import RateLimited
from exchange.policy.model import Rate

QuotaKey = tuple[str, str]
"""``(grant id, client id)``: one quota per client per grant."""


class QuotaExceeded(RateLimited):
    """``Server.ServerProxy.RateLimited`` (429) with the whole seconds to wait for
    ``Retry-After`` (RFC 9110 §10.2.3, delay-seconds, rounded up)."""

    def __init__(self, rate: Rate, grant_id: str, client: str, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            f"quota of {rate} for grant {grant_id} exceeded; retry after {self.retry_after} s",
            internal=f"client {client}, grant {grant_id}, rate {rate}, "
            f"next request allowed in {retry_after:.3f} s",
        )


class QuotaLimiter:
    """GCRA state for all keys; :meth:`check` both judges and counts a request."""

    __slots__ = ("_dirty", "_tat")

    def __init__(self, state: Mapping[QuotaKey, Fraction] | None = None) -> None:
        self._tat: dict[QuotaKey, Fraction] = dict(state or {})
        self._dirty: set[QuotaKey] = set()

    def check(self, key: QuotaKey, rate: Rate, now: float) -> float | None:
        """``None`` if a request at ``now`` is within ``rate`` (and count it), else the seconds
        until the next request would be allowed."""
        t_now = Fraction(now)
        period = Fraction(rate.period_seconds)
        interval = period / rate.count
        # (1) the bucket as of now: never behind now, never more than one period ahead
        tat = max(self._tat.get(key, t_now), t_now)
        if tat > t_now + period:
            tat = self._tat[key] = t_now + period
            self._dirty.add(key)
        # (2) one more request must fit in the burst tolerance: new TAT at most a period ahead
        new_tat = tat + interval
        if new_tat - t_now > period:
            return float(new_tat - period - t_now)
        # (3) counted
        self._tat[key] = new_tat
        self._dirty.add(key)
        return None

    def check_or_raise(self, key: QuotaKey, rate: Rate, now: float) -> None:
        """:meth:`check`, raising :class:`QuotaExceeded` when the quota is used up."""
        wait = self.check(key, rate, now)
        if wait is not None:
            raise QuotaExceeded(rate, key[0], key[1], wait)

    def take_dirty(self) -> dict[QuotaKey, Fraction]:
        """The keys counted since the last call, with their current TAT; clears the mark."""
        dirty = {k: self._tat[k] for k in self._dirty if k in self._tat}
        self._dirty.clear()
        return dirty

    def mark_dirty(self, keys: Iterable[QuotaKey]) -> None:
        """Mark ``keys`` for the next :meth:`take_dirty` again (a write that failed)."""
        self._dirty.update(k for k in keys if k in self._tat)

    def prune(self, now: float) -> int:
        """Forget keys whose bucket is full again (TAT not after ``now``); returns how many."""
        t_now = Fraction(now)
        done = [k for k, tat in self._tat.items() if tat <= t_now]
        for key in done:
            del self._tat[key]
        return len(done)

    def state(self) -> dict[QuotaKey, Fraction]:
        return dict(self._tat)

    def __len__(self) -> int:
        return len(self._tat)
