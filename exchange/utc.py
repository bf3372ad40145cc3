"""Times as the package compares and shows them: UTC, from seconds since the epoch.

No IO.
"""

from __future__ import annotations

import datetime as dt


def utc(seconds: float) -> dt.datetime:
    """The aware UTC datetime of ``seconds`` since the epoch."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def iso_seconds(seconds: float) -> str:
    """``seconds`` since the epoch as ISO 8601 in UTC, to the second (``…T12:00:00+00:00``)."""
    return utc(seconds).isoformat(timespec="seconds")
