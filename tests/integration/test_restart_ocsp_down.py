"""A security server restarted while its CA's OCSP responder is down (issue 14).

Before, it served nothing: its peers refused it with ``CertificateStatusUnknown`` (no staple in
its HELLO) for the whole outage, although its own message log held good responses for both its
certificates, fresh for a while yet; and once the responder came back it took 60.7 s to serve
again (the refresh waited for its normal interval). Now the stored responses that are still
fresh are used at start, and while one is missing the refresh is retried within seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from exchange.demo.processes import free_port
from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.server.core import SecurityServer
from exchange.server.revocation import RETRY_MAX
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import cert_pem, generate_key, load_certificate
from exchange.trust.ocsp import issue_ocsp_responder_cert
from exchange.trust.ocsp_service import create_ocsp_app
from exchange.trust.revocation import RevocationStore
from tests.integration.conftest import Net
from tests.integration.support import Clock, assert_xroad_error, publish

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROVIDER = parse_member("PS/GOV/RSTP")
CONSUMER = parse_member("PS/GOV/RSTC")
DESK = parse_subsystem("PS/GOV/RSTC/desk")
REGISTRY = parse_subsystem("PS/GOV/RSTP/registry")
ECHO = "/r1/PS/GOV/RSTP/registry/echo/1"
POLICY = """
provider = "PS/GOV/RSTP"
[[grant]]
id = "desk"
client = "PS/GOV/RSTC/desk"
service = "PS/GOV/RSTP/registry/echo"
methods = ["GET"]
"""


@dataclass
class Outage:
    """A CA whose OCSP responder the test stops and starts on its one port."""

    runner: web.AppRunner
    port: int
    site: web.TCPSite | None = None

    async def up(self) -> None:
        self.site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await self.site.start()

    async def down(self) -> None:
        if self.site is not None:
            await self.site.stop()
            self.site = None


@dataclass
class Pair:
    net: Net
    outage: Outage
    provider: SecurityServer
    consumer: SecurityServer
    clock: Clock

    async def restart_provider(self) -> SecurityServer:
        await self.provider.stop()
        self.provider = SecurityServer(self.provider.config, clock=self.clock)
        self.net.servers["rstp"] = self.provider
        await self.provider.start()
        return self.provider

    async def fresh_connection(self) -> None:
        """The consumer dials the provider anew (and so gets its HELLO's staples)."""
        for pool in self.consumer.pools.values():
            pool.close()
        self.consumer.pools.clear()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def pair(net: Net) -> AsyncIterator[Pair]:
    root: Path = net.root / "ocsp-restart"
    ca = CertificateAuthority.create(root / "ca", "Restart CA")
    store = RevocationStore(root / "revocations.sqlite")
    responder_key = generate_key()
    responder_cert = issue_ocsp_responder_cert(ca, responder_key.public_key())
    runner = web.AppRunner(create_ocsp_app(ca.cert, responder_key, responder_cert, store))
    await runner.setup()
    outage = Outage(runner, free_port())
    await outage.up()
    with net.registry() as reg:
        reg.add_ca("Restart CA", cert_pem(ca.cert), [f"http://127.0.0.1:{outage.port}/"])
        reg.add_member(PROVIDER, "Restarted provider")
        reg.add_member(CONSUMER, "Its consumer")
    clock = Clock()
    provider = await net.add_server(
        "rstp",
        SecurityServerId(*PROVIDER.parts, "ss1"),
        clients=[REGISTRY],
        services=[(REGISTRY.service("echo"), f"{net.backend_url}/echo")],
        policy=POLICY,
        ca=ca,
        start=False,
        clock=clock,
    )
    consumer = await net.add_server(
        "rstc", SecurityServerId(*CONSUMER.parts, "ss1"), clients=[DESK], ca=ca, start=False
    )
    for server in (provider, consumer):
        store.record_issued(load_certificate(server.config.auth_cert), "auth")
        for signing in server.config.signing:
            store.record_issued(load_certificate(signing.cert), "sign")
    await publish(net)
    await provider.start()
    await consumer.start()
    try:
        yield Pair(net, outage, provider, consumer, clock)
    finally:
        await outage.down()
        await runner.cleanup()
        store.close()


async def test_restarted_with_the_responder_down_it_serves_with_its_stored_responses(
    net: Net, pair: Pair
) -> None:
    status, _, body = await net.call("rstc", ECHO, client=str(DESK))
    assert status == 200, body  # responses fetched, stapled and kept in the log
    await pair.outage.down()
    try:
        provider = await pair.restart_provider()
        await pair.fresh_connection()
        status, _, body = await net.call("rstc", ECHO, client=str(DESK))
        assert status == 200, body
        ocsp = provider.health()["ocsp"]
        assert ocsp["own_fresh"] == len(provider.own_certs)
        # per own certificate: the stored response in use, when it was produced, its age
        assert all(c["needed"] and c["fresh"] and c["produced_at"] for c in ocsp["own"]), ocsp
        assert all(0 <= c["age_seconds"] < 3600 and c["next_update"] for c in ocsp["own"]), ocsp
        assert provider.verdict().status == "ok"
    finally:
        await pair.outage.up()


async def test_with_no_fresh_response_it_serves_as_soon_as_the_responder_answers(
    net: Net, pair: Pair
) -> None:
    """Restarted when its stored responses are stale (its clock moved past their freshness
    for the start) and the responder is down: peers refuse it and /health says why; the
    responder comes back and it serves within the short retry, not the normal interval."""
    await pair.outage.down()
    freshness = pair.provider.in_force.settings.ocsp_freshness_seconds  # type: ignore[union-attr]
    pair.clock.offset = freshness + 60
    try:
        provider = await pair.restart_provider()
    finally:
        pair.clock.offset = 0
    try:
        assert provider.health()["ocsp"]["own_fresh"] == 0
        codes = {r.code for r in provider.verdict().reasons}
        assert codes == {"ocsp_missing"}  # nothing fresh was taken from the stale ones
        await pair.fresh_connection()
        status, headers, body = await net.call("rstc", ECHO, client=str(DESK))
        assert_xroad_error(
            status, headers, body, "Server.ClientProxy.CertificateStatusUnknown", 403
        )
    finally:
        await pair.outage.up()
    # the refresh is retried every few seconds while a response is missing: well within the
    # normal interval (freshness / 8, at most 60 s) it holds them again
    for _ in range(int(4 * RETRY_MAX / 0.1)):
        if provider.verdict().status == "ok":
            break
        await asyncio.sleep(0.1)
    assert provider.verdict().status == "ok", provider.verdict().reasons
    await pair.fresh_connection()
    status, _, body = await net.call("rstc", ECHO, client=str(DESK))
    assert status == 200, body
