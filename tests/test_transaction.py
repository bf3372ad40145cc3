"""exchange.transaction: what a write transaction did is kept on success and undone on failure."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.transaction import write_transaction


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "t.sqlite", isolation_level=None)
    conn.execute("CREATE TABLE t (v INTEGER UNIQUE)")
    yield conn
    conn.close()


def _values(conn: sqlite3.Connection) -> list[int]:
    return [v for (v,) in conn.execute("SELECT v FROM t ORDER BY v")]


def test_commits_on_success(conn: sqlite3.Connection) -> None:
    with write_transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction
    assert _values(conn) == [1]


def test_rolls_back_and_raises_the_failure(conn: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.IntegrityError), write_transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction
    assert _values(conn) == []


def test_a_second_writer_waits_for_the_lock(conn: sqlite3.Connection, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "t.sqlite", isolation_level=None, timeout=0)
    try:
        with write_transaction(conn), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()
