"""Red team: a rogue registered peer on real servers, real mutual TLS (issue 13's session).

- HELLO flood at a provider: Post's own keys, one connection, then HELLO after HELLO, each
  presenting certificates to judge. Before, the provider judged every one of them on the event
  loop that serves all its peers; now the connection is refused once it goes past the session's
  HELLO budget, and the provider serves on.
- The same from a rogue *provider*: its answer to the consumer's HELLO is a burst of HELLOs. The
  consumer drops that connection (the exchange fails, logged), and serves on.
- Re-HELLO with another signing certificate mid-stream: the certificates judged are the new
  HELLO's; a request signed with one the new HELLO no longer presents is refused, signed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from exchange.identifiers import parse_member, parse_subsystem
from exchange.protocol.frames import FrameKind, encode_frame
from exchange.protocol.hello import hello_meta
from exchange.protocol.jws import Signer
from exchange.protocol.session import HELLO_BURST, ResponseReceived
from tests.integration.conftest import PALPOST, WINDOW, Net, service
from tests.integration.rogue import (
    Incoming,
    RogueProvider,
    hello_frame,
    read_signed_response,
    sign_request,
    sign_response,
)
from tests.integration.support import (
    as_registered_peer,
    assert_serving,
    logged,
    new_id,
    registered_rogue,
    until,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

FLOOD = parse_member("PS/GOV/FLOOD")
FLOOD_API = parse_subsystem(f"{FLOOD}/api")
FLOOD_PATH = f"/r1/{FLOOD_API}/data"


async def test_a_hello_flood_at_the_provider_refuses_that_connection(net: Net) -> None:
    moi, palpost = net.servers["moi"], net.servers["palpost"]
    rogue = as_registered_peer(net, moi)
    try:
        conn = await rogue.pool.connection()
        assert conn.transport is not None
        certs = [palpost.signers[PALPOST].cert] * 32
        flood = encode_frame(
            0, FrameKind.HELLO, hello_meta(str(palpost.config.server_id), certs, {})
        )
        conn.transport.write(flood * (HELLO_BURST + 2))
        async with asyncio.timeout(10):
            await until(lambda: conn.closed, "the provider closes the flooding connection")
        assert conn.failure is not None
        assert conn.failure.code == "Server.ServerProxy.InvalidMessage", conn.failure
        assert "too many HELLO frames" in conn.failure.message
    finally:
        rogue.close()
    await assert_serving(net)


async def test_hellos_within_the_budget_keep_the_connection(net: Net) -> None:
    """A peer that re-staples (a HELLO or two on an open connection) is served as before."""
    moi, palpost = net.servers["moi"], net.servers["palpost"]
    rogue = as_registered_peer(net, moi)
    try:
        conn = await rogue.pool.connection()
        assert conn.transport is not None
        again = hello_frame(palpost.config.server_id, [palpost.signers[PALPOST].cert])
        conn.transport.write(again * 2)
        token, _ = sign_request(
            palpost.signers[PALPOST],
            client=WINDOW,
            service=service("persons"),
            security_server=moi.config.server_id,
        )
        answer, conn = await rogue.send(token)
        assert isinstance(answer, ResponseReceived)
        response, _ = read_signed_response(answer, conn)
        assert response.status == 200
    finally:
        rogue.close()


async def test_a_re_hello_replaces_what_the_peer_presented(net: Net) -> None:
    """Re-HELLO mid-stream without the signing certificate the first presented: a request signed
    with it is then refused (signed, as any refusal of a signature), not taken on the strength
    of the earlier HELLO."""
    moi, palpost = net.servers["moi"], net.servers["palpost"]
    rogue = as_registered_peer(net, moi)
    try:
        conn = await rogue.pool.connection()
        assert conn.transport is not None
        conn.transport.write(hello_frame(palpost.config.server_id, []))
        token, _ = sign_request(
            palpost.signers[PALPOST],
            client=WINDOW,
            service=service("persons"),
            security_server=moi.config.server_id,
        )
        answer, conn = await rogue.send(token)
        response, _ = read_signed_response(answer, conn)
        assert (response.status, response.error_type) == (
            400,
            "Server.ServerProxy.InvalidSignatureValue",
        )
        assert "did not present" in (response.error_message or "")
    finally:
        rogue.close()
    await assert_serving(net)


@dataclass
class Flooder:
    provider: RogueProvider
    signer: Signer


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def flooder(net: Net) -> AsyncIterator[Flooder]:
    async with registered_rogue(net, FLOOD, FLOOD_API) as (provider, signer):
        yield Flooder(provider, signer)


async def test_a_rogue_provider_flooding_hellos_is_dropped_by_the_consumer(
    net: Net, flooder: Flooder
) -> None:
    palpost = net.servers["palpost"]
    body = b'{"ok":true}'

    def honest(inc: Incoming) -> None:
        inc.reply(sign_response(flooder.signer, inc, body), body)

    flooder.provider.answer = honest
    usual = flooder.provider.hello
    flooder.provider.hello = usual * (HELLO_BURST + 2)
    try:
        mid = new_id("hello-flood")
        async with asyncio.timeout(15):
            status, headers, _ = await net.call("palpost", FLOOD_PATH, headers={"X-Road-Id": mid})
        assert status == 502 and headers.get("X-Road-Error") == "Server.ClientProxy.NetworkError"
        record = logged(palpost, mid, "consumer", "Server.ClientProxy.NetworkError")
        assert "too many HELLO frames" in str(record.entry["error"])
    finally:
        flooder.provider.hello = usual
        pool = palpost.pools.pop(flooder.provider.server_id, None)
        if pool is not None:
            pool.close()
    mid = new_id("hello-after-flood")
    status, _, answered = await net.call("palpost", FLOOD_PATH, headers={"X-Road-Id": mid})
    assert (status, answered) == (200, body)
    await assert_serving(net)
