"""The version floor of the global configuration survives a restart, even when the persisted
configuration is swapped for an older one (found by the red team).

Before, the only floor after a restart was ``globalconf.jws`` itself: an insider who stopped a
server, copied back an older, validly signed file and restarted it with the central server
unreachable got "global configuration version 20 accepted", and a peer whose authentication
certificate version 21 had removed was trusted again until 20 expired. Now the server keeps the
highest version it has put in force in ``globalconf.jws.floor`` and, at start, refuses a persisted
configuration below it, and any downloaded one below it: nothing is in force until the central
server serves that version or a later one.

Real servers on 127.0.0.1 of :mod:`tests.integration.conftest`; the "central server unreachable"
is an anchor whose download URL is a port nobody listens on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from exchange.demo.processes import free_port
from exchange.errors import ConfigurationError
from exchange.globalconf.floor import floor_path
from exchange.globalconf.verifier import GlobalConfRollback
from exchange.identifiers import MemberId, parse_security_server
from exchange.protocol.jws import unverified_payload
from exchange.server.core import SecurityServer
from tests.integration.conftest import MOH, Net
from tests.integration.support import publish, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLIENT_LOG = "exchange.globalconf.client"


def _floor_file(server: SecurityServer) -> Path:
    return floor_path(server.config.globalconf_state)


def _with_download_url(server: SecurityServer, url: str) -> SecurityServer:
    """The same server, configured with an anchor that downloads from ``url`` (a copy of its
    anchor: the one the federation shares stays as it is)."""
    anchor = json.loads(server.config.anchor.read_text())
    anchor["download_url"] = url
    moved = server.config.path.parent / "anchor-elsewhere.json"
    moved.write_text(json.dumps(anchor))
    return SecurityServer(dataclasses.replace(server.config, anchor=moved))


def _unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}/globalconf"


async def _restart(net: Net, name: str, make: Callable[[], SecurityServer]) -> SecurityServer:
    server = make()
    net.servers[name] = server
    await server.start()
    return server


async def _with_a_newer_version(net: Net, name: str, code: str) -> tuple[SecurityServer, bytes]:
    """A running server that held a version, then took a newer one (a member added): the
    server, and the signed bytes of the older version as its state file held them."""
    server = await net.add_server(name, parse_security_server(f"{MOH}/{code}"), clients=[])
    older = server.config.globalconf_state.read_bytes()
    before = server.in_force
    assert before is not None
    with net.registry() as reg:
        reg.add_member(MemberId("PS", "GOV", f"FLOOR{time.monotonic_ns()}"), "Newer")
    await publish(net)
    assert server.in_force is not None and server.in_force.version > before.version
    return server, older


def _version_of(data: bytes) -> int:
    return int(json.loads(unverified_payload(data.decode()))["version"])


async def test_a_configuration_file_rolled_back_is_refused_at_start(
    net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    server, older = await _with_a_newer_version(net, "floor-rollback", "ss-floor-rollback")
    assert server.in_force is not None
    newer = server.in_force.version
    old = _version_of(older)
    await net.servers.pop("floor-rollback").stop()
    # the insider's swap: the saved older, validly signed file back in place
    server.config.globalconf_state.write_bytes(older)
    caplog.clear()
    try:
        with caplog.at_level(logging.ERROR, logger=CLIENT_LOG):
            restarted = await _restart(
                net, "floor-rollback", lambda: _with_download_url(server, _unreachable())
            )
        # (1) nothing in force: the same fail-closed state as a file whose signature is refused
        assert restarted.in_force is None and restarted.trusted.current is None
        said = [r.getMessage() for r in caplog.records if "rolled back" in r.getMessage()]
        assert len(said) == 1, [r.getMessage() for r in caplog.records]
        assert f"version {old} " in said[0] and f"version {newer}" in said[0], said[0]
        assert str(server.config.globalconf_state) in said[0]
        health = restarted.health()
        assert health["status"] == "unavailable"
        [reason] = health["reasons"]
        assert reason["code"] == "globalconf_missing"
        # /health says why, as the log does
        assert "the one saved before the restart" in reason["message"]
        assert "is older than the floor in" in reason["message"]
        assert f"version {newer}" in reason["message"]
    finally:
        await net.servers.pop("floor-rollback").stop()
    # (2) the central server reachable again: it serves the newer version, which goes in force
    again = await _restart(net, "floor-rollback", lambda: SecurityServer(server.config))
    try:
        assert again.in_force is not None and again.in_force.version >= newer
        assert _version_of(server.config.globalconf_state.read_bytes()) >= newer
    finally:
        await net.servers.pop("floor-rollback").stop()


async def test_an_older_version_downloaded_after_a_restart_is_refused(
    net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    server, older = await _with_a_newer_version(net, "floor-download", "ss-floor-download")
    assert server.in_force is not None
    newer = server.in_force.version
    await net.servers.pop("floor-download").stop()
    # the configuration file removed, and an older validly signed version served (a replay on
    # the download path, or a central server restored from an old backup)
    server.config.globalconf_state.unlink()

    answers = {"older": True}

    async def serve_older(request: web.Request) -> web.Response:
        if not answers["older"]:
            return web.Response(status=304)  # nothing newer than what was last served
        return web.Response(body=older, content_type="application/jose")

    old_server = web.Application()
    old_server.router.add_get("/globalconf", serve_older)
    async with serving(old_server) as base:
        caplog.clear()
        try:
            with caplog.at_level(logging.ERROR, logger=CLIENT_LOG):
                restarted = await _restart(
                    net,
                    "floor-download",
                    lambda: _with_download_url(server, f"{base}/globalconf"),
                )
            assert restarted.in_force is None and restarted.trusted.current is None
            assert any("rollback refused" in r.getMessage() for r in caplog.records)
            assert restarted.poller is not None
            with pytest.raises(GlobalConfRollback, match=f"version {newer}"):
                await restarted.poller.fetch_once()
            assert restarted.in_force is None
            assert restarted.poller.last_refusal is not None
            # a refusal is shown until the central server answers again (the fourth red team:
            # after a 304 it was still shown, and in place of a later download failure)
            answers["older"] = False
            assert await restarted.poller.fetch_once() is False
            assert restarted.poller.last_refusal is None
            assert not server.config.globalconf_state.exists()
            assert json.loads(_floor_file(server).read_text()) == {"version": newer}
        finally:
            await net.servers.pop("floor-download").stop()


async def test_a_missing_floor_file_means_no_floor(
    net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    server = await net.add_server(
        "floor-missing", parse_security_server(f"{MOH}/ss-floor-missing"), clients=[]
    )
    assert server.in_force is not None
    version = server.in_force.version
    assert json.loads(_floor_file(server).read_text()) == {"version": version}
    await net.servers.pop("floor-missing").stop()
    # a first start after an upgrade from a version that did not write the floor (or an
    # insider removed it: the log says so either way)
    _floor_file(server).unlink()
    with caplog.at_level(logging.WARNING, logger=CLIENT_LOG):
        restarted = await _restart(
            net, "floor-missing", lambda: _with_download_url(server, _unreachable())
        )
    assert any(
        "no version floor beside the persisted global configuration" in r.getMessage()
        for r in caplog.records
    )
    try:
        assert restarted.in_force is not None and restarted.in_force.version == version
        assert json.loads(_floor_file(server).read_text()) == {"version": version}
    finally:
        await net.servers.pop("floor-missing").stop()


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _directory(path: Path) -> None:
    path.mkdir()


DAMAGED = [
    pytest.param(_write(b"not json\n"), "does not hold", id="not-json"),
    pytest.param(_write(b""), "does not hold", id="empty"),
    pytest.param(_write(b'{"version": "21"}'), "does not hold", id="version-a-string"),
    pytest.param(_write(b'{"version": 21.0}'), "does not hold", id="version-a-float"),
    pytest.param(_write(b'{"version": true}'), "does not hold", id="version-a-boolean"),
    pytest.param(_write(b'{"version": -1}'), "does not hold", id="negative-version"),
    pytest.param(_write(b'{"version": 21, "x": 1}'), "does not hold", id="another-key"),
    pytest.param(_write(b"[21]"), "does not hold", id="not-an-object"),
    pytest.param(_write(b"\xff\xfe"), "does not hold", id="not-utf-8"),
    pytest.param(_directory, "cannot read", id="unreadable"),
]


async def _started_once(net: Net, name: str) -> SecurityServer:
    """A server that ran once (so its floor file exists) and is stopped."""
    server = await net.add_server(name, parse_security_server(f"{MOH}/ss-{name}"), clients=[])
    await net.servers.pop(name).stop()
    assert _floor_file(server).exists()
    return server


@pytest.mark.parametrize(("damage", "says"), DAMAGED)
async def test_a_damaged_floor_file_stops_the_start(
    net: Net, request: pytest.FixtureRequest, damage: Callable[[Path], None], says: str
) -> None:
    server = await _started_once(net, f"floor-{request.node.callspec.id}")
    floor = _floor_file(server)
    floor.unlink()
    damage(floor)
    again = SecurityServer(server.config)
    try:
        with pytest.raises(ConfigurationError, match=says) as info:
            await again.start()
        assert str(floor) in info.value.message
        assert again.in_force is None
    finally:
        await again.stop()


async def test_the_server_command_refuses_to_start_on_a_damaged_floor(net: Net) -> None:
    server = await _started_once(net, "floor-damaged-cli")
    _floor_file(server).write_bytes(b"21 or so\n")
    command = ["-m", "exchange", "server", "run", "--config", str(server.config.path)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(120):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    said = stderr.decode()
    assert process.returncode == 2, said[-2000:]
    assert "global configuration floor" in said and str(_floor_file(server)) in said, said


async def test_a_floor_above_what_the_central_server_serves_says_so_in_health(net: Net) -> None:
    """A floor raised by hand (or a central server restored from an old backup) fails closed,
    and `/health` says the central server's version was refused and why, not only that the
    saved one was (the third red team: `/health` blamed the configuration file, and
    `last_fetch_error` was empty)."""
    server = await _started_once(net, "floor-too-high")
    _floor_file(server).write_text('{"version": 1000000000}\n')
    restarted = await _restart(net, "floor-too-high", lambda: SecurityServer(server.config))
    try:
        assert restarted.poller is not None
        with pytest.raises(GlobalConfRollback):
            await restarted.poller.fetch_once()
        assert restarted.in_force is None
        [reason] = restarted.health()["reasons"]
        assert reason["code"] == "globalconf_missing"
        assert "the central server's was refused" in reason["message"]
        assert "1000000000" in reason["message"]
        assert restarted.health()["globalconf"]["last_refusal"] is not None
    finally:
        await net.servers.pop("floor-too-high").stop()
