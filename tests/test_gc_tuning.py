"""The security server's start-up leaves the cyclic garbage collector tuned for serving."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from exchange.cli import server


@pytest.fixture
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector")
def test_start_up_objects_leave_the_generations_and_young_collections_wait() -> None:
    kept = object(), [object()]  # a container alive across the call, as start-up's are
    middle, oldest = gc.get_threshold()[1:]
    server.tune_collector()
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())
    assert gc.get_threshold() == (server.GC_YOUNG_THRESHOLD, middle, oldest)
    assert gc.collect() >= 0  # collections still run
