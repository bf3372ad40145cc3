"""Finding records in a message log for operators and auditors (the CLI prints them).

:func:`query_records` filters on the indexed columns (message id, client, service, side, logging
time) over a read-only connection, in seq order, and returns :class:`RecordView` values that
carry the full entry plus the fields people look for first. It does not verify anything: a
record shown here is what the file says, not proven (use :mod:`exchange.messagelog.verify`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from exchange.messagelog.archive import find_archived
from exchange.messagelog.store import open_readonly

_COLUMNS = "seq, logged_at, side, message_id, client, service, status, entry"
_MAX_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class RecordView:
    """One logged exchange, readable: where it sat in the log, who asked what, what was decided."""

    seq: int
    logged_at: str
    side: str | None
    message_id: str | None
    client: str | None
    service: str | None
    status: str | None
    decision: str | None
    released_fields: tuple[str, ...] | None
    entry: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "logged_at": self.logged_at,
            "side": self.side,
            "message_id": self.message_id,
            "client": self.client,
            "service": self.service,
            "status": self.status,
            "decision": self.decision,
            "released_fields": list(self.released_fields) if self.released_fields else None,
            "entry": self.entry,
        }


def query_records(
    path: str | Path,
    *,
    message_id: str | None = None,
    client: str | None = None,
    service: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    side: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[RecordView]:
    """Records matching every given filter, oldest first; ``since`` inclusive, ``until`` not."""
    if not 0 < limit <= _MAX_LIMIT or offset < 0:
        raise ValueError(f"limit must be 1..{_MAX_LIMIT} and offset at least 0")
    where, params = _filters(message_id, client, service, since, until, side)
    sql = f"SELECT {_COLUMNS} FROM records{where} ORDER BY seq LIMIT ? OFFSET ?"
    conn = open_readonly(path)
    try:
        rows = conn.execute(sql, [*params, limit, offset]).fetchall()
    finally:
        conn.close()
    return [_view(row) for row in rows]


def archived_views(
    db_path: str | Path, archive_dir: str | Path, message_id: str
) -> list[RecordView]:
    """The archived records of X-Road-Id ``message_id``, read from the archive files."""
    views = []
    for seq, data in find_archived(db_path, archive_dir, message_id):
        entry = _entry(data)
        views.append(
            _view(
                (
                    seq,
                    entry.get("logged_at", 0),
                    entry.get("side"),
                    entry.get("message_id"),
                    entry.get("client"),
                    entry.get("service"),
                    entry.get("status"),
                    data,
                )
            )
        )
    return views


def _filters(
    message_id: str | None,
    client: str | None,
    service: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    side: str | None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("message_id", message_id),
        ("client", client),
        ("service", service),
        ("side", side),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        clauses.append("logged_at >= ?")
        params.append(_ms(since))
    if until is not None:
        clauses.append("logged_at < ?")
        params.append(_ms(until))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _ms(when: dt.datetime) -> int:
    if when.tzinfo is None:
        raise ValueError("since/until must carry a time zone")
    return int(when.timestamp() * 1000)


def _view(row: tuple[Any, ...]) -> RecordView:
    seq, logged_at, side, message_id, client, service, status, data = row
    entry = _entry(data)
    return RecordView(
        seq=seq,
        logged_at=dt.datetime.fromtimestamp(logged_at / 1000, dt.UTC).isoformat(
            timespec="milliseconds"
        ),
        side=side,
        message_id=message_id,
        client=client,
        service=service,
        status=status,
        decision=decision_summary(entry.get("decision")),
        released_fields=_released(entry.get("released_fields")),
        entry=entry,
    )


def _entry(data: object) -> dict[str, Any]:
    try:
        entry = orjson.loads(data) if isinstance(data, bytes | str) else None
    except orjson.JSONDecodeError:
        entry = None
    return entry if isinstance(entry, dict) else {"unreadable_entry": True}


def decision_summary(decision: object) -> str | None:
    """One line for a logged policy decision: a string as is, an object as ``key=value`` pairs."""
    if decision is None or isinstance(decision, str):
        return decision
    if isinstance(decision, dict):
        return ", ".join(
            f"{key}={value}"
            for key, value in sorted(decision.items())
            if isinstance(value, str | int | bool)
        )
    return str(decision)


def _released(value: object) -> tuple[str, ...] | None:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return None
