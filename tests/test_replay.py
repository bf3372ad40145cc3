"""Freshness and replay protection (docs/design.md §5): each message id once per client within the
clock skew window; stale and future requests refused; memory bounded by pruning."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import ExchangeError, ReplayedMessage, StaleMessage
from exchange.server.replay import ReplayCache

SKEW = 60
SKEW_MS = SKEW * 1000
NOW = 1_700_000_000_000
MOF = "PS/GOV/MOF/tax-office"
POST = "PS/GOV/MOC/post-office"


def test_accepted_once() -> None:
    cache = ReplayCache(SKEW)
    cache.check_and_add(MOF, "m1", NOW, NOW)
    assert len(cache) == 1


@pytest.mark.parametrize(
    "later_ms",
    [
        pytest.param(0, id="same-instant"),
        pytest.param(1, id="1ms-later"),
        pytest.param(SKEW_MS, id="end-of-window"),
    ],
)
def test_replay_within_window(later_ms: int) -> None:
    cache = ReplayCache(SKEW)
    cache.check_and_add(MOF, "m1", NOW, NOW)
    with pytest.raises(ReplayedMessage) as info:
        cache.check_and_add(MOF, "m1", NOW, NOW + later_ms)
    assert info.value.code == "Server.ServerProxy.ReplayedMessage"
    assert info.value.status == 409


def test_replay_with_other_signed_time_is_still_a_replay() -> None:
    cache = ReplayCache(SKEW)
    cache.check_and_add(MOF, "m1", NOW, NOW)
    with pytest.raises(ReplayedMessage):
        cache.check_and_add(MOF, "m1", NOW + 5, NOW + 10)


def test_same_id_for_another_client_is_accepted() -> None:
    cache = ReplayCache(SKEW)
    cache.check_and_add(MOF, "m1", NOW, NOW)
    cache.check_and_add(POST, "m1", NOW, NOW)
    assert len(cache) == 2


def test_other_ids_are_accepted() -> None:
    cache = ReplayCache(SKEW)
    for i in range(100):
        cache.check_and_add(MOF, f"m{i}", NOW, NOW + i)
    assert len(cache) == 100


@pytest.mark.parametrize(
    ("signed_ms", "now_ms"),
    [
        pytest.param(NOW - SKEW_MS - 1, NOW, id="1ms-too-old"),
        pytest.param(NOW - 10 * SKEW_MS, NOW, id="long-ago"),
        pytest.param(NOW + SKEW_MS + 1, NOW, id="1ms-in-the-future"),
        pytest.param(NOW + 10 * SKEW_MS, NOW, id="far-future"),
        pytest.param(0, NOW, id="epoch"),
        pytest.param(-(2**63), NOW, id="most-negative"),
        pytest.param(2**63 - 1, NOW, id="most-positive"),
    ],
)
def test_stale_and_future_requests(signed_ms: int, now_ms: int) -> None:
    cache = ReplayCache(SKEW)
    with pytest.raises(StaleMessage) as info:
        cache.check_and_add(MOF, "m1", signed_ms, now_ms)
    assert info.value.code == "Server.ServerProxy.StaleMessage"
    assert len(cache) == 0


@pytest.mark.parametrize(
    "signed_ms",
    [
        pytest.param(NOW - SKEW_MS, id="oldest-allowed"),
        pytest.param(NOW + SKEW_MS, id="newest-allowed"),
    ],
)
def test_edges_of_the_window_are_accepted(signed_ms: int) -> None:
    ReplayCache(SKEW).check_and_add(MOF, "m1", signed_ms, NOW)


def test_stale_request_is_not_remembered() -> None:
    cache = ReplayCache(SKEW)
    with pytest.raises(StaleMessage):
        cache.check_and_add(MOF, "m1", NOW - 2 * SKEW_MS, NOW)
    cache.check_and_add(MOF, "m1", NOW, NOW)


def test_replay_after_the_window_is_stale() -> None:
    cache = ReplayCache(SKEW)
    cache.check_and_add(MOF, "m1", NOW, NOW)
    with pytest.raises(StaleMessage):
        cache.check_and_add(MOF, "m1", NOW, NOW + SKEW_MS + 1)


def test_pruning_after_twice_the_skew() -> None:
    cache = ReplayCache(SKEW)
    for i in range(50):
        cache.check_and_add(MOF, f"old{i}", NOW, NOW)
    assert len(cache) == 50
    cache.check_and_add(MOF, "new", NOW + 2 * SKEW_MS, NOW + 2 * SKEW_MS)
    assert len(cache) == 51, "entries exactly 2×skew old are kept"
    cache.check_and_add(MOF, "newer", NOW + 2 * SKEW_MS + 1, NOW + 2 * SKEW_MS + 1)
    assert len(cache) == 2


def test_memory_stays_bounded_under_steady_traffic() -> None:
    cache = ReplayCache(SKEW)
    for second in range(1000):
        now = NOW + second * 1000
        cache.check_and_add(MOF, f"m{second}", now, now)
    assert len(cache) <= 2 * SKEW + 1


def test_seed_then_check_is_a_replay() -> None:
    cache = ReplayCache(SKEW)
    cache.seed(MOF, "m1", NOW - 1000)
    assert len(cache) == 1
    with pytest.raises(ReplayedMessage):
        cache.check_and_add(MOF, "m1", NOW, NOW)
    cache.check_and_add(POST, "m1", NOW, NOW)


def test_seed_is_idempotent() -> None:
    cache = ReplayCache(SKEW)
    cache.seed(MOF, "m1", NOW)
    cache.seed(MOF, "m1", NOW)
    assert len(cache) == 1


def test_seeded_entries_are_pruned() -> None:
    cache = ReplayCache(SKEW)
    cache.seed(MOF, "m1", NOW)
    later = NOW + 2 * SKEW_MS + 1
    cache.check_and_add(MOF, "m2", later, later)
    assert len(cache) == 1
    cache.check_and_add(MOF, "m1", later, later)


def test_zero_skew() -> None:
    cache = ReplayCache(0)
    cache.check_and_add(MOF, "m1", NOW, NOW)
    with pytest.raises(StaleMessage):
        cache.check_and_add(MOF, "m2", NOW - 1, NOW)


@given(
    events=st.lists(
        st.tuples(
            st.sampled_from([MOF, POST]),
            st.sampled_from(["a", "b", "c"]),
            st.integers(min_value=-2 * SKEW_MS, max_value=2 * SKEW_MS),
            st.integers(min_value=0, max_value=10 * SKEW_MS),
        ),
        max_size=30,
    )
)
def test_never_accepts_a_fresh_replay(events: list[tuple[str, str, int, int]]) -> None:
    """Against a model that remembers everything: an accepted request is fresh, and is never a
    repeat of an accepted one that is still within the window (time moves forward)."""
    cache = ReplayCache(SKEW)
    accepted: dict[tuple[str, str], int] = {}
    now = NOW
    for client, message_id, offset, step in events:
        now += step
        signed = now + offset
        try:
            cache.check_and_add(client, message_id, signed, now)
        except (StaleMessage, ReplayedMessage) as exc:
            assert isinstance(exc, ExchangeError)
            continue
        assert abs(now - signed) <= SKEW_MS
        previous = accepted.get((client, message_id))
        assert previous is None or now - previous > 2 * SKEW_MS
        accepted[(client, message_id)] = now
