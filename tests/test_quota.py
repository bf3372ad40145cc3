"""Quotas per client per grant (issue 6 item 5): the GCRA limiter and its SQLite store."""

from __future__ import annotations

import math
import sqlite3
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import RateLimited
from exchange.policy.model import Rate
from exchange.policy.quota import QuotaExceeded, QuotaLimiter
from exchange.server.quota_store import PersistentQuota, QuotaStore

NOW = 1_700_000_000.25
KEY = ("telecom-sim", "PS/GOV/MOC/sim-registry")
OTHER_CLIENT = ("telecom-sim", "PS/GOV/MOC/other")
OTHER_GRANT = ("telecom-other", "PS/GOV/MOC/sim-registry")

rates = st.builds(
    Rate,
    st.integers(min_value=1, max_value=1000),
    st.sampled_from(["second", "minute", "hour", "day"]),
)


def _burst(limiter: QuotaLimiter, key: tuple[str, str], rate: Rate, now: float) -> int:
    """How many requests at one instant are allowed before the first refusal."""
    allowed = 0
    while limiter.check(key, rate, now) is None:
        allowed += 1
    return allowed


@pytest.mark.parametrize(
    ("rate", "retry_after"),
    [
        pytest.param("3/minute", 20.0, id="3-per-minute"),
        pytest.param("1/day", 86400.0, id="1-per-day"),
        pytest.param("7/second", 1 / 7, id="7-per-second"),
        pytest.param("600/minute", 0.1, id="600-per-minute"),
        pytest.param("100/hour", 36.0, id="100-per-hour"),
    ],
)
def test_n_allowed_then_refused_with_the_wait(rate: str, retry_after: float) -> None:
    limiter, parsed = QuotaLimiter(), Rate.parse(rate)
    assert _burst(limiter, KEY, parsed, NOW) == parsed.count
    assert limiter.check(KEY, parsed, NOW) == pytest.approx(retry_after)


def test_allowed_again_exactly_when_retry_after_says() -> None:
    limiter, rate = QuotaLimiter(), Rate.parse("3/minute")
    _burst(limiter, KEY, rate, NOW)
    wait = limiter.check(KEY, rate, NOW)
    assert wait == 20.0
    assert limiter.check(KEY, rate, NOW + 19.999) is not None
    assert limiter.check(KEY, rate, NOW + wait) is None
    assert limiter.check(KEY, rate, NOW + wait) == 20.0


def test_a_full_quota_again_after_the_window() -> None:
    limiter, rate = QuotaLimiter(), Rate.parse("3/minute")
    _burst(limiter, KEY, rate, NOW)
    assert _burst(limiter, KEY, rate, NOW + 60) == 3


def test_refused_requests_are_not_counted() -> None:
    limiter, rate = QuotaLimiter(), Rate.parse("2/minute")
    _burst(limiter, KEY, rate, NOW)
    for _ in range(50):
        assert limiter.check(KEY, rate, NOW + 1) is not None
    assert limiter.check(KEY, rate, NOW + 30) is None


@pytest.mark.parametrize(
    "other",
    [pytest.param(OTHER_CLIENT, id="other-client"), pytest.param(OTHER_GRANT, id="other-grant")],
)
def test_keys_are_independent(other: tuple[str, str]) -> None:
    limiter, rate = QuotaLimiter(), Rate.parse("3/minute")
    _burst(limiter, KEY, rate, NOW)
    assert _burst(limiter, other, rate, NOW) == 3
    assert limiter.check(KEY, rate, NOW) is not None


def test_a_lowered_rate_blocks_for_at_most_its_period() -> None:
    limiter = QuotaLimiter()
    _burst(limiter, KEY, Rate.parse("1/day"), NOW)
    wait = limiter.check(KEY, Rate.parse("5/second"), NOW)
    assert wait == pytest.approx(0.2)
    assert _burst(limiter, KEY, Rate.parse("5/second"), NOW + 1) == 5


def test_quota_exceeded_is_rate_limited_with_whole_seconds() -> None:
    limiter, rate = QuotaLimiter(), Rate.parse("7/second")
    _burst(limiter, KEY, rate, NOW)
    with pytest.raises(QuotaExceeded) as info:
        limiter.check_or_raise(KEY, rate, NOW)
    err = info.value
    assert isinstance(err, RateLimited)
    assert (err.code, err.status, err.retry_after) == ("Server.ServerProxy.RateLimited", 429, 1)
    assert err.message.startswith("quota of 7/second for grant telecom-sim exceeded")
    assert KEY[1] in err.internal


def test_prune_forgets_full_buckets_only() -> None:
    limiter, rate = QuotaLimiter(), Rate.parse("3/minute")
    limiter.check(KEY, rate, NOW)
    limiter.check(OTHER_CLIENT, rate, NOW + 30)
    assert limiter.prune(NOW + 20) == 1
    assert list(limiter.state()) == [OTHER_CLIENT]


@given(
    rate=rates,
    gaps=st.lists(st.floats(min_value=0, max_value=4000, allow_nan=False), max_size=60),
)
def test_never_more_than_the_token_bucket_bound(rate: Rate, gaps: list[float]) -> None:
    """Over any span of length L, at most N + L * N / period requests are allowed."""
    limiter, now, allowed = QuotaLimiter(), NOW, []
    for gap in gaps:
        now += gap
        if limiter.check(KEY, rate, now) is None:
            allowed.append(now)
    period = rate.period_seconds
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            span = Fraction(allowed[j]) - Fraction(start)
            assert j - i + 1 <= rate.count + span * rate.count / period


@given(rate=rates, later=st.floats(min_value=0, max_value=200_000, allow_nan=False))
def test_retry_after_is_exact(rate: Rate, later: float) -> None:
    """Refused at t with wait w: still refused just before t + w, allowed from t + w on."""
    limiter = QuotaLimiter()
    assert _burst(limiter, KEY, rate, NOW) == rate.count
    now = NOW + later
    wait = limiter.check(KEY, rate, now)
    if wait is None:
        return
    assert 0 < wait <= rate.period_seconds / rate.count
    # (float epoch seconds resolve to about 0.25 µs; the margin is well above that)
    assert limiter.check(KEY, rate, now + wait - 1e-5) is not None
    assert QuotaLimiter(limiter.state()).check(KEY, rate, now + wait + 1e-5) is None
    assert QuotaLimiter(limiter.state()).check(KEY, rate, now + math.ceil(wait)) is None


# --- persistence ---------------------------------------------------------------------------------


def test_state_round_trips_through_the_store(tmp_path: Path) -> None:
    limiter, rate = QuotaLimiter(), Rate.parse("7/minute")
    _burst(limiter, KEY, rate, NOW)
    limiter.check(OTHER_GRANT, rate, NOW)
    store = QuotaStore(tmp_path / "quota.sqlite")
    assert store.open() == {}
    store.save(limiter.take_dirty(), NOW)
    store.close()
    again = QuotaStore(tmp_path / "quota.sqlite")
    try:
        loaded = again.open()
    finally:
        again.close()
    assert loaded == limiter.state()
    restored = QuotaLimiter(loaded)
    assert restored.check(KEY, rate, NOW) == limiter.check(KEY, rate, NOW)
    assert _burst(restored, OTHER_GRANT, rate, NOW) == 6


def test_store_deletes_full_buckets(tmp_path: Path) -> None:
    store = QuotaStore(tmp_path / "quota.sqlite")
    store.open()
    try:
        store.save({KEY: Fraction(NOW) + 20, OTHER_CLIENT: Fraction(NOW) + 40}, NOW)
        store.save({}, NOW + 30)
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / "quota.sqlite")
    try:
        assert conn.execute("SELECT grant_id, client FROM quota").fetchall() == [OTHER_CLIENT]
    finally:
        conn.close()


def test_take_dirty_returns_each_count_once() -> None:
    limiter, rate = QuotaLimiter(), Rate.parse("3/minute")
    limiter.check(KEY, rate, NOW)
    assert set(limiter.take_dirty()) == {KEY}
    assert limiter.take_dirty() == {}
    limiter.mark_dirty([KEY, OTHER_GRANT])
    assert set(limiter.take_dirty()) == {KEY}


async def test_persistent_quota_survives_a_restart(tmp_path: Path) -> None:
    clock = [NOW]
    rate = Rate.parse("3/minute")
    first = PersistentQuota(tmp_path / "quota.sqlite", lambda: clock[0], flush_seconds=3600)
    first.start()
    for _ in range(3):
        first.check_or_raise(KEY, rate)
    await first.stop()
    second = PersistentQuota(tmp_path / "quota.sqlite", lambda: clock[0], flush_seconds=3600)
    second.start()
    try:
        with pytest.raises(QuotaExceeded) as info:
            second.check_or_raise(KEY, rate)
        assert info.value.retry_after == 20
        clock[0] += 60
        for _ in range(3):
            second.check_or_raise(KEY, rate)
    finally:
        await second.stop()


async def test_periodic_flush_writes_without_a_stop(tmp_path: Path) -> None:
    quota = PersistentQuota(tmp_path / "quota.sqlite", lambda: NOW, flush_seconds=3600)
    quota.start()
    try:
        quota.check_or_raise(KEY, Rate.parse("3/minute"))
        await quota.flush()
        reader = QuotaStore(tmp_path / "quota.sqlite")
        try:
            assert reader.open() == {KEY: Fraction(NOW) + 20}
        finally:
            reader.close()
    finally:
        await quota.stop()


async def test_stop_without_start_is_harmless(tmp_path: Path) -> None:
    await PersistentQuota(tmp_path / "quota.sqlite", lambda: NOW).stop()


def test_a_failed_save_writes_nothing_and_the_next_save_works(tmp_path: Path) -> None:
    """The insert and the delete are one transaction: when the delete fails, the insert is
    rolled back, the error is raised, and the connection is free for the next write."""
    path = tmp_path / "quota.sqlite"
    store = QuotaStore(path)
    store.open()
    try:
        store.save({KEY: Fraction(NOW) + 20}, NOW)
        _execute(
            path,
            "CREATE TRIGGER no_delete BEFORE DELETE ON quota BEGIN SELECT RAISE(ABORT, 'no'); END",
        )
        with pytest.raises(sqlite3.IntegrityError, match="no"):
            store.save({OTHER_CLIENT: Fraction(NOW) + 40}, NOW + 30)
        assert _rows(path) == [KEY]
        _execute(path, "DROP TRIGGER no_delete")
        store.save({OTHER_CLIENT: Fraction(NOW) + 40}, NOW + 30)
    finally:
        store.close()
    assert _rows(path) == [OTHER_CLIENT]


def _execute(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def _rows(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return [(g, c) for g, c in conn.execute("SELECT grant_id, client FROM quota")]
    finally:
        conn.close()
