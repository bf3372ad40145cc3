"""A global configuration version is in force only when everything that depends on it has moved
to it (item 10 of issue 13).

Before, a new version was taken into memory first (``/health`` showed it), then saved, then
handed to the server: with the save failing (``OSError``, a full disk) or the server's change
failing, the version stayed half-accepted for good, since later polls saw "no change". Here a
provider security server fails for real: its state file's place is taken by a directory (the
save raises ``IsADirectoryError``), or its authentication key file is unreadable when a new CA
needs a new TLS context. The version in force stays the previous one, ``/health`` says which
version waits and why, the next poll retries, and once the fault is gone the new version is in
force: connections authenticated with a certificate it removed are refused with 403
``SslAuthenticationFailed``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from cryptography import x509

from exchange.central.app import PUBLISHER_KEY
from exchange.globalconf.client import GlobalConfNotInForce
from exchange.identifiers import parse_security_server, parse_service, parse_subsystem
from exchange.server.core import SecurityServer
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import cert_pem, fingerprint
from tests.integration.conftest import MOI, PALPOST, WINDOW, Net
from tests.integration.support import (
    assert_xroad_error,
    launch,
    logged,
    new_id,
    publish,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROVIDER = parse_security_server(f"{MOI}/ss-in-force")
CONSUMER = parse_security_server(f"{PALPOST}/ss-in-force")
SUBSYSTEM = parse_subsystem(f"{MOI}/in-force")
PATH = f"/r1/{SUBSYSTEM}/persons/123456782"


@dataclass
class Pair:
    provider: SecurityServer
    consumer: SecurityServer


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def pair(net: Net) -> AsyncIterator[Pair]:
    """A provider of its own and a consumer hosting the window, connected."""
    provider = await launch(
        net,
        "in-force-provider",
        PROVIDER,
        clients=[SUBSYSTEM],
        services=[(parse_service(f"{SUBSYSTEM}/persons"), f"{net.backend_url}/persons")],
        policy=f"""
provider = "{MOI}"
[[grant]]
id = "window"
client = "{WINDOW}"
service = "{SUBSYSTEM}/persons"
methods = ["GET"]
""",
    )
    consumer = await launch(net, "in-force-consumer", CONSUMER, clients=[WINDOW])
    try:
        yield Pair(provider, consumer)
    finally:
        for name in ("in-force-consumer", "in-force-provider"):
            await net.servers.pop(name).stop()
        await publish(net)


async def _serve(net: Net, times: int) -> None:
    """``times`` exchanges through the consumer, each answered 200."""
    for _ in range(times):
        status, _, body = await net.call("in-force-consumer", PATH)
        assert status == 200, body[:300]


async def _regenerate(net: Net) -> int:
    with net.registry() as reg:
        version = reg.version()
    await net.central_runner.app[PUBLISHER_KEY].regenerate()
    return version


async def test_a_version_that_cannot_be_saved_is_not_in_force_until_it_can(
    net: Net, pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    provider, consumer = pair.provider, pair.consumer
    await _serve(net, 2 * consumer.config.limits.peer_connections)  # every pooled connection
    before = provider.in_force
    assert before is not None
    state = provider.config.globalconf_state
    # (1) the disk fails: the state file's place is taken, so saving raises IsADirectoryError
    state.unlink()
    state.mkdir()
    (state / "in-the-way").write_text("x")
    fp = fingerprint(x509.load_pem_x509_certificate(consumer.config.auth_cert.read_bytes()))
    try:
        with net.registry() as reg:
            reg.remove_auth_cert(CONSUMER, fp)
        version = await _regenerate(net)
        assert version > before.version
        with caplog.at_level(logging.ERROR, logger="exchange.globalconf.client"):
            for attempt in (1, 2):  # the second poll has nothing new, and retries all the same
                with pytest.raises(GlobalConfNotInForce):
                    await provider.poller.fetch_once()  # type: ignore[union-attr]
                pending = provider.health()["globalconf_pending"]
                assert (pending["version"], pending["failures"]) == (version, attempt)
                assert "IsADirectoryError" in pending["reason"]
        assert any("could not be put in force" in r.getMessage() for r in caplog.records)
        # the previous version stays in force, and everything that depends on it
        assert provider.trusted.current is not None
        assert provider.trusted.current.version == version
        assert provider.in_force is before
        assert provider.health()["globalconf_version"] == before.version
        assert provider.peer_trust is not None and provider.peer_trust.conf is before
        await _serve(net, 3)
        # (2) the disk is fine again: the next poll saves it and puts it in force
        shutil.rmtree(state)
        assert await provider.poller.fetch_once() is True  # type: ignore[union-attr]
        assert provider.in_force is provider.trusted.current
        assert provider.health()["globalconf_pending"] is None
        assert state.read_bytes() == provider.trusted.current_bytes
        # (3) the connections authenticated with the removed certificate are refused
        for _ in range(3):
            mid = new_id("in-force")
            result = await net.call("in-force-consumer", PATH, headers={"X-Road-Id": mid})
            assert_xroad_error(*result, "Server.ServerProxy.SslAuthenticationFailed", 403)
            logged(consumer, mid, "consumer", "Server.ServerProxy.SslAuthenticationFailed")
    finally:
        if state.is_dir():
            shutil.rmtree(state)
        with net.registry() as reg:
            reg.add_auth_cert(CONSUMER, fp)
        await publish(net)
    await _serve(net, 1)


async def test_a_version_whose_tls_context_cannot_be_built_is_not_in_force_until_it_can(
    net: Net, pair: Pair
) -> None:
    """A new approved CA needs new TLS contexts; while the authentication key cannot be read,
    building them fails: the version is not in force (the CA is not trusted for anything yet),
    and is once the key is back."""
    provider = pair.provider
    key_file = provider.config.auth_key
    key = key_file.read_bytes()
    name = "CA added while a key is unreadable"
    ca = CertificateAuthority.create(net.root / "in-force-ca", name)
    before = provider.in_force
    assert before is not None
    try:
        key_file.write_bytes(b"not a key\n")
        with net.registry() as reg:
            reg.add_ca(name, cert_pem(ca.cert))
        version = await _regenerate(net)
        with pytest.raises(GlobalConfNotInForce):
            await provider.poller.fetch_once()  # type: ignore[union-attr]
        pending = provider.health()["globalconf_pending"]
        assert pending["version"] == version and "SSLError" in pending["reason"]
        assert provider.in_force is before
        assert provider.peer_trust is not None
        assert name not in {c.name for c in provider.peer_trust.conf.approved_cas}
        await _serve(net, 2)
        key_file.write_bytes(key)
        assert await provider.poller.fetch_once() is True  # type: ignore[union-attr]
        assert provider.in_force is not None and provider.in_force.version == version
        assert name in {c.name for c in provider.peer_trust.conf.approved_cas}
        assert provider.health()["globalconf_pending"] is None
    finally:
        key_file.write_bytes(key)
        with net.registry() as reg:
            if any(c.name == name for c in reg.build_globalconf(0).approved_cas):
                reg.remove_ca(name)
        await publish(net)
    await _serve(net, 2)
