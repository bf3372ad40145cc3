"""Revocation between security servers (docs/design.md §5, issue 3 item 2), with a real OCSP
responder.

A second CA that publishes an OCSP URL is approved next to the federation's first one; the two
servers here have certificates from it, recorded in its revocation store. Each server staples
fresh responses for its own certificates into HELLO; a receiver refuses a peer whose response is
missing, revoked or stale, with a clear code, and keeps serving.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.messagelog.query import query_records
from exchange.server.core import SecurityServer
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import cert_pem, generate_key, load_certificate
from exchange.trust.ocsp import issue_ocsp_responder_cert
from exchange.trust.ocsp_service import create_ocsp_app
from exchange.trust.revocation import RevocationStore
from tests.integration.conftest import Net
from tests.integration.support import Clock, assert_serving, assert_xroad_error, publish

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROVIDER = parse_member("PS/GOV/REVP")
CONSUMER = parse_member("PS/GOV/REVC")
DESK = parse_subsystem("PS/GOV/REVC/desk")
REGISTRY = parse_subsystem("PS/GOV/REVP/registry")
ECHO = "/r1/PS/GOV/REVP/registry/echo/1"
FRESHNESS = 300
POLICY = """
provider = "PS/GOV/REVP"
[[grant]]
id = "desk"
client = "PS/GOV/REVC/desk"
service = "PS/GOV/REVP/registry/echo"
methods = ["GET"]
"""


@dataclass
class Revocable:
    ca: CertificateAuthority
    store: RevocationStore
    provider: SecurityServer
    consumer: SecurityServer
    provider_clock: Clock
    consumer_clock: Clock
    runner: web.AppRunner


def _record(store: RevocationStore, server: SecurityServer) -> None:
    store.record_issued(load_certificate(server.config.auth_cert), "auth")
    for signing in server.config.signing:
        store.record_issued(load_certificate(signing.cert), "sign")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def rev(net: Net) -> AsyncIterator[Revocable]:
    root: Path = net.root / "ocsp"
    ca = CertificateAuthority.create(root / "ca", "Revocable CA")
    store = RevocationStore(root / "revocations.sqlite")
    responder_key = generate_key()
    responder_cert = issue_ocsp_responder_cert(ca, responder_key.public_key())
    runner = web.AppRunner(create_ocsp_app(ca.cert, responder_key, responder_cert, store))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    with net.registry() as reg:
        reg.add_ca("Revocable CA", cert_pem(ca.cert), [url])
        # shorter than the configuration's expiry, so a clock past it keeps the conf fresh
        original = reg.settings()
        reg.set_settings(dataclasses.replace(original, ocsp_freshness_seconds=FRESHNESS))
        reg.add_member(PROVIDER, "Revocation provider")
        reg.add_member(CONSUMER, "Revocation consumer")
    provider_clock, consumer_clock = Clock(), Clock()
    provider = await net.add_server(
        "revp",
        SecurityServerId(*PROVIDER.parts, "ss1"),
        clients=[REGISTRY],
        services=[(REGISTRY.service("echo"), f"{net.backend_url}/echo")],
        policy=POLICY,
        ca=ca,
        start=False,
        clock=provider_clock,
    )
    consumer = await net.add_server(
        "revc",
        SecurityServerId(*CONSUMER.parts, "ss1"),
        clients=[DESK],
        ca=ca,
        start=False,
        clock=consumer_clock,
    )
    for server in (provider, consumer):
        _record(store, server)
    await publish(net)
    await provider.start()
    await consumer.start()
    try:
        yield Revocable(ca, store, provider, consumer, provider_clock, consumer_clock, runner)
    finally:
        with net.registry() as reg:
            reg.set_settings(original)
        await runner.cleanup()
        store.close()


async def test_exchange_with_stapled_ocsp_responses(net: Net, rev: Revocable) -> None:
    status, headers, body = await net.call("revc", ECHO, client=str(DESK))
    assert status == 200, body
    assert "X-Road-Error" not in headers
    # each side holds a fresh response for every certificate of the other
    assert rev.provider.health()["ocsp"]["peers_verified"] >= 2
    assert rev.consumer.health()["ocsp"]["peers_verified"] >= 2


async def test_stale_staple_is_refused_then_refreshed(net: Net, rev: Revocable) -> None:
    """Past the freshness limit the provider refuses what it holds; once the consumer refreshes
    and re-staples, exchanges go through again."""
    rev.provider_clock.offset = FRESHNESS + 120
    try:
        status, headers, body = await net.call("revc", ECHO, client=str(DESK))
        assert_xroad_error(status, headers, body, "Server.ServerProxy.OcspResponseStale", 403)
    finally:
        rev.provider_clock.offset = 0
    status, _, body = await net.call("revc", ECHO, client=str(DESK))
    assert status == 200, body
    await assert_serving(net)


async def _refused_once_stale(
    net: Net, rev: Revocable, clock: Clock, message_id: str, code: str
) -> dict[str, Any]:
    """With every pooled connection open, move ``clock`` past the freshness limit and call once:
    the call is refused with ``code``; returns the consumer's record of it. After the clock is
    back, exchanges go through again."""
    for _ in range(rev.consumer.config.limits.peer_connections):  # every pooled connection open
        status, _, body = await net.call("revc", ECHO, client=str(DESK))
        assert status == 200, body
    clock.offset = FRESHNESS + 120
    try:
        status, headers, body = await net.call(
            "revc", ECHO, client=str(DESK), headers={"X-Road-Id": message_id}
        )
        assert_xroad_error(status, headers, body, code, 403)
    finally:
        clock.offset = 0
    [record] = query_records(rev.consumer.config.log_path, message_id=message_id)
    assert record.entry["error"]["type"] == code
    status, _, body = await net.call("revc", ECHO, client=str(DESK))
    assert status == 200, body
    await assert_serving(net)
    return record.entry


async def test_a_staple_gone_stale_on_an_open_connection_is_refused_signed_and_logged(
    net: Net, rev: Revocable
) -> None:
    """The HELLO was accepted while the responses were fresh; past the freshness limit the
    next request over that same connection is refused when its signature is checked
    (``AdmittedPeer.key_for``), with a refusal the provider signs and logs under the request's
    id, and the information system gets the provider's code."""
    code, message_id = "Server.ServerProxy.OcspResponseStale", "ocsp-stale-open-connection"
    entry = await _refused_once_stale(net, rev, rev.provider_clock, message_id, code)
    [provider_record] = query_records(rev.provider.config.log_path, message_id=message_id)
    assert provider_record.entry["error"]["type"] == code
    # signed by the provider and bound to the request, not an unsigned ERROR frame
    assert "the provider's detail id" not in (entry["error"].get("internal") or "")


async def test_a_providers_staple_gone_stale_is_refused_by_the_consumer(
    net: Net, rev: Revocable
) -> None:
    """The consumer side of the same check: past the freshness limit on the consumer's clock, a
    response signed by the provider over an open connection is refused
    (``PeerConnection.check_revocation`` while the consumer verifies it) and logged."""
    await _refused_once_stale(
        net,
        rev,
        rev.consumer_clock,
        "ocsp-stale-provider-staple",
        "Server.ClientProxy.OcspResponseStale",
    )


async def test_revoked_signing_certificate_stops_being_accepted(net: Net, rev: Revocable) -> None:
    """After revocation the consumer cannot get a good response for its signing certificate;
    within one freshness interval the provider refuses its signatures (over a connection whose
    HELLO was accepted: every pooled connection is opened first, so the refusal is the signed
    one of ``AdmittedPeer.key_for``, not a HELLO refused on a new connection)."""
    for _ in range(rev.consumer.config.limits.peer_connections):
        status, _, body = await net.call("revc", ECHO, client=str(DESK))
        assert status == 200, body
    signing = load_certificate(rev.consumer.config.signing[0].cert)
    rev.store.revoke(signing, "keyCompromise")
    conf = rev.consumer.trusted.current
    assert conf is not None
    rev.consumer.revocation.own.forget(signing)
    await rev.consumer.revocation.refresh_own(rev.consumer.own_certs, conf)
    assert rev.consumer.revocation.own.get(signing, _now(rev), 3600) is None
    rev.provider_clock.offset = FRESHNESS + 120
    try:
        message_id = "ocsp-revoked-signing"
        status, headers, body = await net.call(
            "revc", ECHO, client=str(DESK), headers={"X-Road-Id": message_id}
        )
        assert_xroad_error(status, headers, body, "Server.ServerProxy.OcspResponseStale", 403)
    finally:
        rev.provider_clock.offset = 0
    # a signed refusal, logged by the provider too
    [record] = query_records(rev.provider.config.log_path, message_id=message_id)
    assert record.entry["error"]["type"] == "Server.ServerProxy.OcspResponseStale"
    await assert_serving(net)


async def test_new_connection_without_a_good_staple_is_refused(net: Net, rev: Revocable) -> None:
    """A fresh connection from a server whose signing certificate is revoked carries no good
    response for it: its signatures are refused as of unknown status, and logged."""
    for pool in rev.consumer.pools.values():
        pool.close()
    rev.consumer.pools.clear()
    status, headers, body = await net.call("revc", ECHO, client=str(DESK))
    assert_xroad_error(status, headers, body, "Server.ServerProxy.CertificateStatusUnknown", 403)
    await assert_serving(net)


def _now(rev: Revocable) -> object:
    import datetime as dt

    return dt.datetime.fromtimestamp(rev.consumer_clock(), dt.UTC)


async def test_certificate_expiry_is_warned_ahead(rev: Revocable) -> None:
    """Thirty days before a certificate expires the server says so (health, status, log)."""
    assert rev.consumer.expiring_certificates() == []
    rev.consumer_clock.offset = 340 * 86400
    try:
        warnings = rev.consumer.expiring_certificates()
    finally:
        rev.consumer_clock.offset = 0
    assert len(warnings) == len(rev.consumer.own_certs)
    assert any(w.startswith("authentication certificate") for w in warnings)
    assert all("issue and activate a new one" in w for w in warnings)


async def test_revoked_authentication_certificate_refuses_the_peer(rev: Revocable) -> None:
    """A peer that staples the CA's "revoked" answer for its TLS certificate is refused with
    CertificateRevoked before anything it sends is read; the consumer side reports the same
    under Server.ClientProxy."""
    from exchange.protocol.hello import Hello
    from exchange.protocol.jws import cert_thumbprint
    from exchange.trust.ocsp import CertificateRevoked
    from exchange.trust.ocsp_service import OcspFetcher

    conf = rev.provider.trusted.current
    assert conf is not None
    auth = load_certificate(rev.consumer.config.auth_cert)
    rev.store.revoke(auth, "keyCompromise")
    url = next(c for c in conf.approved_cas if c.name == "Revocable CA").ocsp_urls[0]
    async with OcspFetcher() as fetcher:
        revoked = await fetcher.fetch(auth, rev.ca.cert, url)
    hello = Hello((), {cert_thumbprint(auth): revoked})
    trust = rev.provider.peer_trust
    assert trust is not None
    for side, code in (
        ("provider", "Server.ServerProxy.CertificateRevoked"),
        ("consumer", "Server.ClientProxy.CertificateRevoked"),
    ):
        with pytest.raises(CertificateRevoked) as info:
            trust.admit(auth, hello, rev.provider.clock(), side)  # type: ignore[arg-type]
        assert info.value.code == code


async def test_a_server_whose_auth_certificate_is_revoked_cannot_declare(rev: Revocable) -> None:
    """The central catalogue asks for a fresh "good" OCSP response about the declaring server's
    authentication certificate: once the server's own refresh learns of the revocation it holds
    none and its declaration is refused; the CA's "revoked" answer sent anyway is refused as
    revoked (403)."""
    from exchange.central.catalogue import new_declaration, sign_declaration
    from exchange.errors import ConfigurationError
    from exchange.protocol.jws import Signer
    from exchange.server.declare import DeclarationRefused
    from exchange.trust.keys import load_private_key
    from exchange.trust.ocsp_service import OcspFetcher

    server = rev.consumer
    conf = server.trusted.current
    assert conf is not None
    before = await server.declarer.declare_once()  # with its fresh "good" response: accepted
    assert before["server"] == str(server.config.server_id)
    auth = load_certificate(server.config.auth_cert)
    with contextlib.suppress(ConfigurationError):  # (already revoked by an earlier test)
        rev.store.revoke(auth, "keyCompromise")
    server.revocation.own.forget(auth)
    await server.revocation.refresh_own(server.own_certs, conf)  # learns "revoked", holds none
    with pytest.raises(DeclarationRefused) as refused:
        await server.declarer.declare_once()
    assert refused.value.status == 400
    assert refused.value.reason == (
        "the declaration carries no OCSP response for its authentication certificate, "
        "whose CA publishes an OCSP responder"
    )
    url = next(c for c in conf.approved_cas if c.name == "Revocable CA").ocsp_urls[0]
    async with OcspFetcher() as fetcher:
        revoked = await fetcher.fetch(auth, rev.ca.cert, url)
    key = load_private_key(server.config.auth_key, server.passphrase)
    declaration = new_declaration(
        server.config.server_id, auth, [], int(server.clock() * 1000), ocsp=revoked
    )
    body_sent = sign_declaration(declaration, Signer(key, auth))
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.declarer.url, data=body_sent) as answer,
    ):
        body = await answer.json()
    assert answer.status == 403
    assert body["type"] == "Client.ServiceDeclarationForbidden"
    assert body["message"] == "the authentication certificate is revoked"


async def test_responder_down_refuses_with_a_clear_code_and_logs(net: Net, rev: Revocable) -> None:
    """With the CA's responder down and nothing fresh held, the consumer cannot staple its
    authentication certificate: the provider refuses the connection with a clear code, and the
    consumer logs the refused exchange (nothing is answered unlogged). Runs last: it stops the
    responder of this module."""
    await rev.runner.cleanup()
    conf = rev.consumer.trusted.current
    assert conf is not None
    for cert in rev.consumer.own_certs:
        rev.consumer.revocation.own.forget(cert)
    assert not await rev.consumer.revocation.refresh_own(rev.consumer.own_certs, conf)
    for pool in rev.consumer.pools.values():
        pool.close()
    rev.consumer.pools.clear()
    message_id = "ocsp-down-1"
    status, headers, body = await net.call(
        "revc", ECHO, client=str(DESK), headers={"X-Road-Id": message_id}
    )
    assert_xroad_error(status, headers, body, "Server.ServerProxy.CertificateStatusUnknown", 403)
    [record] = query_records(rev.consumer.config.log_path, message_id=message_id)
    assert record.entry["error"]["type"] == "Server.ServerProxy.CertificateStatusUnknown"
    await assert_serving(net)


async def test_reload_without_a_fresh_ocsp_response_keeps_the_current_keys(
    net: Net, rev: Revocable
) -> None:
    """Key rotation while the CA's responder is down (after the test above stopped it): a new
    signing certificate that no fresh OCSP response vouches for is not activated; the reload is
    refused with the reason and the server keeps the keys, certificates and staples it had."""
    import tomllib

    import tomli_w

    from exchange.errors import ConfigurationError
    from exchange.trust.keys import save_certificate, save_private_key

    server = rev.provider
    config_path = server.config.path
    original = config_path.read_bytes()
    keys = config_path.parent / "keys"
    new_key = generate_key()
    save_private_key(keys / "sign-REVP-2.key.pem", new_key)
    new_cert = rev.ca.issue_sign_cert(new_key.public_key(), PROVIDER)
    save_certificate(keys / "sign-REVP-2.cert.pem", new_cert)
    rev.store.record_issued(new_cert, "sign")  # the CA knows it; its responder cannot say so
    doc = tomllib.loads(original.decode())
    doc["keys"]["signing"].append(
        {
            "member": str(PROVIDER),
            "key": "keys/sign-REVP-2.key.pem",
            "cert": "keys/sign-REVP-2.cert.pem",
        }
    )
    config_path.write_text(tomli_w.dumps(doc))
    before = (server.config, server.all_signers, server.signers, server.auth_cert, server.own_certs)
    conf = server.trusted.current
    assert conf is not None
    staples = server.revocation.own_staples(server.own_certs, conf)
    assert len(staples) == len(server.own_certs)  # fresh responses held for every certificate
    try:
        with pytest.raises(ConfigurationError, match="no fresh OCSP response for 1 certificate"):
            await server.reload_keys()
        after = (
            server.config,
            server.all_signers,
            server.signers,
            server.auth_cert,
            server.own_certs,
        )
        assert after == before
        assert server.signers[PROVIDER].cert != new_cert
        assert server.revocation.own_staples(server.own_certs, conf) == staples
        # SIGHUP's whole reload is refused for the same reason before anything it names is put
        # in force: a new policy directory is not opened, so the policy trail gains nothing
        from exchange.policy.audit import TRAIL_FILE

        assert server.config.policy_dir is not None
        moved = config_path.parent / "policy-moved"
        shutil.copytree(server.config.policy_dir, moved, dirs_exist_ok=True)
        for file in moved.glob("*.toml"):  # other files: a policy the trail has not seen
            file.write_text(file.read_text() + "\n# moved\n")
        doc["policy"]["dir"] = str(moved)
        config_path.write_text(tomli_w.dumps(doc))
        trail = (server.config.state_dir / TRAIL_FILE).read_bytes()
        policy = server.policy
        with pytest.raises(ConfigurationError, match="no fresh OCSP response for 1 certificate"):
            await server.reload()
        assert server.policy is policy and server.config.policy_dir != moved
        assert (server.config.state_dir / TRAIL_FILE).read_bytes() == trail
    finally:
        config_path.write_bytes(original)


async def test_logs_with_records_refused_for_ocsp_verify(rev: Revocable) -> None:
    """The provider's records of requests refused with an OCSP code (above: a stale response, a
    signing certificate of unknown status) hold what arrived, which need not verify; the log
    checker takes them as provider refusals (``evidence._PROVIDER_REFUSALS``), and both logs
    verify, every record's signatures included."""
    from exchange.server.logcheck import verify_server_log

    records = query_records(rev.provider.config.log_path, limit=10_000)
    refused = {r.entry["error"]["type"] for r in records if r.entry.get("error")}
    assert {
        "Server.ServerProxy.OcspResponseStale",
        "Server.ServerProxy.CertificateStatusUnknown",
    } <= refused
    for server in (rev.provider, rev.consumer):
        report = verify_server_log(server.config)
        assert report.ok, report.problems
