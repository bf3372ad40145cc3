"""A signed, hash-chained audit trail of access-policy changes (issue 6 item 7, docs/design.md §7).

Every policy version the server accepts, and every reload it refuses, is one record in a SQLite
file of its own: who (the OS user or an explicit name), when, the old and the new policy version,
a unified diff of the policy files, and for a refusal the error. Each record is a compact JWS
(RFC 7515 §7.1) signed with the server's signing key whose payload names its sequence number and,
in ``prev``, the base64url SHA-256 of the previous record's JWS, so an edited, inserted or removed
record breaks the chain. The files of each accepted version are kept beside the record (their hash
is the version), so the next change, even one made while the server was down, can be diffed.

This module stores and verifies; it does not decide when a policy changes
(:class:`exchange.policy.loader.PolicyStore` does, and calls :func:`record_reload` through its
``on_reload`` hook). Removing the newest records is only detectable against a copy of the head
kept elsewhere (for instance the message log); :func:`verify_trail` checks the chain up to the head.
"""

from __future__ import annotations

import difflib
import getpass
import os
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec

from exchange.errors import ExchangeError
from exchange.policy.loader import policy_version
from exchange.policy.model import PolicyError, PolicySet
from exchange.protocol.canonical import (
    b64url,
    b64url_decode,
    canonical_bytes,
    loads,
    sha256_b64url,
)
from exchange.protocol.jws import Signer, unverified_payload, verify
from exchange.transaction import write_transaction

TRAIL_FILE: Final = "policy-audit.sqlite"
ACCEPTED: Final = "accepted"
REFUSED: Final = "refused"
MAX_DIFF_CHARS: Final = 1_000_000

Files = Sequence[tuple[str, bytes]]
KeyFor = Callable[[str], ec.EllipticCurvePublicKey]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS policy_audit (
    seq INTEGER PRIMARY KEY,
    jws TEXT NOT NULL,
    files TEXT
)
"""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One record of the trail, as its (signed) payload says."""

    seq: int
    at: str
    by: str
    outcome: str
    old_version: str | None
    new_version: str
    diff: str
    error: str | None
    prev: str | None
    jws: str

    @classmethod
    def from_jws(cls, token: str, payload: bytes | None = None) -> AuditRecord:
        body: dict[str, Any] = _load(payload if payload is not None else unverified_payload(token))
        return cls(
            seq=int(body["seq"]),
            at=str(body["at"]),
            by=str(body["by"]),
            outcome=str(body["outcome"]),
            old_version=body.get("old_version"),
            new_version=str(body["new_version"]),
            diff=str(body.get("diff", "")),
            error=body.get("error"),
            prev=body.get("prev"),
            jws=token,
        )

    def summary(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "at": self.at,
            "by": self.by,
            "outcome": self.outcome,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "error": self.error,
            "diff": self.diff,
        }


def _load(payload: bytes) -> dict[str, Any]:
    body = loads(payload)
    if not isinstance(body, dict):
        raise ValueError("audit record payload is not a JSON object")
    return body


# --- diffs --------------------------------------------------------------------------------------


def _texts(files: Files) -> dict[str, list[str]]:
    return {
        PurePath(name).name: data.decode("utf-8", errors="replace").splitlines(keepends=True)
        for name, data in files
    }


def files_diff(old: Files, new: Files) -> str:
    """A unified diff (``a/NAME`` to ``b/NAME``) of two sets of policy files, by file name."""
    before, after = _texts(old), _texts(new)
    chunks: list[str] = []
    for name in sorted(before.keys() | after.keys()):
        lines = difflib.unified_diff(
            before.get(name, []),
            after.get(name, []),
            fromfile=f"a/{name}" if name in before else "/dev/null",
            tofile=f"b/{name}" if name in after else "/dev/null",
        )
        chunks.extend(line if line.endswith("\n") else line + "\n" for line in lines)
    diff = "".join(chunks)
    return diff if len(diff) <= MAX_DIFF_CHARS else diff[:MAX_DIFF_CHARS] + "\n[diff truncated]\n"


def _encode_files(files: Files) -> str:
    return canonical_bytes({PurePath(n).name: b64url(d) for n, d in files}).decode("utf-8")


def _decode_files(text: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, b64url_decode(data)) for name, data in sorted(_load(text.encode()).items()))


# --- the trail ----------------------------------------------------------------------------------


class PolicyAuditTrail:
    """The append-only trail in its own SQLite file; every record signed by ``signer``."""

    def __init__(self, path: str | os.PathLike[str], signer: Signer) -> None:
        self.path = Path(path)
        self.signer = signer
        with closing(self._connect()) as db, db:
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None)

    def append(
        self, entry: dict[str, object], files: Files | None, *, now: datetime
    ) -> AuditRecord:
        """Sign ``entry`` with the next sequence number and the hash of the previous record."""
        with closing(self._connect()) as db, write_transaction(db):
            row = db.execute(
                "SELECT seq, jws FROM policy_audit ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq = 1 if row is None else int(row[0]) + 1
            payload = {
                **entry,
                "seq": seq,
                "at": now.astimezone(UTC).isoformat(timespec="seconds"),
                "prev": None if row is None else sha256_b64url(str(row[1]).encode("ascii")),
            }
            token = self.signer.sign(canonical_bytes(payload))
            encoded = _encode_files(files) if files is not None else None
            db.execute("INSERT INTO policy_audit VALUES (?, ?, ?)", (seq, token, encoded))
        return AuditRecord.from_jws(token)

    def accepted_files(self) -> tuple[tuple[str, bytes], ...] | None:
        """The files of the newest accepted version, or ``None`` if none was recorded."""
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT files FROM policy_audit WHERE files IS NOT NULL ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return None if row is None else _decode_files(str(row[0]))


def read_trail(path: str | os.PathLike[str]) -> list[AuditRecord]:
    """Every record in sequence order as its payload says; unverified, see :func:`verify_trail`."""
    with closing(sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT jws FROM policy_audit ORDER BY seq").fetchall()
    return [AuditRecord.from_jws(str(row[0])) for row in rows]


# --- recording ----------------------------------------------------------------------------------


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def record_reload(
    trail: PolicyAuditTrail,
    old_files: Files,
    new_files: Files,
    outcome: PolicySet | PolicyError,
    by: str | None = None,
    *,
    now: datetime | None = None,
) -> AuditRecord:
    """Record one reload: ``outcome`` is the accepted :class:`PolicySet` or the refusal's error.

    For a refusal, ``new_files`` are the files that were refused and ``new_version`` their hash.
    """
    accepted = isinstance(outcome, PolicySet)
    entry: dict[str, object] = {
        "by": _who(by),
        "outcome": ACCEPTED if accepted else REFUSED,
        "old_version": policy_version(old_files) if old_files else None,
        "new_version": (
            outcome.version if isinstance(outcome, PolicySet) else policy_version(new_files)
        ),
        "diff": files_diff(old_files, new_files),
        "error": outcome.message if isinstance(outcome, PolicyError) else None,
    }
    return trail.append(entry, new_files if accepted else None, now=now or datetime.now(UTC))


def record_startup(
    trail: PolicyAuditTrail,
    files: Files,
    policy: PolicySet,
    by: str | None = None,
    *,
    now: datetime | None = None,
) -> AuditRecord | None:
    """At server start: record ``policy`` if it is not the newest accepted version in the trail."""
    previous = trail.accepted_files()
    if previous is not None and policy_version(previous) == policy.version:
        return None
    return record_reload(trail, previous or (), files, policy, by, now=now)


# --- verification -------------------------------------------------------------------------------


def _check_record(
    seq: int, token: str, files: str | None, prev: str | None, key_for: KeyFor
) -> list[str]:
    # (1) the signature verifies against a trusted signing key
    try:
        record = AuditRecord.from_jws(token, verify(token, key_for).payload)
    except (ExchangeError, ValueError, KeyError, TypeError) as exc:
        message = exc.message if isinstance(exc, ExchangeError) else str(exc)
        return [f"record {seq}: signature or payload does not verify: {message}"]
    problems = []
    # (2) the signed sequence number is the row's, with no gap before it
    if record.seq != seq:
        problems.append(f"record {seq}: signed sequence number is {record.seq}")
    # (3) the record is chained to the one before it
    if record.prev != prev:
        problems.append(f"record {seq}: does not chain to the previous record (removed or edited)")
    # (4) the stored files are the version the record names
    if files is not None and policy_version(_decode_files(files)) != record.new_version:
        problems.append(f"record {seq}: stored policy files do not match {record.new_version}")
    return problems


def verify_trail(path: str | os.PathLike[str], trusted_key_for: KeyFor) -> list[str]:
    """Every problem with the trail at ``path``: bad signatures, gaps, broken chain links."""
    with closing(sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT seq, jws, files FROM policy_audit ORDER BY seq").fetchall()
    problems: list[str] = []
    prev: str | None = None
    for expected, (seq, token, files) in enumerate(rows, start=1):
        if seq != expected:
            problems.append(f"record {expected}: missing (next stored record is {seq})")
        problems += _check_record(int(seq), str(token), files, prev, trusted_key_for)
        prev = sha256_b64url(str(token).encode("ascii"))
    return problems
