"""Information systems over HTTPS (X-Road connection types http, https, https-noauth).

A client subsystem with connection type ``https`` is served only over the consumer's TLS port
and only to an information system whose certificate is registered for it; plain HTTP is refused
for it, and so is a certificate registered for another client. Refusals are logged.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import orjson
import pytest
import pytest_asyncio

from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.messagelog.query import query_records
from exchange.server.core import SecurityServer
from exchange.trust.keys import (
    generate_key,
    save_certificate,
    save_private_key,
    self_signed_certificate,
)
from tests.integration.conftest import Net

pytestmark = pytest.mark.asyncio(loop_scope="session")

PERSONS = "/r1/PS/GOV/MOI/population-registry/persons/123456782"
KIOSK = parse_subsystem("PS/GOV/MTIT/kiosk")
PORTAL = parse_subsystem("PS/GOV/MTIT/portal")
OPEN = parse_subsystem("PS/GOV/MTIT/open-data")
GRANTS = """
provider = "PS/GOV/MOI"
[[grant]]
id = "kiosk"
client = "PS/GOV/MTIT/kiosk"
service = "PS/GOV/MOI/population-registry/persons"
methods = ["GET"]
paths = ["/*"]
fields = ["national_id"]
"""


def _is_cert(directory: Path, name: str) -> tuple[Path, Path]:
    key = generate_key()
    cert = self_signed_certificate(key, name)
    key_path = save_private_key(directory / f"{name}.key.pem", key)
    cert_path = save_certificate(directory / f"{name}.cert.pem", cert)
    return cert_path, key_path


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def tls_server(net: Net) -> SecurityServer:
    certs = net.root / "is-certs"
    kiosk_cert, _ = _is_cert(certs, "kiosk")
    portal_cert, _ = _is_cert(certs, "portal")
    moi = net.servers["moi"]
    assert moi.policy is not None
    policy_file = moi.config.policy_dir / "zz-tls.toml"  # type: ignore[operator]
    policy_file.write_text(GRANTS)
    moi.policy.reload()
    mtit = parse_member("PS/GOV/MTIT")
    with net.registry() as reg:
        reg.add_member(mtit, "Telecom")
    clients = [
        {"id": str(KIOSK), "connection": "https", "is_certs": [str(kiosk_cert)]},
        {"id": str(PORTAL), "connection": "https", "is_certs": [str(portal_cert)]},
        {"id": str(OPEN), "connection": "https-noauth"},
    ]
    return await net.add_server(
        "mtit",
        SecurityServerId(*mtit.parts, "ss1"),
        clients=[KIOSK, PORTAL, OPEN],
        extra={"clients": clients, "consumer_tls": {"host": "127.0.0.1", "port": 0}},
    )


def _context(net: Net, name: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(net.root / "ca" / "ca.cert.pem"))
    if name is not None:
        certs = net.root / "is-certs"
        ctx.load_cert_chain(certs / f"{name}.cert.pem", certs / f"{name}.key.pem")
    return ctx


async def _get(
    url: str, client: str, ctx: ssl.SSLContext | None, message_id: str
) -> tuple[int, str | None, bytes]:
    headers = {"X-Road-Client": client, "X-Road-Id": message_id}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers, ssl=ctx) as r:
        return r.status, r.headers.get("X-Road-Error"), await r.read()


async def test_registered_information_system_over_https(
    net: Net, tls_server: SecurityServer
) -> None:
    url = f"https://localhost:{tls_server.consumer_tls_port}{PERSONS}"
    status, error, body = await _get(url, str(KIOSK), _context(net, "kiosk"), "tls-ok-1")
    assert (status, error) == (200, None), body
    assert orjson.loads(body) == {"national_id": "123456782"}


@pytest.mark.parametrize(
    ("scheme", "client", "cert", "code"),
    [
        pytest.param(
            "http", KIOSK, None, "Client.SslAuthenticationFailed", id="plain-http-for-https-client"
        ),
        pytest.param(
            "https", KIOSK, "portal", "Client.SslAuthenticationFailed", id="cert-of-another-client"
        ),
        pytest.param("https", KIOSK, None, "Client.SslAuthenticationFailed", id="no-client-cert"),
    ],
)
async def test_unregistered_information_system_is_refused_and_logged(
    net: Net, tls_server: SecurityServer, scheme: str, client: object, cert: str | None, code: str
) -> None:
    message_id = f"tls-refused-{scheme}-{cert}"
    if scheme == "http":
        url, ctx = f"http://127.0.0.1:{tls_server.consumer_port}{PERSONS}", None
    else:
        url, ctx = f"https://localhost:{tls_server.consumer_tls_port}{PERSONS}", _context(net, cert)
    status, error, body = await _get(url, str(client), ctx, message_id)
    assert (status, error) == (403, code), body
    assert orjson.loads(body)["type"] == code
    [record] = query_records(tls_server.config.log_path, message_id=message_id)
    assert record.entry["error"]["type"] == code


async def test_https_noauth_client_needs_tls_but_no_certificate(
    net: Net, tls_server: SecurityServer
) -> None:
    url = f"https://localhost:{tls_server.consumer_tls_port}{PERSONS}"
    status, error, _ = await _get(url, str(OPEN), _context(net, None), "tls-noauth-1")
    # open-data has no grant: the request got through the consumer and was refused by the policy
    assert (status, error) == (403, "Server.ServerProxy.AccessDenied")
    plain = f"http://127.0.0.1:{tls_server.consumer_port}{PERSONS}"
    status, error, _ = await _get(plain, str(OPEN), None, "tls-noauth-2")
    assert (status, error) == (403, "Client.SslAuthenticationFailed")


@pytest.mark.parametrize(
    ("scheme", "cert", "code"),
    [
        # through the consumer's checks: the provider answers (no such SOAP service there)
        pytest.param("https", "kiosk", "Server.ServerProxy.UnknownService", id="registered"),
        pytest.param("http", None, "Client.SslAuthenticationFailed", id="plain-http"),
        pytest.param("https", "portal", "Client.SslAuthenticationFailed", id="other-cert"),
    ],
)
async def test_soap_information_systems_are_authenticated_the_same_way(
    net: Net, tls_server: SecurityServer, scheme: str, cert: str | None, code: str
) -> None:
    from lxml import etree

    from exchange.identifiers import ServiceId
    from exchange.protocol import soap

    message_id = f"tls-soap-{scheme}-{cert}"
    header = soap.XRoadHeader(
        client=KIOSK,
        service=ServiceId("PS", "GOV", "MOI", "population-registry", "getPerson"),
        service_version=None,
        message_id=message_id,
        user_id=None,
        issue=None,
        protocol_version="4.0",
        represented_party=None,
        security_server=None,
        purpose=None,
    )
    envelope = soap.request_envelope(header, etree.Element("getPerson"))
    if scheme == "http":
        url, ctx = f"http://127.0.0.1:{tls_server.consumer_port}/", None
    else:
        url, ctx = f"https://localhost:{tls_server.consumer_tls_port}/", _context(net, cert)
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=envelope, headers=headers, ssl=ctx) as r,
    ):
        status, error, body = r.status, r.headers.get("X-Road-Error"), await r.read()
    assert (status, error) == (500, code), body
    assert f"<faultcode>{code}</faultcode>".encode() in body
    [record] = query_records(tls_server.config.log_path, message_id=message_id)
    assert record.entry["error"]["type"] == code
