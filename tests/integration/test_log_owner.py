"""A log is its owner's (issue 13 (1), (2)): the review's attacks, replayed on real logs.

(1) A copy of Interior's log with every Finance record deleted, the rest renumbered, the leaves
recomputed and every tree head re-signed with Health's genuine signing key and re-stamped at a
real TSA: ``exchange log verify`` fails it, as Interior's log, naming Health; the owner it
checks against comes from the configuration or ``--owner``, never from the file, and is printed.

(2) A made-up record INSERTed into a server's log (the append-only triggers allow inserts)
while the server is stopped: the server does not start, naming the record, rather than sign a
tree head over it, and ``exchange log verify`` exits 1 unless told a crash is being examined.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from click.testing import CliRunner, Result
from cryptography import x509

from exchange.cli.log import group as log_group
from exchange.identifiers import SecurityServerId
from exchange.messagelog.merkle import CompactRange, leaf_hash
from exchange.messagelog.store import MessageLogError, tree_head_digest
from exchange.protocol.canonical import canonical_bytes
from exchange.protocol.jws import Signer
from exchange.server.config import load_server_config
from exchange.server.core import SecurityServer
from exchange.trust.keys import cert_pem, generate_key
from exchange.trust.timestamp import issue_tsa_cert
from exchange.trust.tsa_service import TimestampClient, create_tsa_app
from exchange.trustcore.treeheads import tree_head_payload
from tests.integration.conftest import FINANCE, HEALTH, MOH, WINDOW, Net
from tests.integration.support import PERSONS, copy_log, launch

pytestmark = pytest.mark.asyncio(loop_scope="session")

MOI_SS = SecurityServerId("PS", "GOV", "MOI", "ss1")
HEADS_EVERY = 7


def _cli(*args: str) -> Result:
    return CliRunner().invoke(log_group, list(args), catch_exceptions=False)


def _flat(text: str) -> str:
    return " ".join(text.split())


class Tsa:
    """A real RFC 3161 TSA on 127.0.0.1, issued by the federation's CA."""

    def __init__(self, cert: x509.Certificate, url: str, pem: Path) -> None:
        self.cert, self.url, self.pem = cert, url, pem

    async def stamp(self, head_jws: str, cas: list[x509.Certificate]) -> tuple[bytes, int]:
        async with TimestampClient() as client:
            digest = tree_head_digest_of(head_jws)
            token, info = await client.request(
                digest, self.url, tsa_certs=[self.cert], ca_certs=cas
            )
        return token, int(info.gen_time.timestamp() * 1000)


def tree_head_digest_of(head_jws: str) -> bytes:
    from exchange.messagelog.store import TreeHead

    return tree_head_digest(TreeHead(log_id="", size=0, root=b"", signed_at=0, jws=head_jws))


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def tsa(net: Net, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Tsa]:
    out = tmp_path_factory.mktemp("owner-tsa")
    key = generate_key()
    cert = issue_tsa_cert(net.ca, key.public_key(), "Owner test TSA")
    pem = out / "tsa.pem"
    pem.write_text(cert_pem(cert))
    runner = web.AppRunner(create_tsa_app(key, cert, serial_db=out / "tsa.sqlite"))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Tsa(cert, f"http://127.0.0.1:{runner.addresses[0][1]}/", pem)
    finally:
        await runner.cleanup()


def _without_triggers(conn: sqlite3.Connection) -> None:
    names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
    for (name,) in names:
        conn.execute(f"DROP TRIGGER {name}")


async def _forged_without(
    copy: Path, member_prefix: str, signer: Signer, tsa: Tsa, cas: list[x509.Certificate]
) -> int:
    """Rewrite ``copy`` as the attacker did: the records of ``member_prefix``'s clients gone,
    the rest renumbered, their leaves recomputed, a tree head every few records signed by
    ``signer`` and time-stamped at the TSA. Returns how many records were dropped."""
    conn = sqlite3.connect(copy, isolation_level=None)
    try:
        _without_triggers(conn)
        (log_id,) = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
        rows = conn.execute("SELECT logged_at, entry FROM records ORDER BY seq").fetchall()
        entries = [(at, orjson.loads(data)) for at, data in rows]
        kept = [(at, e) for at, e in entries if not str(e.get("client")).startswith(member_prefix)]
        conn.execute("BEGIN")
        for table in ("records", "tree_heads", "timestamps"):
            conn.execute(f"DELETE FROM {table}")
        conn.execute(
            "INSERT OR IGNORE INTO certs VALUES (?, ?)", (signer.thumbprint, cert_pem(signer.cert))
        )
        compact = CompactRange()
        for seq, (logged_at, entry) in enumerate(kept):
            data = canonical_bytes({**entry, "seq": seq})
            columns = [entry.get(k) for k in ("message_id", "client", "service", "side", "status")]
            leaf = leaf_hash(data)
            conn.execute(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, logged_at, *columns, data, leaf),
            )
            compact.append(leaf)
            if compact.size % HEADS_EVERY == 0 or compact.size == len(kept):
                signed_at = int(time.time() * 1000)
                payload = tree_head_payload(log_id, MOI_SS, compact.size, compact.root(), signed_at)
                head = signer.sign(payload)
                conn.execute(
                    "INSERT INTO tree_heads VALUES (?, ?, ?, ?)",
                    (compact.size, compact.root(), signed_at, head),
                )
                token, gen_time = await tsa.stamp(head, cas)
                conn.execute(
                    "INSERT INTO timestamps VALUES (?, ?, ?, ?)",
                    (compact.size, token, "Owner test TSA", gen_time),
                )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return len(entries) - len(kept)


async def test_interiors_log_without_finance_resigned_by_health_fails(
    net: Net, tsa: Tsa, tmp_path: Path
) -> None:
    moi = net.servers["moi"]
    for client, name in ((FINANCE, "mof"), (HEALTH, "moh"), (WINDOW, "palpost")):
        await net.call(name, f"{PERSONS}/123456782", client=str(client))
    conf = moi.trusted.current
    assert conf is not None
    cas = conf.ca_certs()
    ca = net.root / "ca" / "ca.cert.pem"
    copy = copy_log(moi, tmp_path / "interior.sqlite")
    base = ["verify", "--db", str(copy), "--ca", str(ca), "--no-progress", "--owner", str(MOI_SS)]
    genuine = _cli(*base)  # (its time-stamps, of whichever TSA other tests approved, unchecked)
    assert genuine.exit_code == 0, genuine.output
    base += ["--tsa-cert", str(tsa.pem)]
    health = net.servers["moh"].signers[MOH]
    dropped = await _forged_without(copy, "PS/GOV/MOF/", health, tsa, cas)
    assert dropped > 0

    forged = _cli(*base, "--json")
    assert forged.exit_code == 1, forged.output
    report = orjson.loads(forged.output)
    heads = [p for p in report["problems"] if p["kind"] == "tree_head"]
    assert heads and report["tree_heads_verified"] == 0
    assert all(
        "signed by member PS/GOV/MOH, not by the log's owner PS/GOV/MOI" in p["reason"]
        for p in heads
    ), heads
    # the forgery is otherwise whole: the records check out, and every time-stamp would have
    # verified but for the head it stamps
    assert {p["kind"] for p in report["problems"]} == {"tree_head", "timestamp"}, report
    stamps = [p for p in report["problems"] if p["kind"] == "timestamp"]
    assert all("did not verify" in p["reason"] for p in stamps), stamps
    assert (report["owner"], report["owner_from"]) == (str(MOI_SS), "--owner")

    text = _cli(*base)
    assert text.exit_code == 1 and "FAILED" in text.output
    assert f"owner: {MOI_SS} (from --owner)" in _flat(text.output)
    # without --owner, a copy says nothing about whose it is: refused as a usage error
    unnamed = _cli(*[a for a in base if a not in ("--owner", str(MOI_SS))])
    assert unnamed.exit_code == 2 and "give the log's owner with --owner" in unnamed.output
    # the server's own configuration names its owner
    own = _cli("verify", "--config", str(moi.config.path), "--no-progress")
    assert own.exit_code == 0, own.output
    assert f"owner: {MOI_SS} (from the server's configuration)" in _flat(own.output)


RESTART_SS = SecurityServerId("PS", "GOV", "MOI", "ss-owner")


async def test_an_inserted_record_stops_the_start(net: Net, tmp_path: Path) -> None:
    server = await launch(net, "moi-owner", RESTART_SS, clients=[])
    config_path = server.config.path
    try:
        assert (await server.log.append(_note("genuine"), typed=False)) == 0
    finally:
        await net.servers.pop("moi-owner").stop()
    log_path = server.config.log_path
    made_up = {**_note("mallory-1"), "user_id": "mallory", "path": "/family"}
    data = canonical_bytes({**made_up, "seq": 1, "logged_at": int(time.time() * 1000)})
    conn = sqlite3.connect(log_path, isolation_level=None)
    try:
        row = (1, orjson.loads(data)["logged_at"], "mallory-1", None, None, "consumer", "error")
        conn.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (*row, data, leaf_hash(data))
        )
    finally:
        conn.close()

    restarted = net.servers["moi-owner"] = SecurityServer(load_server_config(config_path))
    try:
        with pytest.raises(MessageLogError) as refused:
            await restarted.start()
    finally:
        await net.servers.pop("moi-owner").stop()
    assert "1 record(s) past its last signed tree head" in refused.value.message
    assert "seq 1 (message id mallory-1)" in refused.value.message
    conn = sqlite3.connect(log_path)
    try:
        assert conn.execute("SELECT max(size) FROM tree_heads").fetchone() == (1,)
    finally:
        conn.close()

    verify = _cli("verify", "--config", str(config_path), "--no-progress")
    assert verify.exit_code == 1, verify.output
    assert "first bad record: seq 1, message id mallory-1" in _flat(verify.output)
    assert "past the last signed tree head" in _flat(verify.output)
    crash = _cli("verify", "--config", str(config_path), "--no-progress", "--crash")
    assert crash.exit_code == 0, crash.output
    assert "records past the last signed tree head (--crash: reported, not failed): 1" in _flat(
        crash.output
    )


def _note(message_id: str) -> dict[str, Any]:
    """An early refusal of the consumer side: a record without signatures."""
    return {
        "side": "consumer",
        "message_id": message_id,
        "client": None,
        "service": None,
        "status": "error",
        "error": {"type": "Client.MissingHeader", "message": "no X-Road-Client"},
        "request_jws": None,
        "response_jws": None,
        "bodies": "digests-only",
    }
