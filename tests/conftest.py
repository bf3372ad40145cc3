"""Suite-wide settings.

Hypothesis's per-example deadline (200 ms) measures wall time, which on a shared 2-core machine
says more about the other processes than about the code: it is turned off so that property tests
fail only on a wrong answer, never on a slow one.

The browser tests' screenshots go to a temporary directory, so that a test run changes no tracked
file; ``EXCHANGE_SCREENSHOTS=docs/images`` refreshes the pictures the documents show.
"""

import os
from pathlib import Path

import pytest
from hypothesis import settings

pytest_plugins = ["adapters.sdk.testkit"]

settings.register_profile("exchange", deadline=None)
settings.load_profile("exchange")


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests save their screenshots (see the module docstring)."""
    chosen = os.environ.get("EXCHANGE_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory
