"""The window's SQLite file: its schema, and one writer thread so the event loop never blocks.

Every read and write runs on :class:`Database`'s single thread, one after the other, so the
store functions in :mod:`examples.window.accounts`, :mod:`examples.window.sessions` and
:mod:`examples.window.records` take a plain connection and need no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

T = TypeVar("T")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS clerks (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash BLOB PRIMARY KEY,
    username TEXT NOT NULL REFERENCES clerks(username) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    citizen TEXT,
    flash TEXT
);
CREATE INDEX IF NOT EXISTS sessions_by_clerk ON sessions(username);
CREATE TABLE IF NOT EXISTS sign_in_failures (
    key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    first_at REAL NOT NULL,
    locked_until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS exchanges (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL,
    at REAL NOT NULL,
    message_id TEXT NOT NULL,
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    status INTEGER,
    error_code TEXT,
    national_id TEXT
);
CREATE INDEX IF NOT EXISTS exchanges_by_clerk ON exchanges(username, at);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    kind TEXT NOT NULL,
    national_id TEXT,
    body TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_by_clerk ON documents(username, national_id, created_at);
CREATE TABLE IF NOT EXISTS operations (
    key TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    request TEXT,
    document_id TEXT,
    created_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS operations_open
    ON operations(username, kind, target) WHERE document_id IS NULL;
"""


def connect(path: Path) -> sqlite3.Connection:
    """Open (and create, owner-only) the window's database with its schema."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(SCHEMA)
    return conn


class Database:
    """One connection used from one thread; ``await db.run(fn, *args)`` calls ``fn(conn, ...)``."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._executor = executor

    @classmethod
    async def open(cls, path: Path) -> Database:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="window-db")
        conn = await asyncio.get_running_loop().run_in_executor(executor, connect, path)
        return cls(conn, executor)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._conn, *args))

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``with transaction(conn):`` several statements as one atomic write."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
