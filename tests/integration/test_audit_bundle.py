"""Evidence bundles (docs/design.md §8, issue 4 item 3): exported, verified offline, tampering
caught.

A server pair of its own time-stamps its tree heads with a real RFC 3161 TSA; bundles of one
exchange from both sides verify against the exported trust folder, also once the servers are
stopped and their logs deleted, and each kind of tampering fails with its reason. The review's
fabricated bundles (issue 13 (3)) are built as the attacker would, with a real member's signing
key and a real time-stamp over the forged tree head, and fail; so do malformed zips (issue 13
(7)), in one line.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import stat
import tracemalloc
import warnings
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from click.testing import CliRunner

from exchange.audit.bundle import (
    MANIFEST,
    TOKEN,
    TREE_HEAD,
    Check,
    LogFiles,
    correlate_bundles,
    export_bundle,
    verify_bundle,
)
from exchange.audit.trustdir import export_trust
from exchange.cli import main
from exchange.cli.audit import group
from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.messagelog import merkle
from exchange.protocol.canonical import b64url
from exchange.protocol.jws import Signer, cert_thumbprint, unverified_payload
from exchange.server.core import SecurityServer
from exchange.trust.keys import cert_pem, generate_key, self_signed_certificate
from exchange.trust.timestamp import issue_tsa_cert
from exchange.trust.tsa_service import TimestampClient, create_tsa_app
from exchange.trustcore.treeheads import tree_head_payload
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
    tsa_url: str

    @property
    def owner(self) -> SecurityServerId:
        """The consumer's server: the owner of the log its bundles come from."""
        return self.consumer.config.server_id

    @property
    def owners(self) -> tuple[SecurityServerId, SecurityServerId]:
        return self.owner, self.provider.config.server_id


async def _exchange(net: Net) -> str:
    message_id = new_id("audit")
    status, _, body = await net.call(
        "auc", ECHO, client=str(DESK), headers={"X-Road-Id": message_id}
    )
    assert status == 200, body
    return message_id


async def _stamped_bundle(server: SecurityServer, message_id: str, out: Path) -> Path:
    conf = server.trusted.current
    assert conf is not None
    files = LogFiles(server.config.log_path, server.config.archive_dir)
    return await export_bundle(
        files, message_id, out, cas=conf.ca_certs(), stamp=lambda: _stamp(server)
    )


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
        conf = consumer.trusted.current
        assert conf is not None
        trust = export_trust(
            out / "trust",
            cas=conf.ca_certs(),
            tsas=conf.tsa_certs(),
            anchor=consumer.config.anchor,
            owner=consumer.config.server_id,
        )
        tsa_url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        yield Audited(
            consumer, provider, trust, bundle, provider_bundle, later, message_id, tsa_url
        )
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


def _other_message_id(a: Audited, tmp: Path) -> Path:
    """manifest.json names another exchange than its record (issue 13 (3))."""
    manifest = orjson.loads(_part(a.bundle, MANIFEST)[1])
    manifest["message_id"] = "another-exchange"
    return _replaced(a.bundle, tmp, {MANIFEST: orjson.dumps(manifest)})


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
    checks = verify_bundle(audited.bundle, audited.trust, audited.owner)
    assert [c.number for c in checks] == list(range(1, len(checks) + 1))
    assert all(c.ok for c in checks), [c.line() for c in checks if not c.ok]
    assert all(
        c.ok for c in verify_bundle(audited.provider_bundle, audited.trust, audited.owners[1])
    )


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        pytest.param(_edited_record, "does not hash to the proof's leaf", id="edited-record"),
        pytest.param(_other_proof, "the inclusion proof is for record", id="proof-of-another"),
        pytest.param(_other_token, "time-stamp", id="token-over-another-head"),
        pytest.param(_forged_head, "not issued by a trusted CA", id="forged-tree-head"),
        pytest.param(_other_message_id, "manifest.json names message id", id="manifest-id"),
    ],
)
async def test_tampering_fails_with_its_reason(
    audited: Audited, tmp_path: Path, tamper: object, reason: str
) -> None:
    assert callable(tamper)
    bad = tamper(audited, tmp_path / "bad.zip")
    failed = [c for c in verify_bundle(bad, audited.trust, audited.owner) if not c.ok]
    assert any(reason in c.reason for c in failed), [c.line() for c in failed]


async def test_cli_verify_correlate_and_failure(audited: Audited, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(group, ["verify", str(audited.bundle), "--trust", str(audited.trust)])
    assert ok.exit_code == 0, ok.output
    assert "(1)" in ok.output and "FAILED" not in ok.output
    assert f"log owner: {audited.owner} (from {audited.trust / 'owner.txt'})" in ok.output
    owners = [f"--owner={o}" for o in audited.owners]
    both = [str(audited.bundle), str(audited.provider_bundle), "--trust", str(audited.trust)]
    corr = runner.invoke(group, ["correlate", *both, *owners])
    assert corr.exit_code == 0, corr.output
    later = [str(audited.bundle), str(audited.later), "--trust", str(audited.trust)]
    other = runner.invoke(group, ["correlate", *later, *[f"--owner={audited.owner}"] * 2])
    assert other.exit_code == 1 and "request hashes differ" in other.output
    swapped = runner.invoke(group, ["correlate", *both, *reversed(owners)])
    assert swapped.exit_code == 1 and "not by the log's owner" in swapped.output
    bad = _edited_record(audited, tmp_path / "bad.zip")
    failed = runner.invoke(group, ["verify", str(bad), "--trust", str(audited.trust)])
    assert failed.exit_code == 1
    assert "does not hash to the proof's leaf" in failed.output
    as_provider = [str(audited.bundle), "--trust", str(audited.trust)]
    wrong = runner.invoke(group, ["verify", *as_provider, f"--owner={audited.owners[1]}"])
    assert wrong.exit_code == 1 and "not by the log's owner" in wrong.output
    usage = runner.invoke(group, ["correlate", *both, owners[0]])
    assert usage.exit_code == 2 and "give --owner twice" in usage.output


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
    assert (tmp_path / "t" / "owner.txt").read_text() == f"{audited.owner}\n"
    assert all(c.ok for c in verify_bundle(out, tmp_path / "t", audited.owner))


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
    assert code == 0 and "anchor.json" in trust["files"] and trust["owner"] == str(audited.owner)
    out = str(tmp_path / "e.zip")
    code, exported = await asyncio.to_thread(
        as_json, "audit", "export", "--config", config, "--id", audited.message_id, "-o", out
    )
    assert code == 0 and exported == {"message_id": audited.message_id, "bundle": out}
    code, verified = as_json("audit", "verify", out, "--trust", trust["trust"])
    assert code == 0 and verified["ok"] and verified["checks"][0]["number"] == 1, verified
    assert verified["owner"] == str(audited.owner), verified
    both = [str(audited.bundle), str(audited.provider_bundle), "--trust", str(audited.trust)]
    owners = [f"--owner={o}" for o in audited.owners]
    code, correlated = as_json("audit", "correlate", *both, *owners)
    assert code == 0 and correlated["ok"] and correlated["owners"] == list(map(str, audited.owners))
    code, usage = as_json("audit", "correlate", *both, owners[0])
    assert code == 2 and "give --owner twice" in usage["error"]["message"], usage
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
    checks = verify_bundle(audited.bundle, audited.trust, audited.owner)
    assert all(c.ok for c in checks), [c.line() for c in checks if not c.ok]


# --- fabricated bundles (issue 13 (3)) ---------------------------------------------------------


async def _fabricated(a: Audited, out: Path, entry: bytes, signer: Signer) -> Path:
    """A bundle whose only record is ``entry``, as an attacker builds it: the record is the
    single leaf of a made-up log of the consumer's server, under a tree head signed by
    ``signer`` (a real member's signing key) and time-stamped at the real TSA."""
    conf = a.consumer.trusted.current
    assert conf is not None
    leaf = merkle.leaf_hash(entry)
    original = orjson.loads(unverified_payload(_part(a.bundle, TREE_HEAD)[1].decode()))
    payload = tree_head_payload(original["log"], a.owner, 1, leaf, original["signed_at"] + 1)
    head = signer.sign(payload)
    async with TimestampClient() as client:
        token, _ = await client.request(
            hashlib.sha256(head.encode()).digest(),
            a.tsa_url,
            tsa_certs=conf.tsa_certs(),
            ca_certs=conf.ca_certs(),
        )
    proof = {
        "kind": "inclusion",
        "seq": 0,
        "leaf_hash": b64url(leaf),
        "tree_size": 1,
        "root": b64url(leaf),
        "proof": [],
        "tree_head_jws": head,
        "timestamp_token": b64url(token),
    }
    manifest = orjson.loads(_part(a.bundle, MANIFEST)[1])
    manifest["records"] = [0]
    parts = {
        "record-0.json": entry,
        "inclusion-0.json": orjson.dumps(proof),
        TREE_HEAD: head.encode(),
        TOKEN: token,
        MANIFEST: orjson.dumps(manifest),
        f"certs/{signer.thumbprint}.pem": cert_pem(signer.cert).encode(),
    }
    with zipfile.ZipFile(a.bundle) as zin, zipfile.ZipFile(out, "w") as zout:
        for name in zin.namelist():
            if not name.startswith(("record-", "inclusion-")) and name not in parts:
                zout.writestr(name, zin.read(name))
        for name, data in parts.items():
            zout.writestr(name, data)
    return out


def _record_of(a: Audited) -> dict[str, object]:
    record: dict[str, object] = orjson.loads(_part(a.bundle, "record-")[1])
    return record


def _failures(checks: list[Check]) -> dict[int, str]:
    return {c.number: c.reason for c in checks if not c.ok}


async def test_unsigned_record_under_another_members_head_fails(
    audited: Audited, tmp_path: Path
) -> None:
    """A made-up record without any signature, under a head signed with the provider member's
    genuine signing key and really time-stamped: the head is not the owner's, and the record is
    no evidence."""
    record = {**_record_of(audited), "seq": 0, "request_jws": None, "response_jws": None}
    record.update(user_id="mallory", path="/family", request_hash=None)
    entry = orjson.dumps(record)
    other = audited.provider.signers[PROVIDER]
    bad = await _fabricated(audited, tmp_path / "bad.zip", entry, other)
    checks = verify_bundle(bad, audited.trust, audited.owner)
    failed = _failures(checks)
    assert [c.what for c in checks if c.number in failed] == [
        f"the tree head is signed by the log's owner {audited.owner}",
        "record 0 is evidence of nothing: no signature, only the log owner's statement",
    ], failed
    assert f"signed by member {PROVIDER}, not by the log's owner {CONSUMER}" in str(failed)
    assert "without a signed request" in str(failed)
    assert any(c.ok and "time-stamped by an approved TSA" in c.what for c in checks)
    pair = correlate_bundles(bad, audited.provider_bundle, audited.trust, audited.owners)
    assert not all(c.ok for c in pair)


@pytest.mark.parametrize("by_owner", [False, True], ids=["another-member", "the-owner-itself"])
async def test_edited_genuine_record_fails(
    audited: Audited, tmp_path: Path, by_owner: bool
) -> None:
    """The consumer's genuine record with side, user id, purpose, path, released fields and
    decision edited, proof and head rebuilt and re-stamped: signed by another member, the head
    fails too; signed by the owner's own key (an insider), every edited field is named."""
    record = {**_record_of(audited), "seq": 0}
    record.update(
        side="provider",
        user_id="EE:clerk-99",
        purpose="audit",
        path="/1/family",
        released_fields=["name", "children"],
        decision={"allowed": True, "code": "x", "grant": "all", "fields": None},
    )
    signer = audited.consumer.signers[CONSUMER] if by_owner else audited.provider.signers[PROVIDER]
    bad = await _fabricated(audited, tmp_path / "bad.zip", orjson.dumps(record), signer)
    failed = _failures(verify_bundle(bad, audited.trust, audited.owner))
    head_failed = any("not by the log's owner" in r for r in failed.values())
    assert head_failed is not by_owner, failed
    reasons = str(failed)
    for field in ("side edited", "user_id", "purpose", "path", "released_fields", "decision"):
        assert field in reasons, (field, failed)
    pair = correlate_bundles(bad, audited.provider_bundle, audited.trust, audited.owners)
    assert not pair[0].ok and pair[1].ok


async def test_genuine_bundles_correlate_as_both_sides(audited: Audited) -> None:
    checks = correlate_bundles(
        audited.bundle, audited.provider_bundle, audited.trust, audited.owners
    )
    assert all(c.ok for c in checks), [c.line() for c in checks]
    same = correlate_bundles(audited.bundle, audited.bundle, audited.trust, (audited.owner,) * 2)
    assert [c.ok for c in same] == [True, True, True, False, True]


# --- malformed bundles (issue 13 (7)) ----------------------------------------------------------


def _zip(out: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in members:
                z.writestr(name, data)
    return out


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _bomb(out: Path, mib: int, members: int = 1) -> Path:
    """``members`` records of ``mib`` MiB of zeros each, deflated about a thousand times."""
    chunk = bytes(2**20)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(members):
            with z.open(f"record-{i}.json", "w") as member:
                for _ in range(mib):
                    member.write(chunk)
    return out


def _truncated(a: Audited, out: Path) -> Path:
    data = a.bundle.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


def _non_ascii_head(a: Audited, out: Path) -> Path:
    """The tree head with a byte that is not ASCII in its payload (found by the red team: the
    time-stamp check raised UnicodeEncodeError out of ``audit verify``)."""
    _, head = _part(a.bundle, TREE_HEAD)
    first, rest = head.split(b".", 1)
    return _replaced(a.bundle, out, {TREE_HEAD: first + b".\xe9" + rest})


MALFORMED = [
    pytest.param(lambda a, p: _bomb(p, 40), "inflates 1", id="zip-bomb-ratio"),
    pytest.param(lambda a, p: _bomb(p, 65), "would inflate to 68157440", id="zip-bomb-size"),
    pytest.param(
        lambda a, p: _bomb(p, 1, members=300), "more than 268435456 bytes", id="zip-bomb-total"
    ),
    pytest.param(_truncated, "not a readable zip file", id="truncated"),
    pytest.param(
        lambda a, p: p.write_bytes(b"PK\x03\x04 not really") and p,
        "not a readable zip file",
        id="not-a-zip",
    ),
    pytest.param(
        lambda a, p: _zip(p, [("record-0.json", b"{}"), ("record-0.json", b"{}")]),
        "is in it twice",
        id="duplicate-names",
    ),
    pytest.param(
        lambda a, p: _zip(p, [(_symlink("record-0.json"), b"/etc/passwd")]),
        "not a regular file",
        id="symlink-member",
    ),
    pytest.param(
        lambda a, p: _zip(p, [("../record-0.json", b"{}")]),
        "not a plain relative file name",
        id="path-traversal",
    ),
    pytest.param(
        lambda a, p: _replaced(a.bundle, p, {MANIFEST: b"{not json", "record-9.json": b"[1"}),
        "manifest.json is missing or not a JSON object",
        id="bad-json",
    ),
    pytest.param(
        _non_ascii_head, "the tree head JWS payload is not a tree head", id="tree-head-not-ascii"
    ),
]


@pytest.mark.parametrize(("make", "reason"), MALFORMED)
async def test_malformed_bundle_is_one_line_and_exit_1(
    audited: Audited, tmp_path: Path, make: object, reason: str
) -> None:
    assert callable(make)
    bad = make(audited, tmp_path / "bad.zip")
    tracemalloc.start()
    try:
        result = CliRunner().invoke(group, ["verify", str(bad), "--trust", str(audited.trust)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 1, result.output
    assert reason in result.output, result.output
    assert "Traceback" not in result.output and result.exception is not None
    assert isinstance(result.exception, SystemExit)
    assert peak < 64 * 2**20, "the bundle was read within bounds"


# --- what audit verify says the record is (issue 14) ---------------------------------------------


def _verify_cli(bundle: Path, a: Audited, *extra: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(group, ["verify", str(bundle), "--trust", str(a.trust), *extra])
    return result.exit_code, result.output.splitlines()


async def test_verify_first_says_what_the_record_is_from_signed_data(audited: Audited) -> None:
    """Before its checks, `audit verify` states the exchange: each value under the signed
    document it comes from, the side from where the owner stands in the signed request, and the
    time it was logged under the owner's time-stamped tree head."""
    owner = f"--owner={audited.owners[1]}"
    code, lines = _verify_cli(audited.provider_bundle, audited, owner)
    assert code == 0, lines
    seq = orjson.loads(_part(audited.provider_bundle, "record-")[1])["seq"]
    assert lines[1] == f"record {seq}: the provider's record of exchange {audited.message_id}"
    assert lines[2].startswith(f"  from the client's signed request (member {CONSUMER}, signed ")
    assert lines[3:9] == [
        f"    client      {DESK}",
        f"    service     {REGISTRY}/echo",
        "    request     GET /1",
        "    user id     none stated",
        "    purpose     none stated",
        f"    sent by     {audited.owner} to {audited.owners[1]}",
    ]
    assert lines[9].startswith(f"  from the provider's signed response (member {PROVIDER}, signed")
    assert lines[10:12] == [
        "    status      200",
        "    released    the whole answer (the grant releases every field)",
    ]
    assert lines[12].startswith("    decision    allowed by grant desk (policy ")
    assert lines[13].startswith("  from the log owner's record, under its signed tree head, "
                                "time-stamped 20")  # fmt: skip
    assert lines[14].startswith("    logged at   20")
    assert lines[15].startswith("(1) the manifest names this exchange")
    assert lines[-1] == "provider.zip: OK"
    code, lines = _verify_cli(audited.bundle, audited)
    assert lines[1] == f"record 0: the consumer's record of exchange {audited.message_id}"


async def test_verify_json_gives_the_record_and_the_checks(audited: Audited) -> None:
    result = CliRunner().invoke(
        group, ["verify", str(audited.bundle), "--trust", str(audited.trust), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    assert report["ok"] and report["owner"] == str(audited.owner)
    [record] = report["records"]
    assert (record["side"], record["message_id"]) == ("consumer", audited.message_id)
    request, response, logged = record["verified"]
    assert request["member"] == str(CONSUMER) and request["fields"]["client"] == str(DESK)
    assert response["member"] == str(PROVIDER) and response["fields"]["status"] == "200"
    assert list(logged["fields"]) == ["logged at"] and record["not_shown"] == []
    assert all(c["ok"] for c in report["checks"])


async def test_verify_shows_the_signed_values_never_the_edited_ones(
    audited: Audited, tmp_path: Path
) -> None:
    """An insider with the owner's key edits the user id, purpose and path of a genuine record
    and re-signs the head: the summary shows what the client signed, the checks name the
    edits, and the edited values appear nowhere."""
    record = {**_record_of(audited), "seq": 0}
    record.update(user_id="EE:clerk-99", purpose="audit", path="/1/family")
    signer = audited.consumer.signers[CONSUMER]
    bad = await _fabricated(audited, tmp_path / "bad.zip", orjson.dumps(record), signer)
    code, lines = _verify_cli(bad, audited)
    assert code == 1
    text = "\n".join(lines)
    assert "    user id     none stated" in lines and "    request     GET /1" in lines
    for edited in ("EE:clerk-99", "/1/family", "    purpose     audit"):
        assert edited not in text, edited
    assert "record field user_id differs from the signed request" in text
    assert lines[-1] == "bad.zip: FAILED"


async def test_verify_shows_nothing_an_unsigned_record_states(
    audited: Audited, tmp_path: Path
) -> None:
    record = {**_record_of(audited), "seq": 0, "request_jws": None, "response_jws": None}
    record.update(user_id="mallory", path="/family", request_hash=None)
    other = audited.provider.signers[PROVIDER]
    bad = await _fabricated(audited, tmp_path / "bad.zip", orjson.dumps(record), other)
    code, lines = _verify_cli(bad, audited)
    assert code == 1
    assert lines[1] == "record 0: a record (side not established)"
    assert lines[2:5] == [
        "  not shown, what was asked: the record carries no signed request that verifies, so "
        "only the log owner states it",
        "  not shown, what was answered: no signed response verifies, so only the log owner "
        "states it",
        "  not shown, when it was logged: the record is not proven in the owner's log",
    ]
    assert "mallory" not in "\n".join(lines)
