"""Archives: old message log records moved into signed, linked files that verify like the log.

:func:`archive_log` moves the records logged before a cut-off out of the live SQLite file into
zip files in an archive folder, one contiguous range of records per file, each range ending at a
**time-stamped** tree head (records not yet covered by one are never archived). A file holds:

``records.jsonl``
    the entries exactly as logged, one per line, in seq order: each line's bytes are the RFC 9162
    leaf (``SHA-256(0x00 || line)``), so every leaf hash, signature and certificate check works;
``tree-heads.jsonl``
    the signed tree heads of the sizes in the range (``size``, ``root``, ``signed_at``, ``jws``);
    the last one, the *closing head*, is of the archive's end size;
``timestamps.jsonl``
    the RFC 3161 tokens (base64url DER) over those heads, the closing head's included;
``manifest.json``
    canonical JSON: the log id, the archive's index and seq range, the SHA-256 of each part, the
    Merkle frontier before and after the range and the root after it, and the index, file name
    and SHA-256 of the **previous archive** (the link that makes a missing, reordered or replaced
    archive visible);
``manifest.jws``
    a compact JWS over ``manifest.json``'s bytes by the server's signing key.

The live database keeps an ``archives`` index row per file (range, file name, SHA-256 of the
file, the frontier and root at its end) and the closing head with its time-stamp, so the store
resumes the Merkle tree from the frontier (:func:`~exchange.messagelog.store.archived_frontier`)
and tree heads over the full log stay consistent with those published before archiving.

A file is written to a temporary name, fsynced and renamed, and the directory fsynced, before one
transaction inserts its index row and deletes the archived rows: a crash leaves either the rows
in the database (and maybe an unindexed file, which the next run overwrites), or the indexed file.
One archiving run at a time per log (an advisory lock); it works while the server runs.

This module also finds archived records, tree heads and leaf hashes for proofs and evidence:
:class:`ArchiveReader` reads each file once per run and keeps what the run asks of it. It does not
verify archives: :mod:`exchange.messagelog.verify` does, together with the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import sqlite3
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import orjson

from exchange.durable import durable_replace, new_file
from exchange.messagelog.merkle import CompactRange, leaf_hash
from exchange.messagelog.store import (
    MessageLogError,
    iter_rows,
    open_readonly,
    prepare_schema,
    query_if_table,
    unpack_frontier,
)
from exchange.protocol.canonical import b64url, b64url_decode, canonical_bytes
from exchange.protocol.jws import Signer, cert_thumbprint
from exchange.transaction import write_transaction
from exchange.trust.keys import cert_pem

FORMAT = "exchange-log-archive/1"
MANIFEST = "manifest.json"
MANIFEST_JWS = "manifest.jws"
RECORDS = "records.jsonl"
HEADS = "tree-heads.jsonl"
STAMPS = "timestamps.jsonl"
PARTS = (RECORDS, HEADS, STAMPS)
DEFAULT_MAX_RECORDS = 20_000
"""Records per archive file, roughly: a file ends at the last time-stamped head within it."""
_FILE = "messagelog-{:06d}.zip"
_INDEX = (
    "SELECT idx, first_seq, end_seq, file, sha256, frontier, root, created_at "
    "FROM archives ORDER BY idx"
)

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ArchiveIndexEntry:
    """One row of the database's archive index: which file holds records first_seq..end_seq-1."""

    index: int
    first_seq: int
    end_seq: int
    file: str
    sha256: str
    frontier: tuple[bytes, ...]
    root: bytes
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "first_seq": self.first_seq,
            "end_seq": self.end_seq,
            "records": self.end_seq - self.first_seq,
            "file": self.file,
            "sha256": self.sha256,
            "root": b64url(self.root),
        }


def read_index(conn: sqlite3.Connection) -> list[ArchiveIndexEntry]:
    """The archive index of a log, in order (empty for a log that never archived)."""
    cursor = query_if_table(conn, _INDEX)
    rows = [] if cursor is None else cursor.fetchall()
    return [
        ArchiveIndexEntry(
            index=int(r[0]),
            first_seq=int(r[1]),
            end_seq=int(r[2]),
            file=str(r[3]),
            sha256=str(r[4]),
            frontier=unpack_frontier(bytes(r[5])),
            root=bytes(r[6]),
            created_at=int(r[7]),
        )
        for r in rows
    ]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- planning ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    index: int
    start: int
    end: int
    previous: ArchiveIndexEntry | None


def _cutoff_seq(conn: sqlite3.Connection, start: int, cutoff_ms: int) -> int:
    """The first seq logged at or after the cut-off (the end of the log when none is)."""
    (first_young,) = conn.execute(
        "SELECT min(seq) FROM records WHERE logged_at >= ?", (cutoff_ms,)
    ).fetchone()
    if first_young is not None:
        return int(first_young)
    (end,) = conn.execute("SELECT coalesce(max(seq) + 1, ?) FROM records", (start,)).fetchone()
    return int(end)


def _stamped_sizes(conn: sqlite3.Connection, start: int, limit: int) -> list[int]:
    """Sizes of time-stamped tree heads in (start, limit]: where an archive may end."""
    rows = conn.execute(
        "SELECT t.size FROM timestamps t JOIN tree_heads h ON h.size = t.size "
        "WHERE t.size > ? AND t.size <= ? ORDER BY t.size",
        (start, limit),
    ).fetchall()
    return [int(size) for (size,) in rows]


def _plan(conn: sqlite3.Connection, cutoff_ms: int, max_records: int) -> _Plan | None:
    index = read_index(conn)
    previous = index[-1] if index else None
    start = previous.end_seq if previous else 0
    sizes = _stamped_sizes(conn, start, _cutoff_seq(conn, start, cutoff_ms))
    if not sizes:
        return None
    within = [s for s in sizes if s <= start + max_records]
    end = within[-1] if within else sizes[0]
    return _Plan(previous.index + 1 if previous else 1, start, end, previous)


def archivable(db_path: Path, cutoff_ms: int) -> tuple[int, int]:
    """(first seq not archived yet, end of what archiving at ``cutoff_ms`` would move)."""
    conn = open_readonly(db_path)
    try:
        index = read_index(conn)
        start = index[-1].end_seq if index else 0
        sizes = _stamped_sizes(conn, start, _cutoff_seq(conn, start, cutoff_ms))
    finally:
        conn.close()
    return start, sizes[-1] if sizes else start


# --- writing -----------------------------------------------------------------------------------


class ArchivingBusy(MessageLogError):
    """Another archiving run (the server's own, or an operator's) holds the log's archive lock."""


@contextlib.contextmanager
def _archive_lock(db_path: Path, wait: float) -> Iterator[None]:
    path = db_path.with_name(db_path.name + ".archive.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise ArchivingBusy(
                        f"another archiving run is in progress for {db_path}; "
                        "try again when it is done"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def archive_log(
    db_path: str | Path,
    archive_dir: str | Path,
    signer: Signer,
    *,
    older_than_ms: int,
    max_records: int = DEFAULT_MAX_RECORDS,
    progress: Progress | None = None,
    now: Callable[[], float] = time.time,
    wait: float = 0.0,
) -> list[ArchiveIndexEntry]:
    """Move the records logged before ``older_than_ms`` (unix ms) into archive files.

    Only whole ranges that end at a time-stamped tree head move; the rest waits for the next
    run. Returns the archives written (none when nothing was old enough and stamped). Waits up
    to ``wait`` seconds for another run to finish, then raises :class:`ArchivingBusy`; raises
    :class:`MessageLogError` when the records to move do not match their signed tree head (run
    ``exchange log verify``).
    """
    db, folder = Path(db_path), Path(archive_dir)
    if max_records < 1:
        raise ValueError("max_records must be at least 1")
    written: list[ArchiveIndexEntry] = []
    with _archive_lock(db, wait):
        start, goal = archivable(db, older_than_ms)
        while True:
            conn = open_readonly(db)
            try:
                plan = _plan(conn, older_than_ms, max_records)
            finally:
                conn.close()
            if plan is None:
                return written
            moved = _Moved(progress, start, goal)
            entry = _write_archive(db, folder, signer, plan, moved, int(now() * 1000))
            _commit(db, entry, signer)
            written.append(entry)


@dataclass(slots=True)
class _Moved:
    progress: Progress | None
    start: int
    goal: int

    def at(self, seq: int) -> None:
        if self.progress is not None:
            self.progress(seq + 1 - self.start, max(self.goal - self.start, seq + 1 - self.start))


class _Part:
    """One zip member written as a stream, with its SHA-256."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()
        self.count = 0

    def line(self, data: bytes) -> None:
        self.stream.write(data + b"\n")
        self.digest.update(data + b"\n")
        self.count += 1


def _write_archive(
    db: Path, folder: Path, signer: Signer, plan: _Plan, moved: _Moved, created_at: int
) -> ArchiveIndexEntry:
    folder.mkdir(parents=True, exist_ok=True)
    name = _FILE.format(plan.index)
    final, tmp = folder / name, folder / f".{name}.tmp"
    conn = open_readonly(db)
    try:
        conn.execute("BEGIN")
        (log_id,) = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
        before = (
            CompactRange.from_frontier(plan.start, plan.previous.frontier)
            if plan.previous
            else CompactRange()
        )
        with new_file(tmp) as stream, zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as z:
            digests, after, counts = _write_parts(z, conn, plan, before.copy(), moved, created_at)
            manifest = _manifest(str(log_id), plan, before, after, digests, counts, created_at)
            manifest["signer"] = cert_thumbprint(signer.cert)
            data = canonical_bytes(manifest)
            z.writestr(MANIFEST, data)
            z.writestr(MANIFEST_JWS, signer.sign(data))
        conn.execute("COMMIT")
        durable_replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        conn.close()
    return ArchiveIndexEntry(
        index=plan.index,
        first_seq=plan.start,
        end_seq=plan.end,
        file=name,
        sha256=file_sha256(final),
        frontier=after.frontier,
        root=after.root(),
        created_at=created_at,
    )


def _member(name: str, created_at: int) -> zipfile.ZipInfo:
    zip_epoch = 315_532_800  # 1980-01-01, the earliest time a zip member can carry
    info = zipfile.ZipInfo(name, date_time=time.gmtime(max(created_at / 1000, zip_epoch))[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _write_parts(
    z: zipfile.ZipFile,
    conn: sqlite3.Connection,
    plan: _Plan,
    compact: CompactRange,
    moved: _Moved,
    created_at: int,
) -> tuple[dict[str, str], CompactRange, dict[str, int]]:
    digests: dict[str, str] = {}
    counts: dict[str, int] = {}
    with z.open(_member(RECORDS, created_at), "w", force_zip64=True) as stream:
        part = _Part(stream)
        _copy_records(conn, plan, compact, part, moved)
        digests[RECORDS], counts["records"] = part.digest.hexdigest(), part.count
    row = conn.execute("SELECT root FROM tree_heads WHERE size = ?", (plan.end,)).fetchone()
    if row is None or bytes(row[0]) != compact.root():
        raise MessageLogError(
            f"records {plan.start}..{plan.end - 1} do not match the signed tree head of size "
            f"{plan.end}; nothing was archived: run `exchange log verify`"
        )
    for name, table, columns in _SIZED_PARTS:
        part = _copy_sized_rows(z, _member(name, created_at), conn, plan, table, columns)
        digests[name], counts[table] = part.digest.hexdigest(), part.count
    return digests, compact, counts


_SIZED_PARTS: Final = (
    (HEADS, "tree_heads", ("size", "root", "signed_at", "jws")),
    (STAMPS, "timestamps", ("size", "token", "tsa", "gen_time")),
)
"""The parts copied from a table keyed by tree size; each table's second column is a blob."""


def _copy_sized_rows(
    z: zipfile.ZipFile,
    member: zipfile.ZipInfo,
    conn: sqlite3.Connection,
    plan: _Plan,
    table: str,
    columns: tuple[str, ...],
) -> _Part:
    """The rows of ``table`` with a size in the plan's range, one canonical JSON line each, the
    blob in base64url."""
    query = f"SELECT {', '.join(columns)} FROM {table} WHERE size > ? AND size <= ? ORDER BY size"
    with z.open(member, "w", force_zip64=True) as stream:
        part = _Part(stream)
        for row in iter_rows(conn.execute(query, (plan.start, plan.end))):
            line = dict(zip(columns, row, strict=True))
            line[columns[1]] = b64url(bytes(row[1]))
            part.line(canonical_bytes(line))
    return part


def _copy_records(
    conn: sqlite3.Connection, plan: _Plan, compact: CompactRange, part: _Part, moved: _Moved
) -> None:
    expected = plan.start
    cursor = conn.execute(
        "SELECT seq, entry, leaf_hash FROM records WHERE seq >= ? AND seq < ? ORDER BY seq",
        (plan.start, plan.end),
    )
    for seq, entry, stored in iter_rows(cursor):
        data = bytes(entry)
        leaf = leaf_hash(data)
        if seq != expected or leaf != stored or b"\n" in data:
            raise MessageLogError(
                f"record {expected} is missing or damaged; nothing was archived: "
                "run `exchange log verify`"
            )
        compact.append(leaf)
        part.line(data)
        moved.at(seq)
        expected += 1
    if expected != plan.end:
        raise MessageLogError(
            f"records {expected}..{plan.end - 1} are missing; nothing was archived: "
            "run `exchange log verify`"
        )


def _manifest(
    log_id: str,
    plan: _Plan,
    before: CompactRange,
    after: CompactRange,
    digests: dict[str, str],
    counts: dict[str, int],
    created_at: int,
) -> dict[str, Any]:
    previous = plan.previous
    return {
        "format": FORMAT,
        "log": log_id,
        "index": plan.index,
        "first_seq": plan.start,
        "end_seq": plan.end,
        "counts": counts,
        "previous": (
            {"index": previous.index, "file": previous.file, "sha256": previous.sha256}
            if previous
            else None
        ),
        "frontier_before": [b64url(n) for n in before.frontier],
        "frontier_after": [b64url(n) for n in after.frontier],
        "root": b64url(after.root()),
        "parts": digests,
        "created_at": created_at,
    }


def _commit(db: Path, entry: ArchiveIndexEntry, signer: Signer, busy_timeout: float = 30.0) -> None:
    """One transaction: the manifest signer's certificate (so the manifest verifies offline),
    the index row, then the rows it covers go (the triggers allow only those). The boundary tree
    head and its time-stamp stay: the live log resumes from them."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=busy_timeout)
    try:
        conn.execute("PRAGMA synchronous=FULL")
        has_index = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'archives'"
        ).fetchone()
        if not has_index:
            prepare_schema(conn)
        with write_transaction(conn):
            (last,) = conn.execute("SELECT coalesce(max(end_seq), 0) FROM archives").fetchone()
            if last != entry.first_seq:
                raise MessageLogError(
                    f"the archive index changed during archiving (it ends at {last}, "
                    f"not {entry.first_seq}); run the archiving again"
                )
            conn.execute(
                "INSERT OR IGNORE INTO certs VALUES (?, ?)",
                (cert_thumbprint(signer.cert), cert_pem(signer.cert)),
            )
            conn.execute(
                "INSERT INTO archives VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.index,
                    entry.first_seq,
                    entry.end_seq,
                    entry.file,
                    entry.sha256,
                    b"".join(entry.frontier),
                    entry.root,
                    entry.created_at,
                ),
            )
            conn.execute("DELETE FROM records WHERE seq < ?", (entry.end_seq,))
            conn.execute("DELETE FROM tree_heads WHERE size < ?", (entry.end_seq,))
            conn.execute("DELETE FROM timestamps WHERE size < ?", (entry.end_seq,))
    except sqlite3.Error as exc:
        raise MessageLogError(f"could not record archive {entry.file} in {db}: {exc}") from None
    finally:
        conn.close()


# --- reading -----------------------------------------------------------------------------------


class ArchiveFileError(Exception):
    """An archive file cannot be read (missing, not a zip, a part damaged)."""


_FILE_NAME = re.compile(r"messagelog-[0-9]{6}\.zip")


def archive_file(folder: Path, name: str) -> Path:
    """The archive ``name`` (from the index) in ``folder``: only a plain archive file name, so an
    edited index cannot make anyone read a file elsewhere (``../``, an absolute path)."""
    if _FILE_NAME.fullmatch(name) is None:
        raise ArchiveFileError(
            f"the index names {name[:120]!r}, not a file name in the archive folder (index edited)"
        )
    return folder / name


IN_MEMORY_MAX = 64 * 2**20
"""Archive files, and parts of them, up to this size (bytes) are read once and held in memory
while they are checked and used; larger ones are streamed, and read again for each pass over
them. Verifying one archive holds at most the file and its three parts: 4 x this at worst (a
file of 20,000 records with 600-character bodies is 9.3 MB, its records part about 16 MB)."""


class ArchiveFile:
    """Read access to one archive zip. Reading does not check it: the verifier does.

    The file is opened once. One of up to :data:`IN_MEMORY_MAX` bytes is read once: its
    :meth:`sha256` is over the very bytes the zip is read from. A part whose digest was taken
    (:meth:`part_sha256`) is decompressed once and kept for the next pass over its lines.
    """

    def __init__(self, path: Path, *, in_memory_max: int | None = None) -> None:
        self.path = path
        self._in_memory_max = IN_MEMORY_MAX if in_memory_max is None else in_memory_max
        self._parts: dict[str, bytes] = {}
        self._sha256: str | None = None
        try:
            self._file = path.open("rb")
        except FileNotFoundError:
            raise ArchiveFileError("the file is missing") from None
        except OSError as exc:
            raise ArchiveFileError(f"the file is not a readable zip ({exc})") from None
        try:
            self.stat = os.fstat(self._file.fileno())
            self._zip = zipfile.ZipFile(self._whole_or_file())
        except (OSError, zipfile.BadZipFile) as exc:
            self._file.close()
            raise ArchiveFileError(f"the file is not a readable zip ({exc})") from None

    def _whole_or_file(self) -> IO[bytes]:
        if self.stat.st_size > self._in_memory_max:
            return self._file
        data = self._file.read()
        self._sha256 = hashlib.sha256(data).hexdigest()
        return io.BytesIO(data)

    def sha256(self) -> str:
        """SHA-256 (hex) of the file as opened."""
        if self._sha256 is None:
            digest, offset = hashlib.sha256(), 0
            while chunk := os.pread(self._file.fileno(), 1 << 20, offset):
                digest.update(chunk)
                offset += len(chunk)
            self._sha256 = digest.hexdigest()
        return self._sha256

    def close(self) -> None:
        self._parts.clear()
        self._zip.close()
        self._file.close()

    def __enter__(self) -> ArchiveFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _reading(self, name: str) -> Iterator[None]:
        try:
            yield
        except KeyError:
            raise ArchiveFileError(f"{name} is missing from the archive") from None
        except (OSError, zipfile.BadZipFile, EOFError, ValueError, zlib.error) as exc:
            raise ArchiveFileError(f"{name} cannot be read ({exc})") from None

    def read(self, name: str) -> bytes:
        with self._reading(name):
            return self._zip.read(name)

    def lines(self, name: str) -> Iterator[bytes]:
        """The lines of a JSONL part, streamed (without their newline); a part kept by
        :meth:`part_sha256` is not decompressed again (and is let go)."""
        kept = self._parts.pop(name, None)
        with (
            self._reading(name),
            io.BytesIO(kept) if kept is not None else self._zip.open(name) as stream,
        ):
            for line in stream:
                yield line[:-1] if line.endswith(b"\n") else line

    def part_sha256(self, name: str) -> str:
        with self._reading(name):
            info = self._zip.getinfo(name)
            if info.file_size <= self._in_memory_max:
                # ZipExtFile yields at most file_size bytes: the declared size bounds the memory
                self._parts[name] = data = self._zip.read(info)
                return hashlib.sha256(data).hexdigest()
            digest = hashlib.sha256()
            with self._zip.open(info) as stream:
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
        return digest.hexdigest()

    def heads(self) -> Iterator[tuple[Any, Any, Any, Any]]:
        """Tree head rows as the database holds them: (size, root, signed_at, jws)."""
        for line in self.lines(HEADS):
            head = _object(line)
            yield (
                head.get("size"),
                _bytes_or_none(head.get("root")),
                head.get("signed_at"),
                head.get("jws"),
            )

    def stamps(self) -> Iterator[tuple[Any, Any, Any]]:
        """Time-stamp rows as the database holds them: (size, token, gen_time)."""
        for line in self.lines(STAMPS):
            stamp = _object(line)
            yield stamp.get("size"), _bytes_or_none(stamp.get("token")), stamp.get("gen_time")


def _object(line: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _bytes_or_none(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return b64url_decode(text)
    except ValueError:
        return None


# --- finding archived data (proofs, evidence, show) ----------------------------------------------


def _archives(db_path: Path) -> list[ArchiveIndexEntry]:
    conn = open_readonly(db_path)
    try:
        return read_index(conn)
    finally:
        conn.close()


def archived_records(db_path: str | Path, archive_dir: str | Path) -> Iterator[tuple[int, bytes]]:
    """(seq, entry bytes) of every archived record, in seq order, streamed from the files."""
    for entry in _archives(Path(db_path)):
        try:
            with ArchiveFile(archive_file(Path(archive_dir), entry.file)) as archive:
                for offset, line in enumerate(archive.lines(RECORDS)):
                    yield entry.first_seq + offset, line
        except ArchiveFileError as exc:
            raise MessageLogError(
                f"archive {entry.file} cannot be read ({exc}); run `exchange log verify`"
            ) from None


@dataclass(frozen=True, slots=True)
class ArchiveContents:
    """What proofs and evidence take from one archive file, read from it in one pass."""

    leaves: tuple[bytes, ...]
    """The leaf hash of each record line that could be read, in seq order (RFC 9162 §2.1.1)."""
    matches: tuple[tuple[int, bytes], ...]
    """(seq, entry bytes) of the records of the reader's X-Road-Id."""
    heads: tuple[tuple[Any, Any, Any, Any], ...]
    """Tree head rows (:meth:`ArchiveFile.heads`) of the reader's sizes."""
    stamps: tuple[tuple[Any, Any, Any], ...]
    """Time-stamp rows (:meth:`ArchiveFile.stamps`) of the reader's sizes."""
    sizes: frozenset[int]
    """The tree sizes whose heads and time-stamps were kept."""
    errors: tuple[tuple[str, ArchiveFileError], ...]
    """The parts that could not be read to their end, with the error."""

    def error(self, part: str) -> ArchiveFileError | None:
        return next((exc for name, exc in self.errors if name == part), None)


_ContentsKey = tuple[str, int, int, int, str, int]


class ArchiveReader:
    """The archive files of one log for one auditor's run (a proof, an evidence bundle): each
    file is read once, for the leaves, the records of ``message_id`` and the tree heads and
    time-stamps of ``sizes``, and what it held is kept for the run.

    The archive index is read from the database at each question, as before; what a file held
    is kept under its path, inode, size and modification time and the SHA-256 and first seq the
    index gives it, so a file replaced or re-indexed during the run is read again. A tree size
    not announced in ``sizes`` reads the files that may hold it again. Nothing is checked here
    (``exchange log verify`` does): the answers are the ones reading the files each time gave.
    """

    def __init__(
        self,
        db_path: str | Path,
        archive_dir: str | Path,
        *,
        message_id: str | None = None,
        sizes: frozenset[int] = frozenset(),
    ) -> None:
        self.db_path, self.folder = Path(db_path), Path(archive_dir)
        self.message_id = message_id
        self.sizes = sizes
        self._kept: dict[_ContentsKey, ArchiveContents] = {}

    def index(self) -> list[ArchiveIndexEntry]:
        return _archives(self.db_path)

    def contents(self, entry: ArchiveIndexEntry, size: int | None = None) -> ArchiveContents:
        """What the file of ``entry`` holds (with the tree head and time-stamp of ``size``, if
        given); raises :class:`ArchiveFileError` when it cannot be opened as a zip (a part that
        cannot be read is noted in the contents)."""
        path = archive_file(self.folder, entry.file)
        with contextlib.suppress(OSError):
            kept = self._kept.get(_contents_key(path, os.stat(path), entry))
            if kept is not None and (size is None or size in kept.sizes):
                return kept
        with ArchiveFile(path) as archive:
            contents = _read_contents(archive, entry, self.message_id, self.sizes)
            self._kept[_contents_key(path, archive.stat, entry)] = contents
        return contents

    def find(self, message_id: str) -> list[tuple[int, bytes]]:
        """(seq, entry bytes) of every archived record of X-Road-Id ``message_id``, in seq order."""
        if message_id != self.message_id:
            return find_archived(self.db_path, self.folder, message_id)
        found: list[tuple[int, bytes]] = []
        for entry in self.index():
            try:
                contents = self.contents(entry)
                error = contents.error(RECORDS)
                if error is not None:
                    raise error
            except ArchiveFileError as exc:
                raise MessageLogError(
                    f"archive {entry.file} cannot be read ({exc}); run `exchange log verify`"
                ) from None
            found += contents.matches
        return found

    def head(self, size: int) -> tuple[int, bytes, str] | None:
        """The archived signed tree head of ``size`` as (size, root, jws), if one is held."""
        for entry, contents in self._holding(size):
            for row in contents.heads:
                if row[0] == size and row[1] is not None and isinstance(row[3], str):
                    return size, bytes(row[1]), str(row[3])
            _unread(entry, contents, HEADS)
        return None

    def stamp(self, size: int) -> bytes | None:
        """The archived RFC 3161 token (DER) over the tree head of ``size``, if one is held."""
        for entry, contents in self._holding(size):
            for row in contents.stamps:
                if row[0] == size and isinstance(row[1], bytes):
                    return bytes(row[1])
            _unread(entry, contents, STAMPS)
        return None

    def _holding(self, size: int) -> Iterator[tuple[ArchiveIndexEntry, ArchiveContents]]:
        """The contents of the archives whose range holds tree size ``size``."""
        self.sizes |= {size}
        for entry in self.index():
            if entry.first_seq < size <= entry.end_seq:
                try:
                    contents = self.contents(entry, size)
                except ArchiveFileError as exc:
                    raise MessageLogError(f"archive {entry.file} cannot be read ({exc})") from None
                yield entry, contents

    def leaves(self, size: int) -> list[bytes]:
        """Leaf hashes of the archived records below ``size``, in seq order (RFC 9162 §2.1.1)."""
        leaves: list[bytes] = []
        for entry in self.index():
            if entry.first_seq >= size:
                break
            try:
                contents = self.contents(entry)
                wanted = size - len(leaves)
                error = contents.error(RECORDS)
                if error is not None and len(contents.leaves) < wanted:
                    raise error
            except ArchiveFileError as exc:
                raise MessageLogError(f"archive {entry.file} cannot be read ({exc})") from None
            leaves += contents.leaves[: max(wanted, 0)]
        return leaves


def _unread(entry: ArchiveIndexEntry, contents: ArchiveContents, part: str) -> None:
    """Not found in what could be read of ``part``: its read error, if any, is the answer."""
    error = contents.error(part)
    if error is not None:
        raise MessageLogError(f"archive {entry.file} cannot be read ({error})")


def _contents_key(path: Path, stat: os.stat_result, entry: ArchiveIndexEntry) -> _ContentsKey:
    return (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, entry.sha256, entry.first_seq)


def _read_contents(
    archive: ArchiveFile, entry: ArchiveIndexEntry, message_id: str | None, sizes: frozenset[int]
) -> ArchiveContents:
    leaves: list[bytes] = []
    matches: list[tuple[int, bytes]] = []
    errors: list[tuple[str, ArchiveFileError]] = []
    needle = b'"message_id":' + orjson.dumps(message_id) if message_id is not None else None
    try:
        for offset, line in enumerate(archive.lines(RECORDS)):
            leaves.append(leaf_hash(line))
            if (
                needle is not None
                and needle in line
                and _object(line).get("message_id") == (message_id)
            ):
                matches.append((entry.first_seq + offset, line))
    except ArchiveFileError as exc:
        errors.append((RECORDS, exc))
    heads: list[tuple[Any, Any, Any, Any]] = []
    stamps: list[tuple[Any, Any, Any]] = []
    if not sizes:  # no tree head asked for: a size asked later reads the file again
        return ArchiveContents(tuple(leaves), tuple(matches), (), (), sizes, tuple(errors))
    try:
        heads += (row for row in archive.heads() if row[0] in sizes)
    except ArchiveFileError as exc:
        errors.append((HEADS, exc))
    try:
        stamps += (row for row in archive.stamps() if row[0] in sizes)
    except ArchiveFileError as exc:
        errors.append((STAMPS, exc))
    return ArchiveContents(
        tuple(leaves), tuple(matches), tuple(heads), tuple(stamps), sizes, tuple(errors)
    )


def find_archived(
    db_path: str | Path, archive_dir: str | Path, message_id: str
) -> list[tuple[int, bytes]]:
    """(seq, entry bytes) of every archived record of X-Road-Id ``message_id``, in seq order."""
    needle = b'"message_id":' + orjson.dumps(message_id)
    return [
        (seq, line)
        for seq, line in archived_records(db_path, archive_dir)
        if needle in line and _object(line).get("message_id") == message_id
    ]


def archived_end(db_path: str | Path) -> int:
    """The first seq still in the database (0 when nothing was archived)."""
    index = _archives(Path(db_path))
    return index[-1].end_seq if index else 0


def default_archive_dir(db_path: Path) -> Path:
    """Where archives of a log given by file alone are looked for: ``archives`` next to it."""
    return db_path.parent / "archives"
