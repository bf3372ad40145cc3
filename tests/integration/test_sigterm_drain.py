"""SIGTERM under load (issue 14): a provider security server, a real ``exchange server run``
process, is stopped while exchanges stream through it.

Before, it exited in 0.3 s without draining, and 3-8 exchanges per stop were logged as 200 by
the provider while the caller got ``502 NetworkError``. Now it closes its listening sockets,
tells its peers on open EXM/1 connections (GOAWAY) to send no new request, answers what is in
flight, signs and time-stamps its last tree head and exits; a request that crossed the GOAWAY is
refused unprocessed and the consumer sends it to the service's other provider node.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import Any

import aiohttp
import orjson
import pytest
from click.testing import CliRunner

from exchange.cli import main
from exchange.demo.processes import spawn
from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.messagelog.store import open_readonly
from tests.integration.conftest import Net
from tests.integration.support import publish

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROVIDER = parse_member("PS/GOV/DRNP")
CONSUMER = parse_member("PS/GOV/DRNC")
REGISTRY = parse_subsystem("PS/GOV/DRNP/registry")
DESK = parse_subsystem("PS/GOV/DRNC/desk")
SLOW = "/r1/PS/GOV/DRNP/registry/slow/slow?s=0.15"
POLICY = """
provider = "PS/GOV/DRNP"
[[grant]]
id = "desk"
client = "PS/GOV/DRNC/desk"
service = "PS/GOV/DRNP/registry/slow"
methods = ["GET"]
paths = ["/**"]
"""
CALLERS = 12


def _records(path: Any, side: str) -> list[dict[str, Any]]:
    conn = open_readonly(path)
    try:
        rows = conn.execute("SELECT entry FROM records WHERE side = ?", (side,)).fetchall()
    finally:
        conn.close()
    return [orjson.loads(raw) for (raw,) in rows]


async def test_sigterm_under_load_loses_no_answered_exchange(net: Net) -> None:
    with net.registry() as reg:
        reg.add_member(PROVIDER, "Two provider nodes")
        reg.add_member(CONSUMER, "Their consumer")
    service = [(REGISTRY.service("slow"), net.backend_url)]
    node_a = await net.add_server(
        "drn-a",
        SecurityServerId(*PROVIDER.parts, "ss1"),
        clients=[REGISTRY],
        services=service,
        policy=POLICY,
        start=False,
    )
    del net.servers["drn-a"]  # it runs as a process of its own, below
    await net.add_server(
        "drn-b",
        SecurityServerId(*PROVIDER.parts, "ss2"),
        clients=[REGISTRY],
        services=service,
        policy=POLICY,
    )
    consumer = await net.add_server(
        "drn-c", SecurityServerId(*CONSUMER.parts, "ss1"), clients=[DESK]
    )
    await publish(net)
    config_a = node_a.config
    child = await spawn(
        "drn-a",
        ["exchange", "server", "run", "--config", str(config_a.path), "--ready-line"],
        net.root / "logs",
    )
    answers: dict[str, tuple[int, str | None]] = {}
    stopping = asyncio.Event()

    async def caller() -> None:
        while not stopping.is_set():
            message_id = str(uuid.uuid4())
            status, headers, _ = await net.call(
                "drn-c", SLOW, client=str(DESK), headers={"X-Road-Id": message_id}
            )
            answers[message_id] = (status, headers.get("X-Road-Error"))

    callers = [asyncio.create_task(caller()) for _ in range(CALLERS)]
    try:
        # load on both nodes, connections to node A open and busy
        for _ in range(600):
            served_by_a = [
                r for r in _records(consumer.config.log_path, "consumer")
                if r["peer_server"] == str(config_a.server_id)
            ]  # fmt: skip
            if len(served_by_a) >= 2 * CALLERS:
                break
            await asyncio.sleep(0.05)
        child.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(child.proc.wait(), 60)
        before = len(answers)
        for _ in range(600):  # and on: node B takes everything now
            if len(answers) >= before + 2 * CALLERS:
                break
            await asyncio.sleep(0.05)
    finally:
        stopping.set()
        await asyncio.gather(*callers, return_exceptions=True)
        await child.stop()
    assert code == 0
    # (1) every caller got its answer: nothing refused at the drain was lost, it went to node B
    failed = {m: a for m, a in answers.items() if a[0] != 200}
    assert not failed, failed
    # (2) every exchange node A logged as answered reached its caller, and every exchange the
    # consumer logged as answered by node A is in node A's log as answered
    a_answered = {
        r["message_id"] for r in _records(config_a.log_path, "provider") if r["http_status"] == 200
    }
    assert a_answered and a_answered <= {m for m, a in answers.items() if a[0] == 200}
    via_a = {
        r["message_id"]
        for r in _records(consumer.config.log_path, "consumer")
        if r["peer_server"] == str(config_a.server_id) and r["http_status"] == 200
    }
    assert via_a == a_answered
    # (3) node A signed its last tree head over everything before it exited; its log verifies
    verified = CliRunner().invoke(main, ["log", "verify", "--config", str(config_a.path)])
    assert verified.exit_code == 0, verified.output
    conn = open_readonly(config_a.log_path)
    try:
        (records,) = conn.execute("SELECT count(*) FROM records").fetchone()
        (signed,) = conn.execute("SELECT max(size) FROM tree_heads").fetchone()
    finally:
        conn.close()
    assert signed == records


async def test_a_drain_cuts_the_consumer_ports_exchanges_at_its_limit(net: Net) -> None:
    """An exchange on the consumer port still in flight when ``drain_timeout`` runs out is cut
    off then, by aiohttp's own shutdown of the port; before, an outer timeout of the same length
    cancelled that shutdown halfway, so the exchange went on after the drain had ended."""
    provider_id, consumer_id = parse_member("PS/GOV/DRTP"), parse_member("PS/GOV/DRTC")
    registry, desk = provider_id.subsystem("registry"), consumer_id.subsystem("desk")
    with net.registry() as reg:
        reg.add_member(provider_id, "Drain limit provider")
        reg.add_member(consumer_id, "Drain limit consumer")
    await net.add_server(
        "drt-p",
        SecurityServerId(*provider_id.parts, "ss1"),
        clients=[registry],
        services=[(registry.service("slow"), net.backend_url)],
        policy=POLICY.replace("DRNP", "DRTP").replace("DRNC", "DRTC"),
    )
    consumer = await net.add_server(
        "drt-c",
        SecurityServerId(*consumer_id.parts, "ss1"),
        clients=[desk],
        extra={"limits": {"drain_timeout": 0.5}},
    )
    await publish(net)
    call = asyncio.create_task(
        net.call("drt-c", "/r1/PS/GOV/DRTP/registry/slow/slow?s=4", client=str(desk))
    )
    await asyncio.sleep(0.5)  # in flight at the backend
    assert not call.done()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await consumer.drain()
    with pytest.raises(aiohttp.ClientError):  # its connection is closed without an answer
        await asyncio.wait_for(call, 2.0)
    assert loop.time() - started < 2.0
    await consumer.stop()
    del net.servers["drt-c"]
