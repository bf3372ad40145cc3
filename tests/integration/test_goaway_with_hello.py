"""A provider node that says GOAWAY on a connection the consumer is about to send on (right
after its HELLO, on a fresh connection: it began to stop as it accepted the connection): no
request was sent on that connection, so the exchange goes to the service's next provider node,
as one the stopping node could not be connected for does.

Before, the consumer's connection refused the request locally (``is closed`` once the GOAWAY
had drained it, or ``takes no new requests`` while other requests were still open on it) and
that error ended the exchange: the caller got ``502 Server.ClientProxy.NetworkError`` although
the request never left the consumer.

The stopping node is a :class:`~tests.integration.rogue.RogueProvider` (a real provider port,
real mutual TLS, EXM/1 frames) that sends GOAWAY when the test says; the next node is a real
security server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
import pytest_asyncio

from exchange.errors import ShuttingDown
from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.protocol.frames import FrameKind, encode_frame
from exchange.protocol.session import RequestRefused, State
from exchange.server.peer import NotDelivered
from exchange.server.provider import error_meta
from tests.integration.conftest import PALPOST, WINDOW, Net
from tests.integration.rogue import Incoming, RogueProvider, sign_request
from tests.integration.support import launch, logged, new_id, registered_rogue, until

pytestmark = pytest.mark.asyncio(loop_scope="session")

NODES = parse_member("PS/GOV/GWAY")
REGISTRY = parse_subsystem(f"{NODES}/registry")
PERSON = f"/r1/{REGISTRY}/persons/123456782"
POLICY = f"""
provider = "{NODES}"
[[grant]]
id = "window"
client = "{WINDOW}"
service = "{REGISTRY}/persons"
methods = ["GET"]
paths = ["/**"]
"""
GOAWAY = encode_frame(0, FrameKind.GOAWAY, {"reason": "the security server is stopping"})
CALLS = 4


def _crossed_the_goaway(inc: Incoming) -> None:
    """What a stopping provider does with a request that crossed its GOAWAY: refused
    unprocessed."""
    err = ShuttingDown("the security server is stopping; the request was not processed")
    inc.transport.write(encode_frame(inc.frame.stream_id, FrameKind.ERROR, error_meta(err)))


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stopping(net: Net) -> AsyncIterator[RogueProvider]:
    """The service's node ``ss1``, stopping: it refuses unprocessed any request it gets; when
    it says GOAWAY is each test's choice."""
    async with registered_rogue(net, NODES, REGISTRY) as (provider, _):
        provider.answer = _crossed_the_goaway
        yield provider


@pytest.fixture
def fresh_pool(net: Net, stopping: RogueProvider) -> Iterator[None]:
    """The consumer's pool to the stopping node is dropped after the test."""
    yield
    pool = net.servers["palpost"].pools.pop(stopping.server_id, None)
    if pool is not None:
        pool.close()


@pytest.mark.usefixtures("fresh_pool")
async def test_a_goaway_with_the_hello_sends_the_request_to_the_next_provider(
    net: Net, stopping: RogueProvider, caplog: pytest.LogCaptureFixture
) -> None:
    palpost = net.servers["palpost"]
    next_node = SecurityServerId(*NODES.parts, "ss2")
    await launch(
        net,
        "gway-ss2",
        next_node,
        clients=[REGISTRY],
        services=[(REGISTRY.service("persons"), f"{net.backend_url}/persons")],
        policy=POLICY,
    )
    answers: dict[str, tuple[int, str | None, bytes]] = {}
    usual = stopping.hello
    try:
        stopping.hello = usual + GOAWAY
        # the providers are taken in turn: the stopping node comes first in every other call
        with caplog.at_level(logging.WARNING, logger="exchange.server.consumer"):
            async with asyncio.timeout(30):
                for _ in range(CALLS):
                    mid = new_id("goaway-hello")
                    status, headers, body = await net.call(
                        "palpost", PERSON, headers={"X-Road-Id": mid}
                    )
                    answers[mid] = (status, headers.get("X-Road-Error"), body)
    finally:
        stopping.hello = usual
        await net.servers.pop("gway-ss2").stop()
    # (1) every caller got the next node's answer
    failed = [
        f"{status} {code}: {orjson.loads(body)['message']}"
        for status, code, body in answers.values()
        if status != 200
    ]
    assert not failed, failed
    for mid, (_, _, body) in answers.items():
        assert orjson.loads(body)["national_id"] == "123456782"
        assert logged(palpost, mid, "consumer").entry["peer_server"] == str(next_node)
    # (2) the stopping node was tried first for half of them, and they went on to the next
    moved = [
        r.getMessage()
        for r in caplog.records
        if f"not taken by security server {stopping.server_id}" in r.getMessage()
    ]
    assert len(moved) == CALLS // 2, moved
    assert all(f"sending it to {next_node}" in line for line in moved), moved


@pytest.mark.usefixtures("fresh_pool")
async def test_a_request_on_a_connection_that_takes_no_new_requests_is_not_delivered(
    net: Net, stopping: RogueProvider
) -> None:
    """The consumer's own pool, one real connection: a request handed a connection that the
    provider's GOAWAY has drained since (another request still open on it) is reported
    :class:`NotDelivered`, which the consumer sends to the next provider."""
    palpost = net.servers["palpost"]
    conf = palpost.trusted.current
    assert conf is not None
    info = conf.server(stopping.server_id)
    assert info is not None
    held: list[Incoming] = []
    stopping.answer = held.append

    def request() -> dict[str, object]:
        token, _ = sign_request(
            palpost.signers[PALPOST],
            client=WINDOW,
            service=REGISTRY.service("persons"),
            security_server=stopping.server_id,
        )
        return {"jws": token}

    pool = palpost.pool_for(info)
    try:
        async with asyncio.timeout(15):
            conn = await pool.connection()
            first = asyncio.ensure_future(pool.answer(conn, request(), b"", 10.0))
            await until(lambda: held, "the provider holds the first request")
            held[0].transport.write(GOAWAY)
            await until(lambda: conn.session.state is State.DRAINING, "the consumer drains")
            with pytest.raises(NotDelivered) as missed:
                await pool.answer(conn, request(), b"", 10.0)
            _crossed_the_goaway(held[0])
            answer, _ = await first
    finally:
        stopping.answer = _crossed_the_goaway
    assert missed.value.error.code == "Server.ClientProxy.NetworkError"
    assert "takes no new requests" in missed.value.error.message, missed.value.error
    assert isinstance(answer, RequestRefused)
    assert len(held) == 1
