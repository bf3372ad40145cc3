"""The message logs after real exchanges (docs/design.md §5 "log before answer", §8).

Every exchange, answered or refused, forged or honest, has its record on the servers that took
part; both sides' logs verify (signatures, certificates, Merkle tree, tree heads) with the
library and with ``exchange log verify``; and a copy of a log edited in any of the ways an
insider could edit it (a body byte, a deleted record, two records swapped) fails verification
naming the first bad record.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from exchange.cli.common import console
from exchange.cli.log import group as log_group
from exchange.identifiers import parse_security_server, parse_service, parse_subsystem
from exchange.server.logcheck import verify_server_log
from tests.integration.conftest import FINANCE, HEALTH, MOI, PALPOST, WINDOW, Net, service
from tests.integration.rogue import (
    RogueClient,
    read_signed_response,
    sign_request,
    tamper_signature,
)
from tests.integration.support import (
    ECHO,
    PERSONS,
    assert_serving,
    assert_xroad_error,
    copy_log,
    launch,
    logged,
    new_id,
    record_of_response,
    records,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

REGISTRY = "/r1/PS/GOV/MOI/population-registry"


def _cli(*args: str) -> Result:
    return CliRunner().invoke(log_group, list(args), catch_exceptions=False)


# --- every exchange leaves a record, and the logs verify ---------------------------------------


BOTH = ("consumer", "provider")
CONSUMER = ("consumer",)

# (consumer server, client, path, X-Road error code or None, sides that log it)
EXCHANGES: list[tuple[str, str, str, str | None, tuple[str, ...]]] = [
    ("palpost", str(WINDOW), f"{PERSONS}/123456782", None, BOTH),
    ("palpost", str(WINDOW), f"{ECHO}/x", None, BOTH),
    ("mof", str(FINANCE), f"{PERSONS}/1", "Server.ServerProxy.AccessDenied", BOTH),
    (
        "moh",
        str(HEALTH),
        f"{PERSONS}/123456782",
        "Server.ServerProxy.AccessDenied.PurposeNotAllowed",
        BOTH,
    ),
    ("palpost", str(WINDOW), f"{REGISTRY}/nope", "Server.ServerProxy.UnknownService", BOTH),
    ("palpost", str(HEALTH), f"{PERSONS}/1", "Client.UnknownClient", CONSUMER),
    (
        "palpost",
        str(WINDOW),
        "/r1/PS/GOV/MOI/nowhere/persons",
        "Server.ClientProxy.UnknownMember",
        CONSUMER,
    ),
]


async def _exchanges(net: Net) -> list[tuple[str, str, str, str | None]]:
    """Run :data:`EXCHANGES` and a replay; return (server, message id, side, code) to find."""
    expected: list[tuple[str, str, str, str | None]] = []
    for name, client, path, code, sides in EXCHANGES:
        mid = new_id("audit")
        status, _, body = await net.call(name, path, client=client, headers={"X-Road-Id": mid})
        assert (status == 200) == (code is None), body
        expected += [(name if side == "consumer" else "moi", mid, side, code) for side in sides]
    mid = new_id("audit-replay")
    for _ in range(2):
        await net.call("palpost", f"{PERSONS}/123456782", headers={"X-Road-Id": mid})
    for name, side in (("palpost", "consumer"), ("moi", "provider")):
        views = records(net.servers[name], mid, side)
        assert [(v.entry["error"] or {}).get("type") for v in views] == [
            None,
            "Server.ServerProxy.ReplayedMessage",
        ]
    return expected


async def _forgeries(net: Net) -> list[tuple[str, str]]:
    """Requests forged by an attacker with PALPOST's server's keys: (response JWS, code)."""
    palpost, moi = net.servers["palpost"], net.servers["moi"]
    conf = moi.trusted.current
    assert conf is not None
    signer = palpost.signers[PALPOST]
    rogue = RogueClient(
        moi,
        auth_cert=palpost.config.auth_cert,
        auth_key=palpost.config.auth_key,
        cas=conf.ca_certs(),
        presented=[signer.cert],
        claimed_server=palpost.config.server_id,
    )
    moi_ss = parse_security_server(f"{MOI}/ss1")

    def signed(body: bytes = b"") -> str:
        return sign_request(
            signer, client=WINDOW, service=service("persons"), security_server=moi_ss, body=body
        )[0]

    forged: list[tuple[dict[str, Any], bytes, str]] = [
        ({"jws": tamper_signature(signed())}, b"", "InvalidSignatureValue"),
        ({"jws": signed(b"signed")}, b"altered", "InvalidMessage"),
        ({"jws": "é.é.é"}, b"", "InvalidMessage"),
    ]
    out = []
    try:
        for meta, body, code in forged:
            frame, conn = await rogue.send_meta(meta, body)
            response, _ = read_signed_response(frame, conn)
            assert response.error_type == f"Server.ServerProxy.{code}"
            out.append((frame.meta["jws"], f"Server.ServerProxy.{code}"))
    finally:
        rogue.close()
    return out


async def test_every_exchange_is_logged_and_the_logs_verify(net: Net) -> None:
    expected = await _exchanges(net)
    forgeries = await _forgeries(net)
    for name, mid, side, code in expected:
        logged(net.servers[name], mid, side, code)
    for response_jws, code in forgeries:
        assert record_of_response(net.servers["moi"], response_jws)["error"]["type"] == code
    for name in ("palpost", "moi", "moh", "mof"):
        report = verify_server_log(net.servers[name].config)
        assert report.ok, (name, [p.to_dict() for p in report.problems[:5]])
        assert report.records == net.servers[name].log.size
    result = _cli("verify", "--config", str(net.servers["moi"].config.path), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


async def test_log_show_prints_one_exchange(net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    mid = new_id("show")
    status, _, _ = await net.call("palpost", f"{PERSONS}/123456782", headers={"X-Road-Id": mid})
    assert status == 200
    config = str(net.servers["palpost"].config.path)
    as_json = _cli("show", "--config", config, "--id", mid, "--json")
    assert as_json.exit_code == 0, as_json.output
    (view,) = orjson.loads(as_json.output)
    assert (view["message_id"], view["side"], view["status"]) == (mid, "consumer", "ok")
    assert view["entry"]["request_hash"]
    # a block per record, in 80 columns (and into a pipe)
    monkeypatch.setattr(console, "_width", 80)
    blocks = _cli("show", "--config", config, "--id", mid)
    assert blocks.exit_code == 0, blocks.output
    lines = blocks.output.splitlines()
    assert lines[0].startswith(f"#{view['seq']}  ") and lines[0].endswith("consumer  200 ok")
    assert f"    message id  {mid}" in lines and f"    client      {WINDOW}" in lines
    assert f"    request     GET {view['path']}" in lines and "    user id     (none)" in lines
    assert all(len(line) <= 80 for line in lines), blocks.output
    assert lines[-1] == "1 record(s), as logged (`exchange log verify` checks them)"


# --- log before answer ---------------------------------------------------------------------------


NOLOG_SUBSYSTEM = "PS/GOV/MOI/log-tests"
NOLOG_POLICY = f"""
provider = "PS/GOV/MOI"

[[grant]]
id = "window-log-tests"
client = "{WINDOW}"
service = "{NOLOG_SUBSYSTEM}/persons"
methods = ["GET"]
"""


async def test_consumer_answers_nothing_it_cannot_log(net: Net) -> None:
    server = await launch(
        net, "palpost-nolog", parse_security_server(f"{PALPOST}/ss-nolog"), clients=[WINDOW]
    )
    for _ in range(2):  # both pooled connections up, the provider's certificates logged
        status, _, _ = await net.call("palpost-nolog", f"{PERSONS}/123456782")
        assert status == 200
    server.log.close()  # from now on, nothing can be written
    mid = new_id("nolog-consumer")
    result = await net.call("palpost-nolog", f"{PERSONS}/123456782", headers={"X-Road-Id": mid})
    assert_xroad_error(*result, "Server.ClientProxy.MessageLogFailed", 500)
    assert b"Haddad" not in result[2]
    logged(net.servers["moi"], mid, "provider")  # the provider did answer, and logged it


async def test_provider_answers_nothing_it_cannot_log(net: Net) -> None:
    subsystem = parse_subsystem(NOLOG_SUBSYSTEM)
    server = await launch(
        net,
        "moi-nolog",
        parse_security_server(f"{MOI}/ss-nolog"),
        clients=[subsystem],
        services=[(parse_service(f"{subsystem}/persons"), f"{net.backend_url}/persons")],
        policy=NOLOG_POLICY,
    )
    path = f"/r1/{subsystem}/persons/123456782"
    for _ in range(2):  # both pooled connections up, the consumer's certificates logged
        status, _, _ = await net.call("palpost", path)
        assert status == 200
    server.log.close()
    mid = new_id("nolog-provider")
    result = await net.call("palpost", path, headers={"X-Road-Id": mid})
    assert_xroad_error(*result, "Server.ServerProxy.MessageLogFailed", 500)
    assert b"Haddad" not in result[2]
    logged(net.servers["palpost"], mid, "consumer", "Server.ServerProxy.MessageLogFailed")
    await assert_serving(net)


# --- tampering with a copy of a log ------------------------------------------------------------


Tamper = Callable[[sqlite3.Connection, int], None]


def _edit_body_byte(conn: sqlite3.Connection, seq: int) -> None:
    (entry,) = conn.execute("SELECT entry FROM records WHERE seq = ?", (seq,)).fetchone()
    doc = orjson.loads(entry)
    body = bytearray(base64.b64decode(doc["response_body"]))
    body[len(body) // 2] ^= 0x01
    marker = b'"response_body":"'
    start = entry.index(marker) + len(marker)
    end = entry.index(b'"', start)
    edited = entry[:start] + base64.b64encode(bytes(body)) + entry[end:]
    conn.execute("UPDATE records SET entry = ? WHERE seq = ?", (edited, seq))


def _edit_and_rehash(conn: sqlite3.Connection, seq: int) -> None:
    _edit_body_byte(conn, seq)
    (entry,) = conn.execute("SELECT entry FROM records WHERE seq = ?", (seq,)).fetchone()
    leaf = hashlib.sha256(b"\x00" + entry).digest()
    conn.execute("UPDATE records SET leaf_hash = ? WHERE seq = ?", (leaf, seq))


def _delete(conn: sqlite3.Connection, seq: int) -> None:
    conn.execute("DELETE FROM records WHERE seq = ?", (seq,))


def _swap(conn: sqlite3.Connection, seq: int) -> None:
    cols = "logged_at, message_id, client, service, side, status, entry, leaf_hash"
    a = conn.execute(f"SELECT {cols} FROM records WHERE seq = ?", (seq,)).fetchone()
    b = conn.execute(f"SELECT {cols} FROM records WHERE seq = ?", (seq + 1,)).fetchone()
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    conn.execute(f"UPDATE records SET {sets} WHERE seq = ?", (*b, seq))
    conn.execute(f"UPDATE records SET {sets} WHERE seq = ?", (*a, seq + 1))


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_edit_body_byte, id="body-byte-edited"),
        pytest.param(_edit_and_rehash, id="body-byte-edited-leaf-rehashed"),
        pytest.param(_delete, id="middle-record-deleted"),
        pytest.param(_swap, id="two-records-swapped"),
    ],
)
async def test_tampered_copy_names_the_first_bad_record(
    net: Net, tmp_path: Path, tamper: Tamper
) -> None:
    palpost = net.servers["palpost"]
    mids = [new_id("tamper") for _ in range(3)]
    for mid in mids:
        status, _, _ = await net.call("palpost", f"{PERSONS}/123456782", headers={"X-Road-Id": mid})
        assert status == 200
    seq = logged(palpost, mids[1], "consumer").seq
    copy = copy_log(palpost, tmp_path / "copy.sqlite")
    conn = sqlite3.connect(copy, isolation_level=None)
    try:
        for op in ("update", "delete"):
            conn.execute(f"DROP TRIGGER records_no_{op}")
        tamper(conn, seq)
    finally:
        conn.close()
    ca = str(net.root / "ca" / "ca.cert.pem")
    owner = ["--owner", str(palpost.config.server_id)]
    as_json = _cli("verify", "--db", str(copy), "--ca", ca, *owner, "--json")
    assert as_json.exit_code == 1, as_json.output
    first_bad = orjson.loads(as_json.output)["first_bad"]
    assert first_bad["seq"] == seq, first_bad
    text = _cli("verify", "--db", str(copy), "--ca", ca, *owner, "--no-progress")
    assert text.exit_code == 1
    assert re.search(rf"first bad record:.*\bseq {seq}\b", text.output), text.output
    # the server's own log is untouched and still verifies
    assert _cli("verify", "--config", str(palpost.config.path), "--no-progress").exit_code == 0
