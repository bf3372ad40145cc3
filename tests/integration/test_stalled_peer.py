"""A registered peer that stops reading its answers cannot make the provider hold more for
longer (found by the fourth red team).

A connection whose answers its peer leaves unread is not read either (``pause_writing``); such
a connection's frame begun was exempt from ``frame_timeout`` and did not hold the peer's other
frames back, so each new connection read a whole frame (six of them held 60 MiB against a 4 MiB
limit, and their 78 MiB of answers, for as long as the peer liked). Now a frame begun on it
counts as one the peer is sending (the others wait), and its clock runs; a connection whose
peer reads none of its answers for ``frame_timeout`` is aborted.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from exchange.identifiers import parse_security_server, parse_subsystem
from exchange.protocol.frames import FrameKind, encode_frame
from exchange.server.core import SecurityServer
from tests.integration.conftest import MOI, PALPOST, WINDOW, Net
from tests.integration.rogue import hello_frame, sign_request
from tests.integration.support import hardly_reading_peer, launch, new_id, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBSYSTEM = parse_subsystem(f"{MOI}/stalled-peer")
SERVER = parse_security_server(f"{MOI}/ss-stalled-peer")
CONNECTIONS = 3
LIMIT = 4 * 2**20  # max_peer_request_bytes
FRAME_TIMEOUT = 1.0
ANSWER = 2 * 2**20

POLICY = f"""
provider = "PS/GOV/MOI"

[[grant]]
id = "window-big"
client = "{WINDOW}"
service = "{SUBSYSTEM}/big"
methods = ["GET"]
"""


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=b"a" * int(request.query["n"]))


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def provider(net: Net) -> AsyncIterator[SecurityServer]:
    app = web.Application()
    app.router.add_get("/big", _big)
    async with serving(app) as url:
        server = await launch(
            net,
            "moi-stalled-peer",
            SERVER,
            clients=[SUBSYSTEM],
            policy=POLICY,
            extra={
                "services": [{"id": f"{SUBSYSTEM}/big", "url": f"{url}/big"}],
                "limits": {
                    "max_peer_connections": CONNECTIONS,
                    "max_peer_request_bytes": LIMIT,
                    "frame_timeout": FRAME_TIMEOUT,
                },
            },
        )
        yield server


def _requests(net: Net, count: int, first: int = 1) -> bytes:
    """``count`` signed requests whose answers are ``ANSWER`` bytes each, on streams from
    ``first`` on."""
    signer = net.servers["palpost"].signers[PALPOST]
    frames = []
    for i in range(count):
        token, _ = sign_request(
            signer,
            client=WINDOW,
            service=SUBSYSTEM.service("big"),
            security_server=SERVER,
            path="",
            query=f"n={ANSWER}",
            message_id=new_id("stalled"),
        )
        frames.append(encode_frame(first + 2 * i, FrameKind.REQUEST, {"jws": token}))
    return b"".join(frames)


def _frame_begun(body_length: int, sent: int) -> bytes:
    head = struct.pack("!IIBI", 9 + 2 + body_length, 99, FrameKind.REQUEST, 2)
    return head + b"{}" + b"\0" * sent


async def test_a_peer_that_reads_no_answers_holds_no_more_and_is_dropped(
    net: Net, provider: SecurityServer
) -> None:
    palpost = net.servers["palpost"]
    peer = palpost.config.server_id
    pool = palpost.pools.pop(SERVER, None)
    if pool is not None:
        pool.close()
    hello = hello_frame(peer, [palpost.signers[PALPOST].cert])
    largest = provider.config.limits.max_body_bytes
    writers = []
    try:
        for _ in range(CONNECTIONS):
            _, writer = await hardly_reading_peer(net, provider)
            writers.append(writer)
            writer.write(hello + _requests(net, 8) + _frame_begun(largest, largest - 1000))
        most, seen_closing = 0, False
        for _ in range(3000):  # a bounded wait (30 s) for all of them to be dropped
            mine = [c for c in provider.provider_connections if c.peer_id == peer]
            load = provider.peer_loads.get(peer)
            buffered = load.buffered if load is not None else 0
            most = max(most, buffered)
            closing = [c for c in mine if not c.open]
            if closing:
                # refused, it may take a while to close (the peer reads nothing); what it had
                # begun no longer counts, and holds none of the peer's other frames back
                seen_closing = True
                assert buffered == sum(c.session.buffered for c in mine if c.open), load
            if not mine and load is None:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"still held: {len(mine)} connections, {load}")
        assert seen_closing
        # frames begun: one read whatever the peer holds, the rest held back (and read chunks)
        assert most <= LIMIT + largest + 2 * 2**20, most
    finally:
        for writer in writers:
            writer.transport.abort()
    # and the peer is served again
    status, _, body = await net.call("palpost", f"/r1/{SUBSYSTEM}/big?n=10")
    assert (status, body) == (200, b"a" * 10)


async def test_a_connection_whose_answers_are_never_read_is_aborted(
    net: Net, provider: SecurityServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Its answers fill what the connection buffers and stay there: after ``frame_timeout``
    without the peer reading any, the connection is aborted, answers and all."""
    palpost = net.servers["palpost"]
    peer = palpost.config.server_id
    hello = hello_frame(peer, [palpost.signers[PALPOST].cert])
    others = set(provider.provider_connections)  # PALPOST's own pool, say
    _, writer = await hardly_reading_peer(net, provider)
    try:
        writer.write(hello)
        for burst in range(4):  # answers in several writes: the later ones find the buffer full
            writer.write(_requests(net, 4, first=1 + 8 * burst))
            await asyncio.sleep(0.2)
        for _ in range(3000):  # a bounded wait (30 s)
            if not any(c.peer_id == peer for c in provider.provider_connections - others):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the connection is still held")
        assert any("read none of its answers" in r.getMessage() for r in caplog.records)
    finally:
        writer.transport.abort()
