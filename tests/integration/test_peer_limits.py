"""What one registered peer security server may hold at a provider port at once.

A peer that opens more connections than ``[limits] max_peer_connections`` is refused with
``Server.ServerProxy.TooManyConnections`` on the extra one; the ones it holds keep working, and
a closed one frees a place. Requests in flight are counted over all of the peer's connections:
past ``max_peer_requests`` or ``max_peer_request_bytes`` the provider stops reading from that
peer until half has drained, and every request is still answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio

from exchange.errors import ExchangeError
from exchange.identifiers import SecurityServerId, parse_security_server, parse_subsystem
from exchange.protocol.session import ResponseReceived
from exchange.server.core import SecurityServer
from tests.integration.conftest import MOI, WINDOW, Net
from tests.integration.support import as_registered_peer, launch, window_request

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBSYSTEM = parse_subsystem(f"{MOI}/peer-limits")
LIMITED = parse_security_server(f"{MOI}/ss-peer-limits")
MAX_CONNECTIONS = 2
MAX_REQUESTS = 3
MAX_BYTES = 8192

POLICY = f"""
provider = "PS/GOV/MOI"

[[grant]]
id = "window-all"
client = "{WINDOW}"
service = "{SUBSYSTEM}/slow"
methods = ["GET"]

[[grant]]
id = "window-echo"
client = "{WINDOW}"
service = "{SUBSYSTEM}/echo"
methods = ["POST"]
"""


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def limited(net: Net) -> AsyncIterator[SecurityServer]:
    server = await launch(
        net,
        "moi-peer-limits",
        LIMITED,
        clients=[SUBSYSTEM],
        policy=POLICY,
        extra={
            "services": [
                {"id": f"{SUBSYSTEM}/slow", "url": f"{net.backend_url}/slow"},
                {"id": f"{SUBSYSTEM}/echo", "url": f"{net.backend_url}/echo"},
            ],
            "limits": {
                "max_peer_connections": MAX_CONNECTIONS,
                "max_peer_requests": MAX_REQUESTS,
                "max_peer_request_bytes": MAX_BYTES,
            },
        },
    )
    yield server


def _slow_request(net: Net) -> str:
    return window_request(net, SUBSYSTEM.service("slow"), LIMITED, "s=0")


def _answered(frame: object) -> None:
    assert isinstance(frame, ResponseReceived), frame
    assert orjson.loads(frame.body) == {"slow": True}


async def test_a_peer_holds_at_most_max_peer_connections(net: Net, limited: SecurityServer) -> None:
    palpost_id: SecurityServerId = net.servers["palpost"].config.server_id
    held = [as_registered_peer(net, limited) for _ in range(MAX_CONNECTIONS)]
    extra = as_registered_peer(net, limited)
    try:
        for client in held:
            frame, _ = await client.send(_slow_request(net))
            _answered(frame)
        with pytest.raises(ExchangeError) as refused:
            await extra.send(_slow_request(net))
        assert refused.value.code == "Server.ServerProxy.TooManyConnections", refused.value
        open_ones = [c for c in limited.provider_connections if c.peer_id == palpost_id]
        assert len(open_ones) == MAX_CONNECTIONS
        for client in held:  # the connections it holds keep working
            frame, _ = await client.send(_slow_request(net))
            _answered(frame)
        held.pop().close()
        for _ in range(200):  # a bounded wait for the provider to see the close
            if sum(c.peer_id == palpost_id for c in limited.provider_connections) < 2:
                break
            await asyncio.sleep(0.01)
        again = as_registered_peer(net, limited)
        held.append(again)
        frame, _ = await again.send(_slow_request(net))
        _answered(frame)
    finally:
        for client in [*held, extra]:
            client.close()


async def _until_paused(limited: SecurityServer, peer: SecurityServerId) -> bool:
    for _ in range(500):  # a bounded wait, not a timing assertion
        load = limited.peer_loads.get(peer)
        if load is not None and load.paused:
            return True
        await asyncio.sleep(0.005)
    return False


async def _until_drained(limited: SecurityServer, peer: SecurityServerId) -> None:
    for _ in range(500):
        if peer not in limited.peer_loads:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{peer} still has requests in flight: {limited.peer_loads[peer]}")


async def test_more_requests_than_allowed_wait_and_are_all_answered(
    net: Net, limited: SecurityServer
) -> None:
    peer = net.servers["palpost"].config.server_id
    calls = [
        net.call("palpost", f"/r1/{SUBSYSTEM}/slow?s=0.3", headers={"X-Road-Id": f"slow-{i}"})
        for i in range(4 * MAX_REQUESTS)
    ]
    answers = asyncio.gather(*calls)
    assert await _until_paused(limited, peer), "the provider never stopped reading"
    for status, _, body in await answers:
        assert status == 200 and orjson.loads(body) == {"slow": True}
    await _until_drained(limited, peer)


async def test_more_request_bytes_than_allowed_wait_and_are_all_answered(
    net: Net, limited: SecurityServer
) -> None:
    peer = net.servers["palpost"].config.server_id
    body = b"x" * (MAX_BYTES // 2 + 1)
    calls = [
        net.call("palpost", f"/r1/{SUBSYSTEM}/echo", method="POST", body=body) for _ in range(6)
    ]
    for status, _, answer in await asyncio.gather(*calls):
        assert status == 200 and orjson.loads(answer)["body"] == body.decode()
    await _until_drained(limited, peer)
    assert (await net.call("palpost", f"/r1/{SUBSYSTEM}/slow?s=0"))[0] == 200
