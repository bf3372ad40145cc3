"""What one registered peer security server may hold at a provider port at once.

A peer that opens more connections than ``[limits] max_peer_connections`` is refused with
``Server.ServerProxy.TooManyConnections`` on the extra one; the ones it holds keep working, and
a closed one frees a place. Requests in flight are counted over all of the peer's connections:
past ``max_peer_requests`` or ``max_peer_request_bytes`` the provider stops reading from that
peer until half has drained, and every request is still answered. A frame begun must arrive
whole within ``frame_timeout``, and the bytes of frames begun count against
``max_peer_request_bytes`` too: a peer cannot hold the provider's memory with frames it never
finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio

from exchange.errors import ExchangeError
from exchange.identifiers import SecurityServerId, parse_security_server, parse_subsystem
from exchange.protocol.frames import FrameDecoder, FrameKind, encode_frame
from exchange.protocol.session import ResponseReceived
from exchange.server.core import SecurityServer
from exchange.server.provider import PeerLoad, ProviderConnection
from tests.integration.conftest import MOI, PALPOST, WINDOW, Net
from tests.integration.rogue import hello_frame
from tests.integration.support import (
    as_registered_peer,
    launch,
    palpost_peer_context,
    window_request,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBSYSTEM = parse_subsystem(f"{MOI}/peer-limits")
LIMITED = parse_security_server(f"{MOI}/ss-peer-limits")
MAX_CONNECTIONS = 2
MAX_REQUESTS = 3
MAX_BYTES = 8192
FRAME_TIMEOUT = 1.0

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
                "frame_timeout": FRAME_TIMEOUT,
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


# --- frames begun and never finished -------------------------------------------------------------


def _frame_begun(body_length: int, sent: int) -> bytes:
    """The start of a REQUEST frame on stream 1 announcing ``body_length`` bytes of body (and
    an empty meta), with ``sent`` bytes of that body."""
    meta = b"{}"
    head = struct.pack("!IIBI", 9 + len(meta) + body_length, 1, FrameKind.REQUEST, len(meta))
    return head + meta + b"\0" * sent


@contextlib.asynccontextmanager
async def _as_palpost(
    net: Net, limited: SecurityServer
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw connection to ``limited``'s provider port with PALPOST's server's keys, past the
    HELLOs (the real PALPOST server's own connections to it closed first: they count)."""
    palpost = net.servers["palpost"]
    pool = palpost.pools.pop(LIMITED, None)
    if pool is not None:
        pool.close()
    for _ in range(200):  # a bounded wait for the provider to see those closes
        if not any(c.peer_id == palpost.config.server_id for c in limited.provider_connections):
            break
        await asyncio.sleep(0.01)
    async with _connected(net, limited) as (reader, writer):
        writer.write(_hello(net))
        decoder = FrameDecoder(2**20)
        async with asyncio.timeout(5):
            while not decoder.feed(await reader.read(65536)):
                pass
        yield reader, writer


@contextlib.asynccontextmanager
async def _connected(
    net: Net, limited: SecurityServer
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw connection to ``limited``'s provider port with PALPOST's server's keys, before
    any HELLO; closed at the end."""
    context = palpost_peer_context(net, limited)
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.provider_port, ssl=context)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _until_begun(limited: SecurityServer, peer: SecurityServerId, more_than: int) -> PeerLoad:
    """The peer's load once its frames begun hold more than ``more_than`` bytes."""
    for _ in range(500):  # a bounded wait for the provider to read them
        load = limited.peer_loads.get(peer)
        if load is not None and load.buffered > more_than:
            return load
        await asyncio.sleep(0.005)
    raise AssertionError(f"the frames begun were not counted: {limited.peer_loads.get(peer)}")


def _hello(net: Net, body: bytes = b"") -> bytes:
    """PALPOST's server's HELLO (with ``body``, which a HELLO does not use)."""
    palpost = net.servers["palpost"]
    hello = hello_frame(palpost.config.server_id, [palpost.signers[PALPOST].cert])
    if not body:
        return hello
    rest, stream, kind, meta_length = struct.unpack_from("!IIBI", hello)
    return struct.pack("!IIBI", rest + len(body), stream, kind, meta_length) + hello[13:] + body


async def _refusal(reader: asyncio.StreamReader) -> dict[str, object]:
    """The provider's ERROR on stream 0, read to the end of the stream."""
    async with asyncio.timeout(10):
        received = await reader.read()
    *before, frame = FrameDecoder(2**20).feed(received)
    assert all(f.kind is FrameKind.HELLO for f in before), before  # its own, or a re-staple
    assert (frame.kind, frame.stream_id) == (FrameKind.ERROR, 0), frame
    return frame.meta


async def test_a_frame_not_sent_whole_in_time_closes_the_connection(
    net: Net, limited: SecurityServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the red team: 16 connections each one byte short of the largest frame held
    210 MiB of the provider for as long as the peer liked (40 s, and on)."""
    peer = net.servers["palpost"].config.server_id
    async with _as_palpost(net, limited) as (reader, writer):
        writer.write(_frame_begun(4000, 1000))
        refusal = await _refusal(reader)
    assert (refusal["type"], refusal["status"]) == ("Server.ServerProxy.Timeout", 408)
    assert any("1015 bytes of it received" in r.getMessage() for r in caplog.records)
    await _until_drained(limited, peer)  # nothing of it is held any more
    status, _, body = await net.call("palpost", f"/r1/{SUBSYSTEM}/slow?s=0")
    assert (status, orjson.loads(body)) == (200, {"slow": True})


async def test_frames_begun_count_against_the_peers_bytes(
    net: Net, limited: SecurityServer
) -> None:
    """Past ``max_peer_request_bytes`` held in frames begun on its other connections, a peer's
    connection is not read (one frame of its own is, whatever its size, so a request larger
    than the limit still arrives); frames never finished are dropped at their deadline."""
    peer = net.servers["palpost"].config.server_id
    async with _as_palpost(net, limited) as (first, first_writer):
        first_writer.write(_frame_begun(3 * MAX_BYTES, MAX_BYTES + 100))
        load = await _until_begun(limited, peer, MAX_BYTES)
        assert not load.paused  # its own frame, larger than the limit, is read on
        async with _connected(net, limited) as (second, second_writer):
            second_writer.write(_hello(net) + _frame_begun(1000, 10))
            assert await _until_paused(limited, peer), "the second connection was read on"
            assert (await _refusal(first))["type"] == "Server.ServerProxy.Timeout"
            assert (await _refusal(second))["type"] == "Server.ServerProxy.Timeout"
    await _until_drained(limited, peer)


async def test_a_frame_held_back_by_the_provider_is_not_timed_out(
    net: Net, limited: SecurityServer
) -> None:
    """The deadline runs only while the provider reads: a connection it stopped reading (the
    peer's requests in flight over its limits) has its frame begun waiting, not late (red team:
    the connection was closed at the deadline and the requests it had delivered never
    answered)."""
    peer = net.servers["palpost"].config.server_id
    slow = 2 * FRAME_TIMEOUT + 1.5  # the requests in flight outlast the deadline and a sweep
    frames = [
        encode_frame(
            stream,
            FrameKind.REQUEST,
            {"jws": window_request(net, SUBSYSTEM.service("slow"), LIMITED, f"s={slow}")},
        )
        for stream in (1, 3, 5, 7, 9)
    ]
    *whole, last = frames
    async with _as_palpost(net, limited) as (reader, writer):
        # past max_peer_requests: the provider stops reading with the last frame begun
        writer.write(b"".join(whole) + last[: len(last) // 2])
        assert await _until_paused(limited, peer), "the provider never stopped reading"
        writer.write(last[len(last) // 2 :])
        decoder, answered = FrameDecoder(2**20), set()
        async with asyncio.timeout(3 * slow + 5):
            while len(answered) < len(frames):
                data = await reader.read(65536)
                assert data, f"closed with {len(answered)} answered"
                for frame in decoder.feed(data):
                    assert frame.kind is not FrameKind.ERROR, frame.meta
                    if frame.kind is FrameKind.RESPONSE:
                        answered.add(frame.stream_id)
    assert answered == {1, 3, 5, 7, 9}
    await _until_drained(limited, peer)


async def test_a_connection_held_back_reads_on_once_the_others_frame_ends(
    net: Net, limited: SecurityServer
) -> None:
    """A connection held back because the peer's other connection held a large frame begun
    reads on as soon as that frame ends, whatever it was (red team: when it ended as a HELLO,
    nothing resumed the connection, and its request met the deadline)."""
    peer = net.servers["palpost"].config.server_id
    big_hello = _hello(net, b"\0" * (2 * MAX_BYTES))
    request = encode_frame(
        1,
        FrameKind.REQUEST,
        {"jws": window_request(net, SUBSYSTEM.service("slow"), LIMITED, "s=0")},
    )
    async with _as_palpost(net, limited) as (_, other_writer):
        other_writer.write(big_hello[: MAX_BYTES + 1000])
        await _until_begun(limited, peer, MAX_BYTES)
        async with _connected(net, limited) as (reader, writer):
            writer.write(_hello(net) + request[:100])
            assert await _until_paused(limited, peer), "the connection was read on"
            other_writer.write(big_hello[MAX_BYTES + 1000 :])  # that frame ends, as a HELLO
            for _ in range(500):
                load = limited.peer_loads.get(peer)
                if load is None or not load.paused:
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError(f"still held back: {limited.peer_loads.get(peer)}")
            writer.write(request[100:])
            decoder = FrameDecoder(2**20)
            async with asyncio.timeout(10):
                while not any(
                    f.kind is FrameKind.RESPONSE for f in decoder.feed(await reader.read(65536))
                ):
                    pass


def _blocking_tls(limited: SecurityServer, net: Net) -> ssl.SSLSocket:
    """A blocking TLS socket with PALPOST's server's keys (run in a thread): it reads only when
    the test says, so it leaves the provider's closing handshake unanswered."""
    raw = socket.create_connection(("127.0.0.1", limited.provider_port), timeout=10)
    return palpost_peer_context(net, limited).wrap_socket(raw, server_hostname=None)


async def test_a_refused_connection_holds_nothing_and_counts_until_it_is_gone(
    net: Net, limited: SecurityServer
) -> None:
    """Refused, a connection may take a while to close (the peer leaves the closing handshake
    unanswered): what it buffered is dropped at once, and it counts against
    ``max_peer_connections`` until it is gone (the second red team: 60 refused connections held
    660 MiB, uncounted, for 30 s each)."""
    peer = net.servers["palpost"].config.server_id
    async with _as_palpost(net, limited):
        pass  # PALPOST's server's own connections closed, and this one
    await _until_drained(limited, peer)
    unknown_kind = struct.pack("!IIBI", 9 + 2 + 100_000, 1, 9, 2) + b"{}" + b"\0" * 100_000
    sockets = []
    try:
        for _ in range(MAX_CONNECTIONS):
            sock = await asyncio.to_thread(_blocking_tls, limited, net)
            sockets.append(sock)
            await asyncio.to_thread(sock.sendall, _hello(net) + unknown_kind)
        mine: list[ProviderConnection] = []
        for _ in range(500):  # a bounded wait for the provider to refuse both
            mine = [c for c in limited.provider_connections if c.peer_id == peer]
            if len(mine) == MAX_CONNECTIONS and not any(c.open for c in mine):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"not refused: {[c.open for c in mine]}")
        assert [c.session.buffered for c in mine] == [0] * MAX_CONNECTIONS
        assert limited.peer_loads.get(peer) is None  # nothing of theirs is counted as held
        with pytest.raises(ExchangeError) as refused:  # the closing ones still count
            await as_registered_peer(net, limited).send(_slow_request(net))
        assert refused.value.code == "Server.ServerProxy.TooManyConnections"
    finally:
        for sock in sockets:
            sock.close()
    for _ in range(500):  # once they are gone, the peer connects again
        if not any(c.peer_id == peer for c in limited.provider_connections):
            break
        await asyncio.sleep(0.01)
    client = as_registered_peer(net, limited)
    try:
        frame, _ = await client.send(_slow_request(net))
        _answered(frame)
    finally:
        client.close()


async def test_frames_begun_never_all_wait_on_each_other(net: Net, limited: SecurityServer) -> None:
    """Of a peer's frames begun, one is always read: two connections over the limit on each
    other's account do not both wait, so each ends, whole or at its deadline (the third red
    team: both held back for good, neither timed out, the peer locked out of its connections
    until the provider restarted)."""
    peer = net.servers["palpost"].config.server_id
    async with (
        _as_palpost(net, limited) as (first, first_writer),
        _connected(net, limited) as (second, second_writer),
    ):
        second_writer.write(_hello(net))
        first_writer.write(_frame_begun(4 * MAX_BYTES, MAX_BYTES + 500))
        await _until_begun(limited, peer, MAX_BYTES)
        second_writer.write(_frame_begun(4 * MAX_BYTES, MAX_BYTES + 500))
        assert await _until_paused(limited, peer), "the second frame was read on"
        first_writer.write(b"\0")  # now each is over the limit on the other's account
        refusals = await asyncio.gather(_refusal(first), _refusal(second))
        assert [r["type"] for r in refusals] == ["Server.ServerProxy.Timeout"] * 2
    await _until_drained(limited, peer)


async def test_two_bodies_larger_than_the_limit_at_once_are_both_answered(
    net: Net, limited: SecurityServer
) -> None:
    """An honest consumer sends two requests at once on its two connections, each larger than
    ``max_peer_request_bytes`` (which the limits allow: one frame is read whatever the peer
    holds): both are answered (the third red team: both were held back, 504 after 65 s)."""
    peer = net.servers["palpost"].config.server_id
    await _until_drained(limited, peer)
    body = b"x" * (600 * 1024)
    calls = [
        net.call(
            "palpost",
            f"/r1/{SUBSYSTEM}/echo",
            method="POST",
            body=body,
            headers={"X-Road-Id": f"large-{i}", "Content-Type": "application/octet-stream"},
        )
        for i in range(2)
    ]
    async with asyncio.timeout(30):
        answers = await asyncio.gather(*calls)
    assert [status for status, _, _ in answers] == [200, 200], [a[2][:300] for a in answers]
    await _until_drained(limited, peer)
