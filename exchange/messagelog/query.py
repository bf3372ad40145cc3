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

from exchange.messagelog.archive import archived_records
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
    archive_dir: str | Path | None = None,
) -> list[RecordView]:
    """Records matching every given filter, oldest first; ``since`` inclusive, ``until`` not.

    With ``archive_dir``, archived records are searched too (read from the archive files, before
    the live ones: they are older).
    """
    if not 0 < limit <= _MAX_LIMIT or offset < 0:
        raise ValueError(f"limit must be 1..{_MAX_LIMIT} and offset at least 0")
    where, params = _filters(message_id, client, service, since, until, side)
    archived: list[RecordView] = []
    if archive_dir is not None:
        wanted = {"message_id": message_id, "client": client, "service": service, "side": side}
        span = (_ms(since) if since else None, _ms(until) if until else None)
        archived = _archived_matches(path, archive_dir, wanted, span, offset + limit)
    skip = max(offset - len(archived), 0)
    archived = archived[offset:]
    sql = f"SELECT {_COLUMNS} FROM records{where} ORDER BY seq LIMIT ? OFFSET ?"
    conn = open_readonly(path)
    try:
        rows = conn.execute(sql, [*params, limit - len(archived), skip]).fetchall()
    finally:
        conn.close()
    return archived + [_view(row) for row in rows]


def _archived_matches(
    path: str | Path,
    archive_dir: str | Path,
    wanted: dict[str, str | None],
    span: tuple[int | None, int | None],
    enough: int,
) -> list[RecordView]:
    found: list[RecordView] = []
    for seq, data in archived_records(path, archive_dir):
        entry = _entry(data)
        logged_at = entry.get("logged_at")
        if any(value is not None and entry.get(key) != value for key, value in wanted.items()):
            continue
        if not isinstance(logged_at, int):
            continue
        if (span[0] is not None and logged_at < span[0]) or (
            span[1] is not None and logged_at >= span[1]
        ):
            continue
        found.append(_archived_view(seq, data, entry))
        if len(found) >= enough:
            break
    return found


def _archived_view(seq: int, data: bytes, entry: dict[str, Any]) -> RecordView:
    logged_at = entry.get("logged_at")
    columns = (entry.get(key) for key in ("side", "message_id", "client", "service", "status"))
    return _view(
        (seq, logged_at if isinstance(logged_at, int) else 0, *(_str(c) for c in columns), data)
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


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
