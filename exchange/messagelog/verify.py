"""Offline verification of a message log file: what an auditor runs (docs/design.md §8).

:func:`verify_log` opens the SQLite file read-only (while its server runs, or after), streams the
records in seq order in one pass and checks that none was deleted, reordered or edited, that
every tree head was signed by the log's *owner* (a signing certificate of the owner's member,
issued by one of the auditor's trusted CAs, valid when it signed; the owner comes from the caller,
never from the file: :mod:`exchange.trustcore.treeheads`), that each signed root equals the RFC
9162 root recomputed from the entries at that size, and that no record lies past the last signed
tree head (the store never leaves one: it commits every record with its head). With
``check_records`` each record is checked by :func:`exchange.trustcore.records.verify_record`: what
it states is what the signed request and response it carries say. The report names the first bad
record: exactly, when the entry or its position betrays it; within the range between the last
matching and the first mismatching tree head, when an entry was edited together with its stored
leaf hash.

Given the approved TSA certificates, it also checks each stored RFC 3161 time-stamp token
(RFC 3161 §2.4.2) against the verified tree head of its size: the token stamps SHA-256 of that
head's JWS (:func:`~exchange.messagelog.store.tree_head_digest`), is signed by an approved TSA
whose certificate a trusted CA issued, and its genTime does not precede the head's signing time
by more than the allowed clock skew. Without TSA certificates the tokens are counted, not checked.

Archives (:mod:`exchange.messagelog.archive`) are verified first, in the order of the database's
archive index, as part of the same pass: (A1) the index is contiguous, (A2) each file's SHA-256
is the indexed one, (A3) its manifest is signed by the log's owner, (A4) it
names this log, its index and range, and links to the previous archive's SHA-256, (A5) each part
matches the manifest; then its records, tree heads and time-stamps stream through the checks
above, and (A6) the tree ends at the frontier the index keeps, from which the live records go
on. An archive that cannot be read is reported and skipped from the index's frontier, so the
rest of the log is still checked.

What this cannot see: records removed together with every tree head that covers them, or a
log replaced wholesale. Time-stamps close part of that gap (a head stamped by a TSA existed at
that time); consistency proofs held by others (later issues) close the rest. This module does not
repair logs nor check revocation of TSA certificates.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509

from exchange.errors import VerificationFailed
from exchange.identifiers import SecurityServerId
from exchange.messagelog.archive import FORMAT as ARCHIVE_FORMAT
from exchange.messagelog.archive import (
    MANIFEST,
    MANIFEST_JWS,
    ArchiveFile,
    ArchiveFileError,
    ArchiveIndexEntry,
    archive_file,
    default_archive_dir,
    read_index,
)
from exchange.messagelog.archive import PARTS as ARCHIVE_PARTS
from exchange.messagelog.archive import RECORDS as ARCHIVE_RECORDS
from exchange.messagelog.certs import CertLookup, certificates_of_log
from exchange.messagelog.merkle import CompactRange, leaf_hash
from exchange.messagelog.store import (
    INDEXED_KEYS,
    MessageLogError,
    TreeHead,
    head_from_row,
    iter_rows,
    open_readonly,
    query_if_table,
)
from exchange.protocol.canonical import b64url
from exchange.trustcore.records import verify_record
from exchange.trustcore.treeheads import (
    verify_head_timestamp,
    verify_owner_signature,
    verify_tree_head,
)

PROGRESS_EVERY = 4096
MAX_PROBLEMS = 1000

_RECORDS = (
    "SELECT seq, logged_at, message_id, client, service, side, status, entry, leaf_hash "
    "FROM records ORDER BY seq"
)
_HEADS = "SELECT size, root, signed_at, jws FROM tree_heads ORDER BY size"
_STAMPS = "SELECT size, token, gen_time FROM timestamps ORDER BY size"


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: about a record (``seq``), or a tree head or its time-stamp (``size``)."""

    kind: str
    reason: str
    seq: int | None = None
    size: int | None = None
    message_id: str | None = None
    archive: str | None = None
    """For ``kind == "archive"``: the archive's index and file name."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "seq": self.seq,
            "size": self.size,
            "message_id": self.message_id,
            "archive": self.archive,
        }


@dataclass(frozen=True, slots=True)
class BadRecord:
    """The first record that is not as logged.

    ``range`` is set when only a tree head mismatch shows the damage: ``(a, b)`` means the tree
    head at size ``a`` matches and the one at size ``b`` does not, so the altered record lies in
    the tree-size range (a, b], i.e. it has a seq from ``a`` to ``b - 1``; ``seq`` is then ``a``.
    """

    seq: int
    message_id: str | None
    reason: str
    range: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "message_id": self.message_id,
            "reason": self.reason,
            "range": list(self.range) if self.range else None,
        }


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of :func:`verify_log`; ``ok`` when nothing was found.

    ``unsigned_records`` counts records after the last signed tree head: nothing proves them,
    and the store never leaves any (it commits every record with its head), so they fail the
    check unless a crash of an older version is being examined (``crash``).
    Once the recomputed tree has diverged, later tree heads are not listed one by one; they are
    simply missing from ``tree_heads_verified``. ``timestamps_unchecked`` counts the stored
    time-stamp tokens when no TSA certificates were given to check them with.
    """

    path: str
    log_id: str | None
    records: int
    tree_heads: int
    tree_heads_verified: int
    unsigned_records: int
    first_bad: BadRecord | None
    problems: tuple[Problem, ...]
    problems_omitted: int = 0
    timestamps: int = 0
    timestamps_verified: int = 0
    timestamps_unchecked: int = 0
    archives: int = 0
    archives_verified: int = 0
    archived_records: int = 0
    unindexed_files: tuple[str, ...] = ()
    """Archive files in the folder that the index does not name (an interrupted archiving run
    leaves one; its records are still in the database): listed, not a failure."""
    records_without_bodies: int = 0
    owner: str = ""
    """The owner the tree heads were checked against (given by the caller)."""
    stated_owner: str | None = None
    """The owner the file names (``meta``): the attacker's word when it differs."""
    records_checked: bool = False

    @property
    def ok(self) -> bool:
        return self.first_bad is None and not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "path": self.path,
            "log_id": self.log_id,
            "owner": self.owner,
            "stated_owner": self.stated_owner,
            "records_checked": self.records_checked,
            "records": self.records,
            "tree_heads": self.tree_heads,
            "tree_heads_verified": self.tree_heads_verified,
            "unsigned_records": self.unsigned_records,
            "timestamps": self.timestamps,
            "timestamps_verified": self.timestamps_verified,
            "timestamps_unchecked": self.timestamps_unchecked,
            "archives": self.archives,
            "archives_verified": self.archives_verified,
            "archived_records": self.archived_records,
            "unindexed_files": list(self.unindexed_files),
            "records_without_bodies": self.records_without_bodies,
            "first_bad": self.first_bad.to_dict() if self.first_bad else None,
            "problems": [p.to_dict() for p in self.problems],
            "problems_omitted": self.problems_omitted,
        }


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


@dataclass(slots=True)
class _Tally:
    """Mutable findings while streaming; frozen into a VerifyReport at the end."""

    problems: list[Problem] = field(default_factory=list)
    omitted: int = 0
    first_precise: BadRecord | None = None
    last_tree_damage: int | None = None
    first_range: BadRecord | None = None
    truncated: BadRecord | None = None
    archive_bad: BadRecord | None = None

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.omitted += 1

    def record(self, seq: int, message_id: str | None, reason: str, *, tree: bool) -> None:
        """A bad record; ``tree`` when the damage changes the recomputed Merkle tree."""
        self.add(Problem("record", reason, seq=seq, message_id=message_id))
        if self.first_precise is None:
            self.first_precise = BadRecord(seq, message_id, reason)
        if tree:
            self.last_tree_damage = seq

    def archive(self, entry: ArchiveIndexEntry, reason: str) -> None:
        """A problem with a whole archive (missing, altered, out of its place in the chain)."""
        label = f"{entry.index} ({entry.file})"
        self.add(Problem("archive", reason, seq=entry.first_seq, archive=label))
        if self.archive_bad is None:
            span = f"records {entry.first_seq}..{entry.end_seq - 1}"
            self.archive_bad = BadRecord(
                entry.first_seq,
                None,
                f"archive {label}, {span}: {reason}",
                (entry.first_seq, entry.end_seq),
            )

    def first_bad(self) -> BadRecord | None:
        candidates = [b for b in (self.first_precise, self.first_range, self.truncated) if b]
        best = min(candidates, key=lambda b: (b.seq, b.range is not None), default=None)
        bad = self.archive_bad
        if bad is None or bad.range is None:
            return best
        # a record pinpointed inside the bad archive says more than the archive as a whole
        if best is not None and (best.seq < bad.seq or bad.range[0] <= best.seq < bad.range[1]):
            return best
        return bad


class _Verifier:
    def __init__(
        self,
        conn: sqlite3.Connection,
        trusted_cas: Sequence[x509.Certificate],
        owner: SecurityServerId,
        check_records: bool,
        progress: Callable[[int, int], None] | None,
        tsa_certs: Sequence[x509.Certificate] = (),
        crash: bool = False,
    ) -> None:
        self.conn = conn
        self.lookup = CertLookup(certificates_of_log(conn), trusted_cas)
        self.owner = owner
        self.check_records = check_records
        self.crash = crash
        self.stated_owner: str | None = None
        self.progress = progress
        self.compact = CompactRange()
        self.tally = _Tally()
        self.stamps = _StampChecker(tuple(trusted_cas), tuple(tsa_certs), self.tally.add)
        self.log_id: str | None = None
        self.expected_seq = 0
        self.last_good = 0
        self.after_good: tuple[int, str | None] | None = None
        self.diverged = False
        self.heads_total = 0
        self.heads_ok = 0
        self.last_signed = 0
        self.last_head = 0
        """The largest stored tree head, verified or not: records past it have no head at all."""
        self.total = 0
        self.in_archive = False
        self.archives_ok = 0
        self.index: list[ArchiveIndexEntry] = []
        self.closing: tuple[int, str, bytes | None] | None = None
        """The last archive's closing tree head (size, jws) and its time-stamp token."""
        self.without_bodies = 0
        self.tail_message_id: str | None = None

    def run(self, path: Path, archive_dir: Path | None) -> VerifyReport:
        self.conn.execute("BEGIN")
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        self.log_id, self.stated_owner = meta.get("log_id"), meta.get("owner")
        self.index = read_index(self.conn)
        (live,) = self.conn.execute("SELECT count(*) FROM records").fetchone()
        self.total = live + sum(e.end_seq - e.first_seq for e in self.index)
        folder = archive_dir if archive_dir is not None else default_archive_dir(path)
        previous: ArchiveIndexEntry | None = None
        for entry in self.index:
            self._archive(folder, entry, previous)
            previous = entry
        # (5) the live records continue the last archive, under the live tree heads
        boundary = previous.end_seq if previous else 0
        self.stamps.start(self._live_stamps(boundary))
        self._segment(
            iter_rows(self.conn.execute(_RECORDS)),
            self._live_heads(iter_rows(self.conn.execute(_HEADS)), boundary),
        )
        if self.progress:
            self.progress(self.compact.size, self.total)
        self.conn.execute("COMMIT")
        self._unsigned_tail()
        return self._report(path, _unindexed(folder, self.index))

    def _unsigned_tail(self) -> None:
        """(6) no record lies past the last tree head: the store commits each with one. (Heads
        that do not verify are reported as such.)"""
        first, end = self.last_head, self.compact.size
        if end <= first or self.crash:
            return
        one = end == first + 1
        reason = (
            f"{_seqs(first, end)} past the last signed tree head (size {first}): no signature "
            f"covers {'it' if one else 'them'}, and this version commits every record with its "
            f"tree head, so {'it was' if one else 'they were'} added to the file (or left by a "
            "crash of an older version: examine with --crash)"
        )
        self.tally.record(first, self.tail_message_id, reason, tree=False)

    def _segment(self, records: Iterator[tuple[Any, ...]], heads: Iterator[_HeadRow]) -> None:
        """Stream one run of records (an archive's, or the live ones) with its tree heads."""
        head = next(heads, None)
        for record in records:
            head = self._heads_at(head, heads)
            self._record(record)
            if self.progress and self.compact.size % PROGRESS_EVERY == 0:
                self.progress(self.compact.size, self.total)
        head = self._heads_at(head, heads)
        self._beyond_end(head, heads)
        self.stamps.through(None, None)

    def _report(self, path: Path, unindexed: tuple[str, ...]) -> VerifyReport:
        return VerifyReport(
            path=str(path),
            log_id=self.log_id,
            records=self.compact.size,
            tree_heads=self.heads_total,
            tree_heads_verified=self.heads_ok,
            unsigned_records=max(self.compact.size - self.last_signed, 0),
            first_bad=self.tally.first_bad(),
            problems=tuple(self.tally.problems),
            problems_omitted=self.tally.omitted,
            timestamps=self.stamps.total,
            timestamps_verified=self.stamps.verified,
            timestamps_unchecked=self.stamps.unchecked,
            archives=len(self.index),
            archives_verified=self.archives_ok,
            archived_records=self.index[-1].end_seq if self.index else 0,
            unindexed_files=unindexed,
            records_without_bodies=self.without_bodies,
            owner=str(self.owner),
            stated_owner=self.stated_owner,
            records_checked=self.check_records,
        )

    # -- archives

    def _archive(
        self, folder: Path, entry: ArchiveIndexEntry, previous: ArchiveIndexEntry | None
    ) -> None:
        """Check one archive of the chain and stream its records through the same checks."""
        found = len(self.tally.problems) + self.tally.omitted
        # (A1) the index continues where the previous archive ended
        start = previous.end_seq if previous else 0
        if entry.first_seq != start or entry.end_seq <= entry.first_seq:
            self.tally.archive(
                entry,
                f"the index gives records {entry.first_seq}..{entry.end_seq - 1}, but the "
                f"previous archive ends at {start} (archive index edited)",
            )
        try:
            with ArchiveFile(archive_file(folder, entry.file)) as archive:
                # (A2) the file is the one the index names (its SHA-256)
                if archive.sha256() != entry.sha256:
                    self.tally.archive(
                        entry,
                        "the file's SHA-256 differs from the archive index (archive altered or "
                        "replaced)",
                    )
                for reason in self._manifest_problems(archive, entry, previous):
                    self.tally.archive(entry, reason)
                self._archived_segment(archive, entry)
        except ArchiveFileError as exc:
            self.tally.archive(entry, f"{exc}: its records cannot be checked")
            self._resume_after(entry)
            return
        # (A6) its records end in the Merkle state the index keeps for resuming the log
        if self.compact.size != entry.end_seq or self.compact.frontier != entry.frontier:
            self.tally.archive(
                entry,
                f"its records do not end in the Merkle tree state the index holds for size "
                f"{entry.end_seq}",
            )
            self._resume_after(entry)
        if len(self.tally.problems) + self.tally.omitted == found:
            self.archives_ok += 1

    def _archived_segment(self, archive: ArchiveFile, entry: ArchiveIndexEntry) -> None:
        heads: list[_HeadRow] = []

        def keep(rows: Iterator[_HeadRow]) -> Iterator[_HeadRow]:
            for row in rows:
                if row[0] == entry.end_seq:
                    heads.append(row)
                yield row

        closing_token = None
        stamps = []
        for stamp in archive.stamps():
            if stamp[0] == entry.end_seq:
                closing_token = stamp[1]
            stamps.append(stamp)
        self.stamps.start(iter(stamps))
        self.in_archive = True
        try:
            self._segment(_archived_records(archive, entry), keep(archive.heads()))
        finally:
            self.in_archive = False
        # the closing head (of the archive's end size) is time-stamped: archives end only there
        if not heads or closing_token is None:
            closes = f"no time-stamped tree head of size {entry.end_seq} closes it"
            self.tally.archive(entry, closes)
        jws_text = heads[-1][3] if heads and isinstance(heads[-1][3], str) else ""
        self.closing = (entry.end_seq, jws_text, closing_token)

    def _manifest_problems(
        self, archive: ArchiveFile, entry: ArchiveIndexEntry, previous: ArchiveIndexEntry | None
    ) -> list[str]:
        data = archive.read(MANIFEST)
        token = archive.read(MANIFEST_JWS).decode("ascii", "replace").strip()
        # (A3) manifest.jws is signed by the log's owner and signs the manifest
        try:
            payload, _ = verify_owner_signature(
                token, self.lookup.at(_at(entry.created_at)), self.owner
            )
        except VerificationFailed as exc:
            return [f"manifest {exc.message}"]
        if payload != data:
            return ["manifest.json is not the manifest that manifest.jws signs (manifest edited)"]
        manifest = _parse_entry(data) or {}
        # (A4) it is this archive of this log, linked to the previous archive by its SHA-256
        problems = _manifest_mismatches(manifest, entry, previous, self.log_id)
        # (A5) every part is the one the manifest names
        parts = manifest.get("parts") if isinstance(manifest.get("parts"), dict) else {}
        assert isinstance(parts, dict)
        for part in ARCHIVE_PARTS:
            if archive.part_sha256(part) != parts.get(part):
                problems.append(f"{part} differs from the digest in the signed manifest (altered)")
        return problems

    def _resume_after(self, entry: ArchiveIndexEntry) -> None:
        """Carry on after an archive that could not be checked, from the index's frontier."""
        try:
            self.compact = CompactRange.from_frontier(entry.end_seq, entry.frontier)
        except ValueError:
            self.tally.archive(entry, "the archive index holds no valid Merkle frontier")
            return
        self.expected_seq = entry.end_seq
        self.last_signed = max(self.last_signed, entry.end_seq)
        self.last_head = max(self.last_head, entry.end_seq)
        self.last_good, self.after_good, self.diverged = entry.end_seq, None, False
        self.closing = None

    def _live_heads(self, rows: Iterator[_HeadRow], boundary: int) -> Iterator[_HeadRow]:
        """The live tree heads; the boundary head the last archive also holds is checked equal
        to the archived one instead of being verified twice."""
        for row in rows:
            if not self.index or not isinstance(row[0], int) or row[0] > boundary:
                yield row
                continue
            closing = self.closing
            if closing is None and row[0] == boundary:
                yield row  # the last archive did not check out: verify against the index
                continue
            if closing is not None and row[0] == closing[0] and row[3] == closing[1]:
                continue
            self.tally.add(
                Problem(
                    "tree_head",
                    "a tree head in the database inside the archived range differs from the "
                    "archive's closing tree head",
                    size=row[0],
                )
            )

    def _live_stamps(self, boundary: int) -> Iterator[tuple[Any, Any, Any]]:
        for row in _stamp_rows(self.conn):
            if not self.index or not isinstance(row[0], int) or row[0] > boundary:
                yield row
                continue
            closing = self.closing
            if closing is None and row[0] == boundary:
                yield row
                continue
            if closing is not None and row[0] == closing[0] and row[1] == closing[2]:
                continue
            reason = "a time-stamp in the database inside the archived range differs from the "
            reason += "archive's closing time-stamp"
            self.tally.add(Problem("timestamp", reason, size=row[0]))

    # -- records

    def _record(self, row: tuple[Any, ...]) -> None:
        seq, logged_at, data, stored = row[0], row[1], row[7], row[8]
        columns = dict(zip(INDEXED_KEYS, row[2:7], strict=True))
        entry = _parse_entry(data)
        message_id = _message_id(entry, columns)
        if self.compact.size == self.last_good:
            self.after_good = (seq, message_id)
        if entry is not None and entry.get("bodies") == "digests-only":
            self.without_bodies += 1
        # (1) seq continuity: a gap means deleted records
        if seq != self.expected_seq:
            reason = f"{_seqs(self.expected_seq, seq)} missing (deleted)"
            self.tally.record(self.expected_seq, None, reason, tree=True)
            self.expected_seq = seq
        self.expected_seq += 1
        # (2) the entry is the one logged at this position and its bytes are the Merkle leaf
        leaf = leaf_hash(data) if isinstance(data, bytes) else b""
        for reason, tree in _entry_reasons(seq, logged_at, columns, entry, leaf, stored):
            self.tally.record(seq, message_id, reason, tree=tree)
        self.compact.append(leaf)
        if self.compact.size == self.last_head + 1:
            self.tail_message_id = message_id
        # (4) what the record states is what the signed request and response it carries say
        if self.check_records and entry is not None:
            at = _at(logged_at) if isinstance(logged_at, int) else None
            verdict = verify_record(entry, self.lookup.at(at), owner=self.owner)
            for reason in verdict.problems:
                self.tally.record(seq, message_id, reason, tree=False)

    # -- tree heads

    def _heads_at(self, head: _HeadRow | None, heads: Iterator[_HeadRow]) -> _HeadRow | None:
        """Check every tree head whose size equals the number of records streamed so far."""
        while head is not None and head[0] <= self.compact.size:
            self._tree_head(head)
            head = next(heads, None)
        return head

    def _beyond_end(self, head: _HeadRow | None, heads: Iterator[_HeadRow]) -> None:
        while head is not None:
            if self._signed_root(head) is not None:
                self._truncated(head[0])
            self.stamps.through(head[0], None)
            head = next(heads, None)

    def _tree_head(self, row: _HeadRow) -> None:
        signed_root = self._signed_root(row)
        verified = signed_root is not None and signed_root == row[1] == self.compact.root()
        self.stamps.through(row[0], head_from_row(self.log_id or "", row) if verified else None)
        if signed_root is None:
            return
        # (3c) the signed root is the root recomputed from the entries at that size
        if signed_root == self.compact.root():
            if signed_root == row[1]:
                self.heads_ok += 1
            if not self.diverged:
                self.last_good, self.after_good = self.compact.size, None
        elif not self.diverged:
            self.diverged = True
            self._root_mismatch(self.compact.size)

    def _signed_root(self, row: _HeadRow) -> bytes | None:
        """The root a tree head signs, once its signature and signed fields verify."""
        self.heads_total += 1
        if isinstance(row[0], int):
            self.last_head = max(self.last_head, row[0])
        # (3a) the JWS verifies with a log certificate issued by a trusted CA, valid when signed
        reason, signed_root = self._head_signature(row)
        if signed_root is None:
            self.tally.add(Problem("tree_head", reason, size=row[0]))
            return None
        # (3b) the stored root is the signed one
        if signed_root != row[1]:
            reason = "stored root differs from the signed root (tree head row edited)"
            self.tally.add(Problem("tree_head", reason, size=row[0]))
        self.last_signed = max(self.last_signed, row[0])
        return signed_root

    def _head_signature(self, row: _HeadRow) -> tuple[str, bytes | None]:
        size, _, signed_at, token = row
        if not (isinstance(size, int) and isinstance(signed_at, int) and isinstance(token, str)):
            return "malformed tree head row", None
        if self.log_id is None:
            return "the log has no log id", None
        # (3a) signed by the log's owner, for this log, valid when it signed
        try:
            head = verify_tree_head(
                token, self.lookup.at(_at(signed_at)), owner=self.owner, log_id=self.log_id
            )
        except VerificationFailed as exc:
            return exc.message, None
        if head.size != size:
            return f"stored size {size} differs from the signed size {head.size}", None
        if head.signed_at != signed_at:
            return "stored signing time differs from the signed one (tree head row edited)", None
        return "", head.root

    def _root_mismatch(self, size: int) -> None:
        a, b = self.last_good, size
        mismatch = f"signed root differs from the root recomputed from records 0..{b - 1}"
        self.tally.add(Problem("tree_head", mismatch, size=b))
        damage = self.tally.last_tree_damage
        if damage is not None and a <= damage < b:
            return
        seq, message_id = self.after_good or (a, None)
        how = "in an archive" if self.in_archive else "together with its stored leaf hash"
        reason = (
            f"a record with seq {a}..{b - 1} was altered {how}: "
            f"the signed tree head at size {a} matches, the one at size {b} does not"
        )
        self.tally.first_range = BadRecord(seq, message_id, reason, (a, b))

    def _truncated(self, size: int) -> None:
        have = self.compact.size
        reason = f"a signed tree head covers {size} records but the log holds {have} (truncated)"
        self.tally.add(Problem("tree_head", reason, size=size))
        if self.tally.truncated is None:
            missing = f"{_seqs(have, size)} missing: the log was truncated"
            self.tally.truncated = BadRecord(have, None, missing)


_HeadRow = tuple[Any, Any, Any, Any]


class _StampChecker:
    """Checks the ``timestamps`` rows against the tree heads, merged by size as both stream."""

    def __init__(
        self,
        trusted_cas: tuple[x509.Certificate, ...],
        tsa_certs: tuple[x509.Certificate, ...],
        report: Callable[[Problem], None],
    ) -> None:
        self.trusted_cas = trusted_cas
        self.tsa_certs = tsa_certs
        self.report = report
        self.rows: Iterator[tuple[Any, Any, Any]] = iter(())
        self.pending: tuple[Any, Any, Any] | None = None
        self.total = 0
        self.verified = 0
        self.unchecked = 0

    def start(self, rows: Iterator[tuple[Any, Any, Any]]) -> None:
        """Check ``rows`` (one archive's, or the live ones) as the tree heads stream by."""
        if not self.tsa_certs:
            count = sum(1 for _ in rows)
            self.total += count
            self.unchecked += count
            self.rows, self.pending = iter(()), None
            return
        self.rows = rows
        self.pending = next(self.rows, None)

    def through(self, size: int | None, head: TreeHead | None) -> None:
        """Check the time-stamps up to ``size`` (all, for None); ``head`` is the verified head
        of ``size``, None when that tree head did not verify."""
        while self.pending is not None and (size is None or _size_key(self.pending) <= size):
            row, self.pending = self.pending, next(self.rows, None)
            self.total += 1
            found = size is not None and row[0] == size
            reason = self._check(row, head if found else None, found=found)
            if reason is None:
                self.verified += 1
            else:
                self.report(Problem("timestamp", reason, size=_int_or_none(row[0])))

    def _check(
        self, row: tuple[Any, Any, Any], head: TreeHead | None, *, found: bool
    ) -> str | None:
        size, token, gen_time = row
        if not (isinstance(size, int) and isinstance(token, bytes) and isinstance(gen_time, int)):
            return "malformed time-stamp row"
        # (1) the tree head of that size exists and verified (signature, stored and recomputed root)
        if head is None:
            if found:
                return "the tree head of this size did not verify, so its time-stamp proves nothing"
            return "no tree head of this size: the time-stamp is over a tree head not in the log"
        # (2) the token stamps SHA-256 of the head's JWS, signed by an approved TSA (RFC 3161),
        # (3) and does not predate the head beyond the allowed clock skew
        try:
            info = verify_head_timestamp(
                token,
                head.jws,
                head.signed_at,
                tsa_certs=self.tsa_certs,
                ca_certs=self.trusted_cas,
            )
        except VerificationFailed as exc:
            return exc.message
        stamped = int(info.gen_time.timestamp() * 1000)
        # (4) the stored genTime is the token's
        if stamped != gen_time:
            return "stored genTime differs from the token's (time-stamp row edited)"
        return None


def _stamp_rows(conn: sqlite3.Connection) -> Iterator[tuple[Any, Any, Any]]:
    cursor = query_if_table(conn, _STAMPS)
    return iter(()) if cursor is None else iter_rows(cursor)


def _archived_records(archive: ArchiveFile, entry: ArchiveIndexEntry) -> Iterator[tuple[Any, ...]]:
    """An archive's records as database rows. The seq is the entry's own (its position when
    the entry has none), so a removed or moved line shows as a gap; the columns and the leaf
    hash are taken from the entry, which is all an archive holds."""
    for offset, line in enumerate(archive.lines(ARCHIVE_RECORDS)):
        entry_doc = _parse_entry(line) or {}
        seq = entry_doc.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            seq = entry.first_seq + offset
        columns = tuple(entry_doc.get(key) for key in INDEXED_KEYS)
        yield (seq, entry_doc.get("logged_at"), *columns, line, leaf_hash(line))


def _manifest_mismatches(
    manifest: dict[str, Any],
    entry: ArchiveIndexEntry,
    previous: ArchiveIndexEntry | None,
    log_id: str | None,
) -> list[str]:
    problems = []
    if manifest.get("format") != ARCHIVE_FORMAT:
        problems.append(f"the manifest is not of format {ARCHIVE_FORMAT}")
    if manifest.get("log") != log_id:
        problems.append(f"the archive is of log {manifest.get('log')!r}, not {log_id!r}")
    if manifest.get("index") != entry.index:
        problems.append(
            f"the file is archive {manifest.get('index')}, not {entry.index} "
            "(archives reordered or replaced)"
        )
    if (manifest.get("first_seq"), manifest.get("end_seq")) != (entry.first_seq, entry.end_seq):
        problems.append(
            f"the signed manifest covers records {manifest.get('first_seq')}.."
            f"{_minus_one(manifest.get('end_seq'))}, the index {entry.first_seq}.."
            f"{entry.end_seq - 1} (archive index edited, or archive replaced)"
        )
    link = manifest.get("previous")
    if previous is None and link is not None:
        problems.append("the signed manifest links to a previous archive, but it is the first")
    elif previous is not None and (
        not isinstance(link, dict)
        or link.get("sha256") != previous.sha256
        or link.get("index") != previous.index
    ):
        problems.append(
            f"its signed link to archive {previous.index} does not match that archive's SHA-256 "
            "in the index (the previous archive was altered, replaced or removed)"
        )
    if manifest.get("root") != b64url(entry.root):
        problems.append("the signed manifest's root differs from the archive index (index edited)")
    return problems


def _minus_one(value: object) -> object:
    return value - 1 if isinstance(value, int) else value


def _unindexed(folder: Path, index: Sequence[ArchiveIndexEntry]) -> tuple[str, ...]:
    named = {e.file for e in index}
    if not folder.is_dir():
        return ()
    return tuple(sorted(p.name for p in folder.glob("messagelog-*.zip") if p.name not in named))


def _size_key(row: tuple[Any, Any, Any]) -> int:
    return row[0] if isinstance(row[0], int) else -1


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _seqs(first: int, end: int) -> str:
    return f"record {first} is" if end == first + 1 else f"records {first}..{end - 1} are"


def _parse_entry(data: object) -> dict[str, Any] | None:
    if not isinstance(data, bytes):
        return None
    try:
        entry = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) else None


def _message_id(entry: dict[str, Any] | None, columns: dict[str, Any]) -> str | None:
    value = entry.get("message_id") if entry is not None else columns.get("message_id")
    return value if isinstance(value, str) else None


def _entry_reasons(
    seq: int,
    logged_at: object,
    columns: dict[str, Any],
    entry: dict[str, Any] | None,
    leaf: bytes,
    stored: object,
) -> list[tuple[str, bool]]:
    """What is wrong with one record, each reason flagged if it changes the Merkle tree."""
    if entry is None:
        return [("entry is not a JSON object (record edited)", True)]
    reasons = []
    if leaf != stored:
        reasons.append(("entry bytes do not match the stored leaf hash (record edited)", True))
    if entry.get("seq") != seq:
        moved = f"the entry at seq {seq} was logged as seq {entry.get('seq')} (records reordered)"
        reasons.append((moved, True))
    if entry.get("logged_at") != logged_at:
        reasons.append(("logged_at column differs from the entry (row edited)", False))
    reasons += [
        (f"{key} column differs from the entry (row edited)", False)
        for key, value in columns.items()
        if entry.get(key) != value
    ]
    return reasons


def verify_log(
    path: str | Path,
    *,
    trusted_cas: Sequence[x509.Certificate],
    owner: SecurityServerId,
    check_records: bool = True,
    progress: Callable[[int, int], None] | None = None,
    tsa_certs: Sequence[x509.Certificate] = (),
    archive_dir: str | Path | None = None,
    crash: bool = False,
) -> VerifyReport:
    """Verify the whole log at ``path`` of the security server ``owner``, its archives first, in
    one streaming pass; see the module docstring.

    ``check_records`` checks every record with :func:`~exchange.trustcore.records.verify_record`.
    ``tsa_certs`` are the approved TSA certificates; without them time-stamps are not checked.
    ``archive_dir`` is where the archive files are (default: ``archives`` next to the log).
    ``crash``: records past the last signed tree head are counted, not failed (a log left by a
    crash of an older version, which committed tree heads separately).
    """
    conn = open_readonly(path)
    try:
        verifier = _Verifier(
            conn, trusted_cas, owner, check_records, progress, tsa_certs, crash=crash
        )
        return verifier.run(Path(path), Path(archive_dir) if archive_dir is not None else None)
    except sqlite3.DatabaseError as exc:
        raise MessageLogError(f"cannot read message log {path}: {exc}") from None
    finally:
        conn.close()
