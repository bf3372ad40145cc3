"""Retention with running servers (issue 4 item 6): a server pair with ``retention_days = 0`` and a
short ``archive_interval`` archives its own time-stamped records on the interval, keeps serving
and logging, and the archived exchanges stay verifiable: ``log verify`` across archives and
database, ``log show`` and ``log prove`` by X-Road-Id, and an evidence bundle from the archive.
A deleted archive in a copy of the state is named by ``log verify`` with exit status 1.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from click.testing import CliRunner

from exchange.audit.bundle import verify_bundle
from exchange.cli import main
from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.messagelog.archive import read_index
from exchange.messagelog.store import open_readonly
from exchange.server.core import SecurityServer
from exchange.server.logcheck import verify_server_log
from exchange.trust.keys import cert_pem, generate_key
from exchange.trust.timestamp import issue_tsa_cert
from exchange.trust.tsa_service import create_tsa_app
from tests.integration.conftest import Net
from tests.integration.support import export_bundle_of, export_trust_of, new_id, publish

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROVIDER = parse_member("PS/GOV/ARP")
CONSUMER = parse_member("PS/GOV/ARC")
DESK = parse_subsystem("PS/GOV/ARC/desk")
REGISTRY = parse_subsystem("PS/GOV/ARP/registry")
ECHO = "/r1/PS/GOV/ARP/registry/echo/1"
TSA_NAME = "Archive TSA"
POLICY = """
provider = "PS/GOV/ARP"
[[grant]]
id = "desk"
client = "PS/GOV/ARC/desk"
service = "PS/GOV/ARP/registry/echo"
methods = ["GET"]
"""
RETENTION = {
    "messagelog": {"path": "messagelog.sqlite", "retention_days": 0, "archive_interval": 0.1}
}
NAMES = ("arp", "arc")
WAIT_SECONDS = 30.0


@dataclass
class Pair:
    consumer: SecurityServer
    provider: SecurityServer
    trust: Path


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def pair(net: Net, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    out = tmp_path_factory.mktemp("archiving")
    key = generate_key()
    tsa_cert = issue_tsa_cert(net.ca, key.public_key(), TSA_NAME)
    runner = web.AppRunner(create_tsa_app(key, tsa_cert, serial_db=out / "tsa.sqlite"))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    with net.registry() as reg:
        reg.add_tsa(TSA_NAME, f"http://127.0.0.1:{runner.addresses[0][1]}/", cert_pem(tsa_cert))
        reg.add_member(PROVIDER, "Archiving provider")
        reg.add_member(CONSUMER, "Archiving consumer")
    provider = await net.add_server(
        "arp",
        SecurityServerId(*PROVIDER.parts, "ss1"),
        clients=[REGISTRY],
        services=[(REGISTRY.service("echo"), f"{net.backend_url}/echo")],
        policy=POLICY,
        extra=RETENTION,
        start=False,
    )
    consumer = await net.add_server(
        "arc",
        SecurityServerId(*CONSUMER.parts, "ss1"),
        clients=[DESK],
        extra=RETENTION,
        start=False,
    )
    await publish(net)
    await provider.start()
    await consumer.start()
    try:
        yield Pair(consumer, provider, export_trust_of(consumer, out / "trust"))
    finally:
        for name in NAMES:
            server = net.servers.pop(name, None)
            if server is not None:
                await server.stop()
        with net.registry() as reg:
            reg.remove_tsa(TSA_NAME)
        await publish(net)
        await runner.cleanup()


async def _exchange(net: Net) -> str:
    message_id = new_id("archived")
    status, _, body = await net.call(
        "arc", ECHO, client=str(DESK), headers={"X-Road-Id": message_id}
    )
    assert status == 200, body
    return message_id


def _archived_end(server: SecurityServer) -> int:
    conn = open_readonly(server.config.log_path)
    try:
        index = read_index(conn)
    finally:
        conn.close()
    return index[-1].end_seq if index else 0


def _live_ids(server: SecurityServer) -> set[str]:
    conn = open_readonly(server.config.log_path)
    try:
        return {m for (m,) in conn.execute("SELECT message_id FROM records") if m}
    finally:
        conn.close()


async def _archived_by_the_server(server: SecurityServer) -> None:
    """Time-stamp a head over everything, then wait until the server's own archiving task has
    moved everything under it (the task runs every 0.1 s; nothing here archives) and reported
    it in ``/health`` (which it does a moment after the rows are gone)."""
    stamp = await server.stamper.stamp_now()
    assert stamp is not None
    deadline = time.monotonic() + WAIT_SECONDS
    while _archived_end(server) < stamp.size or server.archiving["archived"] < stamp.size:
        assert time.monotonic() < deadline, "the server did not archive on its interval"
        await asyncio.sleep(0.05)


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


async def test_running_servers_archive_on_their_interval_and_stay_verifiable(
    net: Net, pair: Pair, tmp_path: Path
) -> None:
    message_id = await _exchange(net)
    for server in (pair.consumer, pair.provider):
        await _archived_by_the_server(server)
        assert message_id not in _live_ids(server)
        report = verify_server_log(server.config)
        assert report.ok, report.to_dict()
        assert report.archives >= 1 and report.archives_verified == report.archives
        health = server.health()["archiving"]
        assert health["archived"] >= 1 and health["last_error"] is None, health
    config = str(pair.consumer.config.path)
    # (1) the auditor's commands find the archived exchange
    code, output = _cli("log", "verify", "--config", config, "--no-progress")
    assert code == 0, output
    assert "archives:" in output and "verified" in output
    code, output = _cli("log", "show", "--config", config, "--id", message_id, "--json")
    assert code == 0, output
    [shown] = orjson.loads(output)
    assert shown["message_id"] == message_id and shown["entry"]["request_jws"]
    code, output = _cli("log", "prove", "--config", config, "--id", message_id, "--json")
    assert code == 0, output
    # (2) an evidence bundle of the archived exchange verifies offline
    bundle = await export_bundle_of(pair.consumer, message_id, tmp_path / "evidence.zip")
    checks = verify_bundle(bundle, pair.trust, pair.consumer.config.server_id)
    assert checks and all(c.ok for c in checks), [c.line() for c in checks]
    # (3) the servers keep exchanging, logging and signing over the whole log
    later = await _exchange(net)
    assert later in _live_ids(pair.consumer)
    assert verify_server_log(pair.consumer.config).ok
    await _archived_by_the_server(pair.consumer)
    report = verify_server_log(pair.consumer.config)
    assert report.ok and report.archives >= 2, report.to_dict()


async def test_operator_archive_command_while_the_server_runs(net: Net, pair: Pair) -> None:
    await _exchange(net)
    stamp = await pair.consumer.stamper.stamp_now()
    assert stamp is not None
    config = str(pair.consumer.config.path)
    code, output = _cli("log", "archive", "--config", config, "--older-than", "0s", "--json")
    assert code == 0, output
    assert _archived_end(pair.consumer) >= stamp.size  # by the command or the server's own task
    code, output = _cli("log", "archive", "--help")
    assert code == 0 and "exchange log archive --config" in output
    assert verify_server_log(pair.consumer.config).ok


async def test_a_deleted_archive_fails_log_verify_with_its_reason(
    net: Net, pair: Pair, tmp_path: Path
) -> None:
    await _exchange(net)
    await _archived_by_the_server(pair.consumer)
    config = pair.consumer.config
    copy = tmp_path / "copy"
    copy.mkdir()
    db = copy / "messagelog.sqlite"
    conn = open_readonly(config.log_path)
    try:
        conn.execute(f"VACUUM INTO '{db}'")
    finally:
        conn.close()
    shutil.copytree(config.archive_dir, copy / "archives")
    conn = open_readonly(db)
    try:
        first = read_index(conn)[0]
    finally:
        conn.close()
    (copy / "archives" / first.file).unlink()
    trust = pair.trust
    args = ["log", "verify", "--db", str(db), "--no-progress", "--owner", str(config.server_id)]
    args += ["--ca", str(next((trust / "ca").glob("*.pem")))]
    args += ["--tsa-cert", str(next((trust / "tsa").glob("*.pem")))]
    code, output = _cli(*args)
    assert code == 1, output
    assert f"first bad: archive 1 ({first.file}), records 0..{first.end_seq - 1}" in output
    assert "the file is missing: its records cannot be checked" in output
