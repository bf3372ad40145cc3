"""Red team: an insider with a copy of a server's files (no private keys of others), on real
servers and real SQLite files, after issue 13.

- A made-up record INSERTed together with a tree head row over it (its JWS copied from a genuine
  head): the server took the row's stored root for the truth and signed over the record at its
  next start; once the forged row was deleted, ``exchange log verify`` said OK. Now the server
  verifies its latest head as its owner's before it appends, and does not start.
- Another server's genuine records replayed into this log, the tree and every head rebuilt and
  re-signed with this server's own key: ``verify`` names each replayed record.
- The log truncated and its heads re-signed with the keys the insider finds on the disk: the
  server's authentication key fails every head.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from exchange.cli.log import group as log_group
from exchange.identifiers import SecurityServerId
from exchange.messagelog.merkle import CompactRange, leaf_hash
from exchange.messagelog.store import MessageLogError
from exchange.protocol.canonical import canonical_bytes
from exchange.protocol.jws import Signer
from exchange.server.config import load_server_config
from exchange.server.core import SecurityServer
from exchange.trust.keys import cert_pem, load_certificate, load_private_key
from exchange.trustcore.treeheads import tree_head_payload
from tests.integration.conftest import FINANCE, HEALTH, MOH, WINDOW, Net
from tests.integration.support import PERSONS, copy_log, launch

pytestmark = pytest.mark.asyncio(loop_scope="session")

SS = SecurityServerId("PS", "GOV", "MOI", "ss-insider")
MOI_SS = SecurityServerId("PS", "GOV", "MOI", "ss1")
MOH_SS = SecurityServerId("PS", "GOV", "MOH", "ss1")


def _cli(*args: str) -> Result:
    return CliRunner().invoke(log_group, list(args), catch_exceptions=False)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _open(path: Path) -> sqlite3.Connection:
    """The file as the insider opens it: the append-only triggers dropped first."""
    conn = sqlite3.connect(path, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def _note(message_id: str) -> dict[str, Any]:
    """An early refusal of the consumer side: a record without signatures."""
    return {
        "side": "consumer",
        "message_id": message_id,
        "client": "PS/GOV/MOI/population-registry",
        "service": "PS/GOV/MOI/population-registry/persons",
        "user_id": "mallory",
        "path": "/408857175/family",
        "status": "error",
        "error": {"type": "Client.MissingHeader", "message": "no X-Road-Client"},
        "request_jws": None,
        "response_jws": None,
        "bodies": "digests-only",
    }


async def test_a_record_inserted_under_a_forged_head_row_stops_the_start(
    net: Net, tmp_path: Path
) -> None:
    server = await launch(net, "moi-insider", SS, clients=[])
    config_path = server.config.path
    try:
        assert (await server.log.append(_note("genuine"), typed=False)) == 0
    finally:
        await net.servers.pop("moi-insider").stop()
    log_path = server.config.log_path
    conn = _open(log_path)
    try:
        (genuine_head,) = conn.execute("SELECT jws FROM tree_heads WHERE size = 1").fetchone()
        (leaf,) = conn.execute("SELECT leaf_hash FROM records WHERE seq = 0").fetchone()
        logged_at = int(time.time() * 1000)
        data = canonical_bytes({**_note("mallory-1"), "seq": 1, "logged_at": logged_at})
        compact = CompactRange()
        for each in (leaf, leaf_hash(data)):
            compact.append(each)
        row = (1, logged_at, "mallory-1", None, None, "consumer", "error")
        conn.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (*row, data, leaf_hash(data))
        )
        conn.execute(
            "INSERT INTO tree_heads VALUES (?, ?, ?, ?)",
            (2, compact.root(), logged_at, genuine_head),
        )
    finally:
        conn.close()

    restarted = net.servers["moi-insider"] = SecurityServer(load_server_config(config_path))
    try:
        with pytest.raises(MessageLogError) as refused:
            await restarted.start()
    finally:
        await net.servers.pop("moi-insider").stop()
    assert "last tree head (size 2) does not verify" in refused.value.message
    check = sqlite3.connect(log_path)
    try:
        assert check.execute("SELECT count(*), max(size) FROM tree_heads").fetchone() == (2, 2)
    finally:
        check.close()
    verify = _cli("verify", "--config", str(config_path), "--no-progress")
    assert verify.exit_code == 1, verify.output
    assert "tree head at size 2" in _flat(verify.output) or "size 2" in _flat(verify.output)


def _rebuild(
    path: Path, entries: list[dict[str, Any]], signer: Signer, owner: SecurityServerId
) -> None:
    """Replace the records of the log at ``path`` with ``entries`` (renumbered), the tree
    recomputed and one head per record signed by ``signer`` for ``owner``."""
    conn = _open(path)
    try:
        (log_id,) = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
        conn.execute("BEGIN")
        for table in ("records", "tree_heads", "timestamps"):
            conn.execute(f"DELETE FROM {table}")
        conn.execute(
            "INSERT OR IGNORE INTO certs VALUES (?, ?)", (signer.thumbprint, cert_pem(signer.cert))
        )
        compact = CompactRange()
        for seq, entry in enumerate(entries):
            data = canonical_bytes({**entry, "seq": seq})
            columns = [entry.get(k) for k in ("message_id", "client", "service", "side", "status")]
            conn.execute(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, entry["logged_at"], *columns, data, leaf_hash(data)),
            )
            compact.append(leaf_hash(data))
            signed_at = int(time.time() * 1000)
            head = signer.sign(
                tree_head_payload(log_id, owner, compact.size, compact.root(), signed_at)
            )
            conn.execute(
                "INSERT INTO tree_heads VALUES (?, ?, ?, ?)",
                (compact.size, compact.root(), signed_at, head),
            )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _entries(path: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    try:
        return [orjson.loads(e) for (e,) in conn.execute("SELECT entry FROM records ORDER BY seq")]
    finally:
        conn.close()


async def test_another_servers_genuine_records_replayed_into_this_log_are_named(
    net: Net, tmp_path: Path
) -> None:
    """Health's insider, with Health's own key, copies Interior's genuine provider records of
    the window's requests into Health's log, rebuilds it and re-signs every head: the heads are
    Health's, the signatures inside each record genuine, and still each copied record fails,
    because the signed request was addressed to Interior's server, not Health's."""
    await net.call("palpost", f"{PERSONS}/123456782", client=str(WINDOW))
    await net.call("moh", f"{PERSONS}/123456782", client=str(HEALTH))
    moh = net.servers["moh"]
    interior = _entries(copy_log(net.servers["moi"], tmp_path / "interior.sqlite"))
    replayed = [e for e in interior if e.get("side") == "provider" and e.get("response_jws")][-2:]
    assert replayed
    copy = copy_log(moh, tmp_path / "health.sqlite")
    own = _entries(copy)
    _rebuild(copy, [*own, *replayed], moh.signers[MOH], MOH_SS)
    ca = str(net.root / "ca" / "ca.cert.pem")
    base = ["verify", "--db", str(copy), "--ca", ca, "--owner", str(MOH_SS), "--no-progress"]
    report = _cli(*base, "--json")
    assert report.exit_code == 1, report.output
    found = orjson.loads(report.output)
    assert found["tree_heads_verified"] == found["tree_heads"], "the heads are Health's own"
    named = {p["seq"] for p in found["problems"] if p["kind"] == "record"}
    assert named == set(range(len(own), len(own) + len(replayed))), found["problems"]
    assert all(
        "addressed to PS/GOV/MOI/ss1, not the log's owner PS/GOV/MOH/ss1" in p["reason"]
        for p in found["problems"]
        if p["kind"] == "record" and "addressed" in p["reason"]
    )


async def test_a_truncated_log_resigned_with_the_servers_authentication_key_fails(
    net: Net, tmp_path: Path
) -> None:
    """The insider truncates Finance's log and re-signs the heads with the key it finds next to
    the signing key: the server's TLS key. Its certificate is CA-issued and has digitalSignature,
    but it is an authentication certificate: every head fails."""
    for _ in range(3):
        await net.call("mof", f"{PERSONS}/123456782", client=str(FINANCE))
    mof = net.servers["mof"]
    copy = copy_log(mof, tmp_path / "finance.sqlite")
    kept = _entries(copy)[:-1]
    auth = Signer(
        load_private_key(mof.config.auth_key, None), load_certificate(mof.config.auth_cert)
    )
    _rebuild(copy, kept, auth, mof.config.server_id)
    ca = str(net.root / "ca" / "ca.cert.pem")
    owner = str(mof.config.server_id)
    report = _cli("verify", "--db", str(copy), "--ca", ca, "--owner", owner, "--json")
    assert report.exit_code == 1, report.output
    found = orjson.loads(report.output)
    assert found["tree_heads_verified"] == 0 and found["tree_heads"] == len(kept)
    heads = [p["reason"] for p in found["problems"] if p["kind"] == "tree_head"]
    assert heads and all("cannot sign messages" in r for r in heads), heads
