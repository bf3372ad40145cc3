"""Idempotency keys for creating operations (draft-ietf-httpapi-idempotency-key-header).

A client that did not get the answer to a creating request (a fee, a payment, a refund) sends
it again with the same ``Idempotency-Key`` header. The first request with a key does the work
and records, in the **same SQLite transaction** as the work, the key, a hash of the request and
the answer; a retry with that key and the same request gets the recorded answer back and does
nothing; the same key with another request (another body, another target, another operation)
is refused with 422 ``idempotency_key_reused``. Keys belong to the calling client subsystem
(``X-Road-Client``), so one client's key never meets another's.

Two retries at once: the store runs lookup, work and record inside one ``BEGIN IMMEDIATE``
transaction, so SQLite's write lock serialises them and the second finds the first's record.

The key is a header of its own, not the X-Road message id: a retry is a new exchange with a new
message id (the provider refuses a replayed one). This module opens no files: the store passes
its connection.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import orjson

from adapters.sdk.adapter import Context, json_default
from adapters.sdk.errors import AdapterError, BadRequest

HEADER: Final = "Idempotency-Key"
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    client TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    answer TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (client, key)
) WITHOUT ROWID;
"""
_KEY: Final = re.compile(r"[A-Za-z0-9\-_.:]{1,128}")
T = TypeVar("T")


class KeyReused(AdapterError):
    """The key was used before for another request (422)."""

    status = 422
    code = "idempotency_key_reused"


@dataclass(frozen=True, slots=True)
class Idempotent:
    """One request's key, its client and the hash of what it asks."""

    client: str
    key: str
    request_hash: str


def request_hash(operation: str, request: Mapping[str, Any]) -> str:
    """SHA-256 of the operation's name and its input (sorted-key JSON), hex."""
    text = orjson.dumps({"operation": operation, "request": request}, default=json_default,
                        option=orjson.OPT_SORT_KEYS)  # fmt: skip
    return hashlib.sha256(text).hexdigest()


def idempotent(
    ctx: Context, operation: str, request: Mapping[str, Any], *, required: bool
) -> Idempotent | None:
    """The request's idempotency key, or ``None`` when it has none and ``required`` is false.

    ``request`` is everything the operation acts on (path parameters and body, normalised:
    ``"25.0"`` and ``"25.00"`` are one amount). Raises :class:`BadRequest` for a missing
    (``idempotency_key_required``) or malformed (``invalid_idempotency_key``) key.
    """
    key = ctx.header(HEADER)
    if key is None:
        if required:
            raise BadRequest(
                f"this operation needs an {HEADER} header (a UUID made for this request, "
                "sent again unchanged with every retry)",
                code="idempotency_key_required",
            )
        return None
    if _KEY.fullmatch(key) is None:
        raise BadRequest(
            f"the {HEADER} is 1 to 128 of A-Z a-z 0-9 - _ . : (a UUID is right)",
            code="invalid_idempotency_key",
        )
    return Idempotent(ctx.client or "", key, request_hash(operation, request))


def recorded_answer(conn: sqlite3.Connection, request: Idempotent) -> Any | None:
    """The answer recorded for this key and request, or ``None`` if the key is new.

    Call it inside the transaction that does the work; raises :class:`KeyReused` if the key
    was used for another request.
    """
    row = conn.execute(
        "SELECT request_hash, answer FROM idempotency_keys WHERE client = ? AND key = ?",
        (request.client, request.key),
    ).fetchone()
    if row is None:
        return None
    if row[0] != request.request_hash:
        raise KeyReused(
            f"the {HEADER} {request.key} was used for another request; make a new key for a "
            "new request"
        )
    return orjson.loads(row[1])


def record_answer(
    conn: sqlite3.Connection, request: Idempotent, status: int, answer: Any, now: dt.datetime
) -> None:
    """Record the answer to this key, in the transaction that did the work."""
    conn.execute(
        "INSERT INTO idempotency_keys (client, key, request_hash, status, answer, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (request.client, request.key, request.request_hash, status,
         orjson.dumps(answer, default=json_default).decode(), now.isoformat()),
    )  # fmt: skip


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error) on an autocommit
    connection: the write lock is taken before the first read, so what the transaction reads is
    still true when it commits."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def once(
    conn: sqlite3.Connection,
    request: Idempotent | None,
    clock: Callable[[], dt.datetime],
    work: Callable[[sqlite3.Connection, dt.datetime], T],
) -> tuple[int, T]:
    """``work(conn, now)`` once per key, in one write transaction with its record: (201, its
    answer); or (200, the answer recorded for this key and request), doing nothing."""
    with write_transaction(conn):
        if request is not None:
            recorded = recorded_answer(conn, request)
            if recorded is not None:
                return 200, recorded  # type: ignore[no-any-return]
        now = clock()
        answer = work(conn, now)
        if request is not None:
            record_answer(conn, request, 201, answer, now)
        return 201, answer
