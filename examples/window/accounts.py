"""Clerk accounts: argon2id password hashes, and slowing down repeated failed sign-ins.

A username is also the ``X-Road-UserId`` of every exchange the clerk makes, so it is kept to
characters that are safe in a header and readable in the ministries' logs. Hashing and
verifying cost tens of milliseconds on purpose: callers run them off the event loop.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from examples.window.config import Throttle
from examples.window.db import transaction

USERNAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
MIN_PASSWORD: Final = 12
MAX_PASSWORD: Final = 256
_HASHER: Final = PasswordHasher()
_DUMMY_HASH: Final = _HASHER.hash("no such clerk: verified only to take the same time")


class AccountError(ValueError):
    """A username or password that cannot be used; the message says why."""


def check_username(username: str) -> str:
    if USERNAME.fullmatch(username) is None:
        raise AccountError(
            "a username is 2-64 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return username


def hash_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters long")
    return _HASHER.hash(password)


def add_clerk(conn: sqlite3.Connection, username: str, password_hash: str, now: float) -> None:
    try:
        conn.execute(
            "INSERT INTO clerks (username, password_hash, created_at) VALUES (?, ?, ?)",
            (check_username(username), password_hash, now),
        )
    except sqlite3.IntegrityError:
        raise AccountError(f"a clerk named {username!r} exists already") from None


def stored_hash(conn: sqlite3.Connection, username: str) -> str | None:
    row = conn.execute(
        "SELECT password_hash FROM clerks WHERE username = ?", (username,)
    ).fetchone()
    return None if row is None else str(row[0])


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches; an unknown clerk (``None``) costs the same time."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def locked_until(conn: sqlite3.Connection, keys: list[str], now: float) -> float:
    """When the latest lock among ``keys`` ends (0 when none is locked now)."""
    marks = ",".join("?" * len(keys))
    row = conn.execute(
        f"SELECT MAX(locked_until) FROM sign_in_failures WHERE key IN ({marks})", keys
    ).fetchone()
    until = float(row[0] or 0.0)
    return until if until > now else 0.0


def record_failure(conn: sqlite3.Connection, key: str, policy: Throttle, now: float) -> None:
    with transaction(conn):
        row = conn.execute(
            "SELECT failures, first_at FROM sign_in_failures WHERE key = ?", (key,)
        ).fetchone()
        failures, first_at = (0, now) if row is None else (int(row[0]), float(row[1]))
        if now - first_at > policy.window_seconds:
            failures, first_at = 0, now
        failures += 1
        conn.execute(
            "INSERT OR REPLACE INTO sign_in_failures VALUES (?, ?, ?, ?)",
            (key, failures, first_at, now + policy.lock_seconds(failures)),
        )


def clear_failures(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("DELETE FROM sign_in_failures WHERE key = ?", (key,))
