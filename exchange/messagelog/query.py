"""Finding records in a message log for operators and auditors (the CLI prints them).

:class:`RecordFilter` says what to look for: message id, client, service, side and logging time
(indexed columns, filtered by SQLite) and method, path (a prefix, or a glob), HTTP status (a code
or a class such as ``4xx``) and user id (read from each entry). :func:`iter_records` streams the
matching records in seq order, archived ones first (read from the archive files), then the live
ones over a read-only connection: memory stays flat however large the log. Each
:class:`RecordView` carries the full entry plus the fields people look for first.

Nothing here verifies anything: a record shown is what the file says, not proven (use
:mod:`exchange.messagelog.verify`, or an evidence bundle, for that).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import itertools
import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from exchange.messagelog.archive import archived_records
from exchange.messagelog.store import iter_rows, open_readonly
from exchange.utc import iso_millis

_COLUMNS = "seq, logged_at, side, message_id, client, service, status, entry"
_MAX_LIMIT = 10_000
_GLOB: Final = frozenset("*?[")
_STATUS: Final = re.compile(r"([1-5])(\d\d|xx)", re.IGNORECASE)


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

    @property
    def method(self) -> str | None:
        return _str(self.entry.get("method"))

    @property
    def path(self) -> str | None:
        """The path after the service code, with its query, as logged."""
        return _str(self.entry.get("path"))

    @property
    def user_id(self) -> str | None:
        return _str(self.entry.get("user_id"))

    @property
    def http_status(self) -> int | None:
        status = self.entry.get("http_status")
        return status if isinstance(status, int) and not isinstance(status, bool) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "logged_at": self.logged_at,
            "side": self.side,
            "message_id": self.message_id,
            "client": self.client,
            "service": self.service,
            "method": self.method,
            "path": self.path,
            "user_id": self.user_id,
            "http_status": self.http_status,
            "status": self.status,
            "decision": self.decision,
            "released_fields": list(self.released_fields) if self.released_fields else None,
            "entry": self.entry,
        }


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """What to look for; a record matches when it matches every filter given.

    ``path`` is a prefix of the logged path (after the service code, query included), or a glob
    (``fnmatch``, where ``*`` also matches ``/``) when it holds ``*``, ``?`` or ``[``;
    ``statuses`` are inclusive ranges of HTTP statuses (:func:`parse_status`), any of which
    matches; ``since`` is inclusive, ``until`` exclusive, both with a time zone.
    """

    message_id: str | None = None
    client: str | None = None
    service: str | None = None
    side: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    method: str | None = None
    path: str | None = None
    statuses: tuple[tuple[int, int], ...] = ()
    user_id: str | None = None

    def __post_init__(self) -> None:
        for name, when in (("since", self.since), ("until", self.until)):
            if when is not None and when.tzinfo is None:
                raise ValueError(f"{name} must carry a time zone")

    def sql(self) -> tuple[str, list[Any]]:
        """The WHERE clause (and its parameters) over the indexed columns."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in self._columns():
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.since is not None:
            clauses.append("logged_at >= ?")
            params.append(_ms(self.since))
        if self.until is not None:
            clauses.append("logged_at < ?")
            params.append(_ms(self.until))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def matches_columns(self, entry: dict[str, Any]) -> bool:
        """The indexed filters, applied to an entry (for archived records, which have no index)."""
        if any(value is not None and entry.get(key) != value for key, value in self._columns()):
            return False
        logged_at = entry.get("logged_at")
        if not isinstance(logged_at, int):
            return self.since is None and self.until is None
        return (self.since is None or logged_at >= _ms(self.since)) and (
            self.until is None or logged_at < _ms(self.until)
        )

    def matches_entry(self, entry: dict[str, Any]) -> bool:
        """The filters that only the entry holds: method, path, HTTP status, user id."""
        if self.method is not None and entry.get("method") != self.method:
            return False
        if self.user_id is not None and entry.get("user_id") != self.user_id:
            return False
        if self.path is not None and not _path_matches(self.path, entry.get("path")):
            return False
        if self.statuses:
            status = entry.get("http_status")
            if not isinstance(status, int) or isinstance(status, bool):
                return False
            return any(low <= status <= high for low, high in self.statuses)
        return True

    def _columns(self) -> tuple[tuple[str, str | None], ...]:
        return (
            ("message_id", self.message_id),
            ("client", self.client),
            ("service", self.service),
            ("side", self.side),
        )


def parse_status(text: str) -> tuple[int, int]:
    """``403`` → (403, 403); ``4xx`` → (400, 499); else ValueError."""
    match = _STATUS.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an HTTP status (e.g. 403) or class (e.g. 4xx)")
    digit, rest = match.groups()
    if rest.lower() == "xx":
        return int(digit) * 100, int(digit) * 100 + 99
    return int(text), int(text)


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 date or time (``2026-12-06``, ``2026-12-06T10:00``, ``…+02:00``), UTC when it
    names no zone; else ValueError."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO date or time (e.g. 2026-12-06 or 2026-12-06T10:00; UTC "
            "unless it names a zone, as in 2026-12-06T10:00+02:00)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def iter_records(
    path: str | Path,
    where: RecordFilter = RecordFilter(),
    *,
    archive_dir: str | Path | None = None,
) -> Generator[RecordView]:
    """Every record matching ``where``, oldest first, streamed.

    With ``archive_dir``, archived records are searched too (read from the archive files, before
    the live ones: they are older). The file is opened when the first record is asked for; one
    that is not a log raises :class:`~exchange.errors.ConfigurationError` then.
    """
    conn = open_readonly(path)
    try:
        if archive_dir is not None:
            for seq, data in archived_records(path, archive_dir):
                entry = _entry(data)
                if where.matches_columns(entry) and where.matches_entry(entry):
                    yield _archived_view(seq, data, entry)
        clause, params = where.sql()
        cursor = conn.execute(f"SELECT {_COLUMNS} FROM records{clause} ORDER BY seq", params)
        for row in iter_rows(cursor, chunk=64):
            view = _view(row)
            if where.matches_entry(view.entry):
                yield view
    finally:
        conn.close()


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
    """A page of :func:`iter_records` (``limit`` records after ``offset``), as a list."""
    if not 0 < limit <= _MAX_LIMIT or offset < 0:
        raise ValueError(f"limit must be 1..{_MAX_LIMIT} and offset at least 0")
    where = RecordFilter(
        message_id=message_id, client=client, service=service, side=side, since=since, until=until
    )
    records = iter_records(path, where, archive_dir=archive_dir)
    try:
        return list(itertools.islice(records, offset, offset + limit))
    finally:
        records.close()


def _path_matches(pattern: str, path: object) -> bool:
    if not isinstance(path, str):
        return False
    if _GLOB.isdisjoint(pattern):
        return path.startswith(pattern)
    return fnmatch.fnmatchcase(path, pattern)


def _archived_view(seq: int, data: bytes, entry: dict[str, Any]) -> RecordView:
    logged_at = entry.get("logged_at")
    columns = (entry.get(key) for key in ("side", "message_id", "client", "service", "status"))
    return _view(
        (seq, logged_at if isinstance(logged_at, int) else 0, *(_str(c) for c in columns), data)
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


def _view(row: tuple[Any, ...]) -> RecordView:
    seq, logged_at, side, message_id, client, service, status, data = row
    entry = _entry(data)
    return RecordView(
        seq=seq,
        logged_at=iso_millis(logged_at),
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
