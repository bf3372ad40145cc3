"""X-Road message protocol 4.0 (SOAP 1.1) through two real security servers (docs/design.md §4, §5).

An information system posts PR-MESS envelopes to its consumer security server (``POST /``); the
request is signed, verified, policy-checked, logged on both sides and forwarded to a SOAP
backend (:mod:`tests.integration.soap_backend`); the response comes back with the request's
header echoed and ``requestHash`` added. Every refusal is a SOAP Fault with its exact X-Road
code, logged, and the servers keep serving. zeep, a stock SOAP client, calls through it too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import pytest_asyncio
from lxml import etree
from multidict import CIMultiDict

from exchange.identifiers import (
    SecurityServerId,
    ServiceId,
    SubsystemId,
    parse_member,
    parse_subsystem,
)
from exchange.protocol import soap as soap_protocol
from exchange.protocol.canonical import b64url
from exchange.protocol.jws import Signer, unverified_payload
from exchange.protocol.messages import SignedRequest, SignedResponse
from exchange.server.core import SecurityServer
from exchange.trust.keys import fingerprint, generate_key, save_certificate, save_private_key
from tests.integration.conftest import FINANCE, HEALTH, MOI, PALPOST, WINDOW, Net
from tests.integration.rogue import (
    Incoming,
    RogueClient,
    RogueProvider,
    read_signed_response,
    tamper_signature,
)
from tests.integration.soap_backend import ATTACHMENT, BOMB, FAULT_RECORD, POP, WSDL_FILE
from tests.integration.support import launch, new_id, publish, records

pytestmark = pytest.mark.asyncio(loop_scope="session")

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
XRD = "http://x-road.eu/xsd/xroad.xsd"
SHA512_URI = "http://www.w3.org/2001/04/xmlenc#sha512"
SUBSYSTEM = parse_subsystem(f"{MOI}/soap-registry")
SOAP_SS = SecurityServerId(*MOI.parts, "ss-soap")

POLICY = f"""
provider = "PS/GOV/MOI"

# a SOAP-only grant: no methods, no paths
[[grant]]
id = "window-get-person"
client = "{WINDOW}"
service = "{SUBSYSTEM}/getPerson"
fields = ["nationalId", "name.full", "address.locality", "children[].nationalId"]

# REST scoping (methods, paths) is not consulted for SOAP requests
[[grant]]
id = "window-example"
client = "{WINDOW}"
service = "{SUBSYSTEM}/exampleService"
methods = ["GET"]
paths = ["/never"]

[[grant]]
id = "window-rest-persons"
client = "{WINDOW}"
service = "{SUBSYSTEM}/persons"
methods = ["GET"]

[[grant]]
id = "health-get-person"
client = "{HEALTH}"
service = "{SUBSYSTEM}/getPerson"
purposes = ["patient-care"]
"""


@dataclass
class Soap:
    provider: SecurityServer
    consumer: SecurityServer
    net: Net

    def url(self, name: str = "palpost") -> str:
        return f"http://127.0.0.1:{self.net.servers[name].consumer_port}/"

    async def post(
        self,
        body: bytes,
        *,
        name: str = "palpost",
        content_type: str = "text/xml; charset=utf-8",
        soap_action: str = '""',
    ) -> tuple[int, CIMultiDict[str], bytes]:
        assert self.net.session is not None
        headers = {"Content-Type": content_type, "SOAPAction": soap_action}
        async with self.net.session.post(
            self.url(name), data=io.BytesIO(body), headers=headers
        ) as r:
            return r.status, CIMultiDict(r.headers), await r.read()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def soap(net: Net) -> AsyncIterator[Soap]:
    url = f"{net.backend_url}/soap"
    services = [
        {"id": f"{SUBSYSTEM}/getPerson", "url": url, "type": "soap"},
        {"id": f"{SUBSYSTEM}/exampleService", "url": url, "type": "soap", "timeout": 10.0},
        {"id": f"{SUBSYSTEM}/persons", "url": f"{net.backend_url}/persons"},
    ]
    provider = await launch(
        net,
        "moi-soap",
        SOAP_SS,
        clients=[SUBSYSTEM],
        policy=POLICY,
        extra={"services": services},
    )
    yield Soap(provider=provider, consumer=net.servers["palpost"], net=net)


# --- envelopes (PR-MESS Annex E's shape) ---------------------------------------------------------


def envelope(
    code: str = "getPerson",
    payload: str = "<nationalId>123456782</nationalId>",
    *,
    client: SubsystemId = WINDOW,
    subsystem: SubsystemId = SUBSYSTEM,
    message_id: str | None = None,
    extra: str = "",
    body: str | None = None,
) -> tuple[bytes, str]:
    """An envelope as Annex E.1 writes it, and its message id."""
    mid = message_id or new_id("soap")
    inner = body if body is not None else f"<ns1:{code}>{payload}</ns1:{code}>"
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope
        xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"
        xmlns:ns1="{POP}"
        xmlns:xrd="http://x-road.eu/xsd/xroad.xsd"
        xmlns:id="http://x-road.eu/xsd/identifiers">
    <SOAP-ENV:Header>
        <xrd:client id:objectType="SUBSYSTEM">
            <id:xRoadInstance>{client.instance}</id:xRoadInstance>
            <id:memberClass>{client.member_class}</id:memberClass>
            <id:memberCode>{client.member_code}</id:memberCode>
            <id:subsystemCode>{client.subsystem_code}</id:subsystemCode>
        </xrd:client>
        <xrd:service id:objectType="SERVICE">
            <id:xRoadInstance>{subsystem.instance}</id:xRoadInstance>
            <id:memberClass>{subsystem.member_class}</id:memberClass>
            <id:memberCode>{subsystem.member_code}</id:memberCode>
            <id:subsystemCode>{subsystem.subsystem_code}</id:subsystemCode>
            <id:serviceCode>{code}</id:serviceCode>
            <id:serviceVersion>v1</id:serviceVersion>
        </xrd:service>
        <xrd:id>{mid}</xrd:id>
        <xrd:userId>PS12345678901</xrd:userId>
        <xrd:issue>12345</xrd:issue>
        <xrd:protocolVersion>4.0</xrd:protocolVersion>{extra}
    </SOAP-ENV:Header>
    <SOAP-ENV:Body>
        {inner}
    </SOAP-ENV:Body>
</SOAP-ENV:Envelope>
"""
    return text.encode(), mid


def parse(body: bytes) -> etree._Element:
    return etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))


def response_element(body: bytes) -> etree._Element:
    root = parse(body)
    return root.find(f"{{{SOAP_ENV}}}Body")[0]  # type: ignore[index]


def assert_fault(
    result: tuple[int, CIMultiDict[str], bytes], code: str, *, exchange_layer: bool = True
) -> etree._Element:
    """A SOAP 1.1 Fault (HTTP 500, text/xml) with X-Road's dotted code and a detail id."""
    status, headers, body = result
    assert status == 500, body[:800]
    assert headers["Content-Type"].startswith("text/xml"), headers
    fault = response_element(body)
    assert fault.tag == f"{{{SOAP_ENV}}}Fault", body[:800]
    assert fault.findtext("faultcode") == code, body[:800]
    assert fault.findtext("faultstring")
    if exchange_layer:
        assert headers["X-Road-Error"] == code
        uuid.UUID(fault.findtext("detail/faultDetail") or "")
    return fault


def xroad_header(body: bytes) -> list[tuple[str, str]]:
    header = parse(body).find(f"{{{SOAP_ENV}}}Header")
    assert header is not None
    return [(etree.QName(el).localname, " ".join("".join(el.itertext()).split())) for el in header]


async def assert_soap_serving(soap: Soap) -> None:
    data, _ = envelope()
    status, _, body = await soap.post(data)
    assert status == 200, body[:800]
    assert response_element(body).findtext("nationalId") == "123456782"


# --- conformant requests -------------------------------------------------------------------------


async def test_annex_shaped_request_succeeds_with_echo_and_request_hash(soap: Soap) -> None:
    data, mid = envelope("exampleService", "<exampleInput>foo</exampleInput>")
    status, headers, body = await soap.post(data, soap_action='"urn:example"')
    assert status == 200, body[:800]
    assert headers["Content-Type"].startswith("text/xml")
    assert "X-Road-Error" not in headers
    # PR-MESS §2.2: every request header field echoed, in order, same values; then requestHash
    sent = xroad_header(data)
    got = xroad_header(body)
    assert got[:-1] == sent
    assert got[-1] == ("requestHash", base64.b64encode(hashlib.sha512(data).digest()).decode())
    hash_el = parse(body).find(f"{{{SOAP_ENV}}}Header/{{{XRD}}}requestHash")
    assert hash_el is not None and hash_el.get("algorithmId") == SHA512_URI
    out = response_element(body)
    assert out.tag == f"{{{POP}}}exampleServiceResponse"
    assert out.findtext("exampleOutput") == "bar"
    # the backend got the envelope unchanged, with Content-Type and SOAPAction
    assert out.findtext("received/sha256") == hashlib.sha256(data).hexdigest()
    assert out.findtext("received/soapAction") == '"urn:example"'
    assert out.findtext("received/contentType") == "text/xml; charset=utf-8"
    # both sides logged it as SOAP; the signature binds the envelope and says it is SOAP
    [provider] = records(soap.provider, mid, "provider")
    [consumer] = records(soap.consumer, mid, "consumer")
    for view in (provider, consumer):
        assert (view.status, view.entry["protocol"]) == ("ok", "soap")
        assert view.entry["user_id"] == "PS12345678901" and view.entry["issue"] == "12345"
    signed = SignedRequest.from_payload(unverified_payload(consumer.entry["request_jws"]))
    assert (signed.protocol, signed.method, signed.path) == ("soap", "POST", "")
    assert signed.body_sha256 == b64url(hashlib.sha256(data).digest())
    assert ("soapaction", '"urn:example"') in signed.headers
    assert base64.b64decode(consumer.entry["response_body"]) == body


async def test_get_person_releases_only_the_granted_fields(soap: Soap) -> None:
    data, mid = envelope()
    status, _, body = await soap.post(data)
    assert status == 200, body[:800]
    person = response_element(body)
    assert person.tag == f"{{{POP}}}getPersonResponse"
    shape = [(el.tag, [c.tag for c in el]) for el in person]
    assert shape == [
        ("nationalId", []),
        ("name", ["full"]),
        ("address", ["locality"]),
        ("children", ["nationalId"]),
        ("children", ["nationalId"]),
    ]
    assert person.findtext("name/full") == "Amal Haddad"
    assert person.find("name").get("lang") is None  # type: ignore[union-attr]
    for leaked in (b"1990-04-01", b"married", b"Jerusalem", b"Sami", b"Main", b"Amal<"):
        assert leaked not in body
    [view] = records(soap.provider, mid, "provider")
    assert view.released_fields == (
        "address.locality",
        "children[].nationalId",
        "name.full",
        "nationalId",
    )
    assert view.entry["decision"]["grant"] == "window-get-person"


async def test_purpose_of_use_in_the_extension_header(soap: Soap) -> None:
    data, _ = envelope(client=HEALTH)
    assert_fault(
        await soap.post(data, name="moh"), "Server.ServerProxy.AccessDenied.PurposeNotAllowed"
    )
    purpose = (
        '\n        <ext:purpose xmlns:ext="urn:exchange:xroad-ext:1">patient-care</ext:purpose>'
    )
    data, mid = envelope(client=HEALTH, extra=purpose)
    status, _, body = await soap.post(data, name="moh")
    assert status == 200, body[:800]
    assert response_element(body).findtext("dateOfBirth") == "1990-04-01"  # no fields limit
    [view] = records(soap.provider, mid, "provider")
    assert view.entry["purpose"] == "patient-care"


async def test_service_echoes_nothing_the_security_server_echoes(soap: Soap) -> None:
    data, _ = envelope(payload="<nationalId>noecho</nationalId>")
    status, _, body = await soap.post(data)
    assert status == 200, body[:800]
    assert xroad_header(body)[:-1] == xroad_header(data)


async def test_fields_the_service_does_not_echo_the_security_server_echoes(soap: Soap) -> None:
    """Health's grant has no ``fields``, so the service's envelope is passed on as it wrote it,
    but for the header fields it left out: a client always finds its client, service and id."""
    purpose = '<ext:purpose xmlns:ext="urn:exchange:xroad-ext:1">patient-care</ext:purpose>'
    data, _ = envelope(client=HEALTH, extra=purpose, payload="<nationalId>idonly</nationalId>")
    status, _, body = await soap.post(data, name="moh")
    assert status == 200, body[:800]
    assert sorted(xroad_header(body)[:-1]) == sorted(xroad_header(data))


async def test_request_hash_from_the_service_is_replaced(soap: Soap) -> None:
    data, _ = envelope(payload="<nationalId>forgedhash</nationalId>")
    status, _, body = await soap.post(data)
    assert status == 200, body[:800]
    hashes = parse(body).findall(f"{{{SOAP_ENV}}}Header/{{{XRD}}}requestHash")
    assert len(hashes) == 1
    assert hashes[0].get("algorithmId") == SHA512_URI
    assert hashes[0].text == base64.b64encode(hashlib.sha512(data).digest()).decode()


# --- SOAP with attachments -----------------------------------------------------------------------


async def test_swa_attachment_passes_through_byte_for_byte(soap: Soap) -> None:
    data, mid = envelope(
        "exampleService",
        "<exampleInput>foo</exampleInput><exampleAttachment>cid:data.bin</exampleAttachment>",
    )
    attachment = bytes(range(256)) * 64
    multipart = (
        b"--MIME_boundary\r\nContent-Type: text/xml; charset=UTF-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\nContent-ID: <rootpart>\r\n\r\n"
        + data
        + b"\r\n--MIME_boundary\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\nContent-ID: <data.bin>\r\n\r\n"
        + attachment
        + b"\r\n--MIME_boundary--\r\n"
    )
    content_type = (
        'multipart/related; type="text/xml"; start="<rootpart>"; boundary="MIME_boundary"'
    )
    status, _, body = await soap.post(multipart, content_type=content_type)
    assert status == 200, body[:800]
    out = response_element(body)
    assert out.findtext("received/sha256") == hashlib.sha256(multipart).hexdigest()
    assert out.findtext("received/contentType") == content_type
    # requestHash covers the SOAP part (PR-MESS §2.2)
    assert xroad_header(body)[-1][1] == base64.b64encode(hashlib.sha512(data).digest()).decode()
    [view] = records(soap.provider, mid, "provider")
    assert base64.b64decode(view.entry["request_body"]) == multipart


@pytest.mark.parametrize("which", ["big-request", "big-response"])
async def test_large_messages_are_handled_off_the_event_loop(soap: Soap, which: str) -> None:
    """Above 64 KiB the servers parse (and finish) in a worker thread: same results."""
    payload = "x" * 300_000 if which == "big-request" else "big-response"
    data, mid = envelope("exampleService", f"<exampleInput>{payload}</exampleInput>")
    status, _, body = await soap.post(data)
    assert status == 200, body[:800]
    out = response_element(body)
    assert out.findtext("received/sha256") == hashlib.sha256(data).hexdigest()
    assert len(out.findtext("padding") or "") == (300_000 if which == "big-response" else 0)
    assert xroad_header(body)[-1][1] == base64.b64encode(hashlib.sha512(data).digest()).decode()
    for server, side in ((soap.consumer, "consumer"), (soap.provider, "provider")):
        [view] = records(server, mid, side)
        assert view.status == "ok"


async def test_swa_response_attachment_passes_through_byte_for_byte(soap: Soap) -> None:
    data, mid = envelope("exampleService", "<exampleInput>swa-response</exampleInput>")
    status, headers, body = await soap.post(data)
    assert status == 200, body[:800]
    assert headers["Content-Type"].startswith("multipart/related")
    assert body.startswith(b"preamble\r\n--MIME_boundary\r\n")
    assert body.endswith(b"\r\n\r\n" + ATTACHMENT + b"\r\n--MIME_boundary--\r\n")
    envelope_part = body.split(b"Content-ID: <rootpart>\r\n\r\n", 1)[1].split(
        b"\r\n--MIME_boundary", 1
    )[0]
    assert (
        xroad_header(envelope_part)[-1][1]
        == base64.b64encode(hashlib.sha512(data).digest()).decode()
    )
    [view] = records(soap.consumer, mid, "consumer")
    assert view.status == "ok"


# --- faults from the exchange layer --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "code"),
    [
        pytest.param(
            "palpost",
            {"code": "noSuchService"},
            "Server.ServerProxy.UnknownService",
            id="unknown-service",
        ),
        pytest.param(
            "palpost",
            {"code": "persons"},
            "Server.ServerProxy.UnknownService",
            id="rest-service-over-soap",
        ),
        pytest.param(
            "mof", {"client": FINANCE}, "Server.ServerProxy.AccessDenied", id="access-denied"
        ),
        pytest.param(
            "palpost", {"client": HEALTH}, "Client.UnknownClient", id="client-not-hosted-here"
        ),
        pytest.param(
            "palpost",
            {"subsystem": parse_subsystem(f"{PALPOST}/nobody-hosts-this")},
            "Server.ClientProxy.UnknownMember",
            id="no-provider",
        ),
        pytest.param(
            "palpost",
            {"payload": "<nationalId>garbage</nationalId>"},
            "Server.ServerProxy.ServiceFailed",
            id="backend-not-soap",
        ),
        pytest.param(
            "palpost",
            {"payload": "<nationalId>badxml</nationalId>"},
            "Server.ServerProxy.ServiceFailed",
            id="backend-malformed-xml",
        ),
        pytest.param(
            "palpost",
            {"payload": "<nationalId>bomb</nationalId>"},
            "Server.ServerProxy.ServiceFailed",
            id="backend-xml-bomb",
        ),
        pytest.param(
            "palpost",
            {"payload": "<nationalId>http500</nationalId>"},
            "Server.ServerProxy.ServiceFailed",
            id="backend-500-without-fault",
        ),
        pytest.param(
            "palpost",
            {"payload": "<nationalId>wrongname</nationalId>"},
            "Server.ServerProxy.ServiceFailed",
            id="fields-but-wrong-response-element",
        ),
        pytest.param(
            "palpost",
            {"payload": "<nationalId>attachment</nationalId>"},
            "Server.ServerProxy.ServiceFailed",
            id="fields-but-attachments",
        ),
        pytest.param(
            "palpost",
            {"payload": "<nationalId>wrongid</nationalId>"},
            "Server.ServerProxy.ServiceFailed.InconsistentHeaders",
            id="backend-echoes-another-id",
        ),
    ],
)
async def test_exchange_layer_faults(
    soap: Soap, name: str, kwargs: dict[str, Any], code: str
) -> None:
    data, mid = envelope(**kwargs)
    fault = assert_fault(await soap.post(data, name=name), code)
    detail = fault.findtext("detail/faultDetail")
    [view] = records(soap.net.servers[name], mid, "consumer")
    assert view.entry["error"]["type"] == code
    if code.startswith("Server.ServerProxy."):
        [provider] = records(soap.provider, mid, "provider")
        assert provider.entry["error"]["type"] == code
        assert provider.entry["error"]["detail"] == detail  # the provider's own detail id
    else:
        assert view.entry["error"]["detail"] == detail
    assert b"secret" not in fault.findtext("faultstring", "").encode()
    await assert_soap_serving(soap)


async def test_backend_fault_passes_through(soap: Soap) -> None:
    data, mid = envelope(payload="<nationalId>000000000</nationalId>")
    status, headers, body = await soap.post(data)
    fault = assert_fault(
        (status, headers, body), "SOAP-ENV:Client.PersonNotFound", exchange_layer=False
    )
    assert "X-Road-Error" not in headers
    assert fault.findtext("faultstring") == "no person with this national id"
    [view] = records(soap.provider, mid, "provider")
    assert view.status == "ok"  # the exchange worked; the service said no


async def test_a_fault_to_a_field_restricted_grant_keeps_only_code_string_and_detail_id(
    soap: Soap,
) -> None:
    """The service's fault carries a record in its detail and a header block; the window's grant
    releases some fields only, so only the fault's code (its QName prefix made the envelope's),
    string and X-Road faultDetail leave. Health's grant has no ``fields``: the fault as sent."""
    data, mid = envelope(payload="<nationalId>conflict</nationalId>")
    status, headers, body = await soap.post(data)
    fault = assert_fault((status, headers, body), "SOAP-ENV:Client.Conflict", exchange_layer=False)
    assert fault.findtext("faultstring") == "registered already"
    assert fault.findtext("detail/faultDetail") == "conflict-17"
    assert [child.tag for child in fault.find("detail")] == ["faultDetail"]
    assert FAULT_RECORD.encode() not in body
    [view] = records(soap.provider, mid, "provider")
    assert view.status == "ok" and view.released_fields == ()
    assert FAULT_RECORD not in orjson.dumps(view.entry).decode()

    purpose = (
        '\n        <ext:purpose xmlns:ext="urn:exchange:xroad-ext:1">patient-care</ext:purpose>'
    )
    data, _ = envelope(payload="<nationalId>conflict</nationalId>", client=HEALTH, extra=purpose)
    status, _, body = await soap.post(data, name="moh")
    assert status == 500 and FAULT_RECORD.encode() in body


async def test_soap_service_over_rest_is_unknown(soap: Soap) -> None:
    status, headers, body = await soap.net.call("palpost", f"/r1/{SUBSYSTEM}/getPerson/x")
    assert (status, headers["X-Road-Error"]) == (404, "Server.ServerProxy.UnknownService")
    assert b"SOAP service" in body


async def test_replayed_message_id_is_a_fault(soap: Soap) -> None:
    data, mid = envelope()
    status, _, body = await soap.post(data)
    assert status == 200, body[:800]
    assert_fault(await soap.post(data), "Server.ServerProxy.ReplayedMessage")
    for server, side in ((soap.consumer, "consumer"), (soap.provider, "provider")):
        views = records(server, mid, side)
        assert [v.status for v in views] == ["ok", "error"]
        assert views[1].entry["error"]["type"] == "Server.ServerProxy.ReplayedMessage"
    await assert_soap_serving(soap)


# --- what the information system sends that is not acceptable -----------------------------------

GOOD, _ = envelope()
XXE = (
    b'<?xml version="1.0"?>\n<!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    + envelope(payload="<nationalId>&xxe;</nationalId>")[0].split(b"?>", 1)[1]
)


def _swap(old: bytes, new: bytes) -> bytes:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


BAD_INPUT = [
    pytest.param(b"<not-closed", "text/xml", "Client.InvalidXml", id="malformed-xml"),
    pytest.param(b"", "text/xml", "Client.InvalidXml", id="empty"),
    pytest.param(BOMB, "text/xml", "Client.InvalidXml", id="billion-laughs"),
    pytest.param(XXE, "text/xml", "Client.InvalidXml", id="xxe"),
    pytest.param(
        b'<?xml version="1.0"?><!DOCTYPE Envelope SYSTEM "http://127.0.0.1:9/x.dtd">'
        + GOOD.split(b"?>", 1)[1],
        "text/xml",
        "Client.InvalidXml",
        id="doctype",
    ),
    pytest.param(
        GOOD.replace(SOAP_ENV.encode(), b"http://www.w3.org/2003/05/soap-envelope"),
        "text/xml",
        "Client.InvalidSoap",
        id="soap-1.2-envelope",
    ),
    pytest.param(GOOD, "application/soap+xml", "Client.InvalidContentType", id="soap-1.2-type"),
    pytest.param(b'{"a": 1}', "application/json", "Client.InvalidContentType", id="json"),
    pytest.param(
        GOOD.replace(SOAP_ENV.encode(), b"urn:not-soap"),
        "text/xml",
        "Client.InvalidSoap",
        id="wrong-envelope-namespace",
    ),
    pytest.param(
        GOOD.replace(XRD.encode(), b"http://x-road.eu/xsd/wrong.xsd"),
        "text/xml",
        "Client.MissingHeaderField",
        id="wrong-header-namespace",
    ),
    pytest.param(
        _swap(b"<xrd:protocolVersion>4.0</xrd:protocolVersion>", b""),
        "text/xml",
        "Client.MissingHeaderField",
        id="missing-protocol-version",
    ),
    pytest.param(
        _swap(b"<xrd:protocolVersion>4.0<", b"<xrd:protocolVersion>3.1<"),
        "text/xml",
        "Client.InvalidProtocolVersion",
        id="protocol-3.1",
    ),
    pytest.param(
        _swap(b"<ns1:getPerson>", b"<ns1:getPersonX>").replace(
            b"</ns1:getPerson>", b"</ns1:getPersonX>"
        ),
        "text/xml",
        "Client.InvalidBody",
        id="body-is-not-the-service-code",
    ),
    pytest.param(
        _swap(b'id:objectType="SUBSYSTEM"', b'id:objectType="SERVICE"'),
        "text/xml",
        "Client.InvalidClientIdentifier",
        id="client-object-type",
    ),
    pytest.param(
        _swap(
            b"</SOAP-ENV:Header>",
            b"<t:token xmlns:t='urn:x:t' SOAP-ENV:mustUnderstand='1' "
            b"SOAP-ENV:actor='http://schemas.xmlsoap.org/soap/actor/next'>x</t:token>"
            b"</SOAP-ENV:Header>",
        ),
        "text/xml",
        "Client.MustUnderstand",
        id="must-understand-for-the-security-server",
    ),
    pytest.param(
        b"--b\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n--b--\r\n",
        'multipart/related; boundary="b"',
        "Client.MimeParsingFailed",
        id="swa-without-soap-part",
    ),
]


@pytest.mark.parametrize(("data", "content_type", "code"), BAD_INPUT)
async def test_bad_input_is_a_client_fault_logged_and_survived(
    soap: Soap, data: bytes, content_type: str, code: str
) -> None:
    before = time.time()
    fault = assert_fault(await soap.post(data, content_type=content_type), code)
    detail = fault.findtext("detail/faultDetail")
    assert b"root:" not in etree.tostring(fault)  # no XXE ever reads a file
    logged = [
        v for v in _recent_consumer_errors(soap.consumer, before) if v["error"]["detail"] == detail
    ]
    assert len(logged) == 1 and logged[0]["error"]["type"] == code
    assert logged[0]["protocol"] == "soap"
    await assert_soap_serving(soap)


def _recent_consumer_errors(server: SecurityServer, since: float) -> list[dict[str, Any]]:
    from exchange.messagelog.store import open_readonly

    conn = open_readonly(server.config.log_path)
    try:
        rows = conn.execute(
            "SELECT entry FROM records WHERE side = 'consumer' ORDER BY seq DESC LIMIT 50"
        ).fetchall()
    finally:
        conn.close()
    return [e for (raw,) in rows if (e := orjson.loads(raw)).get("error")]


async def test_oversize_request_is_refused_before_reading_it(soap: Soap) -> None:
    limit = soap.consumer.config.limits.max_body_bytes
    data = GOOD.replace(b"123456782", b"1" * (limit + 1))
    assert_fault(await soap.post(data), "Client.RequestTooLarge")
    await assert_soap_serving(soap)


# --- a peer security server that breaks the rules (the provider's checks) ------------------------


def _signed_soap(soap: Soap, data: bytes, **overrides: Any) -> tuple[str, bytes]:
    """A SOAP request signed by the window's member, as its security server would."""
    mid = new_id("rogue-soap")
    fields: dict[str, Any] = {
        "message_id": mid,
        "client": WINDOW,
        "service": ServiceId(*SUBSYSTEM.parts, "getPerson"),
        "method": "POST",
        "path": "",
        "query": "",
        "headers": (("content-type", "text/xml; charset=utf-8"),),
        "body_sha256": b64url(hashlib.sha256(data).digest()),
        "body_length": len(data),
        "user_id": "PS12345678901",
        "purpose": None,
        "issue": "12345",
        "represented_party": None,
        "security_server": SOAP_SS,
        "client_server": SecurityServerId(*PALPOST.parts, "ss1"),
        "timestamp_ms": int(time.time() * 1000),
        "protocol": "soap",
    }
    fields.update(overrides)
    request = SignedRequest(**fields)
    return soap.consumer.signers[PALPOST].sign(request.canonical()), data


@pytest.mark.parametrize(
    ("case", "code"),
    [
        pytest.param(
            "header-differs",
            "Server.ServerProxy.InvalidMessage",
            id="envelope-header-differs-from-signature",
        ),
        pytest.param("tampered-body", "Server.ServerProxy.InvalidMessage", id="tampered-envelope"),
        pytest.param("not-soap", "Server.ServerProxy.InvalidMessage", id="signed-garbage"),
        pytest.param(
            "bad-signature", "Server.ServerProxy.InvalidSignatureValue", id="bad-signature"
        ),
    ],
)
async def test_provider_refuses_forged_soap_requests(soap: Soap, case: str, code: str) -> None:
    data, mid = envelope()
    if case == "header-differs":
        token, body = _signed_soap(soap, data, message_id=mid, user_id="PS-someone-else")
    elif case == "tampered-body":
        token, _ = _signed_soap(soap, data, message_id=mid)
        body = data.replace(b"123456782", b"999999999")
    elif case == "not-soap":
        token, body = _signed_soap(soap, b"not soap", message_id=mid)
    else:
        token, body = _signed_soap(soap, data, message_id=mid)
        token = tamper_signature(token)
    palpost = soap.consumer
    conf = soap.provider.trusted.current
    assert conf is not None
    rogue = RogueClient(
        soap.provider,
        auth_cert=palpost.config.auth_cert,
        auth_key=palpost.config.auth_key,
        cas=conf.ca_certs(),
        presented=[palpost.signers[PALPOST].cert],
        claimed_server=palpost.config.server_id,
    )
    try:
        frame, conn = await rogue.send(token, body)
        response, _ = _read(frame, conn)
    finally:
        rogue.close()
    assert response.error_type == code
    if case != "bad-signature":  # once the signature verifies, the refusal is a SOAP Fault
        fault = response_element(frame.body)
        assert fault.findtext("faultcode") == code
    await assert_soap_serving(soap)


def _read(frame: Any, conn: Any) -> tuple[Any, Any]:
    try:
        return read_signed_response(frame, conn)
    except orjson.JSONDecodeError:
        from exchange.protocol.jws import verify

        token = frame.meta["jws"]
        verified = verify(token, lambda t: conn.peer.signers[t].public_key)
        from exchange.protocol.messages import SignedResponse

        return SignedResponse.from_payload(verified.payload), None


# --- a stock SOAP client -------------------------------------------------------------------------


def _zeep_call(wsdl_url: str, address: str, message_id: str) -> Any:
    import zeep

    client = zeep.Client(wsdl_url)
    service = client.create_service("{http://population.moi.gov.ps/v1}populationBinding", address)
    headers = {
        "client": {
            "objectType": "SUBSYSTEM",
            "xRoadInstance": WINDOW.instance,
            "memberClass": WINDOW.member_class,
            "memberCode": WINDOW.member_code,
            "subsystemCode": WINDOW.subsystem_code,
        },
        "service": {
            "objectType": "SERVICE",
            "xRoadInstance": SUBSYSTEM.instance,
            "memberClass": SUBSYSTEM.member_class,
            "memberCode": SUBSYSTEM.member_code,
            "subsystemCode": SUBSYSTEM.subsystem_code,
            "serviceCode": "getPerson",
            "serviceVersion": "v1",
        },
        "id": message_id,
        "userId": "PS12345678901",
        "issue": "zeep",
        "protocolVersion": "4.0",
    }
    return service.getPerson(nationalId="123456782", _soapheaders=headers)


def _zeep_fault(wsdl_url: str, address: str) -> Any:
    import zeep
    import zeep.exceptions

    client = zeep.Client(wsdl_url)
    service = client.create_service("{http://population.moi.gov.ps/v1}populationBinding", address)
    try:
        service.getPerson(nationalId="123456782")  # no X-Road headers at all
    except zeep.exceptions.Fault as fault:
        return fault
    raise AssertionError("no fault")


async def test_zeep_calls_through_the_consumer_security_server(soap: Soap) -> None:
    wsdl_url = f"{soap.net.backend_url}/soap?wsdl"
    mid = new_id("zeep")
    result = await asyncio.to_thread(_zeep_call, wsdl_url, soap.url(), mid)
    body = result.body if hasattr(result, "body") else result
    assert body.nationalId == "123456782"
    assert body.name.full == "Amal Haddad"
    assert body.dateOfBirth is None  # not released to this client
    assert [c.nationalId for c in body.children] == ["200000004", "200000012"]
    [view] = records(soap.provider, mid, "provider")
    assert view.entry["issue"] == "zeep"
    fault = await asyncio.to_thread(_zeep_fault, wsdl_url, soap.url())
    assert fault.code == "Client.MissingHeaderField"
    assert WSDL_FILE.exists()


# --- a provider that answers SOAP wrongly (the consumer's checks) --------------------------------

SOAP_ROGUE = parse_member("PS/GOV/SOAPROGUE")
SOAP_ROGUE_SS = SecurityServerId(*SOAP_ROGUE.parts, "ss1")
SOAP_ROGUE_API = parse_subsystem(f"{SOAP_ROGUE}/api")


@dataclass
class RogueSoap:
    provider: RogueProvider
    signer: Signer


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def rogue_soap(net: Net) -> AsyncIterator[RogueSoap]:
    """A provider registered in the global configuration that answers as each test says."""
    directory = net.root / "rogue-soap-provider"
    auth_key = generate_key()
    auth_cert = net.ca.issue_auth_cert(auth_key.public_key(), SOAP_ROGUE_SS)
    save_private_key(directory / "auth.key.pem", auth_key)
    save_certificate(directory / "auth.cert.pem", auth_cert)
    sign_key = generate_key()
    signer = Signer(sign_key, net.ca.issue_sign_cert(sign_key.public_key(), SOAP_ROGUE))
    conf = net.servers["palpost"].trusted.current
    assert conf is not None
    provider = RogueProvider(
        SOAP_ROGUE_SS,
        auth_cert=directory / "auth.cert.pem",
        auth_key=directory / "auth.key.pem",
        cas=conf.ca_certs(),
        presented=[signer.cert],
    )
    port = await provider.start()
    with net.registry() as reg:
        reg.add_member(SOAP_ROGUE, "Rogue SOAP provider")
        reg.add_subsystem(SOAP_ROGUE_API)
        reg.add_server(SOAP_ROGUE_SS, f"127.0.0.1:{port}", [fingerprint(auth_cert)])
        reg.add_server_client(SOAP_ROGUE_SS, SOAP_ROGUE_API)
    await publish(net)
    try:
        yield RogueSoap(provider, signer)
    finally:
        await provider.close()


def _honest_envelope(inc: Incoming) -> bytes:
    """What an honest provider answers: the request's header echoed, requestHash added."""
    request = soap_protocol.parse_request(inc.frame.body)
    root = etree.fromstring(inc.frame.body)
    body = root.find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    body.remove(body[0])
    etree.SubElement(body, f"{{{POP}}}getPersonResponse").text = "the real one"
    return soap_protocol.finish_response(
        soap_protocol.parse_response(etree.tostring(root)), request
    )


def _signed_reply(
    r: RogueSoap,
    inc: Incoming,
    body: bytes,
    *,
    content_type: str = "text/xml; charset=utf-8",
    status: int = 200,
    error: tuple[str, str] | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> None:
    response = SignedResponse(
        message_id=inc.request.message_id,
        request_id=str(uuid.uuid4()),
        request_hash=inc.request_hash,
        status=status,
        headers=(("content-type", content_type), *headers),
        body_sha256=b64url(hashlib.sha256(body).digest()),
        body_length=len(body),
        error_type=None if error is None else error[0],
        error_message=None if error is None else error[1],
        policy_version=None,
        released_fields=None,
        timestamp_ms=int(time.time() * 1000),
    )
    inc.reply(r.signer.sign(response.canonical()), body)


def _swap_in(old: bytes, new: bytes) -> Callable[[RogueSoap, Incoming], None]:
    def reply(r: RogueSoap, inc: Incoming) -> None:
        honest = _honest_envelope(inc)
        assert old in honest, honest
        _signed_reply(r, inc, honest.replace(old, new, 1))

    return reply


def _no_request_hash(r: RogueSoap, inc: Incoming) -> None:
    root = etree.fromstring(_honest_envelope(inc))
    header = root.find(f"{{{SOAP_ENV}}}Header")
    assert header is not None
    header.remove(header[-1])
    _signed_reply(r, inc, etree.tostring(root))


def _hash_of_another_request(r: RogueSoap, inc: Incoming) -> None:
    honest = _honest_envelope(inc)
    right = soap_protocol.request_hash(inc.frame.body).encode()
    _signed_reply(r, inc, honest.replace(right, soap_protocol.request_hash(b"other").encode()))


def _json_answer(r: RogueSoap, inc: Incoming) -> None:
    _signed_reply(r, inc, b'{"not": "soap"}', content_type="application/json")


def _honest_but(**changes: Any) -> Callable[[RogueSoap, Incoming], None]:
    """The honest envelope, signed with a status or headers that must never reach a caller
    (exchange.protocol.forwarding): the consumer refuses it rather than log a status like -5."""
    return lambda r, inc: _signed_reply(r, inc, _honest_envelope(inc), **changes)


CONSUMER_CHECKS = [
    pytest.param(_honest_but(headers=(("content-length", "0"),)), id="content-length-header"),
    pytest.param(_honest_but(headers=(("transfer-encoding", "chunked"),)), id="te-header"),
    pytest.param(_honest_but(status=101), id="status-101"),
    pytest.param(_honest_but(status=-5), id="status-negative"),
    pytest.param(_no_request_hash, id="no-request-hash"),
    pytest.param(_hash_of_another_request, id="request-hash-of-another-request"),
    pytest.param(
        _swap_in(SHA512_URI.encode(), b"http://www.w3.org/2000/09/xmldsig#sha1"),
        id="request-hash-other-algorithm",
    ),
    pytest.param(_swap_in(b"<xrd:id>", b"<xrd:id>x"), id="echoes-another-id"),
    pytest.param(
        _swap_in(b"<id:memberCode>PALPOST<", b"<id:memberCode>MOH<"), id="echoes-another-client"
    ),
    pytest.param(_json_answer, id="not-soap"),
]


async def test_rogue_honest_soap_answer_is_accepted(soap: Soap, rogue_soap: RogueSoap) -> None:
    """The control: the rogue's setup is valid, so the refusals below are about what each
    test alters."""
    rogue_soap.provider.answer = lambda inc: _signed_reply(rogue_soap, inc, _honest_envelope(inc))
    data, _ = envelope(subsystem=SOAP_ROGUE_API)
    status, _, body = await soap.post(data)
    assert status == 200, body[:800]
    assert b"the real one" in body


@pytest.mark.parametrize("reply", CONSUMER_CHECKS)
async def test_consumer_refuses_soap_answers_not_bound_to_the_request(
    soap: Soap, rogue_soap: RogueSoap, reply: Callable[[RogueSoap, Incoming], None]
) -> None:
    rogue_soap.provider.answer = lambda inc: reply(rogue_soap, inc)
    data, mid = envelope(subsystem=SOAP_ROGUE_API)
    async with asyncio.timeout(10):
        result = await soap.post(data)
    assert_fault(result, "Server.ClientProxy.InconsistentResponse")
    assert b"the real one" not in result[2]
    [view] = records(soap.consumer, mid, "consumer")
    assert view.entry["error"]["type"] == "Server.ClientProxy.InconsistentResponse"
    await assert_soap_serving(soap)


async def test_signed_refusal_in_json_becomes_a_fault(soap: Soap, rogue_soap: RogueSoap) -> None:
    """A provider refuses before it can tell the request is SOAP (its REST error body): the
    information system still gets a SOAP Fault, with the provider's code and detail id."""
    code = "Server.ServerProxy.InvalidSignatureValue"
    detail = str(uuid.uuid4())
    rogue_soap.provider.answer = lambda inc: _signed_reply(
        rogue_soap,
        inc,
        orjson.dumps({"type": code, "message": "request signature is invalid", "detail": detail}),
        content_type="application/json; charset=utf-8",
        status=400,
        error=(code, "request signature is invalid"),
    )
    data, mid = envelope(subsystem=SOAP_ROGUE_API)
    fault = assert_fault(await soap.post(data), code)
    assert fault.findtext("detail/faultDetail") == detail
    assert fault.findtext("faultstring") == "request signature is invalid"
    [view] = records(soap.consumer, mid, "consumer")
    assert view.entry["error"]["type"] == code


REPRESENTED = """
        <repr:representedParty xmlns:repr="http://x-road.eu/xsd/representation.xsd">
            <repr:partyClass>COM</repr:partyClass><repr:partyCode>12345</repr:partyCode>
        </repr:representedParty>"""


def _pin(server: SecurityServerId) -> str:
    return f"""
        <xrd:securityServer id:objectType="SERVER">
            <id:xRoadInstance>{server.instance}</id:xRoadInstance>
            <id:memberClass>{server.member_class}</id:memberClass>
            <id:memberCode>{server.member_code}</id:memberCode>
            <id:serverCode>{server.server_code}</id:serverCode>
        </xrd:securityServer>"""


async def test_represented_party_and_pinned_server_are_signed(soap: Soap) -> None:
    data, mid = envelope(extra=REPRESENTED + _pin(SOAP_SS))
    status, _, body = await soap.post(data)
    assert status == 200, body[:800]
    [view] = records(soap.consumer, mid, "consumer")
    signed = SignedRequest.from_payload(unverified_payload(view.entry["request_jws"]))
    assert (signed.represented_party, signed.security_server) == ("COM/12345", SOAP_SS)
    names = [name for name, _ in xroad_header(body)]
    assert "securityServer" in names and "representedParty" in names


async def test_pinning_a_server_that_does_not_provide_the_service(soap: Soap) -> None:
    data, _ = envelope(extra=_pin(SecurityServerId(*MOI.parts, "ss1")))
    assert_fault(await soap.post(data), "Server.ClientProxy.UnknownMember")


@pytest.mark.parametrize(
    "action",
    [
        pytest.param("a" * 2000, id="too-long"),
        # printable, but not a header value the provider takes in a signed request: before, the
        # consumer signed it and the information system got the provider's InvalidMessage
        pytest.param("urn:\U0001f600", id="outside-the-bmp"),
    ],
)
async def test_soap_action_that_is_not_a_header_value(soap: Soap, action: str) -> None:
    data, mid = envelope()
    assert_fault(await soap.post(data, soap_action=action), "Client.InvalidHeader")
    [view] = records(soap.consumer, mid, "consumer")
    assert view.entry["error"]["type"] == "Client.InvalidHeader"


async def test_concurrent_soap_exchanges(soap: Soap) -> None:
    results = await asyncio.gather(*(soap.post(envelope()[0]) for _ in range(40)))
    assert [status for status, _, _ in results] == [200] * 40
    ids = {xroad_header(body)[2][1] for _, _, body in results}
    assert len(ids) == 40  # each answer echoes its own request


async def test_message_logs_with_soap_exchanges_verify(soap: Soap) -> None:
    """Runs after the tests above (successes, faults, refusals, attachments) in this module: an
    auditor's check of both servers' logs passes, SOAP records included."""
    from exchange.server.logcheck import verify_server_log

    await assert_soap_serving(soap)
    for server in (soap.consumer, soap.provider):
        report = verify_server_log(server.config)
        assert report.ok, orjson.dumps(report.to_dict()).decode()[:3000]
