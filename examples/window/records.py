"""What the window keeps per clerk: the exchanges made, the documents received, open operations.

Every query names the clerk: there is no function that reads another clerk's rows.

- ``exchanges``: one row per exchange (message id, service, method, outcome), the clerk's
  history that a complaint is followed from (``exchange audit export --id ...``).
- ``documents``: what a ministry answered that the clerk shows or prints again (a certificate,
  a fee, a receipt, a SIM registration, an insurance status), kept for a day.
- ``operations``: an operation that changes something at a ministry (a fee, a payment, a
  refund, a certificate, a SIM) gets a key when its form is shown. The key is sent as the
  ``Idempotency-Key``; its request body is kept once sent, so that a retry after an answer
  that never came sends the same request with the same key and is never done twice.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ExchangeRecord:
    at: float
    message_id: str
    service: str
    method: str
    status: int | None
    error_code: str | None
    national_id: str | None


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    kind: str
    national_id: str | None
    body: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class Operation:
    key: str
    kind: str
    target: str
    request: dict[str, Any] | None
    document_id: str | None


def add_exchange(conn: sqlite3.Connection, username: str, record: ExchangeRecord) -> None:
    conn.execute(
        "INSERT INTO exchanges (username, at, message_id, service, method, status, error_code, "
        "national_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (username, record.at, record.message_id, record.service, record.method, record.status,
         record.error_code, record.national_id),
    )  # fmt: skip


def exchanges_since(conn: sqlite3.Connection, username: str, since: float) -> list[ExchangeRecord]:
    rows = conn.execute(
        "SELECT at, message_id, service, method, status, error_code, national_id "
        "FROM exchanges WHERE username = ? AND at >= ? ORDER BY at DESC, id DESC",
        (username, since),
    ).fetchall()
    return [ExchangeRecord(*row) for row in rows]


def add_document(
    conn: sqlite3.Connection,
    username: str,
    kind: str,
    national_id: str | None,
    body: dict[str, Any],
    now: float,
) -> str:
    doc_id = secrets.token_urlsafe(16)
    conn.execute(
        "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
        (doc_id, username, kind, national_id, json.dumps(body, ensure_ascii=False), now),
    )
    return doc_id


def document(conn: sqlite3.Connection, username: str, doc_id: str) -> Document | None:
    row = conn.execute(
        "SELECT id, kind, national_id, body, created_at FROM documents "
        "WHERE id = ? AND username = ?",
        (doc_id, username),
    ).fetchone()
    return None if row is None else _document(row)


def documents_of(
    conn: sqlite3.Connection, username: str, national_id: str, since: float
) -> list[Document]:
    rows = conn.execute(
        "SELECT id, kind, national_id, body, created_at FROM documents "
        "WHERE username = ? AND national_id = ? AND created_at >= ? ORDER BY created_at",
        (username, national_id, since),
    ).fetchall()
    return [_document(row) for row in rows]


def purge_documents(conn: sqlite3.Connection, before: float) -> None:
    conn.execute("DELETE FROM documents WHERE created_at < ?", (before,))
    conn.execute("DELETE FROM operations WHERE created_at < ?", (before,))


def _document(row: tuple[Any, ...]) -> Document:
    doc_id, kind, national_id, body, created_at = row
    return Document(doc_id, kind, national_id, json.loads(body), created_at)


def open_operation(
    conn: sqlite3.Connection, username: str, kind: str, target: str, now: float
) -> str:
    """The key of the clerk's open operation ``kind`` on ``target``, made if there is none."""
    row = conn.execute(
        "SELECT key FROM operations WHERE username = ? AND kind = ? AND target = ? "
        "AND document_id IS NULL",
        (username, kind, target),
    ).fetchone()
    if row is not None:
        return str(row[0])
    key = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO operations (key, username, kind, target, created_at) VALUES (?, ?, ?, ?, ?)",
        (key, username, kind, target, now),
    )
    return key


def operation(conn: sqlite3.Connection, username: str, key: str) -> Operation | None:
    row = conn.execute(
        "SELECT key, kind, target, request, document_id FROM operations "
        "WHERE key = ? AND username = ?",
        (key, username),
    ).fetchone()
    if row is None:
        return None
    key, kind, target, request, document_id = row
    return Operation(key, kind, target, None if request is None else json.loads(request),
                     document_id)  # fmt: skip


def remember_request(
    conn: sqlite3.Connection, username: str, key: str, request: dict[str, Any]
) -> dict[str, Any]:
    """Keep the operation's first request body; a later call returns that first body."""
    conn.execute(
        "UPDATE operations SET request = ? WHERE key = ? AND username = ? AND request IS NULL",
        (json.dumps(request, ensure_ascii=False), key, username),
    )
    found = operation(conn, username, key)
    assert found is not None and found.request is not None
    return found.request


def complete_operation(conn: sqlite3.Connection, username: str, key: str, document_id: str) -> None:
    conn.execute(
        "UPDATE operations SET document_id = ? WHERE key = ? AND username = ?",
        (document_id, key, username),
    )


def abandon_operation(conn: sqlite3.Connection, username: str, key: str) -> None:
    """A definite refusal: nothing was done, the next attempt gets a new key."""
    conn.execute(
        "DELETE FROM operations WHERE key = ? AND username = ? AND document_id IS NULL",
        (key, username),
    )
