"""Backup and restore of running servers (issue 14, "No backup").

A provider security server serving a consumer, with a TSA and an archived message log, is backed
up by ``exchange server backup`` in another process while exchanges go on; it is then lost
(stopped, its directory left behind), restored into a fresh directory and started from there:
the same identity answers the same consumer through real TLS, its log verifies (archives
included), and new exchanges extend the same Merkle tree (the consistency proof from the
backed-up head to a new one verifies, and the backed-up head is the original's).

The running central server of the shared federation is backed up the same way; the restored
one signs a global configuration the security servers' anchor accepts, at the same version.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from click.testing import CliRunner

from exchange.central.app import create_app as create_central_app
from exchange.central.app import load_central_config
from exchange.cli import main
from exchange.demo.processes import free_port
from exchange.globalconf.anchor import Anchor
from exchange.globalconf.verifier import TrustedGlobalConf
from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.messagelog.archive import read_index
from exchange.messagelog.store import open_readonly
from exchange.server.config import load_server_config
from exchange.server.core import SecurityServer
from exchange.trust.keys import cert_pem, fingerprint, generate_key, load_certificate
from exchange.trust.timestamp import issue_tsa_cert
from exchange.trust.tsa_service import create_tsa_app
from tests.integration.conftest import Net
from tests.integration.support import new_id, publish

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROVIDER = parse_member("PS/GOV/BKP")
CONSUMER = parse_member("PS/GOV/BKC")
DESK = parse_subsystem("PS/GOV/BKC/desk")
REGISTRY = parse_subsystem("PS/GOV/BKP/registry")
ECHO = "/r1/PS/GOV/BKP/registry/echo/1"
TSA_NAME = "Backup TSA"
POLICY = """
provider = "PS/GOV/BKP"
[[grant]]
id = "desk"
client = "PS/GOV/BKC/desk"
service = "PS/GOV/BKP/registry/echo"
methods = ["GET"]
paths = ["/**"]
rate = "100000/minute"
"""
NAMES = ("bkp", "bkc")
PASSPHRASE = "restore-drill passphrase 2026"
ENV = "EXCHANGE_TEST_BACKUP_PASSPHRASE"
BACKUP_SECONDS = 120


@dataclass
class Pair:
    consumer: SecurityServer
    provider: SecurityServer


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def pair(net: Net, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    out = tmp_path_factory.mktemp("backup-tsa")
    key = generate_key()
    tsa_cert = issue_tsa_cert(net.ca, key.public_key(), TSA_NAME)
    runner = web.AppRunner(create_tsa_app(key, tsa_cert, serial_db=out / "tsa.sqlite"))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    with net.registry() as reg:
        reg.add_tsa(TSA_NAME, f"http://127.0.0.1:{runner.addresses[0][1]}/", cert_pem(tsa_cert))
        reg.add_member(PROVIDER, "Backed-up provider")
        reg.add_member(CONSUMER, "Its consumer")
    provider = await net.add_server(
        "bkp",
        SecurityServerId(*PROVIDER.parts, "ss1"),
        clients=[REGISTRY],
        services=[(REGISTRY.service("echo"), f"{net.backend_url}/echo")],
        policy=POLICY,
        start=False,
    )
    consumer = await net.add_server(
        "bkc", SecurityServerId(*CONSUMER.parts, "ss1"), clients=[DESK], start=False
    )
    await publish(net)
    await provider.start()
    await consumer.start()
    try:
        yield Pair(consumer, provider)
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
    message_id = new_id("backup")
    status, _, body = await net.call(
        "bkc", ECHO, client=str(DESK), headers={"X-Road-Id": message_id}
    )
    assert status == 200, body
    return message_id


async def _load(net: Net, stop: asyncio.Event, done: list[str]) -> None:
    """Exchanges one after another (two at a time) until ``stop`` is set."""
    while not stop.is_set():
        done.extend(await asyncio.gather(_exchange(net), _exchange(net)))


async def _cli_process(*args: str) -> tuple[int, str]:
    """An ``exchange`` command in its own process (as an operator's cron job runs it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exchange",
        *args,
        env={**os.environ, ENV: PASSPHRASE},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(BACKUP_SECONDS):
            output, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, output.decode()


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner(env={ENV: PASSPHRASE}).invoke(main, list(args))
    return result.exit_code, result.output


def _head(log: Path) -> tuple[int, str]:
    """The latest signed tree head's size and JWS."""
    conn = open_readonly(log)
    try:
        size, jws = conn.execute(
            "SELECT size, jws FROM tree_heads ORDER BY size DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    return int(size), str(jws)


def _head_at(log: Path, size: int) -> str:
    conn = open_readonly(log)
    try:
        (jws,) = conn.execute("SELECT jws FROM tree_heads WHERE size = ?", [size]).fetchone()
    finally:
        conn.close()
    return str(jws)


def _ids(log: Path) -> set[str]:
    conn = open_readonly(log)
    try:
        return {m for (m,) in conn.execute("SELECT message_id FROM records") if m}
    finally:
        conn.close()


def _archives(log: Path) -> int:
    conn = open_readonly(log)
    try:
        return len(read_index(conn))
    finally:
        conn.close()


async def test_running_server_backed_up_under_load_restores_and_continues_its_log(
    net: Net, pair: Pair, tmp_path: Path
) -> None:
    original = pair.provider.config
    # (1) history worth keeping: exchanges, a time-stamped head, an archive file
    for _ in range(3):
        await _exchange(net)
    assert await pair.provider.stamper.stamp_now() is not None
    code, output = _cli(
        "log", "archive", "--config", str(original.path), "--older-than", "0s", "--json"
    )
    assert code == 0, output
    assert _archives(original.log_path) >= 1
    # (2) the backup, by another process, while exchanges keep arriving
    stop, done = asyncio.Event(), list[str]()
    load = asyncio.create_task(_load(net, stop, done))
    while len(done) < 4:
        await asyncio.sleep(0.01)
    backup = tmp_path / "bkp.zip"
    args = ("server", "backup", "--config", str(original.path), "-o", str(backup))
    code, output = await _cli_process(*args, "--passphrase-env", ENV, "--json")
    during = len(done)
    while len(done) < during + 4:
        await asyncio.sleep(0.01)
    stop.set()
    await load
    assert code == 0, output
    report = orjson.loads(output)
    assert report["ok"] and report["identity"] == "PS/GOV/BKP/ss1"
    assert "archive files included" in report["facts"]["archives"]
    assert {r["setting"] for r in report["rewrites"]} == {"policy.dir"}
    # (3) exchanges after the backup are lost with the server's disk
    lost = await _exchange(net)
    await pair.provider.stop()
    net.servers.pop("bkp")
    # (4) restored into a fresh directory
    restored_dir = tmp_path / "restored"
    code, output = _cli(
        "server", "restore", str(backup), "--into", str(restored_dir), "--passphrase-env", ENV
    )
    assert code == 0, output
    config = load_server_config(restored_dir / "server.toml")
    assert config.server_id == original.server_id
    assert config.policy_dir == restored_dir / "outside" / "policy-dir"
    for name in ("log_path", "anchor", "auth_cert", "globalconf_state", "archive_dir"):
        assert getattr(config, name).is_relative_to(restored_dir), name
    assert fingerprint(load_certificate(config.auth_cert)) == fingerprint(
        load_certificate(original.auth_cert)
    )
    backed_up_size, backed_up_jws = _head(config.log_path)
    assert backed_up_jws == _head_at(original.log_path, backed_up_size)
    assert lost not in _ids(config.log_path)
    # (5) the restored server takes the lost one's place and serves its peer through TLS
    restored = SecurityServer(config)
    net.servers["bkp"] = restored
    await restored.start()
    fresh = [await _exchange(net) for _ in range(3)]
    assert set(fresh) <= _ids(config.log_path)
    assert await restored.stamper.stamp_now() is not None
    new_size, _ = _head(config.log_path)
    assert new_size > backed_up_size
    # (6) its log verifies, archives included, and continues the backed-up tree
    code, output = _cli("log", "verify", "--config", str(config.path), "--no-progress")
    assert code == 0, output
    assert "archives:" in output
    proof = tmp_path / "consistency.json"
    code, output = _cli(
        "log", "consistency", "--config", str(config.path),
        "--from", str(backed_up_size), "--to", str(new_size), "-o", str(proof),
    )  # fmt: skip
    assert code == 0, output
    assert orjson.loads(proof.read_bytes())["head_m_jws"] == backed_up_jws
    code, output = _cli("log", "check-proof", str(proof))
    assert code == 0, output


async def test_backup_holds_every_file_the_server_keeps(
    net: Net, pair: Pair, tmp_path: Path
) -> None:
    """Whatever a running server writes into its directory is in its backup, or is a file a
    restore must not bring back (SQLite's side files, the log's writer lock, CSRs)."""
    await _exchange(net)
    server = net.servers["bkp"]
    backup = tmp_path / "again.zip"
    code, output = _cli(
        "server", "backup", "--config", str(server.config.path), "-o", str(backup),
        "--passphrase-env", ENV, "--json",
    )  # fmt: skip
    assert code == 0, output
    restored = tmp_path / "copy"
    code, output = _cli(
        "server", "restore", str(backup), "--into", str(restored), "--passphrase-env", ENV
    )
    assert code == 0, output
    base = server.config.path.parent
    kept = {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}
    brought = {p.relative_to(restored).as_posix() for p in restored.rglob("*") if p.is_file()}
    not_restored = {
        name
        for name in kept - brought
        if not name.endswith(("-wal", "-shm", ".lock", ".csr.pem")) and name != "server.pid"
    }
    assert not_restored == set()
    assert {"messagelog.sqlite", "quota.sqlite", "policy-audit.sqlite"} <= brought


async def test_running_central_server_backed_up_and_restored_signs_what_servers_accept(
    net: Net, tmp_path: Path
) -> None:
    await publish(net)
    central_toml = net.root / "central" / "central.toml"
    backup = tmp_path / "central.zip"
    code, output = await _cli_process(
        "central", "backup", "--config", str(central_toml), "-o", str(backup),
        "--passphrase-env", ENV, "--json",
    )  # fmt: skip
    assert code == 0, output
    with net.registry() as reg:
        version = reg.version()
    assert orjson.loads(output)["facts"]["registry version"] == str(version)
    code, output = _cli(
        "central", "restore", str(backup), "--into", str(tmp_path / "central"),
        "--passphrase-env", ENV, "--json",
    )  # fmt: skip
    assert code == 0, output
    assert orjson.loads(output)["version_published_next"] == version
    config = load_central_config(tmp_path / "central" / "central.toml")
    runner = web.AppRunner(create_central_app(config))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/globalconf") as response,
        ):
            assert response.status == 200
            body = await response.read()
    finally:
        await runner.cleanup()
    # a security server holding the latest configuration takes the restored one's (a refresh)
    held = net.servers["palpost"].trusted.current_bytes
    trusted = TrustedGlobalConf(Anchor.load(net.anchor), initial=held, now=int(time.time()))
    assert trusted.current is not None and trusted.current.version == version
    trusted.update(body, now=int(time.time()))
    assert trusted.current.version == version
