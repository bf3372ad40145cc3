"""A peer's signing certificate whose CA was removed, on a connection opened before
(THREAT_MODEL.md, transport; docs/design.md §5).

A consumer security server authenticates with a certificate of the federation's CA and signs
for its member with a certificate of a second approved CA. Connections to the provider are open
and have carried exchanges when the central server removes the second CA. The provider fetches
the new configuration first (servers fetch on their own schedules): ``ProviderConnection.recheck``
keeps the connection (its authentication certificate still qualifies) but drops the signing
certificate, so the next request over it is refused with the exact code, logged on both sides
and in the operator's log, and the provider keeps serving everyone else. Once the consumer has
the new configuration too, a fresh connection presents the same certificate in HELLO and is
refused the same way.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from exchange.central.app import PUBLISHER_KEY
from exchange.identifiers import parse_security_server
from exchange.protocol.jws import cert_thumbprint
from exchange.server.config import ServerConfig
from exchange.server.core import SecurityServer
from exchange.server.provider import ProviderConnection
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import cert_pem, generate_key, save_certificate, save_private_key
from tests.integration.conftest import PALPOST, WINDOW, Net
from tests.integration.support import (
    PERSONS,
    assert_serving,
    assert_xroad_error,
    launch,
    logged,
    new_id,
    publish,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

NAME = "signing-ca-removed"
SERVER_ID = parse_security_server(f"{PALPOST}/ss-{NAME}")
SIGNING_CA = "Signing CA (removed in a test)"
CODE = "Server.ServerProxy.InvalidSignatureValue"


def _sign_with(ca: CertificateAuthority) -> Callable[[ServerConfig], None]:
    """Before the server loads: its member signing key and certificate, issued by ``ca``."""

    def prepare(config: ServerConfig) -> None:
        (signing,) = config.signing
        key = generate_key()
        save_private_key(signing.key, key, None)
        save_certificate(signing.cert, ca.issue_sign_cert(key.public_key(), signing.member))

    return prepare


@pytest_asyncio.fixture(loop_scope="session")
async def consumer(net: Net) -> AsyncIterator[SecurityServer]:
    """A PALPOST server hosting WINDOW: auth certificate of the federation's CA, signing
    certificate of a second approved CA; stopped and its CA removed afterwards."""
    ca = CertificateAuthority.create(net.root / "signing-ca", "Signing CA")
    with net.registry() as reg:
        reg.add_ca(SIGNING_CA, cert_pem(ca.cert))
    server = await launch(net, NAME, SERVER_ID, clients=[WINDOW], prepare=_sign_with(ca))
    try:
        yield server
    finally:
        await net.servers.pop(NAME).stop()
        with net.registry() as reg:
            if any(c.name == SIGNING_CA for c in reg.build_globalconf(0).approved_cas):
                reg.remove_ca(SIGNING_CA)
        await publish(net)


def _connections_of(provider: SecurityServer) -> set[ProviderConnection]:
    return {c for c in provider.provider_connections if c.peer_id == SERVER_ID}


async def test_signing_certificate_of_a_removed_ca_is_refused_on_an_open_connection(
    net: Net, consumer: SecurityServer, caplog: pytest.LogCaptureFixture
) -> None:
    moi = net.servers["moi"]
    thumb = cert_thumbprint(consumer.signers[PALPOST].cert)

    # (1) connections are open and carry exchanges signed with the second CA's certificate
    for _ in range(3):
        mid = new_id("signing-ca-before")
        status, _, body = await net.call(NAME, f"{PERSONS}/123456782", headers={"X-Road-Id": mid})
        assert status == 200, body[:500]
        logged(moi, mid, "provider")
    before = _connections_of(moi)
    assert before and all(c.peer is not None and thumb in c.peer.signers for c in before)

    # (2) the central server removes that CA; only the provider has fetched the change so far
    with net.registry() as reg:
        reg.remove_ca(SIGNING_CA)
    await net.central_runner.app[PUBLISHER_KEY].regenerate()
    assert moi.poller is not None
    with caplog.at_level(logging.INFO, logger="exchange.server.provider"):
        assert await moi.poller.fetch_once()
        conf = moi.trusted.current
        assert conf is not None and SIGNING_CA not in {c.name for c in conf.approved_cas}
        # the connections stay (the authentication certificate still qualifies), the signing
        # certificate is gone from each
        assert _connections_of(moi) == before
        assert all(c.transport is not None and not c.transport.is_closing() for c in before)
        assert all(c.peer is not None and thumb not in c.peer.signers for c in before)
        dropped = [
            r
            for r in caplog.records
            if "signing certificate no longer accepted" in r.getMessage()
            and str(SERVER_ID) in r.getMessage()
        ]
        assert len(dropped) == len(before)

        # (3) the next request over the connection opened before is refused, exactly
        mid = new_id("signing-ca-after")
        result = await net.call(NAME, f"{PERSONS}/123456782", headers={"X-Road-Id": mid})
        assert_xroad_error(*result, CODE, 400)
        assert _connections_of(moi) == before, "the request went over a connection opened before"
        assert any(mid in r.getMessage() and "refused" in r.getMessage() for r in caplog.records), (
            "the operator's log says why the request was refused"
        )
    # both ends log the refused exchange
    logged(moi, mid, "provider", CODE)
    logged(consumer, mid, "consumer", CODE)

    # (4) the provider keeps serving other clients
    await assert_serving(net)

    # (5) once the consumer has the new configuration, its new connections present the same
    # certificate in HELLO and are refused the same way
    await publish(net)
    mid = new_id("signing-ca-new-connection")
    result = await net.call(NAME, f"{PERSONS}/123456782", headers={"X-Road-Id": mid})
    assert_xroad_error(*result, CODE, 400)
    logged(moi, mid, "provider", CODE)
    assert not _connections_of(moi) & before, "the consumer replaced its connections"
    await assert_serving(net)
