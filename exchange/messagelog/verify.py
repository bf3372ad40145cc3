"""Offline verification of a message log file: what an auditor runs (DESIGN.md §8).

:func:`verify_log` opens the SQLite file read-only (while its server runs, or after), streams the
records in seq order in one pass and checks that none was deleted, reordered or edited, that
every tree head was signed by a certificate issued by one of the auditor's trusted CAs, and that
each signed root equals the RFC 9162 root recomputed from the entries at that size. An optional
``entry_checker`` (from the security server code) verifies the signed request and response inside
each entry. The report names the first bad record: exactly, when the entry or its position
betrays it; within the range between the last matching and the first mismatching tree head, when
an entry was edited together with its stored leaf hash.

Given the approved TSA certificates, it also checks each stored RFC 3161 time-stamp token
(RFC 3161 §2.4.2) against the verified tree head of its size: the token stamps SHA-256 of that
head's JWS (:func:`~exchange.messagelog.store.tree_head_digest`), is signed by an approved TSA
whose certificate a trusted CA issued, and its genTime does not precede the head's signing time
by more than the allowed clock skew. Without TSA certificates the tokens are counted, not checked.

What this cannot see: records removed together with every tree head that covers them, or a
log replaced wholesale. Time-stamps close part of that gap (a head stamped by a TSA existed at
that time); consistency proofs held by others (later issues) close the rest. This module does not
repair logs nor check revocation of TSA certificates.
"""

from __future__ import annotations

import datetime as dt
import functools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.messagelog.merkle import HASH_SIZE, CompactRange, leaf_hash
from exchange.messagelog.store import (
    INDEXED_KEYS,
    MessageLogError,
    TreeHead,
    head_from_row,
    iter_rows,
    open_readonly,
    tree_head_digest,
    tree_head_payload,
)
from exchange.protocol import jws
from exchange.protocol.canonical import b64url_decode
from exchange.protocol.jws import JwsError
from exchange.trust.keys import cert_from_pem
from exchange.trust.timestamp import TimestampError, TimestampInvalid, verify_timestamp_token

PROGRESS_EVERY = 4096
MAX_PROBLEMS = 1000
TIMESTAMP_SKEW_MS = 60_000
"""How far a time-stamp's genTime may precede its tree head's signing time (clock skew)."""

EntryChecker = Callable[[dict[str, Any], "CertLookup"], list[str]]

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "seq": self.seq,
            "size": self.size,
            "message_id": self.message_id,
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

    ``unsigned_records`` counts records after the last signed tree head: nothing proves them yet
    (normal only while a log that signs periodically is running), so show them to the auditor.
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

    @property
    def ok(self) -> bool:
        return self.first_bad is None and not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "path": self.path,
            "log_id": self.log_id,
            "records": self.records,
            "tree_heads": self.tree_heads,
            "tree_heads_verified": self.tree_heads_verified,
            "unsigned_records": self.unsigned_records,
            "timestamps": self.timestamps,
            "timestamps_verified": self.timestamps_verified,
            "timestamps_unchecked": self.timestamps_unchecked,
            "first_bad": self.first_bad.to_dict() if self.first_bad else None,
            "problems": [p.to_dict() for p in self.problems],
            "problems_omitted": self.problems_omitted,
        }


class CertLookup:
    """Certificates stored in the log, trusted only when issued directly by a trusted CA."""

    def __init__(self, conn: sqlite3.Connection, trusted_cas: Sequence[x509.Certificate]) -> None:
        self._conn = conn
        self._trusted_cas = tuple(trusted_cas)
        self._certs: dict[str, x509.Certificate | None] = {}
        self._verdicts: dict[str, str | None] = {}

    def get(self, thumbprint: str) -> x509.Certificate | None:
        """The certificate with this x5t#S256, if the log holds it (not a trust decision)."""
        if thumbprint not in self._certs:
            row = self._conn.execute(
                "SELECT pem FROM certs WHERE thumbprint = ?", (thumbprint,)
            ).fetchone()
            self._certs[thumbprint] = _parse_pem(row[0]) if row else None
        return self._certs[thumbprint]

    def trusted(self, thumbprint: str, at: dt.datetime | None = None) -> x509.Certificate:
        """The certificate, if it is in the log, chains to a trusted CA and signs; else JwsError."""
        cert = self.get(thumbprint)
        if cert is None:
            raise JwsError(f"signing certificate {thumbprint} is not in the log")
        if thumbprint not in self._verdicts:
            self._verdicts[thumbprint] = self._judge(cert)
        verdict = self._verdicts[thumbprint]
        if verdict is not None:
            raise JwsError(f"signing certificate {thumbprint} {verdict}")
        if at is not None and not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise JwsError(f"signing certificate {thumbprint} was not valid at {at.isoformat()}")
        return cert

    def key_for(self, thumbprint: str, at: dt.datetime | None = None) -> ec.EllipticCurvePublicKey:
        """A ``key_for`` callback for :func:`exchange.protocol.jws.verify`."""
        key = self.trusted(thumbprint, at).public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise JwsError(f"signing certificate {thumbprint} does not hold an EC key")
        return key

    def _judge(self, cert: x509.Certificate) -> str | None:
        if not any(_issued_by(cert, ca) for ca in self._trusted_cas):
            return "is not issued by a trusted CA"
        try:
            usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            return "has no KeyUsage extension"
        if not usage.digital_signature:
            return "is not allowed to sign (KeyUsage lacks digitalSignature)"
        return None


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _parse_pem(pem: object) -> x509.Certificate | None:
    try:
        return cert_from_pem(pem) if isinstance(pem, str | bytes) else None
    except ValueError:
        return None


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

    def first_bad(self) -> BadRecord | None:
        candidates = [b for b in (self.first_precise, self.first_range, self.truncated) if b]
        return min(candidates, key=lambda b: (b.seq, b.range is not None), default=None)


class _Verifier:
    def __init__(
        self,
        conn: sqlite3.Connection,
        trusted_cas: Sequence[x509.Certificate],
        entry_checker: EntryChecker | None,
        progress: Callable[[int, int], None] | None,
        tsa_certs: Sequence[x509.Certificate] = (),
    ) -> None:
        self.conn = conn
        self.lookup = CertLookup(conn, trusted_cas)
        self.entry_checker = entry_checker
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

    def run(self, path: Path) -> VerifyReport:
        self.conn.execute("BEGIN")
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
        self.log_id = row[0] if row else None
        (total,) = self.conn.execute("SELECT count(*) FROM records").fetchone()
        heads = iter_rows(self.conn.execute(_HEADS))
        head = next(heads, None)
        self.stamps.start(self.conn)
        for record in iter_rows(self.conn.execute(_RECORDS)):
            head = self._heads_at(head, heads)
            self._record(record)
            if self.progress and self.compact.size % PROGRESS_EVERY == 0:
                self.progress(self.compact.size, total)
        head = self._heads_at(head, heads)
        self._beyond_end(head, heads)
        self.stamps.through(None, None)
        if self.progress:
            self.progress(self.compact.size, total)
        self.conn.execute("COMMIT")
        return self._report(path)

    def _report(self, path: Path) -> VerifyReport:
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
        )

    # -- records

    def _record(self, row: tuple[Any, ...]) -> None:
        seq, logged_at, data, stored = row[0], row[1], row[7], row[8]
        columns = dict(zip(INDEXED_KEYS, row[2:7], strict=True))
        entry = _parse_entry(data)
        message_id = _message_id(entry, columns)
        if self.compact.size == self.last_good:
            self.after_good = (seq, message_id)
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
        # (4) the security server's checks of the signed request and response in the entry
        if self.entry_checker is not None and entry is not None:
            for reason in self._checked(self.entry_checker, entry):
                self.tally.record(seq, message_id, f"entry check: {reason}", tree=False)

    def _checked(self, checker: EntryChecker, entry: dict[str, Any]) -> list[str]:
        try:
            return list(checker(entry, self.lookup))
        except Exception as exc:
            return [f"checker failed: {type(exc).__name__}: {exc}"]

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
        try:
            verified = jws.verify(token, functools.partial(self.lookup.key_for, at=_at(signed_at)))
            document = orjson.loads(verified.payload)
        except JwsError as exc:
            return f"signature: {exc.message}", None
        except (orjson.JSONDecodeError, ValueError, OverflowError):
            return "signed payload is not JSON", None
        signed_root = _signed_root_of(document)
        if signed_root is None:
            return "signed payload is not a tree head", None
        if self.log_id is None or verified.payload != tree_head_payload(
            self.log_id, size, signed_root, signed_at
        ):
            return _payload_mismatch(document, self.log_id, size, signed_at), None
        return "", signed_root

    def _root_mismatch(self, size: int) -> None:
        a, b = self.last_good, size
        mismatch = f"signed root differs from the root recomputed from records 0..{b - 1}"
        self.tally.add(Problem("tree_head", mismatch, size=b))
        damage = self.tally.last_tree_damage
        if damage is not None and a <= damage < b:
            return
        seq, message_id = self.after_good or (a, None)
        reason = (
            f"a record with seq {a}..{b - 1} was altered together with its stored leaf hash: "
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

    def start(self, conn: sqlite3.Connection) -> None:
        try:
            if not self.tsa_certs:
                (self.total,) = conn.execute("SELECT count(*) FROM timestamps").fetchone()
                self.unchecked = self.total
                return
            self.rows = iter_rows(conn.execute(_STAMPS))
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
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
        # (2) the token stamps SHA-256 of the head's JWS, signed by an approved TSA (RFC 3161)
        try:
            info = verify_timestamp_token(
                token,
                digest=tree_head_digest(head),
                tsa_certs=self.tsa_certs,
                ca_certs=self.trusted_cas,
            )
        except TimestampError as exc:
            return _stamp_failure(exc)
        stamped = int(info.gen_time.timestamp() * 1000)
        # (3) a time-stamp over a tree head cannot predate it, beyond the allowed clock skew
        if stamped < head.signed_at - TIMESTAMP_SKEW_MS:
            return (
                f"time-stamp genTime {info.gen_time.isoformat()} precedes the tree head's "
                f"signing time {_at(head.signed_at).isoformat()} by more than "
                f"{TIMESTAMP_SKEW_MS // 1000} s"
            )
        # (4) the stored genTime is the token's
        if stamped != gen_time:
            return "stored genTime differs from the token's (time-stamp row edited)"
        return None


def _size_key(row: tuple[Any, Any, Any]) -> int:
    return row[0] if isinstance(row[0], int) else -1


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _stamp_failure(exc: TimestampError) -> str:
    if exc.code == f"{TimestampInvalid.code}.Imprint":
        detail = exc.internal or exc.message
        return f"time-stamp is over another hash than the tree head ({detail})"
    return f"time-stamp does not verify: {exc.message}"


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


def _signed_root_of(document: object) -> bytes | None:
    if not isinstance(document, dict) or not isinstance(document.get("root"), str):
        return None
    try:
        root = b64url_decode(document["root"])
    except ValueError:
        return None
    return root if len(root) == HASH_SIZE else None


def _payload_mismatch(
    document: dict[str, Any], log_id: str | None, size: int, signed_at: int
) -> str:
    if document.get("log") != log_id:
        return f"tree head was signed for log {document.get('log')!r}, not {log_id!r}"
    if document.get("size") != size:
        return f"stored size {size} differs from the signed size {document.get('size')}"
    if document.get("signed_at") != signed_at:
        return "stored signing time differs from the signed one (tree head row edited)"
    return "signed payload is not a canonical tree head"


def verify_log(
    path: str | Path,
    *,
    trusted_cas: Sequence[x509.Certificate],
    entry_checker: EntryChecker | None = None,
    progress: Callable[[int, int], None] | None = None,
    tsa_certs: Sequence[x509.Certificate] = (),
) -> VerifyReport:
    """Verify the whole log at ``path`` in one streaming pass; see the module docstring.

    ``tsa_certs`` are the approved TSA certificates; without them time-stamps are not checked.
    """
    conn = open_readonly(path)
    try:
        verifier = _Verifier(conn, trusted_cas, entry_checker, progress, tsa_certs)
        return verifier.run(Path(path))
    except sqlite3.DatabaseError as exc:
        raise MessageLogError(f"cannot read message log {path}: {exc}") from None
    finally:
        conn.close()
