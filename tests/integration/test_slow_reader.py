"""A registered peer that sends requests but does not read the answers cannot fill the
provider's memory with them.

Before, the provider answered every request it read and wrote the answers into the
connection's buffer whatever the peer read: a peer that kept sending and never read made that
buffer grow without bound (each request was done once answered, so the per-peer request limits
never held it back). Now the provider stops reading a connection's requests while its answers
sit above the transport's high-water mark (``ProviderConnection.pause_writing``), and reads on
once the peer has read them; every request is still answered. What it holds is then bounded by
what it had read before it stopped (socket buffers, and the per-peer request limits), not by
how many requests the peer sends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio

from exchange.identifiers import parse_security_server, parse_subsystem
from exchange.protocol.frames import FrameDecoder, FrameKind, encode_frame
from exchange.server.core import SecurityServer
from exchange.server.provider import ProviderConnection
from tests.integration.conftest import MOI, PALPOST, WINDOW, Net
from tests.integration.rogue import MAX_FRAME, hello_frame, sign_request
from tests.integration.support import assert_serving, hardly_reading_peer, launch, until

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBSYSTEM = parse_subsystem(f"{MOI}/slow-reader")
SERVER = parse_security_server(f"{MOI}/ss-slow-reader")
REQUESTS = 400
BODY = b"r" * 32 * 1024  # each answer echoes it: about 13 MiB of answers in all
OWED = REQUESTS * len(BODY)

POLICY = f"""
provider = "PS/GOV/MOI"

[[grant]]
id = "window-echo"
client = "{WINDOW}"
service = "{SUBSYSTEM}/echo"
methods = ["POST"]
"""


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def provider(net: Net) -> AsyncIterator[SecurityServer]:
    yield await launch(
        net,
        "moi-slow-reader",
        SERVER,
        clients=[SUBSYSTEM],
        policy=POLICY,
        extra={"services": [{"id": f"{SUBSYSTEM}/echo", "url": f"{net.backend_url}/echo"}]},
    )


def _held(conn: ProviderConnection) -> int:
    return conn.transport.get_write_buffer_size() if conn.transport is not None else 0


def _stalled(provider: SecurityServer) -> ProviderConnection | None:
    """The provider's connection to the peer that does not read: once it stopped reading the
    peer's requests, or (as before the change) once it holds half of all the answers."""
    for conn in provider.provider_connections:
        if getattr(conn, "write_blocked", False) or _held(conn) > OWED // 2:
            return conn
    return None


async def test_answers_nobody_reads_do_not_pile_up_and_all_are_answered(
    net: Net, provider: SecurityServer
) -> None:
    palpost = net.servers["palpost"]
    reader, writer = await hardly_reading_peer(net, provider)
    logged_before = provider.log.size
    try:
        writer.write(hello_frame(palpost.config.server_id, [palpost.signers[PALPOST].cert]))
        for i in range(REQUESTS):
            token, _ = sign_request(
                palpost.signers[PALPOST],
                client=WINDOW,
                service=SUBSYSTEM.service("echo"),
                security_server=SERVER,
                method="POST",
                path="",
                body=BODY,
                message_id=f"slow-reader-{i}-{id(writer)}",
            )
            writer.write(encode_frame(2 * i + 1, FrameKind.REQUEST, {"jws": token}, BODY))
        await until(
            lambda: _stalled(provider) is not None, "the peer's answers backed up", tries=1000
        )
        conn = _stalled(provider)
        assert conn is not None
        # what the provider holds for this peer stays near the transport's high-water mark,
        # not the several MiB of answers it would owe by now
        await asyncio.sleep(0.3)  # time to read (and answer) more, if it still did
        answered_unread = provider.log.size - logged_before
        assert answered_unread < REQUESTS, "it read and answered every request nobody reads"
        assert _held(conn) < OWED // 2, _held(conn)
        assert conn.write_blocked
        # the peer reads: every request is answered, in full
        decoder = FrameDecoder(MAX_FRAME)
        answered = 0
        while answered < REQUESTS:
            data = await asyncio.wait_for(reader.read(2**20), 30)
            assert data, f"closed after {answered} answers"
            for frame in decoder.feed(data):
                if frame.kind is FrameKind.HELLO:
                    continue  # the provider's own HELLO comes first
                assert frame.kind is FrameKind.RESPONSE, frame
                assert orjson.loads(frame.body)["body"] == BODY.decode()
                answered += 1
        assert not conn.write_blocked
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    await assert_serving(net)
