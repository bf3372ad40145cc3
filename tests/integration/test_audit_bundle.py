"""Evidence bundles (DESIGN.md §8, issue 4 item 3): exported, verified offline, tampering caught.

A server pair of its own time-stamps its tree heads with a real RFC 3161 TSA; bundles of one
exchange from both sides verify against the exported trust folder, also once the servers are
stopped and their logs deleted, and each kind of tampering fails with its reason.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from click.testing import CliRunner

from exchange.audit.bundle import (
    TOKEN,
    TREE_HEAD,
    export_bundle,
    export_trust,
    verify_bundle,
)
from exchange.cli import main
from exchange.cli.audit import group
from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.protocol.jws import Signer, cert_thumbprint, unverified_payload
from exchange.server.core import SecurityServer
from exchange.trust.keys import cert_pem, generate_key, self_signed_certificate
from exchange.trust.timestamp import issue_tsa_cert
from exchange.trust.tsa_service import create_tsa_app
from tests.integration.conftest import Net
from tests.integration.support import new_id, publish

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROVIDER = parse_member("PS/GOV/AUP")
CONSUMER = parse_member("PS/GOV/AUC")
DESK = parse_subsystem("PS/GOV/AUC/desk")
REGISTRY = parse_subsystem("PS/GOV/AUP/registry")
ECHO = "/r1/PS/GOV/AUP/registry/echo/1"
TSA_NAME = "Audit TSA"
POLICY = """
provider = "PS/GOV/AUP"
[[grant]]
id = "desk"
client = "PS/GOV/AUC/desk"
service = "PS/GOV/AUP/registry/echo"
methods = ["GET"]
"""
NAMES = ("aup", "auc")


@dataclass
class Audited:
    consumer: SecurityServer
    provider: SecurityServer
    trust: Path
    bundle: Path
    """The consumer's bundle of the first exchange."""
    provider_bundle: Path
    later: Path
    """The consumer's bundle of a second exchange, under a later tree head."""
    message_id: str


async def _exchange(net: Net) -> str:
    message_id = new_id("audit")
    status, _, body = await net.call(
        "auc", ECHO, client=str(DESK), headers={"X-Road-Id": message_id}
    )
    assert status == 200, body
    return message_id


async def _stamped_bundle(server: SecurityServer, message_id: str, out: Path) -> Path:
    return await export_bundle(server.config, message_id, out, stamp=lambda: _stamp(server))


async def _stamp(server: SecurityServer) -> None:
    assert await server.stamper.stamp_now() is not None


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def audited(net: Net, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Audited]:
    out = tmp_path_factory.mktemp("audit")
    key = generate_key()
    tsa_cert = issue_tsa_cert(net.ca, key.public_key(), TSA_NAME)
    runner = web.AppRunner(create_tsa_app(key, tsa_cert, serial_db=out / "tsa.sqlite"))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    with net.registry() as reg:
        reg.add_tsa(TSA_NAME, f"http://127.0.0.1:{runner.addresses[0][1]}/", cert_pem(tsa_cert))
        reg.add_member(PROVIDER, "Audit provider")
        reg.add_member(CONSUMER, "Audit consumer")
    provider = await net.add_server(
        "aup",
        SecurityServerId(*PROVIDER.parts, "ss1"),
        clients=[REGISTRY],
        services=[(REGISTRY.service("echo"), f"{net.backend_url}/echo")],
        policy=POLICY,
        start=False,
    )
    consumer = await net.add_server(
        "auc", SecurityServerId(*CONSUMER.parts, "ss1"), clients=[DESK], start=False
    )
    await publish(net)
    await provider.start()
    await consumer.start()
    try:
        message_id = await _exchange(net)
        await _stamp(provider)
        bundle = await _stamped_bundle(consumer, message_id, out / "consumer.zip")
        provider_bundle = await _stamped_bundle(provider, message_id, out / "provider.zip")
        later = await _stamped_bundle(consumer, await _exchange(net), out / "later.zip")
        trust = export_trust(consumer.config, out / "trust")
        yield Audited(consumer, provider, trust, bundle, provider_bundle, later, message_id)
    finally:
        for name in NAMES:
            server = net.servers.pop(name, None)
            if server is not None:
                await server.stop()
        with net.registry() as reg:
            reg.remove_tsa(TSA_NAME)
        await publish(net)
        await runner.cleanup()


def _replaced(src: Path, dst: Path, parts: dict[str, bytes]) -> Path:
    """A copy of the bundle ``src`` with ``parts`` replaced (or added)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name not in parts:
                zout.writestr(name, zin.read(name))
        for name, data in parts.items():
            zout.writestr(name, data)
    return dst


def _part(bundle: Path, prefix: str) -> tuple[str, bytes]:
    with zipfile.ZipFile(bundle) as z:
        [name] = [n for n in z.namelist() if n.startswith(prefix)]
        return name, z.read(name)


def _edited_record(a: Audited, tmp: Path) -> Path:
    name, data = _part(a.bundle, "record-")
    return _replaced(a.bundle, tmp, {name: data.replace(b'"GET"', b'"PUT"')})


def _other_proof(a: Audited, tmp: Path) -> Path:
    name, _ = _part(a.bundle, "inclusion-")
    _, other = _part(a.later, "inclusion-")
    return _replaced(a.bundle, tmp, {name: other})


def _other_token(a: Audited, tmp: Path) -> Path:
    _, token = _part(a.later, TOKEN)
    return _replaced(a.bundle, tmp, {TOKEN: token})


def _forged_head(a: Audited, tmp: Path) -> Path:
    _, head = _part(a.bundle, TREE_HEAD)
    key = generate_key()
    cert = self_signed_certificate(key, "forger")
    forged = Signer(key, cert).sign(unverified_payload(head.decode()))
    return _replaced(
        a.bundle,
        tmp,
        {TREE_HEAD: forged.encode(), f"certs/{cert_thumbprint(cert)}.pem": cert_pem(cert).encode()},
    )


async def test_bundle_verifies_with_the_exported_trust(audited: Audited) -> None:
    checks = verify_bundle(audited.bundle, audited.trust)
    assert [c.number for c in checks] == list(range(1, len(checks) + 1))
    assert all(c.ok for c in checks), [c.line() for c in checks if not c.ok]
    assert all(c.ok for c in verify_bundle(audited.provider_bundle, audited.trust))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        pytest.param(_edited_record, "does not hash to the proof's leaf", id="edited-record"),
        pytest.param(_other_proof, "the inclusion proof is for record", id="proof-of-another"),
        pytest.param(_other_token, "time-stamp", id="token-over-another-head"),
        pytest.param(_forged_head, "not issued by a trusted CA", id="forged-tree-head"),
    ],
)
async def test_tampering_fails_with_its_reason(
    audited: Audited, tmp_path: Path, tamper: object, reason: str
) -> None:
    assert callable(tamper)
    bad = tamper(audited, tmp_path / "bad.zip")
    failed = [c for c in verify_bundle(bad, audited.trust) if not c.ok]
    assert any(reason in c.reason for c in failed), [c.line() for c in failed]


async def test_cli_verify_correlate_and_failure(audited: Audited, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(group, ["verify", str(audited.bundle), "--trust", str(audited.trust)])
    assert ok.exit_code == 0, ok.output
    assert "(1)" in ok.output and "FAILED" not in ok.output
    both = [str(audited.bundle), str(audited.provider_bundle), "--trust", str(audited.trust)]
    corr = runner.invoke(group, ["correlate", *both])
    assert corr.exit_code == 0, corr.output
    other = runner.invoke(
        group, ["correlate", str(audited.bundle), str(audited.later), "--trust", str(audited.trust)]
    )
    assert other.exit_code == 1 and "request hashes differ" in other.output
    bad = _edited_record(audited, tmp_path / "bad.zip")
    failed = runner.invoke(group, ["verify", str(bad), "--trust", str(audited.trust)])
    assert failed.exit_code == 1
    assert "does not hash to the proof's leaf" in failed.output


async def test_cli_export_and_trust_export(audited: Audited, tmp_path: Path) -> None:
    runner = CliRunner()
    config = str(audited.consumer.config.path)
    trust = runner.invoke(group, ["trust-export", "--config", config, "-o", str(tmp_path / "t")])
    assert trust.exit_code == 0, trust.output
    assert (tmp_path / "t" / "anchor.json").is_file()
    out = tmp_path / "e.zip"
    args = ["export", "--config", config, "--id", audited.message_id, "-o", str(out)]
    done = await asyncio.to_thread(runner.invoke, group, args)
    assert done.exit_code == 0, done.output
    assert all(c.ok for c in verify_bundle(out, tmp_path / "t"))


async def test_cli_json_documents(audited: Audited, tmp_path: Path) -> None:
    """Under --json each command prints one JSON document: what it wrote, each numbered check
    (exit 1 when one fails), and the inclusion proof's checks."""

    def as_json(*args: str) -> tuple[int, Any]:
        result = CliRunner().invoke(main, [*args, "--json"])
        return result.exit_code, json.loads(result.stdout)

    config = str(audited.consumer.config.path)
    code, trust = await asyncio.to_thread(
        as_json, "audit", "trust-export", "--config", config, "-o", str(tmp_path / "t")
    )
    assert code == 0 and "anchor.json" in trust["files"], trust
    out = str(tmp_path / "e.zip")
    code, exported = await asyncio.to_thread(
        as_json, "audit", "export", "--config", config, "--id", audited.message_id, "-o", out
    )
    assert code == 0 and exported == {"message_id": audited.message_id, "bundle": out}
    code, verified = as_json("audit", "verify", out, "--trust", trust["trust"])
    assert code == 0 and verified["ok"] and verified["checks"][0]["number"] == 1, verified
    both = [str(audited.bundle), str(audited.provider_bundle), "--trust", str(audited.trust)]
    code, correlated = as_json("audit", "correlate", *both)
    assert code == 0 and correlated["ok"], correlated
    code, failed = as_json("audit", "verify", str(_edited_record(audited, tmp_path / "bad.zip")),
                           "--trust", str(audited.trust))  # fmt: skip
    assert code == 1 and not failed["ok"]
    assert any("does not hash to the proof's leaf" in c["reason"] for c in failed["checks"])
    proof = str(tmp_path / "proof.json")
    code, proved = as_json("log", "prove", "--config", config, "--id", audited.message_id,
                           "-o", proof)  # fmt: skip
    assert code == 0 and proved["output"] == proof, proved
    code, checked = as_json("log", "check-proof", proof)
    assert code == 0 and checked["ok"] and checked["checks"], checked


async def test_verifies_after_servers_stopped_and_logs_deleted(
    net: Net, audited: Audited, tmp_path: Path
) -> None:
    for name in NAMES:
        server = net.servers.pop(name)
        await server.stop()
        shutil.rmtree(server.config.log_path.parent, ignore_errors=True)
        assert not server.config.log_path.exists()
    checks = verify_bundle(audited.bundle, audited.trust)
    assert all(c.ok for c in checks), [c.line() for c in checks if not c.ok]
