"""What may pass between HTTP and EXM/1 (issue 13, finding 4): framing and hop-by-hop headers
never cross from one connection to the next, in either direction, and only final statuses
(200-599) reach a caller.

The attack: a registered provider signs a response whose headers say ``Content-Length: 0`` (or
``Transfer-Encoding``, ``Connection``, ``Upgrade``), or whose status is 101, 1000 or -5. The
consumer copied them into its answer, so an information system that pipelines its requests read
the rest of the body as the answer to its next request: the rogue provider answered a request
that was never sent to it. Each test here pipelines two requests over one raw connection and
reads both answers with llhttp (httptools), as a strict client does.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httptools
import orjson
import pytest
import pytest_asyncio

from exchange.identifiers import parse_member, parse_subsystem
from exchange.protocol.canonical import b64url
from exchange.protocol.jws import Signer
from exchange.protocol.messages import SignedResponse
from tests.integration.conftest import WINDOW, Net
from tests.integration.rogue import Incoming, RogueProvider
from tests.integration.support import (
    ECHO,
    MISC,
    PERSONS,
    logged,
    new_id,
    registered_rogue,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

SPLIT = parse_member("PS/GOV/SPLIT")
SPLIT_API = parse_subsystem(f"{SPLIT}/api")
SPLIT_PATH = f"/r1/{SPLIT_API}/data"
SMUGGLED_BODY = b'{"national_id":"smuggled"}'
SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(SMUGGLED_BODY),
    SMUGGLED_BODY,
)
INCONSISTENT = "Server.ClientProxy.InconsistentResponse"


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class _Reader:
    """llhttp callbacks collecting complete answers."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.answers.append(Answer(status, self._headers, b"".join(self._body)))
        self._headers, self._body = [], []


def _get(path: str, message_id: str, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"X-Road-Client: {WINDOW}",
        f"X-Road-Id: {message_id}",
        *(f"{name}: {value}" for name, value in extra),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def pipelined(net: Net, requests: list[bytes], name: str = "palpost") -> list[Answer]:
    """Send ``requests`` back to back on one connection; the answers, as a strict client reads
    them (at most as many as requests; fewer if the server closes first)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", net.servers[name].consumer_port)
    collected = _Reader()
    try:
        writer.write(b"".join(requests))
        await writer.drain()
        async with asyncio.timeout(15):
            while len(collected.answers) < len(requests):
                data = await reader.read(65536)
                if not data:
                    break
                collected.parser.feed_data(data)
    finally:
        writer.close()
    return collected.answers[: len(requests)]


@dataclass
class Rogue:
    provider: RogueProvider
    signer: Signer


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def rogue(net: Net) -> AsyncIterator[Rogue]:
    async with registered_rogue(net, SPLIT, SPLIT_API) as (provider, signer):
        yield Rogue(provider, signer)


def _signed(
    rogue: Rogue, inc: Incoming, status: int, headers: tuple[tuple[str, str], ...], body: bytes
) -> None:
    """A validly signed response bound to ``inc``, with the status and headers given."""
    response = SignedResponse(
        message_id=inc.request.message_id,
        request_id=str(uuid.uuid4()),
        request_hash=inc.request_hash,
        status=status,
        headers=headers,
        body_sha256=b64url(hashlib.sha256(body).digest()),
        body_length=len(body),
        error_type=None,
        error_message=None,
        policy_version=None,
        released_fields=None,
        timestamp_ms=int(time.time() * 1000),
    )
    inc.reply(rogue.signer.sign(response.canonical()), body)


SPLITTING = [
    pytest.param(200, (("content-length", "0"),), id="content-length-0"),
    pytest.param(200, (("Content-Length", "0"),), id="content-length-0-capitalised"),
    pytest.param(200, (("transfer-encoding", "chunked"),), id="transfer-encoding"),
    pytest.param(200, (("connection", "close"),), id="connection"),
    pytest.param(200, (("upgrade", "websocket"),), id="upgrade"),
    pytest.param(200, (("keep-alive", "timeout=1"),), id="keep-alive"),
    pytest.param(200, (("trailer", "x-late"),), id="trailer"),
    pytest.param(200, (("proxy-status", "rogue"),), id="proxy-header"),
    pytest.param(101, (), id="status-101"),
    pytest.param(100, (), id="status-100"),
    pytest.param(199, (), id="status-199"),
    pytest.param(600, (), id="status-600"),
    pytest.param(1000, (), id="status-1000"),
    pytest.param(-5, (), id="status-negative"),
]


@pytest.mark.parametrize(("status", "headers"), SPLITTING)
async def test_a_rogue_provider_cannot_split_the_answer_of_a_pipelining_caller(
    net: Net, rogue: Rogue, status: int, headers: tuple[tuple[str, str], ...]
) -> None:
    rogue.provider.answer = lambda inc: _signed(
        rogue, inc, status, (("content-type", "application/json"), *headers), SMUGGLED
    )
    mid = new_id("split")
    answers = await pipelined(
        net, [_get(SPLIT_PATH, mid), _get(f"{PERSONS}/123456782", new_id("after-split"))]
    )
    assert len(answers) == 2, answers
    first, second = answers
    # the rogue's answer is refused with a clean X-Road error, and logged
    assert (first.status, first.header("X-Road-Error")) == (502, INCONSISTENT), first
    assert orjson.loads(first.body)["type"] == INCONSISTENT
    logged(net.servers["palpost"], mid, "consumer", INCONSISTENT)
    # the next request on the connection gets its own answer, from Interior
    assert second.status == 200, second
    assert orjson.loads(second.body)["national_id"] == "123456782"


async def test_the_control_an_honest_answer_of_the_rogue_passes(net: Net, rogue: Rogue) -> None:
    """The rogue's set-up is valid: what the test above refuses is the status or headers."""
    body = b'{"national_id":"from the rogue"}'
    rogue.provider.answer = lambda inc: _signed(
        rogue, inc, 200, (("content-type", "application/json"), ("x-kept", "yes")), body
    )
    [answer] = await pipelined(net, [_get(SPLIT_PATH, new_id("honest-rogue"))])
    assert (answer.status, answer.body, answer.header("x-kept")) == (200, body, "yes")


async def test_headers_a_caller_names_in_connection_do_not_reach_the_service(net: Net) -> None:
    """Information system → consumer → provider → backend: only end-to-end headers arrive."""
    extra = (
        ("Connection", "keep-alive, X-Is-Secret"),
        ("X-Is-Secret", "for the consumer connection only"),
        ("Proxy-Token", "t"),
        ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
        ("X-End-To-End", "kept"),
    )
    [answer] = await pipelined(net, [_get(f"{ECHO}/headers", new_id("hop"), extra)])
    assert answer.status == 200, answer
    received = {k.lower(): v for k, v in orjson.loads(answer.body)["headers"].items()}
    assert received["x-end-to-end"] == "kept"
    assert {"x-is-secret", "proxy-token", "http2-settings"}.isdisjoint(received), received


async def test_headers_a_service_names_in_connection_do_not_reach_the_caller(net: Net) -> None:
    """Backend → provider → consumer → information system: only end-to-end headers arrive."""
    [answer] = await pipelined(net, [_get(f"{MISC}/hop-by-hop", new_id("hop-back"))])
    assert answer.status == 200, answer
    assert answer.header("X-End-To-End") == "kept"
    for name in ("X-Hop-Secret", "Proxy-Status", "Keep-Alive"):
        assert answer.header(name) is None, answer.headers


@pytest.mark.parametrize("line", ["099", "600", "999"])
async def test_a_service_status_outside_200_599_is_a_service_failure(net: Net, line: str) -> None:
    mid = new_id(f"status-{line}")
    [answer] = await pipelined(net, [_get(f"{MISC}/status/{line}", mid)])
    code = "Server.ServerProxy.ServiceFailed"
    assert (answer.status, answer.header("X-Road-Error")) == (502, code), answer
    logged(net.servers["moi"], mid, "provider", code)
