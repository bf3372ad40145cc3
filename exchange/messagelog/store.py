"""The message log on disk: an append-only SQLite file with group commit and signed tree heads.

A :class:`MessageLog` owns one SQLite file (WAL, ``synchronous=FULL``). Callers on the event loop
``await append(entry)``; a single writer thread drains the queue, gives each record the next
sequence number (its leaf index), inserts everything queued in one transaction, commits once (one
fsync for the whole batch) and only then resolves the callers' futures. A failed batch resolves
every waiting future with :class:`MessageLogError` and rolls the in-memory tree back, so nothing
is reported durable unless its commit succeeded (docs/design.md §5 "log before answer", §8, §9).

Every batch is committed together with its signed tree head over the new size and root (RFC 9162
§2.1 hashing, kept incrementally in a :class:`~exchange.messagelog.merkle.CompactRange`) in the
same transaction: no record is ever durable without a signed head over it, so records found past
the last signed head were not written by this store (inserted into the file, or left by a crash
of an older version, which stored heads separately); :meth:`MessageLog.open` refuses to append to
such a log, naming them, instead of signing over them. Nor does it take the latest tree head
row for the truth: a row can be inserted too, beside a made-up record, so its JWS must verify as
the owner's (with the store's own key, or a certificate of the log that a CA the caller trusts
issued) before anything is signed over it. A tree head names the log's id and its owner, the
security server that created the log (``meta``), and is signed by the owner's signing key
(:mod:`exchange.trustcore.treeheads`). The signature costs one ECDSA signing per batch, before
the commit.

The store adds ``seq`` and ``logged_at`` (unix ms) into each entry before taking its canonical
bytes, so a deleted or reordered record is visible from the entries themselves. Triggers refuse
UPDATE and DELETE (except DELETE of rows an indexed archive holds, see
:mod:`exchange.messagelog.archive`), which stops accidents, not an attacker with the file: that is
what the signed tree heads and :mod:`exchange.messagelog.verify` are for. After archiving, the
Merkle frontier is restored from the ``archives`` index (:func:`archived_frontier`) and the
remaining leaf hashes.

RFC 3161 time-stamp tokens over tree heads are kept in the ``timestamps`` table, one per stamped
tree-head size, written through the same writer thread (:meth:`MessageLog.add_timestamp`). The
time-stamped digest is SHA-256 of the tree head's compact JWS, as ASCII bytes
(:func:`tree_head_digest`): the token thereby covers the size, root, time and signature at once.

This module does not verify logs (``verify.py``), answer queries (``query.py``) or ask a TSA for
time-stamps (``timestamping.py``). One process writes a log at a time, enforced with an advisory
lock file next to it; readers use their own connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509

from exchange.errors import ConfigurationError, ExchangeError, VerificationFailed
from exchange.identifiers import SecurityServerId
from exchange.messagelog.certs import CertLookup, certificates_of_log
from exchange.messagelog.merkle import HASH_SIZE, CompactRange, leaf_hash
from exchange.protocol.canonical import b64url, canonical_bytes
from exchange.protocol.jws import JwsError, Signer, cert_thumbprint
from exchange.transaction import write_transaction
from exchange.trust.keys import cert_pem
from exchange.trustcore.messages import CertifiedKey
from exchange.trustcore.treeheads import timestamp_digest, tree_head_payload, verify_tree_head

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
INDEXED_KEYS = ("message_id", "client", "service", "side", "status")
SIDES = frozenset({"consumer", "provider"})
MAX_BATCH = 512
UNSIGNED_NAMED = 10
"""How many records past the last signed tree head :meth:`MessageLog.open` names."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    logged_at INTEGER NOT NULL,
    message_id TEXT,
    client TEXT,
    service TEXT,
    side TEXT,
    status TEXT,
    entry BLOB NOT NULL,
    leaf_hash BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_message_id ON records(message_id);
CREATE INDEX IF NOT EXISTS records_client ON records(client);
CREATE INDEX IF NOT EXISTS records_service ON records(service);
CREATE INDEX IF NOT EXISTS records_logged_at ON records(logged_at);
CREATE TABLE IF NOT EXISTS tree_heads (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    signed_at INTEGER NOT NULL,
    jws TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS timestamps (
    size INTEGER PRIMARY KEY,
    token BLOB NOT NULL,
    tsa TEXT NOT NULL,
    gen_time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS certs (thumbprint TEXT PRIMARY KEY, pem TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ocsp_responses (
    thumbprint TEXT NOT NULL, digest TEXT NOT NULL, der BLOB NOT NULL,
    PRIMARY KEY (thumbprint, digest)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS archives (
    idx INTEGER PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    end_seq INTEGER NOT NULL,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    frontier BLOB NOT NULL,
    root BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
"""
_APPEND_ONLY = """
CREATE TRIGGER IF NOT EXISTS {table}_no_{op} BEFORE {op} ON {table}
BEGIN SELECT RAISE(ABORT, 'the message log is append-only'); END;
"""
# Rows below the end of the last archive may go: the archive holds them (archive.py inserts the
# index row first, then deletes, in one transaction). The boundary tree head (size = end) stays.
_DELETE_ONLY_ARCHIVED = """
DROP TRIGGER IF EXISTS {table}_no_DELETE;
CREATE TRIGGER {table}_no_DELETE BEFORE DELETE ON {table}
WHEN OLD.{column} >= (SELECT coalesce(max(end_seq), 0) FROM archives)
BEGIN SELECT RAISE(ABORT, 'the message log is append-only'); END;
"""
_ARCHIVABLE = (("records", "seq"), ("tree_heads", "size"), ("timestamps", "size"))
_RECORD_PARAMS = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
# 64 rows × 9 = 576 parameters, within SQLite's historical limit of 999
_ROWS_PER_INSERT = 64
_INSERT_HEAD = "INSERT INTO tree_heads VALUES (?, ?, ?, ?)"
_INSERT_CERT = "INSERT OR IGNORE INTO certs VALUES (?, ?)"
_INSERT_OCSP = "INSERT OR IGNORE INTO ocsp_responses VALUES (?, ?, ?)"
_LATEST_HEAD = "SELECT size, root, signed_at, jws FROM tree_heads ORDER BY size DESC LIMIT 1"
_INSERT_STAMP = (
    "INSERT INTO timestamps SELECT ?, ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM tree_heads WHERE size = ?)"
)
_STAMPS = "SELECT size, token, tsa, gen_time FROM timestamps"

Row = tuple[int, int, str | None, str | None, str | None, str | None, str | None, bytes, bytes]


class MessageLogError(ExchangeError):
    """The message log could not be opened or written; callers map it to ``*.MessageLogFailed``."""

    code = "Server.MessageLogFailed"
    status = 500


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed statement of the log's size and Merkle root at ``signed_at`` (unix ms)."""

    log_id: str
    size: int
    root: bytes
    signed_at: int
    jws: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "log": self.log_id,
            "size": self.size,
            "root": b64url(self.root),
            "signed_at": self.signed_at,
            "jws": self.jws,
        }


@dataclass(frozen=True, slots=True)
class StoredTimestamp:
    """An RFC 3161 token (DER) over :func:`tree_head_digest` of the tree head of ``size``."""

    size: int
    token: bytes
    tsa: str
    gen_time: int
    """The token's genTime, unix ms."""


def tree_head_digest(head: TreeHead) -> bytes:
    """What a tree head's time-stamp stamps: SHA-256 of its compact JWS (ASCII bytes)."""
    return timestamp_digest(head.jws)


def read_timestamps(conn: sqlite3.Connection, size: int | None = None) -> list[StoredTimestamp]:
    """The stored time-stamps, by size (only the one of ``size`` when given).

    A log written before time-stamps were kept has none.
    """
    where = "" if size is None else f" WHERE size = {int(size)}"
    cursor = query_if_table(conn, f"{_STAMPS}{where} ORDER BY size")
    return [] if cursor is None else [StoredTimestamp(*row) for row in cursor.fetchall()]


def read_ocsp_responses(
    conn: sqlite3.Connection, thumbprints: Sequence[str]
) -> dict[str, list[bytes]]:
    """The OCSP responses kept about the certificates ``thumbprints`` (x5t#S256 -> DER)."""
    out: dict[str, list[bytes]] = {}
    for thumbprint in thumbprints:
        rows = conn.execute("SELECT der FROM ocsp_responses WHERE thumbprint = ?", (thumbprint,))
        out[thumbprint] = [bytes(der) for (der,) in rows]
    return out


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection to a log, usable while its server runs (WAL) and after it stopped.

    A copy on read-only media, without its ``-wal`` file, is opened as immutable.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigurationError(f"no message log at {p}")
    uri = p.absolute().as_uri()
    modes = ["mode=ro"] if Path(f"{p}-wal").exists() else ["mode=ro", "immutable=1"]
    for mode in modes:
        conn = sqlite3.connect(f"{uri}?{mode}", uri=True, isolation_level=None)
        try:
            return _checked(conn, p)
        except sqlite3.OperationalError as exc:
            conn.close()
            failure = exc
        except BaseException:
            conn.close()
            raise
    raise MessageLogError(f"cannot read message log {p}: {failure}")


def _checked(conn: sqlite3.Connection, path: Path) -> sqlite3.Connection:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        row = None
    except sqlite3.DatabaseError:
        row = None
    if row is None or row[0] != SCHEMA_VERSION:
        raise ConfigurationError(f"{path} is not an Exchange message log (schema {SCHEMA_VERSION})")
    return conn


def head_from_row(log_id: str, row: tuple[int, bytes, int, str]) -> TreeHead:
    return TreeHead(log_id=log_id, size=row[0], root=row[1], signed_at=row[2], jws=row[3])


# --- work items for the writer thread ----------------------------------------------------------


@dataclass(slots=True)
class _Append:
    entries: Sequence[dict[str, Any]]
    future: asyncio.Future[list[int]]
    loop: asyncio.AbstractEventLoop
    typed: bool = False


@dataclass(slots=True)
class _Appends:
    """The appends made during one event-loop iteration, queued together (one wake-up)."""

    appends: list[_Append]


@dataclass(slots=True)
class _SignHead:
    future: asyncio.Future[TreeHead]
    loop: asyncio.AbstractEventLoop


@dataclass(slots=True)
class _Stamp:
    stamp: StoredTimestamp
    future: asyncio.Future[StoredTimestamp]
    loop: asyncio.AbstractEventLoop


@dataclass(slots=True)
class _Cert:
    thumbprint: str
    pem: str


@dataclass(slots=True)
class _Ocsp:
    thumbprint: str
    digest: str
    der: bytes


@dataclass(slots=True)
class _UseSigner:
    """Sign later tree heads with ``signer``; queued after its certificate's ``_Cert``."""

    signer: Signer


@dataclass(slots=True)
class _Probe:
    """A write transaction that records nothing (a health check after a failed commit)."""

    future: asyncio.Future[bool]
    loop: asyncio.AbstractEventLoop


class _Stop:
    pass


CommitHook = Callable[[int, float], None]
"""Called on the writer thread after each committed batch: its records and the seconds its
transaction took (insert and commit, one fsync)."""


@dataclass(frozen=True, slots=True)
class WriteFailure:
    """The last commit failed (and none has succeeded since): when, and why."""

    at: float
    reason: str


_Item = _Append | _SignHead | _Stamp | _Cert | _Ocsp | _UseSigner | _Probe | _Stop
_Queued = _Item | _Appends
_Outcome = tuple[asyncio.Future[Any], asyncio.AbstractEventLoop, object]


def _settle(outcomes: list[_Outcome]) -> None:
    """Runs on the event loop: hand each waiting caller its result or error."""
    for future, _, outcome in outcomes:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _dispatch(outcomes: list[_Outcome]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[1], []).append(outcome)
    for loop, batch in by_loop.items():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, batch)


def _write_failed(exc: BaseException) -> MessageLogError:
    return MessageLogError(
        "the message log could not be written", internal=f"{type(exc).__name__}: {exc}"
    )


def _record_row(entry: dict[str, Any], seq: int, logged_at: int, typed: bool = False) -> Row:
    """The row for one entry; raises TypeError/ValueError for an entry the log cannot hold."""
    if not isinstance(entry, dict):
        raise TypeError(f"a log entry is a dict, not {type(entry).__name__}")
    if "seq" in entry or "logged_at" in entry:
        raise ValueError("a log entry must not carry 'seq' or 'logged_at'; the log adds them")
    message_id, client, service, side, status = (_column(entry, key) for key in INDEXED_KEYS)
    if side is not None and side not in SIDES:
        raise ValueError(f"log entry side must be 'consumer' or 'provider', not {side!r}")
    data = canonical_bytes({**entry, "seq": seq, "logged_at": logged_at}, typed=typed)
    return (seq, logged_at, message_id, client, service, side, status, data, leaf_hash(data))


def _insert_records(conn: sqlite3.Connection, rows: list[Row]) -> None:
    """Insert a batch with one statement per 64 rows rather than one per row.

    The sqlite3 module releases the GIL around every statement step, and the writer thread must
    then wait to get it back from the busy event loop (up to the interpreter's switch interval);
    ``executemany`` steps once per row, so a batch of n records cost n such waits.
    """
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        sql = "INSERT INTO records VALUES " + ", ".join([_RECORD_PARAMS] * len(chunk))
        conn.execute(sql, [value for row in chunk for value in row])


def _column(entry: dict[str, Any], key: str) -> str | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"log entry key {key!r} must be a string")
    return value


def unpack_frontier(packed: bytes) -> tuple[bytes, ...]:
    """The Merkle frontier nodes an ``archives`` row keeps concatenated."""
    return tuple(bytes(packed[i : i + HASH_SIZE]) for i in range(0, len(packed), HASH_SIZE))


def archived_frontier(conn: sqlite3.Connection) -> CompactRange:
    """The Merkle frontier at the end of the last archive (empty when nothing was archived).

    After archiving, the records below that end are gone from the database; the frontier is all
    the log needs to keep appending and signing roots over the whole log (RFC 9162 §2.1).
    """
    cursor = query_if_table(
        conn, "SELECT end_seq, frontier FROM archives ORDER BY idx DESC LIMIT 1"
    )
    row = None if cursor is None else cursor.fetchone()
    if row is None:
        return CompactRange()
    end, packed = row
    try:
        return CompactRange.from_frontier(int(end), unpack_frontier(packed))
    except (TypeError, ValueError):
        raise MessageLogError(f"damaged archive index: no frontier for size {end}") from None


def _restore(conn: sqlite3.Connection, check_at: int) -> tuple[CompactRange, bytes | None]:
    """Rebuild the frontier from the last archive's frontier and the stored leaf hashes after it;
    also return the root at ``check_at``."""
    compact = archived_frontier(conn)
    start = compact.size
    root_at = compact.root() if check_at == start else None
    for (stored,) in conn.execute("SELECT leaf_hash FROM records ORDER BY seq"):
        if not isinstance(stored, bytes) or len(stored) != HASH_SIZE:
            raise MessageLogError(f"damaged leaf hash at record {compact.size}")
        compact.append(stored)
        if compact.size == check_at:
            root_at = compact.root()
    first, end = conn.execute(
        "SELECT min(seq), coalesce(max(seq) + 1, ?) FROM records", (start,)
    ).fetchone()
    if end != compact.size or first not in (start, None):
        raise MessageLogError(
            f"records are missing: {compact.size - start} records after the archived "
            f"{start} hold seqs {first}..{end - 1}"
        )
    return compact, root_at


def _weight(item: _Item) -> int:
    return len(item.entries) if isinstance(item, _Append) else 1


# --- the writer thread -------------------------------------------------------------------------


class _Writer:
    """Owns the write connection and the frontier; runs only on the writer thread after start."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        compact: CompactRange,
        latest: TreeHead | None,
        stamped: StoredTimestamp | None,
        *,
        log_id: str,
        owner: SecurityServerId,
        signer: Signer,
        now: Callable[[], float],
        max_batch: int,
        on_commit: CommitHook | None = None,
    ) -> None:
        self.conn = conn
        self.on_commit = on_commit
        self.failure: WriteFailure | None = None
        self.compact = compact
        self.latest = latest
        self.stamped = stamped
        self.committed = compact.size
        self.log_id = log_id
        self.owner = owner
        self.signer = signer
        self.now = now
        self.max_batch = max_batch
        self.pending_certs: dict[str, str] = {}
        self.pending_ocsp: dict[tuple[str, str], bytes] = {}
        self.resync_needed = False
        self.queue: queue.SimpleQueue[_Queued] = queue.SimpleQueue()

    def run(self) -> None:
        try:
            stop = False
            while not stop:
                items = self._take()
                try:
                    stop = self._handle(items)
                except Exception as exc:
                    log.exception("message log writer failed on a batch")
                    self._fail_all(items, exc)
                    stop = any(isinstance(item, _Stop) for item in items)
        finally:
            self._shutdown()

    def _take(self) -> list[_Item]:
        """Block for one item, then take whatever else is queued, up to about max_batch."""
        items: list[_Item] = []
        count = 0
        queued = self.queue.get()
        while True:
            taken = queued.appends if isinstance(queued, _Appends) else [queued]
            items += taken
            count += sum(_weight(item) for item in taken)
            if count >= self.max_batch:
                return items
            try:
                queued = self.queue.get_nowait()
            except queue.Empty:
                return items

    def _handle(self, items: list[_Item]) -> bool:
        appends = [item for item in items if isinstance(item, _Append)]
        for item in items:
            if isinstance(item, _Cert):
                self.pending_certs[item.thumbprint] = item.pem
            elif isinstance(item, _Ocsp):
                self.pending_ocsp[(item.thumbprint, item.digest)] = item.der
            elif isinstance(item, _UseSigner):
                self.signer = item.signer  # its certificate is pending: stored before its heads
        if appends or self.pending_certs or self.pending_ocsp:
            self._commit_batch(appends)
        outcomes: list[_Outcome] = []
        for item in items:
            if isinstance(item, _SignHead):
                outcomes.append((item.future, item.loop, self._sign_outcome()))
            elif isinstance(item, _Stamp):
                outcomes.append((item.future, item.loop, self._stamp_outcome(item.stamp)))
            elif isinstance(item, _Probe):
                outcomes.append((item.future, item.loop, self._probe_outcome()))
        _dispatch(outcomes)
        return any(isinstance(item, _Stop) for item in items)

    def _insert_pending(self) -> None:
        """Certificates and OCSP responses registered since the last commit, so that nothing
        committed (a record, or a tree head signed by a new key) lands before them."""
        if self.pending_certs:
            self.conn.executemany(_INSERT_CERT, self.pending_certs.items())
        if self.pending_ocsp:
            self.conn.executemany(
                _INSERT_OCSP, [(t, d, der) for (t, d), der in self.pending_ocsp.items()]
            )

    def _insert_head(self, head: TreeHead) -> None:
        self.conn.execute(_INSERT_HEAD, (head.size, head.root, head.signed_at, head.jws))

    def _fail_all(self, items: Sequence[_Item], exc: BaseException) -> None:
        self._note_failure(exc)
        _dispatch(
            [
                (item.future, item.loop, _write_failed(exc))
                for item in items
                if isinstance(item, _Append | _SignHead | _Stamp | _Probe)
            ]
        )

    def _commit_batch(self, appends: list[_Append]) -> None:
        outcomes: list[_Outcome] = []
        try:
            if self.resync_needed:
                self._resync()
        except Exception as exc:
            self._fail_all(appends, exc)
            return
        snapshot = self.compact.copy()
        logged_at = int(self.now() * 1000)
        rows: list[Row] = []
        accepted: list[tuple[_Append, list[int]]] = []
        for item in appends:
            start = self.compact.size
            try:
                group = [
                    _record_row(e, start + i, logged_at, item.typed)
                    for i, e in enumerate(item.entries)
                ]
            except (TypeError, ValueError) as exc:
                outcomes.append((item.future, item.loop, exc))
                continue
            except Exception as exc:  # e.g. RecursionError: refuse this append, keep the tree
                outcomes.append((item.future, item.loop, _write_failed(exc)))
                continue
            self.compact.extend(row[-1] for row in group)
            rows.extend(group)
            accepted.append((item, [row[0] for row in group]))
        if not rows and not self.pending_certs and not self.pending_ocsp:
            _dispatch(outcomes)
            return
        started = time.perf_counter()
        try:
            head = self._sign(logged_at) if rows else None
            self._transaction(rows, head)
        except Exception as exc:
            log.error("message log batch of %d records failed: %s", len(rows), exc)
            self._note_failure(exc)
            self._roll_back(snapshot)
            outcomes += [(item.future, item.loop, _write_failed(exc)) for item, _ in accepted]
        else:
            self._committed(head)
            outcomes += [(item.future, item.loop, seqs) for item, seqs in accepted]
        _dispatch(outcomes)
        if self.failure is None and self.on_commit is not None and rows:
            with contextlib.suppress(Exception):
                self.on_commit(len(rows), time.perf_counter() - started)

    def _note_failure(self, exc: BaseException) -> None:
        self.failure = WriteFailure(self.now(), f"{type(exc).__name__}: {exc}")

    def _probe_outcome(self) -> object:
        """Write the probe's row; a success clears the last failure."""
        try:
            if self.resync_needed:
                self._resync()
            with write_transaction(self.conn):
                self.conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('health_probe', ?)",
                    (str(int(self.now() * 1000)),),
                )
        except Exception as exc:
            self._note_failure(exc)
            return False
        self.failure = None
        return True

    def _transaction(self, rows: list[Row], head: TreeHead | None) -> None:
        """Insert certs, the records and their tree head, then commit: one fsync."""
        with write_transaction(self.conn):
            self._insert_pending()
            if rows:
                _insert_records(self.conn, rows)
            if head is not None:
                self._insert_head(head)

    def _sign(self, signed_at: int) -> TreeHead:
        size, root = self.compact.size, self.compact.root()
        payload = tree_head_payload(self.log_id, self.owner, size, root, signed_at)
        jws = self.signer.sign(payload)
        return TreeHead(log_id=self.log_id, size=size, root=root, signed_at=signed_at, jws=jws)

    def _committed(self, head: TreeHead | None) -> None:
        self.failure = None
        self.committed = self.compact.size
        self.pending_certs.clear()
        self.pending_ocsp.clear()
        if head is not None:
            self.latest = head

    def _roll_back(self, snapshot: CompactRange) -> None:
        self.compact = snapshot
        self.resync_needed = True
        with contextlib.suppress(Exception):
            self._resync()

    def _resync(self) -> None:
        """After a failed commit, believe the file: it may hold what SQLite reported as failed
        (the records together with their tree head, as they are only ever committed)."""
        (end,) = self.conn.execute("SELECT coalesce(max(seq) + 1, 0) FROM records").fetchone()
        if end != self.compact.size:
            log.warning("log has %d records, expected %d; reloading", end, self.compact.size)
            self.compact, _ = _restore(self.conn, -1)
            self.committed = self.compact.size
        row = self.conn.execute(_LATEST_HEAD).fetchone()
        self.latest = head_from_row(self.log_id, row) if row else None
        self.resync_needed = False

    def _sign_outcome(self) -> object:
        try:
            return self.sign_if_behind(force=True)
        except Exception as exc:
            log.error("signing a message log tree head failed: %s", exc)
            return _write_failed(exc)

    def _stamp_outcome(self, stamp: StoredTimestamp) -> object:
        try:
            self._insert_stamp(stamp)
        except MessageLogError as exc:
            return exc
        except Exception as exc:
            log.error("storing a tree head time-stamp failed: %s", exc)
            return _write_failed(exc)
        if self.stamped is None or stamp.size > self.stamped.size:
            self.stamped = stamp
        return stamp

    def _insert_stamp(self, stamp: StoredTimestamp) -> None:
        conn = self.conn
        with write_transaction(conn):
            cursor = conn.execute(
                _INSERT_STAMP, (stamp.size, stamp.token, stamp.tsa, stamp.gen_time, stamp.size)
            )
            if cursor.rowcount != 1:
                raise MessageLogError(f"no tree head of size {stamp.size} to time-stamp")

    def sign_if_behind(self, *, force: bool) -> TreeHead | None:
        """A tree head over everything committed: the latest, unless none covers the current
        size (an empty log, when ``force``)."""
        if self.resync_needed:
            self._resync()
        if self.latest is not None and self.latest.size == self.committed:
            return self.latest
        if self.latest is None and self.committed == 0 and not force:
            return None
        head = self._sign(int(self.now() * 1000))
        with write_transaction(self.conn):
            self._insert_pending()
            self._insert_head(head)
        self._committed(head)
        return head

    def _shutdown(self) -> None:
        try:
            if self.pending_certs or self.pending_ocsp:
                self._commit_batch([])
        except Exception as exc:
            log.error("could not store the last certificates of the message log: %s", exc)
        finally:
            self.conn.close()


# --- the public store --------------------------------------------------------------------------


class MessageLog:
    """An append-only, Merkle-hashed, signed message log in one SQLite file, owned by the
    security server ``owner`` (named in every tree head; ``signer`` is its member's key).

    ``open()`` before use and ``close()`` after (or use it as a context manager). ``append`` and
    ``append_many`` must be awaited on an event loop; they return only after the records' batch
    and its signed tree head were committed. A caller cancelled while waiting may still have its
    record logged.
    """

    def __init__(
        self,
        path: str | Path,
        signer: Signer,
        *,
        owner: SecurityServerId,
        now: Callable[[], float] = time.time,
        log_id: str | None = None,
        max_batch: int = MAX_BATCH,
        busy_timeout: float = 5.0,
        on_commit: CommitHook | None = None,
    ) -> None:
        self.path = Path(path)
        self._on_commit = on_commit
        self._signer = signer
        self.owner = owner
        self._now = now
        self._requested_log_id = log_id
        self._max_batch = max_batch
        self._busy_timeout = busy_timeout
        self._gate = threading.Lock()
        self._writer: _Writer | None = None
        # appends of the current event-loop iteration, handed to the writer together (_gate)
        self._pending: list[_Append] = []
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._known_certs: set[str] = set()
        self._known_ocsp: set[tuple[str, str]] = set()
        self._log_id = ""
        self._closed_state: tuple[int, TreeHead | None] = (0, None)
        self._closed_stamp: StoredTimestamp | None = None

    # -- lifecycle

    def open(self, *, trusted_cas: Sequence[x509.Certificate] = ()) -> None:
        """Create or open the file, check its latest tree head, restore the Merkle frontier and
        start the writer thread.

        The latest tree head must verify as this log's owner's: signed by the store's own key,
        or by a certificate of the log (an earlier key of the owner) that one of
        ``trusted_cas`` issued, valid when it signed; else :class:`MessageLogError`.
        """
        if self._writer is not None:
            raise MessageLogError(f"message log {self.path} is already open")
        self._lock_fd = _take_lock(self.path)
        try:
            conn = self._connect()
        except BaseException:
            _release_lock(self._lock_fd)
            self._lock_fd = None
            raise
        try:
            writer = self._prepare(conn, trusted_cas)
        except BaseException:
            conn.close()
            _release_lock(self._lock_fd)
            self._lock_fd = None
            raise
        self._writer = writer
        self._thread = threading.Thread(target=writer.run, name="messagelog-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Drain the queue, sign a final tree head if needed, stop the writer, close the file."""
        with self._gate:
            writer, thread = self._writer, self._thread
            if writer is None or thread is None:
                return
            self._queue_pending()
            self._writer = None
            writer.queue.put(_Stop())
        thread.join()
        self._closed_state = (writer.committed, writer.latest)
        self._closed_stamp = writer.stamped
        _release_lock(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> MessageLog:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self._busy_timeout,
            )
        except (OSError, sqlite3.Error) as exc:
            raise MessageLogError(f"cannot open message log {self.path}: {exc}") from None
        try:
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            conn.execute("PRAGMA synchronous=FULL")
            prepare_schema(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise MessageLogError(f"cannot open message log {self.path}: {exc}") from None
        if mode != "wal":
            conn.close()
            raise MessageLogError(f"message log {self.path}: the file system does not allow WAL")
        return conn

    def _prepare(
        self, conn: sqlite3.Connection, trusted_cas: Sequence[x509.Certificate]
    ) -> _Writer:
        try:
            self._log_id = self._init_meta(conn)
            self._known_certs = {row[0] for row in conn.execute("SELECT thumbprint FROM certs")}
            self._known_ocsp = {
                (row[0], row[1])
                for row in conn.execute("SELECT thumbprint, digest FROM ocsp_responses")
            }
            self._store_cert(conn, self._signer.cert)
            row = conn.execute(_LATEST_HEAD).fetchone()
            latest = head_from_row(self._log_id, row) if row else None
            if latest is not None:
                self._check_signed(latest, _HeadKeys(self._signer, self.owner, conn, trusted_cas))
            compact = self._restore_checked(conn, latest)
            stamps = conn.execute(_STAMPS + " ORDER BY size DESC LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise MessageLogError(f"cannot open message log {self.path}: {exc}") from None
        return _Writer(
            conn,
            compact,
            latest,
            StoredTimestamp(*stamps[0]) if stamps else None,
            log_id=self._log_id,
            owner=self.owner,
            signer=self._signer,
            now=self._now,
            max_batch=self._max_batch,
            on_commit=self._on_commit,
        )

    def _init_meta(self, conn: sqlite3.Connection) -> str:
        meta: dict[str, str] = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise MessageLogError(f"{self.path} has message log schema {meta['schema']!r}")
        stored = meta.get("log_id")
        if stored is not None:
            if self._requested_log_id not in (None, stored):
                raise MessageLogError(
                    f"{self.path} is the log {stored!r}, not {self._requested_log_id!r}"
                )
            owner = meta.get("owner")
            if owner != str(self.owner):
                raise MessageLogError(
                    f"{self.path} is the message log of {owner or 'no owner (an older version)'}, "
                    f"not of this security server {self.owner}: give this server its own log file"
                )
            return stored
        log_id = self._requested_log_id or str(uuid.uuid4())
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("schema", SCHEMA_VERSION), ("log_id", log_id), ("owner", str(self.owner))],
            )
        return log_id

    def _check_signed(self, latest: TreeHead, keys: _HeadKeys) -> None:
        """The latest tree head row is one its owner signed, as stored: the store signs over it
        next, so a row inserted into the file (over a made-up record) must stop it here."""
        at = dt.datetime.fromtimestamp(latest.signed_at / 1000, dt.UTC)
        try:
            head = verify_tree_head(latest.jws, keys.at(at), owner=self.owner, log_id=self._log_id)
        except VerificationFailed as exc:
            reason = exc.message
        else:
            if (head.size, head.root, head.signed_at) == (
                latest.size,
                latest.root,
                latest.signed_at,
            ):
                return
            reason = "the stored size, root or time differs from what its JWS signs"
        raise MessageLogError(
            f"message log {self.path}: its last tree head (size {latest.size}) does not verify "
            f"as signed by its owner {self.owner} ({reason}). This server signs every head it "
            "stores, so this one was added to the file by something else; it will not sign "
            "over it. Keep the file as evidence, examine it with `exchange log verify`, and give "
            "the server a log restored from a copy or a new one"
        )

    def _restore_checked(self, conn: sqlite3.Connection, latest: TreeHead | None) -> CompactRange:
        check_at = latest.size if latest else -1
        try:
            compact, root_at = _restore(conn, check_at)
        except MessageLogError as exc:
            raise MessageLogError(
                f"message log {self.path} is damaged ({exc.message}); "
                f"run `exchange log verify` before appending to it"
            ) from None
        if latest is not None and root_at != latest.root:
            raise MessageLogError(
                f"message log {self.path} does not match its last signed tree head "
                f"(size {latest.size}); run `exchange log verify` before appending to it"
            )
        signed = latest.size if latest is not None else 0
        if compact.size > signed:
            raise MessageLogError(self._unsigned(conn, signed, compact.size))
        return compact

    def _unsigned(self, conn: sqlite3.Connection, signed: int, size: int) -> str:
        """Why the log is refused: records past its last signed tree head, named."""
        rows = conn.execute(
            "SELECT seq, message_id FROM records WHERE seq >= ? ORDER BY seq LIMIT ?",
            (signed, UNSIGNED_NAMED),
        ).fetchall()
        named = ", ".join(f"seq {seq} (message id {mid})" for seq, mid in rows)
        more = f" and {size - signed - len(rows)} more" if size - signed > len(rows) else ""
        return (
            f"message log {self.path} holds {size - signed} record(s) past its last signed tree "
            f"head (size {signed}): {named}{more}. This server commits every record together "
            "with its signed tree head, so these were added to the file by something else (or "
            "left by a crash of an older version, which stored tree heads separately); it will "
            "not sign over them. Keep the file as evidence, examine it with `exchange log "
            "verify --crash`, and give the server a log restored from a copy or a new one"
        )

    def _store_cert(self, conn: sqlite3.Connection, cert: x509.Certificate) -> None:
        thumbprint = cert_thumbprint(cert)
        if thumbprint not in self._known_certs:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_INSERT_CERT, (thumbprint, cert_pem(cert)))
            self._known_certs.add(thumbprint)

    # -- writing

    async def append(self, entry: dict[str, Any], *, typed: bool = False) -> int:
        """Log one exchange record; returns its seq once it is durably committed.

        ``typed=True`` says the entry was built from typed fields that cannot hold a float
        (see :func:`exchange.protocol.canonical.canonical_bytes`), which skips the float walk.
        """
        return (await self._submit([entry], typed))[0]

    async def append_many(self, entries: Sequence[dict[str, Any]]) -> list[int]:
        """Log several records in one transaction, with consecutive seqs (all or none)."""
        if not entries:
            return []
        return await self._submit(list(entries))

    def _submit(
        self, entries: Sequence[dict[str, Any]], typed: bool = False
    ) -> asyncio.Future[list[int]]:
        """Queue an append; the appends of one event-loop iteration reach the writer together.

        Under load many exchanges log in the same iteration; one queue item for all of them
        wakes the writer thread once instead of once each, and the writer finds them all in one
        batch (one commit, one tree head) instead of starting on the first alone. Latency is
        unchanged: the hand-over runs before the loop next waits for IO.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        with self._gate:
            if self._writer is None:
                raise MessageLogError(f"message log {self.path} is not open")
            self._pending.append(_Append(entries, future, loop, typed))
            if self._flush_loop is not loop:
                self._flush_loop = loop
                loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        with self._gate:
            self._flush_loop = None
            self._queue_pending()

    def _queue_pending(self) -> None:
        """Hand the pending appends to the writer (holding ``_gate``), before any later item."""
        if self._pending and self._writer is not None:
            self._writer.queue.put(_Appends(self._pending))
            self._pending = []

    def _put(self, item: _Item) -> None:
        with self._gate:
            if self._writer is None:
                raise MessageLogError(f"message log {self.path} is not open")
            self._queue_pending()
            self._writer.queue.put(item)

    def set_signer(self, signer: Signer) -> None:
        """Sign later tree heads with ``signer`` (key rotation); its certificate goes into the log
        first, so every head stays verifiable offline."""
        self.register_cert(signer.cert)
        self._signer = signer
        if self._writer is not None:
            self._put(_UseSigner(signer))  # after the certificate, on the writer thread

    def register_cert(self, cert: x509.Certificate) -> str:
        """Keep ``cert`` in the log (by x5t#S256) so its signatures verify offline.

        Returns the thumbprint. The certificate is committed with the next batch, so a record
        appended after this call never lands on disk before the certificate does.
        """
        thumbprint = cert_thumbprint(cert)
        if thumbprint not in self._known_certs:
            self._put(_Cert(thumbprint, cert_pem(cert)))
            self._known_certs.add(thumbprint)
        return thumbprint

    def register_ocsp(self, cert: x509.Certificate, response_der: bytes) -> None:
        """Keep an OCSP response about ``cert`` (a staple verified on arrival, or our own) so
        evidence can show the certificate's status when it signed. Committed like certificates:
        with the next batch, never after a record that depends on it."""
        key = (cert_thumbprint(cert), hashlib.sha256(response_der).hexdigest())
        if key not in self._known_ocsp:
            self._put(_Ocsp(key[0], key[1], response_der))
            self._known_ocsp.add(key)

    async def sign_tree_head(self) -> TreeHead:
        """Sign (and store) a tree head over everything committed so far, unless one exists."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TreeHead] = loop.create_future()
        self._put(_SignHead(future, loop))
        return await future

    async def add_timestamp(
        self, size: int, token_der: bytes, tsa_name: str, gen_time_ms: int
    ) -> StoredTimestamp:
        """Keep the RFC 3161 token ``token_der`` over the stored tree head of ``size``.

        The caller has verified the token over :func:`tree_head_digest` of that head. Raises
        :class:`MessageLogError` if there is no such head, or it is time-stamped already.
        """
        stamp = StoredTimestamp(size=size, token=token_der, tsa=tsa_name, gen_time=gen_time_ms)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StoredTimestamp] = loop.create_future()
        self._put(_Stamp(stamp, future, loop))
        return await future

    async def probe(self) -> bool:
        """Try a write transaction that records nothing; True if it committed (which clears
        :attr:`write_failure`). A health check after a failed commit, while no exchange comes."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._put(_Probe(future, loop))
        return await future

    # -- state

    @property
    def write_failure(self) -> WriteFailure | None:
        """The last commit's failure, until a commit (or :meth:`probe`) succeeds again."""
        writer = self._writer
        return writer.failure if writer is not None else None

    def latest_timestamp(self) -> StoredTimestamp | None:
        """The time-stamp of the largest time-stamped tree head."""
        writer = self._writer
        return writer.stamped if writer is not None else self._closed_stamp

    def latest_timestamped_size(self) -> int | None:
        stamp = self.latest_timestamp()
        return stamp.size if stamp is not None else None

    def latest_tree_head(self) -> TreeHead | None:
        writer = self._writer
        return writer.latest if writer is not None else self._closed_state[1]

    @property
    def size(self) -> int:
        """Number of committed records."""
        writer = self._writer
        return writer.committed if writer is not None else self._closed_state[0]

    @property
    def log_id(self) -> str:
        return self._log_id


@dataclass(frozen=True, slots=True)
class _HeadKeys:
    """Who may have signed a log's latest tree head, as the store opening it judges: its own
    key, or an earlier key of the owner kept in the log and issued by a trusted CA."""

    signer: Signer
    owner: SecurityServerId
    conn: sqlite3.Connection
    trusted_cas: Sequence[x509.Certificate]

    def at(self, when: dt.datetime) -> _HeadKeysAt:
        return _HeadKeysAt(self, CertLookup(certificates_of_log(self.conn), self.trusted_cas), when)


@dataclass(frozen=True, slots=True)
class _HeadKeysAt:
    keys: _HeadKeys
    lookup: CertLookup
    when: dt.datetime

    def signer_key(self, thumbprint: str) -> CertifiedKey:
        own = self.keys.signer
        if thumbprint == own.thumbprint:
            # the key this store signs with is its owner's by the caller's word
            return CertifiedKey(self.keys.owner.owner, own.key.public_key(), own.cert)
        if not self.keys.trusted_cas:
            raise JwsError(f"signed by {thumbprint}, not by this server's signing key")
        return self.lookup.signer_key(thumbprint, self.when)


def _triggers() -> str:
    archivable = {table for table, _ in _ARCHIVABLE}
    plain = "".join(
        _APPEND_ONLY.format(table=table, op=op)
        for table in ("records", "tree_heads", "timestamps", "ocsp_responses", "archives")
        for op in ("UPDATE", "DELETE")
        if not (op == "DELETE" and table in archivable)
    )
    return plain + "".join(
        _DELETE_ONLY_ARCHIVED.format(table=table, column=column) for table, column in _ARCHIVABLE
    )


def prepare_schema(conn: sqlite3.Connection) -> None:
    """Create the tables and the append-only triggers (replacing those of older versions) in one
    transaction."""
    conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}{_triggers()}COMMIT;")


def _take_lock(path: Path) -> int:
    """An advisory lock so that two writers never append to one log (their trees would fork)."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise MessageLogError(f"cannot open message log {path}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise MessageLogError(f"message log {path} is already open in another writer") from None
    return fd


def _release_lock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def iter_rows(cursor: sqlite3.Cursor, chunk: int = 4096) -> Iterator[Any]:
    """Stream a query's rows in chunks (constant memory for millions of rows)."""
    while rows := cursor.fetchmany(chunk):
        yield from rows


def query_if_table(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()
) -> sqlite3.Cursor | None:
    """``conn.execute``, or None where the query's table does not exist (a log written before
    that table was added)."""
    try:
        return conn.execute(sql, params)
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return None
