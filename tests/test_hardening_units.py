"""Defences of THREAT_MODEL.md that need no network: files private to the operator, and the
append-only triggers of the message log.

- Every ``exchange`` command runs under umask 077, so the files it creates (registries,
  ``central.db``) and their new directories are readable by the operator only.
- The triggers of a message log refuse UPDATE and DELETE of records and tree heads from any
  connection that has not dropped them. They stop accidents; an insider can drop them, which
  verification then catches (``tests/test_messagelog.py``).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from exchange.cli import main
from exchange.identifiers import SecurityServerId
from exchange.messagelog.store import MessageLog
from exchange.protocol.jws import Signer
from exchange.trust.keys import generate_key, self_signed_certificate

OWNER = SecurityServerId("PS", "GOV", "MOI", "ss1")


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """Start from the usual 022 and restore the process umask the CLI changes."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("args", "created"),
    [
        pytest.param(
            ["registry", "generate", "--db", "{dir}/registry.db", "--count", "10", "--no-progress"],
            "registry.db",
            id="registry-generate",
        ),
        pytest.param(
            ["central", "init", "--dir", "{dir}", "--instance", "PS"],
            "central.db",
            id="central-init",
        ),
    ],
)
def test_cli_creates_files_private_to_the_operator(
    tmp_path: Path, usual_umask: None, args: list[str], created: str
) -> None:
    directory = tmp_path / "new" / "dir"
    argv = [a.replace("{dir}", str(directory)) for a in args]
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert _mode(directory / created) == 0o600
    assert _mode(directory) == 0o700


# --- the append-only triggers of the message log ------------------------------------------------


@pytest.fixture
async def written_log(tmp_path: Path) -> Path:
    """A message log with two records and a signed tree head, closed again."""
    key = generate_key()
    signer = Signer(key, self_signed_certificate(key, "log signer"))
    path = tmp_path / "messagelog.sqlite"
    with MessageLog(path, signer, owner=OWNER) as log:
        for i in range(2):
            await log.append({"message_id": f"m-{i}", "side": "provider", "status": "ok"})
        await log.sign_tree_head()
    return path


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE records SET status = 'error' WHERE seq = 0", id="update-record"),
        pytest.param("UPDATE records SET entry = x'00'", id="update-every-record"),
        pytest.param("DELETE FROM records WHERE seq = 1", id="delete-last-record"),
        pytest.param("DELETE FROM records", id="delete-every-record"),
        pytest.param("UPDATE tree_heads SET root = x'00'", id="update-tree-head"),
        pytest.param("DELETE FROM tree_heads", id="delete-tree-heads"),
    ],
)
def test_append_only_triggers_refuse_changes(written_log: Path, statement: str) -> None:
    conn = sqlite3.connect(written_log, isolation_level=None)
    try:
        before = conn.execute("SELECT * FROM records ORDER BY seq").fetchall()
        heads = conn.execute("SELECT * FROM tree_heads ORDER BY size").fetchall()
        assert len(before) == 2 and heads
        with pytest.raises(sqlite3.IntegrityError, match="the message log is append-only"):
            conn.execute(statement)
        assert conn.execute("SELECT * FROM records ORDER BY seq").fetchall() == before
        assert conn.execute("SELECT * FROM tree_heads ORDER BY size").fetchall() == heads
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("row", "statement"),
    [
        pytest.param(
            "INSERT INTO timestamps VALUES (2, x'00', 'tsa', 0)",
            "UPDATE timestamps SET token = x'01'",
            id="update-timestamp",
        ),
        pytest.param(
            "INSERT INTO timestamps VALUES (2, x'00', 'tsa', 0)",
            "DELETE FROM timestamps",
            id="delete-timestamp",
        ),
        pytest.param(
            "INSERT INTO ocsp_responses VALUES ('t', 'd', x'00')",
            "UPDATE ocsp_responses SET der = x'01'",
            id="update-ocsp-response",
        ),
        pytest.param(
            "INSERT INTO ocsp_responses VALUES ('t', 'd', x'00')",
            "DELETE FROM ocsp_responses",
            id="delete-ocsp-response",
        ),
        pytest.param(
            "INSERT INTO archives VALUES (0, 0, 0, 'messagelog-000000.zip', 'x', x'', x'', 0)",
            "UPDATE archives SET sha256 = 'y'",
            id="update-archive-index",
        ),
        pytest.param(
            "INSERT INTO archives VALUES (0, 0, 0, 'messagelog-000000.zip', 'x', x'', x'', 0)",
            "DELETE FROM archives",
            id="delete-archive-index",
        ),
    ],
)
def test_append_only_triggers_cover_time_stamps_ocsp_responses_and_the_archive_index(
    written_log: Path, row: str, statement: str
) -> None:
    """Rows of these tables may be added, never changed or removed (time-stamps below the end
    of an archive aside, as records and tree heads)."""
    table = statement.split()[1] if statement.startswith("UPDATE") else statement.split()[2]
    conn = sqlite3.connect(written_log, isolation_level=None)
    try:
        conn.execute(row)
        before = conn.execute(f"SELECT * FROM {table}").fetchall()
        with pytest.raises(sqlite3.IntegrityError, match="the message log is append-only"):
            conn.execute(statement)
        assert conn.execute(f"SELECT * FROM {table}").fetchall() == before
    finally:
        conn.close()
