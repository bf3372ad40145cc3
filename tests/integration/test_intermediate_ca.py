"""A federation whose certificates come from an intermediate CA: the central server approves the
root (no responder) and the intermediate under it (with its OCSP responder); two security
servers with authentication and signing certificates from the intermediate exchange end to end
over mutual TLS, each stapling OCSP responses the intermediate's responder signed. Paths are
built by cryptography's ``x509.verification`` (``exchange.trust.validation``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

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
from exchange.trust.validation import issuers
from tests.integration.conftest import Net
from tests.integration.support import new_id, publish

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROVIDER = parse_member("PS/GOV/ICP")
CONSUMER = parse_member("PS/GOV/ICC")
DESK = parse_subsystem("PS/GOV/ICC/desk")
REGISTRY = parse_subsystem("PS/GOV/ICP/registry")
ECHO = "/r1/PS/GOV/ICP/registry/echo/chain"
POLICY = """
provider = "PS/GOV/ICP"
[[grant]]
id = "desk"
client = "PS/GOV/ICC/desk"
service = "PS/GOV/ICP/registry/echo"
methods = ["GET"]
"""


@dataclass
class Hierarchy:
    root: CertificateAuthority
    issuing: CertificateAuthority
    ocsp_url: str
    provider: SecurityServer
    consumer: SecurityServer


def _record(store: RevocationStore, server: SecurityServer) -> None:
    store.record_issued(load_certificate(server.config.auth_cert), "auth")
    for signing in server.config.signing:
        store.record_issued(load_certificate(signing.cert), "sign")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def chain(net: Net) -> AsyncIterator[Hierarchy]:
    base = net.root / "intermediate-ca"
    root = CertificateAuthority.create(base / "root", "PS Root CA", path_length=1)
    issuing = root.create_intermediate(base / "issuing", "PS Issuing CA")
    store = RevocationStore(base / "issuing" / "revocations.sqlite")
    responder_key = generate_key()
    responder_cert = issue_ocsp_responder_cert(issuing, responder_key.public_key())
    runner = web.AppRunner(create_ocsp_app(issuing.cert, responder_key, responder_cert, store))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    with net.registry() as reg:
        reg.add_ca("PS Root CA", cert_pem(root.cert))
        reg.add_ca("PS Issuing CA", cert_pem(issuing.cert), [url])
        reg.add_member(PROVIDER, "Chain provider")
        reg.add_member(CONSUMER, "Chain consumer")
    provider = await net.add_server(
        "icp",
        SecurityServerId(*PROVIDER.parts, "ss1"),
        clients=[REGISTRY],
        services=[(REGISTRY.service("echo"), f"{net.backend_url}/echo")],
        policy=POLICY,
        ca=issuing,
        start=False,
    )
    consumer = await net.add_server(
        "icc", SecurityServerId(*CONSUMER.parts, "ss1"), clients=[DESK], ca=issuing, start=False
    )
    _record(store, provider)
    _record(store, consumer)
    await publish(net)
    await provider.start()
    await consumer.start()
    try:
        yield Hierarchy(root, issuing, url, provider, consumer)
    finally:
        await runner.cleanup()
        store.close()


async def test_servers_certified_by_an_intermediate_exchange(net: Net, chain: Hierarchy) -> None:
    auth = load_certificate(chain.consumer.config.auth_cert)
    assert auth.issuer == chain.issuing.cert.subject
    message_id = new_id("intermediate-ca")
    status, headers, body = await net.call(
        "icc", ECHO, client=str(DESK), headers={"X-Road-Id": message_id}
    )
    assert status == 200, body
    assert "X-Road-Error" not in headers
    for server in (chain.provider, chain.consumer):
        [record] = query_records(server.config.log_path, message_id=message_id)
        assert record.entry.get("error") is None


async def test_revocation_is_asked_of_the_intermediate(net: Net, chain: Hierarchy) -> None:
    """Certificates from the intermediate need fresh responses from its responder: each side
    holds one for every certificate of the other, and the configuration names the
    intermediate (not the root, which publishes none) as their OCSP issuer."""
    status, _, body = await net.call("icc", ECHO, client=str(DESK))
    assert status == 200, body
    assert chain.provider.health()["ocsp"]["peers_verified"] >= 2
    assert chain.consumer.health()["ocsp"]["peers_verified"] >= 2
    conf = chain.provider.trusted.current
    assert conf is not None
    for path in (chain.consumer.config.auth_cert, chain.consumer.config.signing[0].cert):
        cert = load_certificate(path)
        assert conf.ocsp_issuer(cert) == (chain.issuing.cert, (chain.ocsp_url,))
        assert issuers(cert, conf.ca_certs()) == (chain.issuing.cert, chain.root.cert)
