"""Append-only checks over time (issue 4 item 5): remember the last tree head seen per log and,
at the next look, check that the new tree extends it (RFC 9162 §2.1.4 consistency proof).

An auditor (or a monitoring job) runs :func:`watch_once` periodically with a state file of its
own, kept outside the security server. A log that was rewritten, truncated or replaced since the
last look cannot produce a consistency proof from the remembered root to its current one: that
is reported, with the sizes and roots involved. The remembered head is only replaced by a newer
one that was shown consistent with it.

What this does not do: verify the heads' signatures (``exchange log verify`` does), or notice a
rewrite between two looks that the rewriter repaired before the next look *and* that kept the
remembered prefix intact — which is exactly what append-only means.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exchange.durable import write_durably
from exchange.errors import ExchangeError
from exchange.messagelog import merkle
from exchange.messagelog.proofs import consistency_between
from exchange.messagelog.store import open_readonly
from exchange.protocol.canonical import b64url, b64url_decode


@dataclass(frozen=True, slots=True)
class WatchResult:
    log_id: str
    previous_size: int | None
    size: int
    root: str
    consistent: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "log_id": self.log_id,
            "previous_size": self.previous_size,
            "size": self.size,
            "root": self.root,
            "consistent": self.consistent,
            "message": self.message,
        }


def _latest_head(db: Path) -> tuple[str, int, bytes]:
    conn = open_readonly(db)
    try:
        (log_id,) = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
        row = conn.execute(
            "SELECT size, root FROM tree_heads ORDER BY size DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    if row is None:
        raise ExchangeError("the log has no signed tree head yet", code="Audit.NoTreeHead")
    return str(log_id), int(row[0]), bytes(row[1])


def _load(state: Path) -> dict[str, Any]:
    try:
        data = json.loads(state.read_text())
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def _save(state: Path, data: dict[str, Any]) -> None:
    write_durably(state, json.dumps(data, indent=2, sort_keys=True).encode())


def watch_once(db: Path, state: Path, archive_dir: Path | None = None) -> WatchResult:
    """Compare the log's latest signed tree head with the one remembered in ``state``."""
    log_id, size, root = _latest_head(db)
    data = _load(state)
    seen = data.get(log_id)
    if seen is None:
        data[log_id] = {"size": size, "root": b64url(root)}
        _save(state, data)
        return WatchResult(log_id, None, size, root.hex(), True, f"first look: size {size}")
    old_size, old_root = int(seen["size"]), b64url_decode(seen["root"])
    # (1) the tree may not shrink
    if size < old_size:
        return WatchResult(
            log_id, old_size, size, root.hex(), False,
            f"REWRITTEN: the log's tree shrank from size {old_size} to {size}",
        )  # fmt: skip
    # (2) the remembered root is a prefix of the current tree, by a consistency proof built from
    # the log's own leaves and checked against the root we remembered, not the log's
    try:
        proof = consistency_between(db, old_size, size, archive_dir=archive_dir)
        ok = merkle.verify_consistency(old_size, size, old_root, root, proof.proof)
    except ExchangeError as exc:
        ok, detail = False, exc.message
    else:
        detail = "" if ok else "the consistency proof does not lead from the remembered root"
    if not ok:
        return WatchResult(
            log_id, old_size, size, root.hex(), False,
            f"REWRITTEN: the tree of size {size} does not extend the remembered tree of size "
            f"{old_size} (root {old_root.hex()}): {detail}",
        )  # fmt: skip
    data[log_id] = {"size": size, "root": b64url(root)}
    _save(state, data)
    return WatchResult(
        log_id, old_size, size, root.hex(), True,
        f"consistent: size {old_size} -> {size}",
    )  # fmt: skip
