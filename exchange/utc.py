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


def iso_millis(ms: int) -> str:
    """``ms`` milliseconds since the epoch as ISO 8601 in UTC, to the millisecond."""
    return utc(ms / 1000).isoformat(timespec="milliseconds")


def iso_z(when: dt.datetime) -> str:
    """An aware ``when`` as ISO 8601 in UTC to the millisecond, ending in ``Z`` (the form the
    auditor's reports use)."""
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
