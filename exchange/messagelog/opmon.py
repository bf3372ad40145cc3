"""Operational monitoring from a message log: exchanges per client, service and side in a time
window, with their errors and the median and 99th percentile of their total time.

X-Road keeps such data for a monitoring client to query; here every record of the message log
already carries what it needs (client, service, side, status, ``timings_us.total``), so the
summary is read from the log itself (:func:`summarise`): read-only, on a running or a stopped
server's file, streaming its rows (and, when asked, its archive files) in order. Per group it
keeps a count, an error count and the total times (8 bytes a record), sorted once at the end for
exact percentiles (nearest rank).
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from exchange.messagelog.archive import archived_records
from exchange.messagelog.store import iter_rows, open_readonly

# in no order: the groups are counted, then sorted (an ORDER BY would sort the window first)
_ROWS: Final = (
    "SELECT client, service, side, status, "
    "json_extract(CAST(entry AS TEXT), '$.timings_us.total') "
    "FROM records WHERE logged_at >= ? AND logged_at < ?"
)

Key = tuple[str, str, str]


@dataclass(slots=True)
class _Group:
    count: int = 0
    errors: int = 0
    totals: array[int] = field(default_factory=lambda: array("q"))


@dataclass(frozen=True, slots=True)
class OpmonRow:
    """One client, service and side in the window."""

    client: str
    service: str
    side: str
    count: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "service": self.service,
            "side": self.side,
            "count": self.count,
            "errors": self.errors,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        }


def percentile(sorted_values: array[int], fraction: float) -> int | None:
    """The nearest-rank percentile of ``sorted_values``."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summarise(
    log_path: Path,
    since_ms: int,
    until_ms: int,
    *,
    archive_dir: Path | None = None,
) -> list[OpmonRow]:
    """The exchanges logged in ``[since_ms, until_ms)`` (unix ms) per client, service and side,
    most frequent first; with ``archive_dir``, the archived records count too."""
    groups: dict[Key, _Group] = {}
    rows: Iterable[tuple[Any, ...]] = _live_rows(log_path, since_ms, until_ms)
    if archive_dir is not None:
        rows = itertools.chain(_archived_rows(log_path, archive_dir, since_ms, until_ms), rows)
    for client, service, side, status, total in rows:
        key = (client or "-", service or "-", side or "-")
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group()
        group.count += 1
        if status != "ok":
            group.errors += 1
        if isinstance(total, int):
            group.totals.append(total)
    return sorted((_row(key, group) for key, group in groups.items()), key=_order)


def _order(row: OpmonRow) -> tuple[int, str, str, str]:
    return (-row.count, row.client, row.service, row.side)


def _row(key: Key, group: _Group) -> OpmonRow:
    totals = array("q", sorted(group.totals))
    p50, p99 = percentile(totals, 0.50), percentile(totals, 0.99)
    return OpmonRow(
        *key,
        count=group.count,
        errors=group.errors,
        p50_ms=None if p50 is None else p50 / 1000,
        p99_ms=None if p99 is None else p99 / 1000,
    )


def _live_rows(log_path: Path, since_ms: int, until_ms: int) -> Iterator[tuple[Any, ...]]:
    conn = open_readonly(log_path)
    try:
        yield from iter_rows(conn.execute(_ROWS, (since_ms, until_ms)), chunk=2048)
    finally:
        conn.close()


def _archived_rows(
    log_path: Path, archive_dir: Path, since_ms: int, until_ms: int
) -> Iterator[tuple[Any, ...]]:
    for _, line in archived_records(log_path, archive_dir):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line no record can be read from (the archive's verification names it)
        if not isinstance(entry, dict):
            continue
        if not since_ms <= entry.get("logged_at", 0) < until_ms:
            continue
        total = (entry.get("timings_us") or {}).get("total")
        yield (*(entry.get(k) for k in ("client", "service", "side", "status")), total)
