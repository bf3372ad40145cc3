"""Red-team tests of the SOAP path: what a hostile information system or service tries.

A security server of its own (``ss-redteam``, subsystem ``redteam-soap``) provides ``getPerson``
(under a grant with ``fields``) and ``exampleService`` (no fields) from a service in this module
that misbehaves on request; ``palpost`` is the consumer. Real servers, TLS and SQLite, as in
:mod:`tests.integration.conftest`. Each refusal checks the exact code, the log and that the
servers keep serving; each claim that held keeps its test as evidence.
"""

from __future__ import annotations

import email.parser
import email.policy
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from lxml import etree

from exchange.identifiers import SecurityServerId, parse_subsystem
from tests.integration.conftest import MOI, WINDOW, Net
from tests.integration.soap_backend import _soap_part
from tests.integration.support import launch, records
from tests.integration.test_soap import (
    SOAP_ENV,
    XRD,
    Soap,
    _recent_consumer_errors,
    assert_fault,
    envelope,
    response_element,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUB = parse_subsystem(f"{MOI}/redteam-soap")
SERVER = SecurityServerId(*MOI.parts, "ss-redteam")
LEAK = "urn:redteam:leak"
SECRET = "1990-04-01-married-Jerusalem"

POLICY = f"""
provider = "PS/GOV/MOI"

[[grant]]
id = "window-get-person-minimised"
client = "{WINDOW}"
service = "{SUB}/getPerson"
fields = ["nationalId", "address.locality"]

[[grant]]
id = "window-example"
client = "{WINDOW}"
service = "{SUB}/exampleService"
"""


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def _fault(code: str, message: str) -> web.Response:
    body = (
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}"><SOAP-ENV:Body><SOAP-ENV:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{message}</faultstring>"
        "<detail><faultDetail>from-the-service</faultDetail></detail>"
        "</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()
    return web.Response(status=500, body=body, content_type="text/xml", charset="utf-8")


async def _service(request: web.Request) -> web.StreamResponse:
    """Answers with the echoed header; ``nationalId`` picks the misbehaviour."""
    raw = _soap_part(request.headers.get("Content-Type", ""), await request.read())
    root = etree.fromstring(raw, etree.XMLParser(resolve_entities=False))
    header = root.find(_q(SOAP_ENV, "Header"))
    body = root.find(_q(SOAP_ENV, "Body"))
    assert header is not None and body is not None
    request_el = body[0]
    name = etree.QName(request_el)
    nid = request_el.findtext("nationalId") or ""
    if nid.startswith("fault:"):
        return _fault(nid.removeprefix("fault:"), "spoofed by the service")
    answer = etree.Element(_q(name.namespace or "", name.localname + "Response"))
    body.remove(request_el)
    body.append(answer)
    etree.SubElement(answer, "nationalId").text = nid
    etree.SubElement(answer, "dateOfBirth").text = SECRET
    address = etree.SubElement(answer, "address")
    etree.SubElement(address, "locality").text = "Biddu"
    etree.SubElement(address, "street").text = SECRET
    if nid == "mixed-fields":
        # the secret at every place a filter could miss inside the answer
        address.set("dob", SECRET)
        address.text = SECRET
        locality = address.find("locality")
        assert locality is not None
        locality.tail = SECRET
        address.append(etree.Comment(SECRET))
        address.append(etree.ProcessingInstruction("dob", SECRET))
        etree.SubElement(address, "dateOfBirth").text = SECRET
        etree.SubElement(address, _q(LEAK, "street"), nsmap={"leak": LEAK}).text = SECRET
        second = etree.SubElement(answer, "address")
        second.text = SECRET
        etree.SubElement(second, "street").text = SECRET
        third = etree.SubElement(answer, "address")
        etree.SubElement(third, "locality").text = "Ramallah"
        etree.SubElement(answer, "addressLocality").text = SECRET
        answer.set("dob", SECRET)
        answer.text = SECRET
    if nid == "leak-around":
        # everything a service could put next to the answer instead of into it
        leak = etree.SubElement(header, _q(LEAK, "record"), nsmap={"leak": LEAK})
        leak.text = SECRET
        header.set(_q(LEAK, "dob"), SECRET)
        body.set(_q(LEAK, "dob"), SECRET)
        root.set(_q(LEAK, "dob"), SECRET)
        answer.addprevious(etree.Comment(f" dateOfBirth={SECRET} "))
        body.addprevious(etree.ProcessingInstruction("leak", SECRET))
        header.append(etree.Comment(SECRET))
        issue = header.find(_q(XRD, "issue"))
        assert issue is not None
        issue.text = SECRET  # its own "echo" of a header field
    out = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    if nid == "swa-preamble-copy":
        # the preamble holds the delimiter's bytes mid-line and a copy of the envelope
        body = (
            b"zz--B\r\n\r\n"
            + out
            + b"\r\n--B\r\nContent-Type: text/xml; charset=UTF-8\r\n\r\n"
            + out
            + b"\r\n--B\r\nContent-Type: application/octet-stream\r\n\r\nATTACHMENT\r\n--B--\r\n"
        )
        return web.Response(
            body=body, headers={"Content-Type": 'multipart/related; type="text/xml"; boundary="B"'}
        )
    if nid == "swa-start-second":
        # the client's MIME parser would read the second part: an envelope nobody checked
        other = out.replace(SECRET.encode(), b"unchecked")
        parts = b"".join(
            b"--B\r\nContent-Type: text/xml; charset=UTF-8\r\nContent-ID: <%s>\r\n\r\n%s\r\n"
            % (cid, envelope_bytes)
            for cid, envelope_bytes in ((b"first", out), (b"second", other))
        )
        return web.Response(
            body=parts + b"--B--\r\n",
            headers={
                "Content-Type": 'multipart/related; type="text/xml"; start="<second>"; boundary="B"'
            },
        )
    return web.Response(body=out, content_type="text/xml", charset="utf-8")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def red(net: Net) -> AsyncIterator[Soap]:
    app = web.Application()
    app.router.add_post("/soap", _service)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/soap"
    services = [
        {"id": f"{SUB}/getPerson", "url": url, "type": "soap"},
        {"id": f"{SUB}/exampleService", "url": url, "type": "soap"},
    ]
    try:
        provider = await launch(
            net, "moi-redteam", SERVER, clients=[SUB], policy=POLICY, extra={"services": services}
        )
        yield Soap(provider=provider, consumer=net.servers["palpost"], net=net)
    finally:
        await runner.cleanup()


def _request(nid: str = "123456782", **kwargs: object) -> tuple[bytes, str]:
    return envelope(payload=f"<nationalId>{nid}</nationalId>", subsystem=SUB, **kwargs)  # type: ignore[arg-type]


async def _assert_serving(red: Soap) -> None:
    data, _ = _request()
    status, _, body = await red.post(data)
    assert status == 200, body[:800]
    assert response_element(body).findtext("nationalId") == "123456782"


# --- data minimisation: nothing but the granted fields leaves (BUG fixed) -----------------------


async def test_nothing_the_service_writes_around_the_answer_leaves_under_fields(red: Soap) -> None:
    """Before the fix, only ``<getPersonResponse>`` was filtered: header blocks, comments,
    processing instructions and attributes the service added around it left unfiltered."""
    data, mid = _request("leak-around")
    status, _, body = await red.post(data)
    assert status == 200, body[:800]
    assert SECRET.encode() not in body, body
    assert LEAK.encode() not in body
    answer = response_element(body)
    assert [el.tag for el in answer] == ["nationalId", "address"]
    header = etree.fromstring(body).find(_q(SOAP_ENV, "Header"))
    assert header is not None
    assert header.findtext(_q(XRD, "issue")) == "12345"  # the request's, not the service's
    assert header.find(_q(XRD, "requestHash")) is not None
    [view] = records(red.provider, mid, "provider")
    assert view.status == "ok"
    assert view.entry["released_fields"] == ["address.locality", "nationalId"]
    await _assert_serving(red)


async def test_fields_inside_the_answer_leak_nothing_ungranted(red: Soap) -> None:
    """Held: attributes, text and tails of a partly granted element, comments and processing
    instructions, an ungranted sibling of a granted leaf (also in another namespace), a repeated
    element with nothing granted in it, a look-alike name: all removed."""
    data, mid = _request("mixed-fields")
    status, _, body = await red.post(data)
    assert status == 200, body[:800]
    assert SECRET.encode() not in body, body
    answer = response_element(body)
    assert [(el.tag, [(c.tag, c.text) for c in el]) for el in answer] == [
        ("nationalId", []),
        ("address", [("locality", "Biddu")]),
        ("address", [("locality", "Ramallah")]),
    ]
    [view] = records(red.provider, mid, "provider")
    assert view.entry["released_fields"] == ["address.locality", "nationalId"]


async def test_without_fields_the_answer_is_released_whole(red: Soap) -> None:
    """The claim is about grants with ``fields``: a grant without passes what the service says."""
    data, _ = envelope("exampleService", "<nationalId>leak-around</nationalId>", subsystem=SUB)
    status, _, body = await red.post(data)
    assert status == 200, body[:800]
    assert SECRET.encode() in body


# --- MIME: every reader takes the same part for the envelope (BUG fixed) -------------------------


def _two_envelopes(start: str | None, boundary: str = "MIME_boundary") -> tuple[bytes, str, str]:
    """A SwA message whose first part asks for exampleService, its second for getPerson."""
    first, mid = envelope("exampleService", "<exampleInput>x</exampleInput>", subsystem=SUB)
    second, _ = _request("123456782")
    b = boundary.encode()
    body = (
        b"--" + b + b"\r\nContent-Type: text/xml; charset=UTF-8\r\n"
        b"Content-ID: <first>\r\n\r\n" + first + b"\r\n--" + b + b"\r\n"
        b"Content-Type: text/xml; charset=UTF-8\r\nContent-ID: <second>\r\n\r\n"
        + second
        + b"\r\n--"
        + b
        + b"--\r\n"
    )
    params = f'type="text/xml"; boundary="{boundary}"'
    if start is not None:
        params += f'; start="{start}"'
    return body, f"multipart/related; {params}", mid


@pytest.mark.parametrize(
    ("content_type_of", "words"),
    [
        pytest.param(
            lambda ct: ct.replace('start="<first>"', 'start="<second>"'),
            "start parameter",
            id="start-names-the-second-part",
        ),
        pytest.param(
            lambda ct: ct + '; boundary="other"', "repeats the parameter", id="two-boundaries"
        ),
        pytest.param(lambda ct: ct + '; START="<first>"', "repeats", id="start-twice-any-case"),
    ],
)
async def test_multipart_whose_root_part_is_ambiguous_is_refused(
    red: Soap, content_type_of: object, words: str
) -> None:
    """RFC 2387's ``start`` (or a second ``boundary``) would let the service's MIME parser read
    another envelope (here: getPerson, whose grant releases fewer fields) than the one the
    security servers checked and matched against the policy."""
    body, content_type, _ = _two_envelopes("<first>")
    assert callable(content_type_of)
    before = time.time()
    fault = assert_fault(
        await red.post(body, content_type=content_type_of(content_type)),
        "Client.MimeParsingFailed",
    )
    assert words in (fault.findtext("faultstring") or "")
    detail = fault.findtext("detail/faultDetail")
    logged = [
        v for v in _recent_consumer_errors(red.consumer, before) if v["error"]["detail"] == detail
    ]
    assert len(logged) == 1 and logged[0]["error"]["type"] == "Client.MimeParsingFailed"
    await _assert_serving(red)


async def test_a_service_answer_whose_start_names_another_part_is_refused(red: Soap) -> None:
    """The same ambiguity in a service's SwA answer: the consumer would check one envelope and
    its information system read another."""
    data, mid = envelope(
        "exampleService", "<nationalId>swa-start-second</nationalId>", subsystem=SUB
    )
    assert_fault(await red.post(data), "Server.ServerProxy.ServiceFailed")
    [view] = records(red.provider, mid, "provider")
    assert view.entry["error"]["type"] == "Server.ServerProxy.ServiceFailed"
    assert "start parameter" in view.entry["error"]["message"]
    await _assert_serving(red)


async def test_the_finished_envelope_replaces_the_part_a_mime_parser_reads(red: Soap) -> None:
    """Before the fix, the provider looked for the first delimiter by a byte search, found the
    boundary's bytes inside the preamble and put the finished envelope (with ``requestHash``)
    there, where no MIME parser reads; the information system's parser got the service's own
    envelope (the consumer refused it: ``InconsistentResponse``)."""
    data, _ = envelope(
        "exampleService", "<nationalId>swa-preamble-copy</nationalId>", subsystem=SUB
    )
    status, headers, body = await red.post(data)
    assert status == 200, body[:800]
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body
    )
    parts = message.get_payload()
    assert isinstance(parts, list) and len(parts) == 2
    first = parts[0].get_payload(decode=True)
    assert b"requestHash" in first
    assert parts[1].get_payload(decode=True) == b"ATTACHMENT"
    assert body.startswith(b"zz--B\r\n\r\n<?xml")  # the preamble stays byte for byte


async def test_multipart_whose_start_names_the_first_part_is_served(red: Soap) -> None:
    body, content_type, mid = _two_envelopes("<first>")
    status, _, out = await red.post(body, content_type=content_type)
    assert status == 200, out[:800]
    assert etree.QName(response_element(out)).localname == "exampleServiceResponse"
    [view] = records(red.provider, mid, "provider")
    assert view.entry["service"].endswith("/exampleService")


# --- header look-alikes a lax service would read (hardening) -------------------------------------


async def test_a_header_block_named_like_an_xroad_field_is_refused(red: Soap) -> None:
    """A service that reads the header by local name (``{*}client``) would take this block for
    the client the security servers authenticated."""
    spoof = (
        '<evil:client xmlns:evil="urn:evil" xmlns:id="http://x-road.eu/xsd/identifiers" '
        'id:objectType="SUBSYSTEM"><id:xRoadInstance>PS</id:xRoadInstance>'
        "<id:memberClass>GOV</id:memberClass><id:memberCode>MOH</id:memberCode>"
        "<id:subsystemCode>health-records</id:subsystemCode></evil:client>"
    )
    data, _ = _request(extra=spoof)
    before = time.time()
    fault = assert_fault(await red.post(data), "Client.InvalidHeader")
    assert "looks like an X-Road header field" in (fault.findtext("faultstring") or "")
    detail = fault.findtext("detail/faultDetail")
    assert [
        v for v in _recent_consumer_errors(red.consumer, before) if v["error"]["detail"] == detail
    ]
    await _assert_serving(red)


# --- claims that held (evidence) ----------------------------------------------------------------


SAME_REQUEST_WRITTEN_DIFFERENTLY = [
    pytest.param(lambda b: b"\xef\xbb\xbf" + b, id="utf8-bom"),
    pytest.param(
        lambda b: b.replace(b"?>\n", b"?>\n<!-- a comment --><?pi before the root?>\n", 1),
        id="comment-and-pi-before-the-root",
    ),
    pytest.param(
        lambda b: b.replace(b"SOAP-ENV:", b"s:").replace(b"xmlns:SOAP-ENV=", b"xmlns:s="),
        id="other-envelope-prefix",
    ),
    pytest.param(
        lambda b: b.replace(b"xrd:", b"x:").replace(b"xmlns:xrd=", b"xmlns:x="),
        id="other-xroad-prefix",
    ),
    pytest.param(
        lambda b: b.replace(b"<nationalId>123456782<", b"<nationalId><![CDATA[123456782]]><"),
        id="cdata-in-the-body",
    ),
    pytest.param(
        lambda b: b.replace(b"<SOAP-ENV:Body>", b'<SOAP-ENV:Body xml:base="http://127.0.0.1:9/">'),
        id="xml-base-ignored",
    ),
]


@pytest.mark.parametrize("rewrite", SAME_REQUEST_WRITTEN_DIFFERENTLY)
async def test_the_same_request_written_differently_is_served_alike(
    red: Soap, rewrite: object
) -> None:
    data, mid = _request()
    assert callable(rewrite)
    status, _, body = await red.post(rewrite(data))
    assert status == 200, body[:800]
    answer = response_element(body)
    assert [el.tag for el in answer] == ["nationalId", "address"]
    assert answer.findtext("nationalId") == "123456782"
    [view] = records(red.provider, mid, "provider")
    assert view.entry["released_fields"] == ["address.locality", "nationalId"]


SAME_FIELD_TWICE = [
    pytest.param(
        lambda b: b.replace(
            b"<xrd:protocolVersion>4.0</xrd:protocolVersion>",
            b"<xrd:protocolVersion>4.0</xrd:protocolVersion>"
            b'<y:issue xmlns:y="http://x-road.eu/xsd/xroad.xsd">other</y:issue>',
        ),
        "Client.DuplicateHeaderField",
        id="header-field-twice-other-prefix",
    ),
    pytest.param(
        lambda b: b.replace(b"</SOAP-ENV:Body>", b"</SOAP-ENV:Body><SOAP-ENV:Body/>"),
        "Client.InvalidSoap",
        id="second-body",
    ),
    pytest.param(
        lambda b: b.replace(b"</SOAP-ENV:Header>", b"</SOAP-ENV:Header><SOAP-ENV:Header/>"),
        "Client.InvalidSoap",
        id="second-header",
    ),
    pytest.param(
        lambda b: b.replace(b"</SOAP-ENV:Envelope>", b"</SOAP-ENV:Envelope><SOAP-ENV:Envelope/>"),
        "Client.InvalidXml",
        id="second-envelope",
    ),
    pytest.param(
        lambda b: b.replace(b"<ns1:getPerson>", b"<ns1:getPerson>mixed text"),
        None,
        id="mixed-content-in-the-body-element-is-the-services-business",
    ),
]


@pytest.mark.parametrize(("rewrite", "code"), SAME_FIELD_TWICE)
async def test_ambiguous_envelopes_are_refused(
    red: Soap, rewrite: object, code: str | None
) -> None:
    data, _ = _request()
    assert callable(rewrite)
    result = await red.post(rewrite(data))
    if code is None:
        assert result[0] == 200, result[2][:800]
    else:
        assert_fault(result, code)
    await _assert_serving(red)


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("Server.ClientProxy.InconsistentResponse", id="consumer-code"),
        pytest.param("Server.ServerProxy.AccessDenied", id="provider-code"),
        pytest.param("SOAP-ENV:Client.InvalidSignature", id="client-code-with-prefix"),
    ],
)
async def test_a_service_fault_cannot_pass_for_an_exchange_layer_error(
    red: Soap, code: str
) -> None:
    """A fault the service makes passes through (as in X-Road), but never with ``X-Road-Error``:
    only that header says the exchange layer refused; both logs say the exchange worked."""
    data, mid = _request(f"fault:{code}")
    fault = assert_fault(await red.post(data), code, exchange_layer=False)
    status, headers, _ = await red.post(_request(f"fault:{code}")[0])
    assert status == 500 and "X-Road-Error" not in headers
    assert fault.findtext("detail/faultDetail") == "from-the-service"
    for server, side in ((red.provider, "provider"), (red.consumer, "consumer")):
        [view] = records(server, mid, side)
        assert view.status == "ok" and view.entry.get("error") is None
    await _assert_serving(red)


async def test_soap_posted_to_the_rest_path_of_a_soap_service(red: Soap) -> None:
    """``Content-Type: text/xml`` on ``/r1/...`` is REST: the SOAP service refuses it."""
    data, _ = _request()
    status, headers, _ = await red.net.call(
        "palpost",
        f"/r1/{SUB}/getPerson",
        method="POST",
        headers={"Content-Type": "text/xml; charset=utf-8"},
        body=data,
    )
    assert (status, headers["X-Road-Error"]) == (404, "Server.ServerProxy.UnknownService")
    await _assert_serving(red)
