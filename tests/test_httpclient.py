"""The provider's pooled HTTP/1.1 client for backends (exchange.server.httpclient).

Real servers on 127.0.0.1: an asyncio protocol that answers with exactly the bytes a test wants,
so keep-alive, idle closes, chunking, HEAD and malformed answers can be driven precisely.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from exchange.errors import ServiceFailed, ServiceTimeout
from exchange.server.httpclient import MAX_HEADER_BYTES, HttpClient

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@dataclass
class Scripted:
    """Answers each request (one per data chunk that ends a header block) with ``reply``."""

    reply: Callable[[bytes], bytes | None]
    close_after: bool = False
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


class _Proto(asyncio.Protocol):
    def __init__(self, script: Scripted) -> None:
        self.script = script
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.script.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            self.script.requests.append(head)
            answer = self.script.reply(head)
            if answer is not None:
                self.transport.write(answer)  # type: ignore[attr-defined]
            if self.script.close_after:
                self.transport.close()


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[[Scripted], asyncio.Future[str]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Scripted) -> str:
        server = await asyncio.get_running_loop().create_server(
            lambda: _Proto(script), "127.0.0.1", 0
        )
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[HttpClient]:
    c = HttpClient(max_response_bytes=1024, connect_timeout=2)
    yield c
    await c.close()


async def test_keep_alive_reuses_one_connection(serve, client: HttpClient) -> None:  # type: ignore[no-untyped-def]
    script = Scripted(lambda head: OK)
    base = await serve(script)
    for _ in range(3):
        r = await client.request("GET", base + "/persons/1?x=1", [("accept", "*/*")], b"", 2)
        assert (r.status, r.body) == (200, b"{}")
    assert script.connections == 1
    assert script.requests[0].startswith(b"GET /persons/1?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")


async def test_idle_connection_closed_by_backend_is_retried_for_get(
    serve, client: HttpClient
) -> None:  # type: ignore[no-untyped-def]
    script = Scripted(lambda head: OK, close_after=True)
    base = await serve(script)
    await client.request("GET", base + "/a", [], b"", 2)
    # whether or not the close has reached us yet, the second request must succeed: either the
    # pool skips the closed connection, or the write meets EOF and is retried once
    r = await client.request("GET", base + "/b", [], b"", 2)
    assert r.status == 200
    assert script.connections == 2


async def test_chunked_answer_is_decoded(serve, client: HttpClient) -> None:  # type: ignore[no-untyped-def]
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    base = await serve(Scripted(lambda head: chunked))
    r = await client.request("GET", base + "/", [], b"", 2)
    assert r.body == b"abcde"


async def test_head_answer_has_no_body(serve, client: HttpClient) -> None:  # type: ignore[no-untyped-def]
    head_reply = b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"
    base = await serve(Scripted(lambda head: head_reply))
    r = await client.request("HEAD", base + "/", [], b"", 2)
    assert (r.status, r.body) == (200, b"")


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
            "size limit",
            id="body-over-limit",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n"
            + b"X-Big: "
            + b"y" * (MAX_HEADER_BYTES + 10)
            + b"\r\nContent-Length: 0\r\n\r\n",
            "header data",
            id="headers-over-limit",
        ),
        pytest.param(b"\x00\x01 not http at all\r\n\r\n", "malformed", id="garbage"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", None, id="cut-short"),
    ],
)
async def test_bad_answers_are_service_failures(
    serve, client: HttpClient, reply: bytes, message: str | None
) -> None:  # type: ignore[no-untyped-def]
    script = Scripted(lambda head: reply, close_after=message is None)
    base = await serve(script)
    with pytest.raises(ServiceFailed) as info:
        await client.request("GET", base + "/", [], b"", 2)
    if message:
        assert message in info.value.message


@pytest.mark.parametrize(
    "interim",
    [
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n", id="100-continue"),
        pytest.param(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n", id="103"),
        pytest.param(b"HTTP/1.1 102 Processing\r\n\r\n" * 3, id="three-102"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_interim_answers_are_skipped_for_the_final_one(
    serve, client: HttpClient, interim: bytes, method: str
) -> None:  # type: ignore[no-untyped-def]
    """RFC 9110 §15.2: 1xx answers precede the final one; before, the first 1xx was taken for
    the answer (status 103, its headers, no body) and the final answer was lost."""
    final = b"HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 2\r\n\r\n"
    body = b"" if method == "HEAD" else b"{}"
    base = await serve(Scripted(lambda head: interim + final + body))
    for _ in range(2):  # and the connection is reused cleanly
        r = await client.request(method, base + "/", [], b"", 2)
        assert (r.status, r.headers) == (200, [("X-Final", "yes"), ("Content-Length", "2")])
        assert r.body == body


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", id="101"),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
            id="101-upgrade",
        ),
    ],
)
async def test_switching_protocols_is_a_service_failure(
    serve, client: HttpClient, reply: bytes
) -> None:  # type: ignore[no-untyped-def]
    base = await serve(Scripted(lambda head: reply))
    with pytest.raises(ServiceFailed, match="switch protocols"):
        await client.request("GET", base + "/", [], b"", 2)


async def test_slow_backend_times_out(serve, client: HttpClient) -> None:  # type: ignore[no-untyped-def]
    base = await serve(Scripted(lambda head: None))
    with pytest.raises(ServiceTimeout):
        await client.request("GET", base + "/", [], b"", 0.2)


async def test_timed_out_connection_is_not_reused(serve, client: HttpClient) -> None:  # type: ignore[no-untyped-def]
    """A connection whose answer did not come in time is dropped: a late answer can never be
    taken for the answer to the next request."""
    replies = iter([None, OK])
    script = Scripted(lambda head: next(replies))
    base = await serve(script)
    with pytest.raises(ServiceTimeout):
        await client.request("GET", base + "/a", [], b"", 0.2)
    response = await client.request("GET", base + "/b", [], b"", 2)
    assert response.status == 200
    assert script.connections == 2


async def test_backend_down_is_a_service_failure(client: HttpClient) -> None:
    with pytest.raises(ServiceFailed):
        await client.request("GET", "http://127.0.0.1:1/", [], b"", 2)


@pytest.mark.parametrize(
    ("method", "url", "headers"),
    [
        pytest.param("GET\r\nX", "/", [], id="method"),
        pytest.param("GET", "/a b", [], id="space-in-path"),
        pytest.param("GET", "/a#b", [], id="fragment"),
        pytest.param("GET", "/a", [("x\r\nhost", "v")], id="header-name"),
        pytest.param("GET", "/a", [("x", "v\r\nhost: evil")], id="header-value"),
    ],
)
async def test_request_splitting_is_refused_before_sending(
    serve, client: HttpClient, method: str, url: str, headers: list[tuple[str, str]]
) -> None:  # type: ignore[no-untyped-def]
    script = Scripted(lambda head: OK)
    base = await serve(script)
    with pytest.raises(ServiceFailed):
        await client.request(method, base + url, headers, b"", 2)
    assert script.requests == []


async def test_an_endless_header_line_is_refused_once_past_the_header_limit() -> None:
    """httptools reports a header only once its line ends: a backend that never ends one must
    be stopped by the bytes fed to the parser, at the header limit and not at the body limit
    (before, a header line could grow to ``max_response_bytes`` + 64 KiB, copied quadratically
    on the event loop, and a backend that stopped short of that held the call until its timeout).
    """
    sent = 0
    done = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Long: ")
        chunk = b"y" * 2**16
        try:
            while sent < 4 * 2**20:  # far below the body limit, 64 times the header limit
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            await reader.read()  # hold the connection open, as a stalling backend would
        except ConnectionError:
            pass
        finally:
            writer.close()
            done.set()

    server = await asyncio.start_server(endless, "127.0.0.1", 0)
    client = HttpClient(max_response_bytes=10 * 2**20, connect_timeout=2)
    try:
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        with pytest.raises(ServiceFailed) as info:
            await client.request("GET", base + "/", [], b"", 5)
        assert "more header data than allowed" in info.value.message
        await asyncio.wait_for(done.wait(), 5)  # the client closed the connection
        response_ok = Scripted(lambda head: OK)
        ok_server = await asyncio.get_running_loop().create_server(
            lambda: _Proto(response_ok), "127.0.0.1", 0
        )
        try:
            ok_base = f"http://127.0.0.1:{ok_server.sockets[0].getsockname()[1]}"
            assert (await client.request("GET", ok_base + "/", [], b"", 2)).status == 200
        finally:
            ok_server.close()
            await ok_server.wait_closed()
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_a_head_just_within_the_header_limits_is_accepted_however_it_is_split() -> None:
    """The byte bound on an unfinished head leaves room for 200 headers whose names and values
    fill the 64 KiB limit, plus status line and separators, sent in small pieces."""
    value = "v" * ((MAX_HEADER_BYTES - 100) // 199 - 7)  # names and values: 65,287 bytes
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(
        f"X-H{i:04d}: {value}\r\n".encode() for i in range(199)
    )
    head += b"Content-Length: 2\r\n\r\n{}"
    done = asyncio.Event()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for start in range(0, len(head), 1000):
            writer.write(head[start : start + 1000])
            await writer.drain()
            await asyncio.sleep(0)  # one loop turn: the client (same loop) reads this piece
        writer.close()
        await writer.wait_closed()
        done.set()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    client = HttpClient(max_response_bytes=1024, connect_timeout=2)
    try:
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        response = await client.request("GET", base + "/", [], b"", 5)
        assert (response.status, response.body, len(response.headers)) == (200, b"{}", 200)
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
