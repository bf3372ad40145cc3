"""Inclusion and consistency proofs out of a stored message log, and their offline check.

:func:`inclusion_for_message` proves that each record of one exchange (by X-Road-Id; a server
logs one record per side it played) is leaf ``seq`` of the tree under a signed tree head (RFC 9162
§2.1.3); :func:`consistency_between` proves that the tree under one signed head is a prefix of the
tree under a later one (§2.1.4), i.e. that the log only grew between them. Both carry the tree
heads' compact JWS, so a proof written to a file names the roots its signer committed to, with
each head's RFC 3161 time-stamp token when it has one and the signer's certificate (PEM, by
``x5t#S256``): a proof file carries what an auditor needs to check it as evidence on its own.
:func:`stamped_size_covering` finds the head a proof should lead to: the latest time-stamped one
over the records.

:func:`check_inclusion` and :func:`check_consistency` verify such a proof from its JSON alone: the
Merkle path folds to the root, and that root and size are the ones inside the tree head's JWS
payload. They do **not** check the tree head's signature or its time-stamp, which need the
auditor's trust material: :mod:`exchange.audit.proofcheck` does (``exchange log check-proof
--trust``). A proof that verifies here shows consistency with the tree head it names, not that
the head is genuine.

Proof generation reads every leaf hash below the head's size, in seq order, streamed from the
database into one list: O(n) memory (about 70 bytes per record) and O(n) hashing per proof. That is
fine for logs of a few million records; larger ones need stored interior nodes (not done here).
Nothing here writes to the log.
"""

from __future__ import annotations

import binascii
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from exchange.errors import ConfigurationError, ExchangeError, VerificationFailed
from exchange.messagelog import merkle
from exchange.messagelog.archive import ArchiveReader, archived_end, default_archive_dir
from exchange.messagelog.certs import signer_certificates
from exchange.messagelog.store import iter_rows, open_readonly, read_timestamps
from exchange.protocol.canonical import b64url, b64url_decode
from exchange.trustcore.treeheads import StatedTreeHead, stated_tree_head

INCLUSION = "inclusion"
CONSISTENCY = "consistency"
_NEARBY = 3


class UnknownRecord(ExchangeError):
    """The log holds no record for the asked X-Road-Id (CLI exit status 1)."""

    code = "Log.UnknownRecord"
    status = 404


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """RFC 9162 §2.1.3: record ``seq`` is a leaf of the tree of ``tree_size`` with ``root``."""

    seq: int
    leaf_hash: bytes
    tree_size: int
    root: bytes
    proof: list[bytes]
    tree_head_jws: str
    timestamp_token: bytes | None
    """The RFC 3161 token (DER) over the tree head, when it was time-stamped."""
    certificates: dict[str, str] = field(default_factory=dict)
    """The tree head signer's certificate (PEM) by ``x5t#S256``, when the log holds it."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": INCLUSION,
            "seq": self.seq,
            "leaf_hash": b64url(self.leaf_hash),
            "tree_size": self.tree_size,
            "root": b64url(self.root),
            "proof": [b64url(p) for p in self.proof],
            "tree_head_jws": self.tree_head_jws,
            "timestamp_token": _b64_or_none(self.timestamp_token),
            "certificates": dict(sorted(self.certificates.items())),
        }


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """RFC 9162 §2.1.4: the tree of size ``m`` (``root_m``) is a prefix of that of size ``n``."""

    m: int
    n: int
    root_m: bytes
    root_n: bytes
    proof: list[bytes]
    head_m_jws: str
    head_n_jws: str
    head_m_timestamp_token: bytes | None = None
    head_n_timestamp_token: bytes | None = None
    certificates: dict[str, str] = field(default_factory=dict)
    """The tree heads' signers' certificates (PEM) by ``x5t#S256``, when the log holds them."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": CONSISTENCY,
            "m": self.m,
            "n": self.n,
            "root_m": b64url(self.root_m),
            "root_n": b64url(self.root_n),
            "proof": [b64url(p) for p in self.proof],
            "head_m_jws": self.head_m_jws,
            "head_n_jws": self.head_n_jws,
            "head_m_timestamp_token": _b64_or_none(self.head_m_timestamp_token),
            "head_n_timestamp_token": _b64_or_none(self.head_n_timestamp_token),
            "certificates": dict(sorted(self.certificates.items())),
        }


@dataclass(frozen=True, slots=True)
class Check:
    """One check :func:`inclusion_checks` or :func:`consistency_checks` made, for printing;
    ``reason`` says why it failed, when more can be said than ``what``."""

    what: str
    ok: bool
    reason: str = ""


# --- making proofs from a log ------------------------------------------------------------------


def inclusion_for_message(
    db_path: str | Path,
    message_id: str,
    *,
    size: int | None = None,
    archive_dir: str | Path | None = None,
    reader: ArchiveReader | None = None,
) -> list[InclusionProof]:
    """Inclusion proofs of every record with X-Road-Id ``message_id``, in seq order.

    Against the latest signed tree head, or the signed head of ``size``. Records and tree heads
    moved to archives (in ``archive_dir``, default ``archives`` next to the log) are found
    there. Raises :class:`UnknownRecord` when no record has that id, :class:`VerificationFailed`
    when a record is not under the head yet or the stored leaves do not match the head, and
    :class:`ConfigurationError` when no signed head has ``size``. A ``reader`` of this log's
    archives (for ``message_id``) shares what it read with the caller; without one, each archive
    file is read once for this call.
    """
    archives = reader or ArchiveReader(
        db_path,
        _archive_dir(db_path, archive_dir),
        message_id=message_id,
        sizes=frozenset() if size is None else frozenset({size}),
    )
    conn = open_readonly(db_path)
    try:
        seqs = _seqs_of(conn, db_path, message_id, archives)
        head_size, head_root, jws = _head(conn, db_path, size, archives)
        late = [s for s in seqs if s >= head_size]
        if late:
            raise VerificationFailed(
                f"record(s) {', '.join(map(str, late))} of {message_id!r} are not under the signed "
                f"tree head of size {head_size} yet; wait for the next tree head and try again"
            )
        leaves = _leaves(conn, db_path, head_size, head_root, archives)
        token = _stamp_of(conn, head_size, archives)
        certificates = signer_certificates(conn, [jws])
    finally:
        conn.close()
    return [
        InclusionProof(
            seq=s,
            leaf_hash=leaves[s],
            tree_size=head_size,
            root=head_root,
            proof=merkle.inclusion_proof(s, leaves),
            tree_head_jws=jws,
            timestamp_token=token,
            certificates=certificates,
        )
        for s in seqs
    ]


def consistency_between(
    db_path: str | Path, m: int, n: int, *, archive_dir: str | Path | None = None
) -> ConsistencyProof:
    """The consistency proof between the signed tree heads of sizes ``m`` and ``n`` (m <= n),
    archived ones included (across the archive boundary too)."""
    if not 0 < m <= n:
        raise ConfigurationError(f"need 0 < --from <= --to, got {m} and {n}")
    archives = ArchiveReader(db_path, _archive_dir(db_path, archive_dir), sizes=frozenset({m, n}))
    conn = open_readonly(db_path)
    try:
        _, root_m, jws_m = _head(conn, db_path, m, archives)
        _, root_n, jws_n = _head(conn, db_path, n, archives)
        leaves = _leaves(conn, db_path, n, root_n, archives)
        stamps = (_stamp_of(conn, m, archives), _stamp_of(conn, n, archives))
        certificates = signer_certificates(conn, [jws_m, jws_n])
    finally:
        conn.close()
    if merkle.root(leaves[:m]) != root_m:
        raise VerificationFailed(
            f"the records of {db_path} do not match its signed tree head of size {m}; "
            f"run `exchange log verify` to find the first bad record"
        )
    return ConsistencyProof(
        m=m,
        n=n,
        root_m=root_m,
        root_n=root_n,
        proof=merkle.consistency_proof(m, leaves),
        head_m_jws=jws_m,
        head_n_jws=jws_n,
        head_m_timestamp_token=stamps[0],
        head_n_timestamp_token=stamps[1],
        certificates=certificates,
    )


def _archive_dir(db_path: str | Path, archive_dir: str | Path | None) -> Path:
    return Path(archive_dir) if archive_dir is not None else default_archive_dir(Path(db_path))


def _seqs_of(
    conn: sqlite3.Connection, db_path: str | Path, message_id: str, archives: ArchiveReader
) -> list[int]:
    rows = conn.execute(
        "SELECT seq FROM records WHERE message_id = ? ORDER BY seq", (message_id,)
    ).fetchall()
    archived = [seq for seq, _ in archives.find(message_id)]
    if not rows and not archived:
        raise UnknownRecord(f"no record with X-Road-Id {message_id!r} in {db_path}")
    return archived + [seq for (seq,) in rows]


def _stamp_of(conn: sqlite3.Connection, size: int, archives: ArchiveReader) -> bytes | None:
    """The RFC 3161 token over the tree head of ``size``, from the database or its archive."""
    stamps = read_timestamps(conn, size)
    return stamps[0].token if stamps else archives.stamp(size)


def stamped_size_covering(
    db_path: str | Path, message_id: str, archives: ArchiveReader
) -> int | None:
    """The size of the latest time-stamped tree head that covers every record of
    ``message_id`` (archived records are covered by the time-stamped boundary head the database
    keeps); None when there is none yet, or no such record."""
    conn = open_readonly(db_path)
    try:
        (last,) = conn.execute(
            "SELECT max(seq) FROM records WHERE message_id = ?", (message_id,)
        ).fetchone()
        if last is None:
            archived = archives.find(message_id)
            if not archived:
                return None
            last = archived[-1][0]
        row = conn.execute(
            "SELECT max(t.size) FROM timestamps t JOIN tree_heads h ON h.size = t.size "
            "WHERE t.size > ?",
            (last,),
        ).fetchone()
    finally:
        conn.close()
    return int(row[0]) if row and row[0] is not None else None


def _head(
    conn: sqlite3.Connection, db_path: str | Path, size: int | None, archives: ArchiveReader
) -> tuple[int, bytes, str]:
    """The signed tree head of ``size`` (the latest when None) as (size, root, jws)."""
    if size is not None:
        row = conn.execute(
            "SELECT size, root, jws FROM tree_heads WHERE size = ?", (size,)
        ).fetchone()
        if row is None:
            archived = archives.head(size)
            if archived is not None:
                return archived
    return _live_head(conn, db_path, size)


def _live_head(
    conn: sqlite3.Connection, db_path: str | Path, size: int | None
) -> tuple[int, bytes, str]:
    if size is None:
        row = conn.execute(
            "SELECT size, root, jws FROM tree_heads ORDER BY size DESC LIMIT 1"
        ).fetchone()
        if row is None:
            raise VerificationFailed(f"{db_path} has no signed tree head yet")
    else:
        row = conn.execute(
            "SELECT size, root, jws FROM tree_heads WHERE size = ?", (size,)
        ).fetchone()
        if row is None:
            raise ConfigurationError(
                f"no signed tree head of size {size} in {db_path}; "
                f"nearest signed sizes: {_nearby(conn, size)}"
            )
    return int(row[0]), bytes(row[1]), str(row[2])


def _nearby(conn: sqlite3.Connection, size: int) -> str:
    below = conn.execute(
        "SELECT size FROM tree_heads WHERE size < ? ORDER BY size DESC LIMIT ?", (size, _NEARBY)
    ).fetchall()
    above = conn.execute(
        "SELECT size FROM tree_heads WHERE size > ? ORDER BY size LIMIT ?", (size, _NEARBY)
    ).fetchall()
    sizes = [s for (s,) in reversed(below)] + [s for (s,) in above]
    return ", ".join(map(str, sizes)) if sizes else "none (the log has no signed tree head)"


def _leaves(
    conn: sqlite3.Connection, db_path: str | Path, size: int, root: bytes, archives: ArchiveReader
) -> list[bytes]:
    """The first ``size`` leaf hashes in seq order (archived ones from their archives), checked
    against the head's ``root``."""
    leaves = archives.leaves(size) if archived_end(db_path) else []
    cursor = conn.execute("SELECT leaf_hash FROM records WHERE seq < ? ORDER BY seq", (size,))
    leaves += [bytes(leaf) for (leaf,) in iter_rows(cursor)]
    if len(leaves) != size or merkle.root(leaves) != root:
        raise VerificationFailed(
            f"the records of {db_path} do not match its signed tree head of size {size}; "
            f"run `exchange log verify` to find the first bad record"
        )
    return leaves


# --- checking proofs offline -------------------------------------------------------------------


def check_inclusion(proof_dict: dict[str, Any]) -> bool:
    """Does the JSON inclusion proof verify? (Not the head's signature: see the module doc.)"""
    return all(c.ok for c in inclusion_checks(proof_dict))


def check_consistency(proof_dict: dict[str, Any]) -> bool:
    """Does the JSON consistency proof verify? (Not the heads' signatures: see the module doc.)"""
    return all(c.ok for c in consistency_checks(proof_dict))


def inclusion_checks(d: dict[str, Any]) -> list[Check]:
    """RFC 9162 §2.1.3.2 over a proof from :meth:`InclusionProof.to_dict`, step by step."""
    try:
        seq, size = _int(d["seq"]), _int(d["tree_size"])
        leaf, root = _hash(d["leaf_hash"]), _hash(d["root"])
        path = [_hash(p) for p in d["proof"]]
        head = stated_tree_head(d["tree_head_jws"])
    except (KeyError, TypeError, ValueError, VerificationFailed) as exc:
        return [Check(f"the inclusion proof is well formed ({_reason(exc)})", False)]
    where = f"record {seq} in the tree of size {size}"
    return [
        # (1) the audit path folds from the leaf hash up to the claimed root
        Check(
            f"audit path of {len(path)} hash(es) leads from {where} to root {root.hex()}",
            merkle.verify_inclusion(seq, size, leaf, path, root),
        ),
        # (2) that root and size are the ones the signed tree head commits to
        _head_matches("tree head", head, size, root),
    ]


def consistency_checks(d: dict[str, Any]) -> list[Check]:
    """RFC 9162 §2.1.4.2 over a proof from :meth:`ConsistencyProof.to_dict`, step by step."""
    try:
        m, n = _int(d["m"]), _int(d["n"])
        root_m, root_n = _hash(d["root_m"]), _hash(d["root_n"])
        path = [_hash(p) for p in d["proof"]]
        head_m, head_n = stated_tree_head(d["head_m_jws"]), stated_tree_head(d["head_n_jws"])
    except (KeyError, TypeError, ValueError, VerificationFailed) as exc:
        return [Check(f"the consistency proof is well formed ({_reason(exc)})", False)]
    return [
        # (1) the proof rebuilds both roots: the tree of size m is a prefix of the one of size n
        Check(
            f"{len(path)} hash(es) show the tree of size {m} is a prefix of the tree of size {n}",
            merkle.verify_consistency(m, n, root_m, root_n, path),
        ),
        # (2) both roots and sizes are those of the signed tree heads
        _head_matches(f"tree head of size {m}", head_m, m, root_m),
        _head_matches(f"tree head of size {n}", head_n, n, root_n),
        # (3) both heads are of the same log
        Check("both tree heads name the same log", head_m.log_id == head_n.log_id),
    ]


def checks_for(document: object) -> list[Check]:
    """The checks for a proof file written by ``exchange log prove`` or ``log consistency``."""
    if isinstance(document, dict) and isinstance(document.get("proofs"), list):
        proofs: list[object] = document["proofs"]
        if not proofs:
            return [Check("the file holds at least one inclusion proof", False)]
        return [c for p in proofs for c in checks_for(p)]
    if not isinstance(document, dict):
        return [Check("the file holds a proof object", False)]
    checker: Callable[[dict[str, Any]], list[Check]] | None = {
        INCLUSION: inclusion_checks,
        CONSISTENCY: consistency_checks,
    }.get(str(document.get("kind")))
    if checker is None:
        return [Check(f"the proof kind is known (got {document.get('kind')!r})", False)]
    return checker(document)


def load_proof_file(path: str | Path) -> object:
    """The JSON of a proof file; a file that is not JSON is a failed check."""
    try:
        return orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError as exc:
        raise VerificationFailed(f"{path} is not a JSON proof file: {exc}") from None


def _head_matches(name: str, head: StatedTreeHead, size: int, root: bytes) -> Check:
    ok = head.size == size and head.root == root
    return Check(f"root and size equal those inside the {name} JWS payload", ok)


def _b64_or_none(data: bytes | None) -> str | None:
    return b64url(data) if data else None


def _hash(text: object) -> bytes:
    """A SHA-256 value in canonical unpadded base64url (other spellings of it are refused)."""
    if not isinstance(text, str):
        raise TypeError("hashes are base64url strings")
    try:
        value = b64url_decode(text)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"bad base64url hash {text!r}") from exc
    if len(value) != merkle.HASH_SIZE or b64url(value) != text:
        raise ValueError(f"{text!r} is not a canonical base64url SHA-256 value")
    return value


def _int(value: object) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _reason(exc: Exception) -> str:
    return f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
