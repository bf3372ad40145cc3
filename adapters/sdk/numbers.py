"""Document numbers without gaps: receipts, refunds, certificates (``MOF-2026-000001``).

A counter row per series and year, advanced inside the transaction that writes the numbered
record: if the record is not written (a refusal, a crash), the number is not used either, so
the numbers of a year run 1, 2, 3 ... with none missing and none twice (the auditor's check that
no receipt was made to disappear). The caller holds a write transaction; this opens nothing.
"""

from __future__ import annotations

import sqlite3
from typing import Final

COUNTERS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS counters (
    series TEXT NOT NULL,
    year INTEGER NOT NULL,
    last INTEGER NOT NULL CHECK (last > 0),
    PRIMARY KEY (series, year)
) WITHOUT ROWID;
"""


def next_number(conn: sqlite3.Connection, series: str, year: int) -> int:
    """The next number of ``series`` in ``year``: one more than the last, in this transaction."""
    (number,) = conn.execute(
        "INSERT INTO counters (series, year, last) VALUES (?, ?, 1)"
        " ON CONFLICT (series, year) DO UPDATE SET last = last + 1 RETURNING last",
        (series, year),
    ).fetchone()
    return int(number)
