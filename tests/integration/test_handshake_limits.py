"""Connections to the provider port that have not finished their TLS handshake are bounded.

Anyone who reaches the provider port can connect before presenting a certificate. Such a
connection is closed when its handshake takes longer than ``[limits] tls_handshake_timeout``;
while ``max_pending_handshakes`` are under way, each new connection is closed at once, unheard.
Peers already connected keep exchanging meanwhile, and new handshakes are accepted again as
soon as the stalled ones are gone. A client that speaks no TLS at all is closed too. The
consumer port's HTTPS listener for information systems bounds its handshakes the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio

from exchange.identifiers import parse_security_server, parse_subsystem
from exchange.protocol.session import ResponseReceived
from exchange.server.core import SecurityServer
from tests.integration.conftest import MOI, WINDOW, Net
from tests.integration.support import as_registered_peer, launch, until, window_request

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBSYSTEM = parse_subsystem(f"{MOI}/handshakes")
GATED = parse_security_server(f"{MOI}/ss-handshakes")
MAX_PENDING = 3
TIMEOUT = 0.5

POLICY = f"""
provider = "PS/GOV/MOI"

[[grant]]
id = "window-slow"
client = "{WINDOW}"
service = "{SUBSYSTEM}/slow"
methods = ["GET"]
"""

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def gated(net: Net) -> AsyncIterator[SecurityServer]:
    yield await launch(
        net,
        "moi-handshakes",
        GATED,
        clients=[SUBSYSTEM],
        policy=POLICY,
        extra={
            "services": [{"id": f"{SUBSYSTEM}/slow", "url": f"{net.backend_url}/slow"}],
            "limits": {"max_pending_handshakes": MAX_PENDING, "tls_handshake_timeout": TIMEOUT},
            "consumer_tls": {"host": "127.0.0.1", "port": 0},
        },
    )


async def _exchange(net: Net) -> None:
    """One exchange through PALPOST's consumer port to the gated provider."""
    status, _, body = await net.call("palpost", f"/r1/{SUBSYSTEM}/slow?s=0")
    assert (status, orjson.loads(body)) == (200, {"slow": True})


async def _connect(server: SecurityServer, port: int | None = None) -> Stream:
    return await asyncio.open_connection("127.0.0.1", port or server.provider_port)


async def _closed_by_server(stream: Stream, within: float = 5.0) -> bool:
    """Whether the server closes the connection (EOF or reset) within ``within`` seconds."""
    reader, _ = stream
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _close(streams: list[Stream]) -> None:
    for _, writer in streams:
        with contextlib.suppress(Exception):
            writer.close()


async def test_a_stalled_handshake_is_closed_after_the_timeout(
    net: Net, gated: SecurityServer
) -> None:
    await _exchange(net)
    failed = gated.handshakes.failed
    streams = [await _connect(gated) for _ in range(2)]
    try:
        await until(lambda: len(gated.handshakes.pending) == 2, "two handshakes pending")
        for stream in streams:
            assert await _closed_by_server(stream)
        await until(lambda: not gated.handshakes.pending, "no handshake pending")
        assert gated.handshakes.failed == failed + 2
    finally:
        _close(streams)
    await _exchange(net)


async def test_past_the_limit_new_connections_are_closed_unheard_and_peers_serve_on(
    net: Net, gated: SecurityServer
) -> None:
    await _exchange(net)  # PALPOST holds an established connection from here on
    refused = gated.handshakes.refused
    stalled = [await _connect(gated) for _ in range(MAX_PENDING)]
    extra: list[Stream] = []
    try:
        await until(lambda: len(gated.handshakes.pending) == MAX_PENDING, "the limit reached")
        extra.append(await _connect(gated))
        # closed at once: well before the stalled ones time out
        assert await _closed_by_server(extra[0], within=TIMEOUT * 0.8)
        assert gated.handshakes.refused == refused + 1
        port = gated.health()["provider_port"]  # what /health shows the operator
        assert (port["handshakes_pending"], port["handshakes_refused"]) == (
            MAX_PENDING,
            refused + 1,
        )
        await _exchange(net)  # an established peer connection is not affected
        for stream in stalled:
            assert await _closed_by_server(stream)
        await until(lambda: not gated.handshakes.pending, "the stalled handshakes gone")
    finally:
        _close(stalled + extra)
    # a new connection of a registered peer is accepted again and answered
    peer = as_registered_peer(net, gated)
    try:
        frame, _ = await peer.send(window_request(net, SUBSYSTEM.service("slow"), GATED, "s=0"))
        assert isinstance(frame, ResponseReceived), frame
        assert orjson.loads(frame.body) == {"slow": True}
    finally:
        peer.close()


async def test_a_client_that_speaks_no_tls_is_closed_and_the_port_serves_on(
    net: Net, gated: SecurityServer
) -> None:
    failed = gated.handshakes.failed
    stream = await _connect(gated)
    try:
        stream[1].write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await _closed_by_server(stream)
    finally:
        _close([stream])
    await until(lambda: gated.handshakes.failed == failed + 1, "the handshake counted failed")
    await _exchange(net)


async def test_the_consumer_https_port_bounds_its_handshakes_the_same_way(
    net: Net, gated: SecurityServer
) -> None:
    port, limits = gated.consumer_tls_port, gated.consumer_handshakes
    assert port
    refused = limits.refused
    stalled = [await _connect(gated, port) for _ in range(MAX_PENDING)]
    extra: list[Stream] = []
    try:
        await until(lambda: len(limits.pending) == MAX_PENDING, "the limit reached")
        extra.append(await _connect(gated, port))
        assert await _closed_by_server(extra[0], within=TIMEOUT * 0.8)
        assert limits.refused == refused + 1
        for stream in stalled:
            assert await _closed_by_server(stream)
        await until(lambda: not limits.pending, "the stalled handshakes gone")
    finally:
        _close(stalled + extra)
    # an information system's TLS connection is served again (no client certificate needed
    # for /health); the status listener's /health counts what happened
    assert net.session is not None
    async with net.session.get(f"https://127.0.0.1:{port}/health", ssl=False) as response:
        assert response.status == 200
    status_url = f"http://127.0.0.1:{gated.status_port}/health"
    async with net.session.get(status_url) as response:
        health = orjson.loads(await response.read())
    assert health["consumer_https_port"]["handshakes_refused"] == refused + 1
