"""``exchange.audit.watch``: a rewritten history is reported at the next look (issue 4 item 5).

Real message logs written by :class:`MessageLog`; the rewrites are done to the SQLite file the
way an insider with write access would (after dropping the append-only triggers).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from exchange.audit.watch import watch_once
from exchange.identifiers import SecurityServerId
from exchange.messagelog import merkle
from exchange.messagelog.store import MessageLog
from exchange.protocol.jws import Signer
from exchange.trust.keys import generate_key, self_signed_certificate

OWNER = SecurityServerId("PS", "GOV", "MOI", "ss1")


def _entry(i: int) -> dict[str, str]:
    return {"message_id": f"m-{i}", "client": "PS/GOV/MOF/tax", "side": "consumer"}


async def _append(path: Path, signer: Signer, start: int, count: int) -> None:
    with MessageLog(path, signer, owner=OWNER) as log:
        await log.append_many([_entry(start + i) for i in range(count)])


@pytest.fixture
def signer() -> Signer:
    key = generate_key()
    return Signer(key, self_signed_certificate(key, "watch test signer"))


async def test_growing_log_is_consistent(tmp_path: Path, signer: Signer) -> None:
    db, state = tmp_path / "log.sqlite", tmp_path / "watch.json"
    await _append(db, signer, 0, 5)
    first = watch_once(db, state)
    assert first.consistent and first.previous_size is None and first.size == 5
    await _append(db, signer, 5, 7)
    second = watch_once(db, state)
    assert second.consistent and (second.previous_size, second.size) == (5, 12)
    assert watch_once(db, state).consistent  # nothing new: still consistent


def _rewrite_history(db: Path) -> None:
    """An insider edits record 1 and recomputes every stored hash and root, so the log is
    self-consistent again (log verify would still catch the forged signatures; watch does not
    need them)."""
    conn = sqlite3.connect(db)
    try:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            conn.execute(f"DROP TRIGGER {name}")
        entry = conn.execute("SELECT entry FROM records WHERE seq = 1").fetchone()[0]
        forged = bytes(entry).replace(b"m-1", b"m-X")
        conn.execute(
            "UPDATE records SET entry = ?, leaf_hash = ? WHERE seq = 1",
            (forged, merkle.leaf_hash(forged)),
        )
        leaves = [bytes(h) for (h,) in conn.execute("SELECT leaf_hash FROM records ORDER BY seq")]
        for (size,) in conn.execute("SELECT size FROM tree_heads").fetchall():
            conn.execute(
                "UPDATE tree_heads SET root = ? WHERE size = ?", (merkle.root(leaves[:size]), size)
            )
        conn.commit()
    finally:
        conn.close()


async def test_rewritten_history_is_reported(tmp_path: Path, signer: Signer) -> None:
    db, state = tmp_path / "log.sqlite", tmp_path / "watch.json"
    await _append(db, signer, 0, 5)
    assert watch_once(db, state).consistent
    remembered = state.read_text()
    await _append(db, signer, 5, 3)
    _rewrite_history(db)
    result = watch_once(db, state)
    assert not result.consistent
    assert result.message.startswith("REWRITTEN")
    assert "does not extend the remembered tree of size 5" in result.message
    assert state.read_text() == remembered  # the remembered head is kept


async def test_truncated_log_is_reported(tmp_path: Path, signer: Signer) -> None:
    db, state = tmp_path / "log.sqlite", tmp_path / "watch.json"
    await _append(db, signer, 0, 6)
    assert watch_once(db, state).consistent
    conn = sqlite3.connect(db)
    try:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DELETE FROM records WHERE seq >= 3")
        conn.execute("DELETE FROM tree_heads WHERE size > 3")
        conn.execute("DELETE FROM tree_heads WHERE size < 3")
        leaves = [bytes(h) for (h,) in conn.execute("SELECT leaf_hash FROM records ORDER BY seq")]
        conn.execute(
            "INSERT OR REPLACE INTO tree_heads (size, root, signed_at, jws) VALUES (3, ?, 0, 'x')",
            (merkle.root(leaves),),
        )
        conn.commit()
    finally:
        conn.close()
    result = watch_once(db, state)
    assert not result.consistent and "shrank from size 6 to 3" in result.message


async def test_watch_command_exit_codes(tmp_path: Path, signer: Signer) -> None:
    from click.testing import CliRunner

    from exchange.cli import main

    db, state = tmp_path / "log.sqlite", tmp_path / "watch.json"
    await _append(db, signer, 0, 4)
    args = ["audit", "watch", "--db", str(db), "--state", str(state)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0 and "first look: size 4" in first.output
    await _append(db, signer, 4, 2)
    _rewrite_history(db)
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 1 and "REWRITTEN" in second.output
