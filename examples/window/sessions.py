"""Clerk sessions: a random token in a signed cookie, its hash and state in the database.

The cookie holds ``token.mac`` (HMAC-SHA256 with the app's key), so a forged or altered cookie
is refused before the database is asked; the database holds only the token's SHA-256, the
clerk, the CSRF token, the times that make the session expire (idle and absolute), the record
of the citizen being served and a one-time message. Signing out deletes the row: the cookie
is then worth nothing even if it was copied.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

KEY_BYTES: Final = 32


def load_key(path: Path) -> bytes:
    """The cookie-signing key (made on first use, owner-only)."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
        key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path} is not a {KEY_BYTES}-byte key; delete it to make a new one")
    return key


@dataclass(frozen=True, slots=True)
class Signer:
    """HMAC-SHA256 tags for cookie values and the sign-in form's CSRF token."""

    key: bytes

    def tag(self, purpose: str, value: str) -> str:
        mac = hmac.new(self.key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def sign(self, purpose: str, value: str) -> str:
        return f"{value}.{self.tag(purpose, value)}"

    def unsign(self, purpose: str, signed: str) -> str | None:
        value, _, mac = signed.rpartition(".")
        if not value or not hmac.compare_digest(mac, self.tag(purpose, value)):
            return None
        return value


@dataclass(frozen=True, slots=True)
class Session:
    token_hash: bytes
    username: str
    csrf: str
    created_at: float
    last_seen: float
    citizen: dict[str, Any] | None
    flash: dict[str, Any] | None


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create(conn: sqlite3.Connection, username: str, now: float) -> str:
    """A new session for ``username``; returns the token (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO sessions (token_hash, username, csrf, created_at, last_seen) "
        "VALUES (?, ?, ?, ?, ?)",
        (token_hash(token), username, secrets.token_urlsafe(32), now, now),
    )
    return token


def find(
    conn: sqlite3.Connection, hashed: bytes, now: float, idle: float, lifetime: float
) -> Session | None:
    """The live session with this token hash, touched; an expired one is deleted."""
    row = conn.execute(
        "SELECT username, csrf, created_at, last_seen, citizen, flash FROM sessions "
        "WHERE token_hash = ?",
        (hashed,),
    ).fetchone()
    if row is None:
        return None
    username, csrf, created_at, last_seen, citizen, flash = row
    if now - last_seen > idle or now - created_at > lifetime:
        conn.execute("DELETE FROM sessions WHERE token_hash = ?", (hashed,))
        return None
    conn.execute("UPDATE sessions SET last_seen = ? WHERE token_hash = ?", (now, hashed))
    return Session(hashed, username, csrf, created_at, now, _loads(citizen), _loads(flash))


def revoke(conn: sqlite3.Connection, hashed: bytes) -> None:
    conn.execute("DELETE FROM sessions WHERE token_hash = ?", (hashed,))


def purge(conn: sqlite3.Connection, now: float, idle: float, lifetime: float) -> None:
    conn.execute(
        "DELETE FROM sessions WHERE last_seen < ? OR created_at < ?", (now - idle, now - lifetime)
    )


def set_citizen(conn: sqlite3.Connection, hashed: bytes, citizen: dict[str, Any] | None) -> None:
    conn.execute("UPDATE sessions SET citizen = ? WHERE token_hash = ?", (_dumps(citizen), hashed))


def set_flash(conn: sqlite3.Connection, hashed: bytes, flash: dict[str, Any] | None) -> None:
    conn.execute("UPDATE sessions SET flash = ? WHERE token_hash = ?", (_dumps(flash), hashed))


def _dumps(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _loads(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = json.loads(text)
    return value if isinstance(value, dict) else None
