"""``/health`` a load balancer can use, maintenance mode and ``/metrics`` (issue 14).

Before, ``/health`` answered 200 whatever the state: with the global configuration expired, and
while every exchange failed with ``MessageLogFailed`` on a full disk. Now the status listener's
``/health`` says 503 with the reasons, and the consumer port's ``/health`` the same verdict with
only the reason codes; ``exchange server maintenance on`` drains a running server without a
restart while it keeps serving what reaches it; ``/metrics`` counts the exchanges from their
records with bounded labels and no personal data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from exchange.cli import main
from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.server.core import SecurityServer
from tests.integration.conftest import HEALTH, Net
from tests.integration.support import ECHO, PERSONS, assert_serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET_USER = "PS-clerk-4711-private"


async def _get(net: Net, url: str) -> tuple[int, bytes]:
    assert net.session is not None
    async with net.session.get(url) as response:
        return response.status, await response.read()


async def status_health(net: Net, server: SecurityServer) -> tuple[int, dict[str, Any]]:
    status, body = await _get(net, f"http://127.0.0.1:{server.status_port}/health")
    return status, orjson.loads(body)


async def _until_health(net: Net, server: SecurityServer, status: int) -> dict[str, Any]:
    """Wait (bounded) until the status listener's /health answers ``status``."""
    health: dict[str, Any] = {}
    for _ in range(100):
        got, health = await status_health(net, server)
        if got == status:
            return health
        await asyncio.sleep(0.05)
    raise AssertionError(f"/health never answered {status}: {health}")


def _codes(health: dict[str, Any]) -> list[str]:
    return [r["code"] for r in health["reasons"]]


async def test_a_serving_server_says_200_on_both_ports(net: Net) -> None:
    moi = net.servers["moi"]
    await assert_serving(net)
    status, health = await status_health(net, moi)
    assert status == 200, health
    assert health["status"] == "ok" and health["reasons"] == []
    assert health["globalconf"]["last_fetch"] is not None
    assert health["globalconf"]["expires_in_seconds"] > 0
    assert health["messagelog"]["writable"] is True
    own = health["ocsp"]["own"]  # per own certificate: the response held, and its age
    assert {c["usage"] for c in own} == {"auth", "sign"} and len(own) == len(moi.own_certs)
    assert not any(c["needed"] or c["produced_at"] for c in own), own  # this CA has no OCSP
    status, body = await _get(net, net.url("moi", "/health"))
    # the information systems' port: the verdict and reason codes, not the operator's state
    assert (status, orjson.loads(body)) == (200, {"status": "ok", "reasons": []})


async def test_maintenance_mode_drains_a_running_server_and_it_keeps_serving(net: Net) -> None:
    moi = net.servers["moi"]
    config = str(moi.config.path)
    on = CliRunner().invoke(
        main, ["server", "maintenance", "on", "--config", config, "--reason", "OS upgrade"]
    )
    assert on.exit_code == 0, on.output
    try:
        health = await _until_health(net, moi, 503)
        assert _codes(health) == ["maintenance"]
        assert "OS upgrade" in health["reasons"][0]["message"]
        assert health["maintenance"]["reason"] == "OS upgrade"
        status, body = await _get(net, net.url("moi", "/health"))
        assert (status, orjson.loads(body)["reasons"]) == (503, ["maintenance"])
        # what still reaches it is served: the balancer drains, the server does not refuse
        await assert_serving(net)
    finally:
        off = CliRunner().invoke(main, ["server", "maintenance", "off", "--config", config])
        assert off.exit_code == 0, off.output
    assert (await _until_health(net, moi, 200))["maintenance"] is None


async def test_an_expired_global_configuration_says_503(net: Net) -> None:
    moh = net.servers["moh"]
    conf = moh.in_force
    assert conf is not None
    held = moh.clock
    moh.clock = lambda: conf.expires_at + 5.0  # type: ignore[method-assign]
    try:
        status, health = await status_health(net, moh)
        assert status == 503
        assert "globalconf_expired" in _codes(health)
    finally:
        moh.clock = held  # type: ignore[method-assign]
    assert (await status_health(net, moh))[0] == 200


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_metrics_count_exchanges_from_their_records_without_personal_data(
    net: Net,
) -> None:
    moi, palpost = net.servers["moi"], net.servers["palpost"]
    for _ in range(3):
        status, _, _ = await net.call(
            "palpost", f"{ECHO}/x", headers={"X-Road-UserId": SECRET_USER}
        )
        assert status == 200
    # refused by the policy (the health subsystem states no purpose)
    status, _, _ = await net.call("moh", f"{PERSONS}/123456782", client=str(HEALTH))
    assert status == 403
    status, text = await _get(net, f"http://127.0.0.1:{moi.status_port}/metrics")
    assert status == 200
    body = text.decode()
    assert SECRET_USER not in body
    families = _families(body)
    exchanges = {
        tuple(sorted(s.labels.items())): s.value
        for s in families["exchange_exchanges"].samples
        if s.name == "exchange_exchanges_total"
    }
    echo = (
        ("client", "PS/GOV/PALPOST/unified-window"),
        ("error_code", ""),
        ("service", "PS/GOV/MOI/population-registry/echo"),
        ("side", "provider"),
        ("status", "200"),
    )
    assert exchanges[echo] >= 3
    denied = [
        k for k in exchanges if dict(k)["error_code"].startswith("Server.ServerProxy.AccessDenied")
    ]
    assert denied, exchanges
    phases = {
        (s.labels["side"], s.labels["phase"])
        for s in families["exchange_phase_seconds"].samples
        if s.name == "exchange_phase_seconds_count" and s.value > 0
    }
    assert {("provider", p) for p in ("verify", "decide", "backend", "sign", "total")} <= phases
    assert ("provider", "log_commit") in phases
    assert families["exchange_messagelog_batch_records"].samples
    assert families["exchange_globalconf_age_seconds"].samples[0].value >= 0
    expiry = families["exchange_certificate_expires_in_seconds"].samples
    assert {s.labels["usage"] for s in expiry} == {"auth", "sign"}
    inbound = [
        s
        for s in families["exchange_peer_connections"].samples
        if s.labels == {"peer": str(palpost.config.server_id), "direction": "inbound"}
    ]
    assert inbound and inbound[0].value >= 1
    assert families["exchange_healthy"].samples[0].value == 1.0
    # no label names a message id or a user; none is longer than an identifier
    for family in families.values():
        for sample in family.samples:
            assert all(len(v) <= 255 for v in sample.labels.values())


async def test_client_and_service_labels_are_bounded_by_the_configuration(net: Net) -> None:
    """A caller that names made-up clients and services does not grow the metrics."""
    palpost = net.servers["palpost"]
    for n in range(5):
        await net.call("palpost", f"{PERSONS}/1", client=f"PS/GOV/NOBODY/made-up-{n}")
        await net.call("palpost", f"/r1/PS/GOV/NOBODY/sub-{n}/svc/1")
    status, text = await _get(net, f"http://127.0.0.1:{palpost.status_port}/metrics")
    assert status == 200
    body = text.decode()
    assert "made-up-" not in body and "NOBODY/sub-" not in body
    assert 'client="other"' in body


# --- a full disk ---------------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` (a real file system that fills up); skips where this
    process may not mount one."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


async def test_a_full_disk_says_503_and_200_again_once_space_is_freed(net: Net) -> None:
    """Every exchange fails with MessageLogFailed (none answered unlogged) and /health says
    why; once space is freed the server serves and says 200 again, with no exchange needed to
    find out (a balancer that drained it sends none)."""
    member = parse_member("PS/GOV/DISK")
    with net.registry() as reg:
        reg.add_member(member, "Full disk")
    client = parse_subsystem("PS/GOV/DISK/desk")
    with small_disk(net.root / "small-disk") as disk:
        server = await net.add_server(
            "disk",
            SecurityServerId(*member.parts, "ss1"),
            clients=[client],
            extra={"messagelog": {"path": str(disk / "messagelog.sqlite")}},
        )
        try:
            status, _, _ = await net.call("disk", f"{PERSONS}/123456782", client=str(client))
            assert status == 403  # served (and logged): no grant for this client
            filler = _fill(disk)
            failed = 0
            for _ in range(200):  # until the log's file system refuses a commit
                status, headers, _ = await net.call(
                    "disk", PERSONS, client=str(client), body=b"x" * 4096, method="POST"
                )
                if headers.get("X-Road-Error") == "Server.ClientProxy.MessageLogFailed":
                    failed += 1
                    break
                assert status == 403
            assert failed, "the log never filled the disk"
            health = await _until_health(net, server, 503)
            assert "messagelog_unwritable" in _codes(health)
            assert health["messagelog"]["writable"] is False
            filler.unlink()
            await _until_health(net, server, 200)  # the probe found the log writable again
            status, _, _ = await net.call("disk", f"{PERSONS}/123456782", client=str(client))
            assert status == 403
        finally:
            await server.stop()
            del net.servers["disk"]


DASHBOARD = Path(__file__).parents[2] / "examples" / "grafana" / "exchange-security-server.json"
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count")}


def _exposed_names(text: str) -> set[str]:
    """Every series name the exposition declares (``# TYPE``), with its type's suffixes."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)  # a counter's name ends in _total here
            names |= {name + suffix for suffix in _SUFFIXES.get(kind, ("",))}
    return names


async def test_the_grafana_dashboard_queries_only_metrics_a_server_exposes(net: Net) -> None:
    import re

    moi = net.servers["moi"]
    await assert_serving(net)
    status, text = await _get(net, f"http://127.0.0.1:{moi.status_port}/metrics")
    assert status == 200
    exposed = _exposed_names(text.decode())
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {name for q in queries for name in re.findall(r"\bexchange_[a-z0-9_]+", q)}
    assert len(used) >= 15
    assert used <= exposed, sorted(used - exposed)
