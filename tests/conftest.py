"""Suite-wide settings.

Hypothesis's per-example deadline (200 ms) measures wall time, which on a shared 2-core machine
says more about the other processes than about the code: it is turned off so that property tests
fail only on a wrong answer, never on a slow one.
"""

from hypothesis import settings

pytest_plugins = ["adapters.sdk.testkit"]

settings.register_profile("exchange", deadline=None)
settings.load_profile("exchange")
