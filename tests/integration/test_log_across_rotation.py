"""A message log verified offline across a signing-key rotation (THREAT_MODEL.md, key rotation).

A running security server logs exchanges, gets a new signing key with the operator's command
(``exchange server keys new-sign``) and activates it (``SecurityServer.reload_keys``, what
``exchange server reload`` triggers with SIGHUP), and logs more exchanges. ``exchange log verify``
then checks a copy of the log with public material only (``--db`` and ``--ca``): every tree head
verifies, those signed by the old key and those signed by the new one, because
``MessageLog.set_signer`` stored the new certificate before the writer signed with it. With that
certificate removed from the copy's ``certs`` table, verification fails and names every tree
head the new key signed.

``tests/test_messagelog.py::test_a_new_signing_key_signs_only_after_its_certificate_is_stored``
shows the ordering on a bare :class:`~exchange.messagelog.store.MessageLog`; this is the same
claim end to end, through a running server, its reload, and the CLI an auditor runs.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from click.testing import CliRunner, Result

from exchange.cli import main
from exchange.identifiers import parse_security_server
from exchange.protocol.jws import cert_thumbprint
from exchange.server.core import SecurityServer
from exchange.trust.keys import load_certificate
from tests.integration.conftest import PALPOST, WINDOW, Net
from tests.integration.support import PERSONS, copy_log, launch, logged, new_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

NAME = "log-rotation"
SERVER_ID = parse_security_server(f"{PALPOST}/ss-{NAME}")


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


async def _exchanges(net: Net, server: SecurityServer, label: str, n: int) -> list[str]:
    """``n`` answered exchanges through ``server``; their consumer records' message ids."""
    mids = [new_id(label) for _ in range(n)]
    for mid in mids:
        status, _, body = await net.call(NAME, f"{PERSONS}/123456782", headers={"X-Road-Id": mid})
        assert status == 200, body[:500]
        logged(server, mid, "consumer")
    return mids


def _signer_of(token: str) -> str:
    thumb = jwt.api_jws.get_unverified_header(token)["x5t#S256"]
    assert isinstance(thumb, str)
    return thumb


def _rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def test_log_verifies_offline_across_a_signing_key_rotation(net: Net, tmp_path: Path) -> None:
    server = await launch(net, NAME, SERVER_ID, clients=[WINDOW])
    try:
        old = cert_thumbprint(server.owner_signer.cert)
        before = await _exchanges(net, server, "before-rotation", 3)

        # (1) the operator adds a new signing key and the running server activates it
        added = _cli(
            "server",
            "keys",
            "new-sign",
            "--config",
            str(server.config.path),
            "--member",
            str(PALPOST),
            "--ca-dir",
            str(net.root / "ca"),
        )
        assert added.exit_code == 0, added.output
        await server.reload_keys()
        new = cert_thumbprint(server.owner_signer.cert)
        assert new != old
        assert new == cert_thumbprint(load_certificate(server.config.signing[-1].cert))
        after = await _exchanges(net, server, "after-rotation", 3)
        await server.log.sign_tree_head()  # a head over everything (the last batch has one)
        copy = copy_log(server, tmp_path / "rotated.sqlite")
    finally:
        await net.servers.pop(NAME).stop()

    # records under both keys: each consumer record holds the request its server signed
    signed_by = {
        orjson.loads(entry)["message_id"]: _signer_of(orjson.loads(entry)["request_jws"])
        for (entry,) in _rows(copy, "SELECT entry FROM records WHERE side = 'consumer'")
    }
    assert {signed_by[m] for m in before} == {old}
    assert {signed_by[m] for m in after} == {new}
    heads = {
        size: _signer_of(token) for size, token in _rows(copy, "SELECT size, jws FROM tree_heads")
    }
    new_heads = sorted(size for size, thumb in heads.items() if thumb == new)
    assert new_heads and any(thumb == old for thumb in heads.values())
    assert set(heads.values()) == {old, new}
    # one clean cut: the old key signs every head before the rotation, the new one every head after
    assert all((thumb == new) == (size >= new_heads[0]) for size, thumb in heads.items())

    # (2) the auditor's offline check: every tree head verifies, old key's and new key's
    ca = str(net.root / "ca" / "ca.cert.pem")
    owner = str(server.config.server_id)
    verified = _cli("log", "verify", "--db", str(copy), "--ca", ca, "--owner", owner, "--json")
    assert verified.exit_code == 0, verified.output
    report = orjson.loads(verified.output)
    assert report["ok"] and report["problems"] == [], report
    assert report["tree_heads"] == report["tree_heads_verified"] == len(heads)
    assert report["records"] == len(signed_by) and report["unsigned_records"] == 0
    assert report["records"] >= len(before) + len(after)
    text = _cli("log", "verify", "--db", str(copy), "--ca", ca, "--owner", owner, "--no-progress")
    assert text.exit_code == 0, text.output
    assert f"tree heads: {len(heads)}/{len(heads)} verified" in text.output
    assert "records past the last signed tree head: 0" in text.output

    # (3) without the new certificate, the heads it signed cannot be verified, and the report
    # names each of them
    tampered = tmp_path / "without-new-cert.sqlite"
    tampered.write_bytes(copy.read_bytes())
    conn = sqlite3.connect(tampered, isolation_level=None)
    try:
        triggers = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'certs'"
        ).fetchall()
        assert triggers == [], "the certs table has no append-only trigger to drop"
        assert conn.execute("DELETE FROM certs WHERE thumbprint = ?", (new,)).rowcount == 1
    finally:
        conn.close()
    refused = _cli("log", "verify", "--db", str(tampered), "--ca", ca, "--owner", owner, "--json")
    assert refused.exit_code == 1, refused.output
    report = orjson.loads(refused.output)
    assert not report["ok"]
    missing = f"signature: signing certificate {new} is not in the log"
    head_problems = [p for p in report["problems"] if p["kind"] == "tree_head"]
    assert sorted(p["size"] for p in head_problems) == new_heads, head_problems
    assert {p["reason"] for p in head_problems} == {missing}
    assert report["tree_heads_verified"] == len(heads) - len(new_heads)
    # the records whose requests the new key signed fail their signature check too
    record_problems = {p["message_id"] for p in report["problems"] if p["kind"] == "record"}
    assert set(after) <= record_problems
    assert not set(before) & record_problems
    text = _cli(
        "log", "verify", "--db", str(tampered), "--ca", ca, "--owner", owner, "--no-progress"
    )
    assert text.exit_code == 1
    assert "FAILED" in text.output
    # the records after the last head that verifies are under heads that do not: not "pending"
    unproven = len(signed_by) - max(size for size in heads if size < new_heads[0])
    assert f"records under no verified tree head: {unproven}" in " ".join(text.output.split())
    assert "not yet under a signed tree head" not in text.output
    assert f"tree head of size {new_heads[0]}: {missing}" in " ".join(text.output.split())
