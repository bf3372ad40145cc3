"""exchange.transaction: what a write transaction did is kept on success and undone on failure;
a versioned store opens with its schema, or is refused by name."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.errors import ConfigurationError
from exchange.transaction import open_versioned_store, write_transaction


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


# --- opening a versioned store (the CA's revocation register, its enrolment tokens) -----------

_SCHEMA = "CREATE TABLE t (x INTEGER); CREATE INDEX t_x ON t (x)"


def test_a_new_file_gets_the_schema_and_opens_again(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "store.sqlite"
    conn = open_versioned_store(path, _SCHEMA, 3, "a test store")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    again = open_versioned_store(path, _SCHEMA, 3, "a test store")
    assert again.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert again.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


def test_another_version_or_another_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    open_versioned_store(path, _SCHEMA, 3, "a test store").close()
    with pytest.raises(ConfigurationError, match=r"is not a test store \(schema 3\)"):
        open_versioned_store(path, _SCHEMA, 4, "a test store")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE something (y)").connection.commit()
    with pytest.raises(ConfigurationError, match=r"is not a test store \(schema 0\)"):
        open_versioned_store(other, _SCHEMA, 3, "a test store")
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigurationError, match=r"is not a test store$"):
        open_versioned_store(garbage, _SCHEMA, 3, "a test store")
