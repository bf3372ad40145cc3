"""X-Road message protocol 4.0 (SOAP 1.1): the hardened parser, the header model, SwA, faults and
response finishing. Every bad input is a ``Client.*`` error with its exact code; any bytes either
parse or raise one (property test)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from exchange.errors import ClientError
from exchange.identifiers import MemberId, SecurityServerId, ServiceId, SubsystemId
from exchange.protocol import soap

# PR-MESS Annex E.1, verbatim but for the identifiers of our federation
ANNEX_E1 = b"""<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope
        xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"
        xmlns:ns1="http://producer.x-road.eu"
        xmlns:xrd="http://x-road.eu/xsd/xroad.xsd"
        xmlns:id="http://x-road.eu/xsd/identifiers">
    <SOAP-ENV:Header>
        <xrd:client id:objectType="SUBSYSTEM">
            <id:xRoadInstance>EE</id:xRoadInstance>
            <id:memberClass>GOV</id:memberClass>
            <id:memberCode>MEMBER1</id:memberCode>
            <id:subsystemCode>SUBSYSTEM1</id:subsystemCode>
        </xrd:client>
        <xrd:service id:objectType="SERVICE">
            <id:xRoadInstance>EE</id:xRoadInstance>
            <id:memberClass>GOV</id:memberClass>
            <id:memberCode>MEMBER2</id:memberCode>
            <id:subsystemCode>SUBSYSTEM2</id:subsystemCode>
            <id:serviceCode>exampleService</id:serviceCode>
            <id:serviceVersion>v1</id:serviceVersion>
        </xrd:service>
        <xrd:id>4894e35d-bf0f-44a6-867a-8e51f1daa7e0</xrd:id>
        <xrd:userId>EE12345678901</xrd:userId>
        <xrd:issue>12345</xrd:issue>
        <xrd:protocolVersion>4.0</xrd:protocolVersion>
    </SOAP-ENV:Header>
    <SOAP-ENV:Body>
        <ns1:exampleService>
            <exampleInput>foo</exampleInput>
        </ns1:exampleService>
    </SOAP-ENV:Body>
</SOAP-ENV:Envelope>
"""

ANNEX_F_TYPE = 'multipart/related; type="text/xml"; start="<rootpart>"; boundary="MIME_boundary"'
ATTACHMENT_PART = (
    b"--MIME_boundary\r\n"
    b"Content-Type: application/octet-stream; name=data.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-ID: <data.bin>\r\n"
    b'Content-Disposition: attachment; name="data.bin"; filename="data.bin"\r\n'
    b"\r\n"
    b"VGhpcyBpcyBhdHRhY2htZW50Lg0K\r\n"
    b"--MIME_boundary--\r\n"
)


def swa(envelope: bytes, *, soap_headers: bytes | None = None) -> bytes:
    headers = soap_headers or (
        b"Content-Type: text/xml; charset=UTF-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"Content-ID: <rootpart>\r\n"
    )
    return b"--MIME_boundary\r\n" + headers + b"\r\n" + envelope + b"\r\n" + ATTACHMENT_PART


def edit(old: bytes, new: bytes, source: bytes = ANNEX_E1) -> bytes:
    assert old in source, old
    return source.replace(old, new, 1)


# --- the annex example ---------------------------------------------------------------------------


def test_annex_e1_request_parses_into_the_typed_header() -> None:
    request = soap.parse_request(ANNEX_E1)
    header = request.header
    assert header.client == SubsystemId("EE", "GOV", "MEMBER1", "SUBSYSTEM1")
    assert header.service == ServiceId("EE", "GOV", "MEMBER2", "SUBSYSTEM2", "exampleService")
    assert header.service_version == "v1"
    assert header.message_id == "4894e35d-bf0f-44a6-867a-8e51f1daa7e0"
    assert (header.user_id, header.issue, header.protocol_version) == (
        "EE12345678901",
        "12345",
        "4.0",
    )
    assert (header.represented_party, header.security_server, header.purpose) == (None, None, None)
    assert (request.body_namespace, request.body_name) == (
        "http://producer.x-road.eu",
        "exampleService",
    )
    assert request.response_name == "exampleServiceResponse"
    assert request.envelope == ANNEX_E1


def test_member_level_client_without_version_and_optional_fields() -> None:
    data = edit(b'<xrd:client id:objectType="SUBSYSTEM">', b'<xrd:client id:objectType="MEMBER">')
    data = edit(b"<id:subsystemCode>SUBSYSTEM1</id:subsystemCode>", b"", data)
    data = edit(b"<id:serviceVersion>v1</id:serviceVersion>", b"", data)
    data = edit(b"<xrd:userId>EE12345678901</xrd:userId>", b"", data)
    data = edit(b"<xrd:issue>12345</xrd:issue>", b"<!-- no issue --><?pi x?>", data)
    header = soap.parse_request(data).header
    assert header.client == MemberId("EE", "GOV", "MEMBER1")
    assert header.service_version is None
    assert header.user_id is None and header.issue is None


def test_extension_headers_represented_party_security_server_purpose() -> None:
    extra = b"""
        <xrd:securityServer id:objectType="SERVER">
            <id:xRoadInstance>EE</id:xRoadInstance><id:memberClass>GOV</id:memberClass>
            <id:memberCode>MEMBER2</id:memberCode><id:serverCode>ss1</id:serverCode>
        </xrd:securityServer>
        <repr:representedParty xmlns:repr="http://x-road.eu/xsd/representation.xsd">
            <repr:partyClass>COM</repr:partyClass><repr:partyCode>12345</repr:partyCode>
        </repr:representedParty>
        <ext:purpose xmlns:ext="urn:exchange:xroad-ext:1">citizen-service</ext:purpose>
        <other:unknown xmlns:other="urn:other">ignored and passed on</other:unknown>
    </SOAP-ENV:Header>"""
    header = soap.parse_request(edit(b"</SOAP-ENV:Header>", extra)).header
    assert header.security_server == SecurityServerId("EE", "GOV", "MEMBER2", "ss1")
    assert header.represented_party == "COM/12345"
    assert header.purpose == "citizen-service"


def test_built_envelope_round_trips() -> None:
    header = soap.XRoadHeader(
        client=SubsystemId("PS", "GOV", "MOF", "tax-office"),
        service=ServiceId("PS", "GOV", "MOI", "population-registry", "getPerson"),
        service_version="v1",
        message_id="m-1",
        user_id="PS123",
        issue="case 7",
        protocol_version="4.0",
        represented_party="COM/42",
        security_server=SecurityServerId("PS", "GOV", "MOI", "ss1"),
        purpose="tax-assessment",
    )
    body = etree.Element("{http://population.moi.gov.ps/v1}getPerson")
    etree.SubElement(body, "nationalId").text = "401234567"
    request = soap.parse_request(soap.request_envelope(header, body))
    assert request.header == header
    assert request.body_namespace == "http://population.moi.gov.ps/v1"
    no_class = soap.XRoadHeader(**{**_fields(header), "represented_party": "42"})
    assert soap.parse_request(soap.request_envelope(no_class, body)).header == no_class


def _fields(header: soap.XRoadHeader) -> dict[str, object]:
    return {name: getattr(header, name) for name in header.__slots__}


# --- refusals: exact codes -----------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">
<SOAP-ENV:Body><x>&lol9;</x></SOAP-ENV:Body></SOAP-ENV:Envelope>"""

XXE = edit(
    b'<?xml version="1.0" encoding="UTF-8"?>',
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
).replace(b"<exampleInput>foo", b"<exampleInput>&xxe;")

PARAMETER_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/x.dtd">'
    b"%remote;]><e/>"
)


def nested(depth: int) -> bytes:
    inner = b"<a>" * depth + b"x" + b"</a>" * depth
    return edit(b"<exampleInput>foo</exampleInput>", inner)


NEXT = b"http://schemas.xmlsoap.org/soap/actor/next"


def with_block(attributes: bytes, name: bytes = b"t:token", ns: bytes = b"urn:x:t") -> bytes:
    """ANNEX_E1 with one more header block carrying ``attributes``."""
    block = b"<%s xmlns:t='%s' %s>x</%s>" % (name, ns, attributes, name)
    return edit(b"</SOAP-ENV:Header>", block + b"</SOAP-ENV:Header>")


BAD = [
    pytest.param(
        with_block(b"SOAP-ENV:mustUnderstand='1' SOAP-ENV:actor='%s'" % NEXT),
        "Client.MustUnderstand",
        "must be understood by the next SOAP node, the security server",
        id="must-understand-for-the-security-server",
    ),
    pytest.param(
        with_block(
            b"SOAP-ENV:mustUnderstand='1' SOAP-ENV:actor='%s'" % NEXT,
            name=b"t:somethingElse",
            ns=b"http://x-road.eu/xsd/xroad.xsd",
        ),
        "Client.MustUnderstand",
        "must be understood by the next SOAP node",
        id="must-understand-unknown-x-road-block",
    ),
    pytest.param(
        with_block(b"SOAP-ENV:mustUnderstand='true'"),
        "Client.InvalidSoap",
        "mustUnderstand must be",
        id="must-understand-not-0-or-1",
    ),
    pytest.param(b"", "Client.InvalidXml", "empty", id="empty"),
    pytest.param(b"   \n", "Client.InvalidXml", "empty", id="blank"),
    pytest.param(b"not xml at all", "Client.InvalidXml", "malformed XML", id="not-xml"),
    pytest.param(ANNEX_E1[:-40], "Client.InvalidXml", "malformed XML", id="truncated"),
    pytest.param(
        edit(b"</xrd:client>", b""), "Client.InvalidXml", "malformed XML", id="unclosed-element"
    ),
    pytest.param(BILLION_LAUGHS, "Client.InvalidXml", "DOCTYPE", id="billion-laughs"),
    pytest.param(XXE, "Client.InvalidXml", "DOCTYPE", id="xxe-external-entity"),
    pytest.param(PARAMETER_ENTITY, "Client.InvalidXml", "DOCTYPE", id="xxe-parameter-entity"),
    pytest.param(
        b'<?xml version="1.0"?><!DOCTYPE Envelope SYSTEM "http://127.0.0.1:9/e.dtd"><e/>',
        "Client.InvalidXml",
        "DOCTYPE",
        id="external-dtd",
    ),
    pytest.param(
        BILLION_LAUGHS.replace(
            b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="UTF-16"?>'
        ),
        "Client.InvalidXml",
        "only UTF-8",
        id="doctype-in-declared-utf16",
    ),
    pytest.param(
        BILLION_LAUGHS.decode().encode("utf-16"), "Client.InvalidXml", "UTF-8", id="utf16-bomb"
    ),
    pytest.param(b"<a>\xff</a>", "Client.InvalidXml", "UTF-8", id="invalid-utf8"),
    pytest.param(
        BILLION_LAUGHS.decode().encode("utf-16-le"),
        "Client.InvalidXml",
        "NUL byte",
        id="utf16-without-bom-bomb",
    ),
    pytest.param(b"<a>\x00</a>", "Client.InvalidXml", "NUL byte", id="nul-byte"),
    pytest.param(
        edit(b"<exampleInput>foo", b"<exampleInput>&undefined;"),
        "Client.InvalidXml",
        "malformed XML",
        id="undefined-entity",
    ),
    pytest.param(nested(70), "Client.InvalidXml", "deeper than 64", id="too-deep"),
    pytest.param(nested(300), "Client.InvalidXml", "", id="libxml2-depth-limit"),
    pytest.param(b"<a/>", "Client.InvalidSoap", "not a SOAP Envelope", id="not-an-envelope"),
    pytest.param(
        ANNEX_E1.replace(
            b"http://schemas.xmlsoap.org/soap/envelope/", b"http://www.w3.org/2003/05/soap-envelope"
        ),
        "Client.InvalidSoap",
        "SOAP 1.2",
        id="soap-1.2",
    ),
    pytest.param(
        ANNEX_E1.replace(b"http://schemas.xmlsoap.org/soap/envelope/", b"urn:wrong"),
        "Client.InvalidSoap",
        "envelope namespace",
        id="wrong-envelope-namespace",
    ),
    pytest.param(
        edit(b"<SOAP-ENV:Body>", b"<SOAP-ENV:Extra/><SOAP-ENV:Body>"),
        "Client.InvalidSoap",
        "optional Header",
        id="extra-envelope-child",
    ),
    pytest.param(
        edit(b"<SOAP-ENV:Body>", b"text<SOAP-ENV:Body>"),
        "Client.InvalidSoap",
        "unexpected text",
        id="stray-text",
    ),
    pytest.param(
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Header/></e:Envelope>',
        "Client.MissingBody",
        "no Body",
        id="no-body",
    ),
    pytest.param(
        edit(b"</SOAP-ENV:Body>", b"<second/></SOAP-ENV:Body>"),
        "Client.InvalidBody",
        "exactly one element",
        id="two-body-elements",
    ),
    pytest.param(
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>',
        "Client.MissingHeaderField",
        "'client'",
        id="no-header",
    ),
    pytest.param(
        ANNEX_E1.replace(
            b"http://x-road.eu/xsd/xroad.xsd", b"http://x-road.eu/xsd/xroad-wrong.xsd"
        ),
        "Client.MissingHeaderField",
        "'client'",
        id="wrong-xroad-namespace",
    ),
    pytest.param(
        edit(b"<xrd:id>4894e35d-bf0f-44a6-867a-8e51f1daa7e0</xrd:id>", b""),
        "Client.MissingHeaderField",
        "'id'",
        id="missing-id",
    ),
    pytest.param(
        edit(b"<xrd:protocolVersion>4.0</xrd:protocolVersion>", b""),
        "Client.MissingHeaderField",
        "'protocolVersion'",
        id="missing-protocol-version",
    ),
    pytest.param(
        ANNEX_E1.replace(b"</xrd:service>", b"</xrd:x>").replace(b"<xrd:service ", b"<xrd:x "),
        "Client.MissingHeaderField",
        "'service'",
        id="missing-service",
    ),
    pytest.param(
        edit(b"<xrd:issue>", b"<xrd:id>again</xrd:id><xrd:issue>"),
        "Client.DuplicateHeaderField",
        "'id'",
        id="duplicate-id",
    ),
    pytest.param(
        edit(b"<xrd:protocolVersion>4.0<", b"<xrd:protocolVersion>3.1<"),
        "Client.InvalidProtocolVersion",
        "'3.1'",
        id="protocol-3.1",
    ),
    pytest.param(
        edit(b"<xrd:protocolVersion>4.0<", b"<xrd:protocolVersion>4.1<"),
        "Client.InvalidProtocolVersion",
        "'4.1'",
        id="protocol-4.1",
    ),
    pytest.param(
        edit(b'<xrd:client id:objectType="SUBSYSTEM">', b'<xrd:client id:objectType="SERVER">'),
        "Client.InvalidClientIdentifier",
        "objectType 'SERVER'",
        id="client-object-type",
    ),
    pytest.param(
        edit(b'<xrd:client id:objectType="SUBSYSTEM">', b"<xrd:client>"),
        "Client.InvalidClientIdentifier",
        "lacks the attribute id:objectType",
        id="client-no-object-type",
    ),
    pytest.param(
        edit(b'<xrd:client id:objectType="SUBSYSTEM">', b'<xrd:client objectType="SUBSYSTEM">'),
        "Client.InvalidClientIdentifier",
        "lacks the attribute id:objectType",
        id="object-type-unqualified",
    ),
    pytest.param(
        edit(b'<xrd:client id:objectType="SUBSYSTEM">', b'<xrd:client id:objectType="MEMBER">'),
        "Client.InvalidClientIdentifier",
        "in that order",
        id="member-with-subsystem-code",
    ),
    pytest.param(
        edit(b"<id:memberCode>MEMBER1</id:memberCode>", b"<id:memberCode>MEMBER 1</id:memberCode>"),
        "Client.InvalidClientIdentifier",
        "invalid client memberCode",
        id="client-code-with-space",
    ),
    pytest.param(
        edit(b"<id:memberClass>GOV</id:memberClass>", b"<memberClass>GOV</memberClass>"),
        "Client.InvalidClientIdentifier",
        "in that order",
        id="identifier-part-wrong-namespace",
    ),
    pytest.param(
        edit(b'<xrd:service id:objectType="SERVICE">', b'<xrd:service id:objectType="SUBSYSTEM">'),
        "Client.InvalidServiceIdentifier",
        "objectType 'SUBSYSTEM'",
        id="service-object-type",
    ),
    pytest.param(
        edit(b"<id:subsystemCode>SUBSYSTEM2</id:subsystemCode>", b""),
        "Client.InvalidServiceIdentifier",
        "no subsystemCode",
        id="member-level-service",
    ),
    pytest.param(
        edit(b"<id:serviceCode>exampleService</id:serviceCode>", b""),
        "Client.InvalidServiceIdentifier",
        "in that order",
        id="service-without-code",
    ),
    pytest.param(
        edit(
            b"<xrd:id>",
            b'<xrd:centralService id:objectType="CENTRALSERVICE"><id:xRoadInstance>EE'
            b"</id:xRoadInstance><id:serviceCode>c</id:serviceCode></xrd:centralService><xrd:id>",
        ),
        "Client.InvalidServiceIdentifier",
        "central services",
        id="central-service",
    ),
    pytest.param(
        edit(b"<xrd:id>4894e35d-bf0f-44a6-867a-8e51f1daa7e0<", b"<xrd:id>has space<"),
        "Client.InvalidHeader",
        "invalid X-Road id",
        id="bad-message-id",
    ),
    pytest.param(
        edit(b"<xrd:userId>EE12345678901<", b"<xrd:userId><b>x</b><"),
        "Client.InvalidHeader",
        "text only",
        id="user-id-with-element",
    ),
    pytest.param(
        edit(b"<xrd:userId>EE12345678901<", b"<xrd:userId>" + b"u" * 1025 + b"<"),
        "Client.InvalidHeader",
        "1-1024 printable",
        id="user-id-too-long",
    ),
    pytest.param(
        edit(b"<xrd:issue>12345<", b"<xrd:issue>a&#1;b<"),
        "Client.InvalidXml",
        "malformed XML",
        id="control-char-reference",
    ),
    pytest.param(
        edit(
            b"</SOAP-ENV:Header>",
            b"<ext:purpose xmlns:ext='urn:exchange:xroad-ext:1'/></SOAP-ENV:Header>",
        ),
        "Client.InvalidHeader",
        "'purpose'",
        id="empty-purpose",
    ),
    pytest.param(
        edit(
            b"</SOAP-ENV:Header>",
            b"<xrd:securityServer id:objectType='SERVER'><id:xRoadInstance>EE</id:xRoadInstance>"
            b"</xrd:securityServer></SOAP-ENV:Header>",
        ),
        "Client.InvalidSecurityServer",
        "in that order",
        id="bad-security-server",
    ),
    pytest.param(
        edit(
            b"</SOAP-ENV:Header>",
            b"<r:representedParty xmlns:r='http://x-road.eu/xsd/representation.xsd'>"
            b"<r:partyClass>COM</r:partyClass></r:representedParty></SOAP-ENV:Header>",
        ),
        "Client.InvalidHeader",
        "partyCode",
        id="represented-party-without-code",
    ),
    pytest.param(
        edit(b"<ns1:exampleService>", b"<ns1:otherService>").replace(
            b"</ns1:exampleService>", b"</ns1:otherService>"
        ),
        "Client.InvalidBody",
        "does not match the service code",
        id="body-not-service-code",
    ),
    pytest.param(
        edit(b"<ns1:exampleService>", b"<ns1:exampleServiceResponse>").replace(
            b"</ns1:exampleService>", b"</ns1:exampleServiceResponse>"
        ),
        "Client.InvalidBody",
        "does not match the service code",
        id="body-is-a-response",
    ),
    pytest.param(
        edit(b"<ns1:exampleService>", b"")
        .replace(b"</ns1:exampleService>", b"")
        .replace(b"<exampleInput>foo</exampleInput>", b""),
        "Client.MissingBody",
        "Body is empty",
        id="empty-body",
    ),
]


@pytest.mark.parametrize(("data", "code", "words"), BAD)
def test_bad_requests_are_refused_with_their_code(data: bytes, code: str, words: str) -> None:
    with pytest.raises(ClientError) as caught:
        soap.parse_request(data)
    assert caught.value.code == code, caught.value.message
    assert words in caught.value.message


@pytest.mark.parametrize(
    "attributes",
    [
        b"SOAP-ENV:mustUnderstand='1'",  # for the ultimate recipient: the service answers for it
        b"SOAP-ENV:mustUnderstand='0' SOAP-ENV:actor='%s'" % NEXT,
        b"SOAP-ENV:mustUnderstand='1' SOAP-ENV:actor='urn:some:other:node'",
    ],
    ids=["for-the-service", "optional-for-the-security-server", "for-another-node"],
)
def test_must_understand_blocks_the_security_server_need_not_process_pass(
    attributes: bytes,
) -> None:
    assert soap.parse_request(with_block(attributes)).header.message_id


def test_must_understand_x_road_fields_for_the_security_server_pass() -> None:
    marked = edit(
        b"<xrd:protocolVersion>",
        b"<xrd:protocolVersion SOAP-ENV:mustUnderstand='1' SOAP-ENV:actor='%s'>" % NEXT,
    )
    assert soap.parse_request(marked).header.protocol_version == "4.0"


def test_oversize_is_refused_before_parsing() -> None:
    with pytest.raises(ClientError) as caught:
        soap.parse_request(ANNEX_E1, max_bytes=len(ANNEX_E1) - 1)
    assert caught.value.code == "Client.RequestTooLarge"
    assert caught.value.status == 413
    assert soap.parse_request(ANNEX_E1, max_bytes=len(ANNEX_E1)).header.message_id


def test_depth_within_the_limit_parses() -> None:
    assert soap.parse_request(nested(soap.MAX_DEPTH - 5)).body_name == "exampleService"


def test_bom_and_declared_utf8_are_accepted() -> None:
    assert soap.parse_request(b"\xef\xbb\xbf" + ANNEX_E1).header.issue == "12345"
    latin = edit(b'encoding="UTF-8"', b'encoding="ISO-8859-1"')
    with pytest.raises(ClientError, match="only UTF-8"):
        soap.parse_request(latin)


# --- SOAP with attachments -----------------------------------------------------------------------


def test_swa_first_part_is_the_envelope_byte_for_byte() -> None:
    envelope = ANNEX_E1.replace(b"\n", b"\r\n")
    part = soap.soap_part(ANNEX_F_TYPE, swa(envelope))
    assert part.multipart
    assert part.envelope == envelope
    assert soap.parse_request(part.envelope).header.message_id


def test_plain_xml_is_its_own_soap_part() -> None:
    part = soap.soap_part("text/xml; charset=utf-8", ANNEX_E1)
    assert (part.envelope, part.multipart) == (ANNEX_E1, False)


@pytest.mark.parametrize(
    ("content_type", "body", "code", "words"),
    [
        pytest.param(
            "application/soap+xml",
            ANNEX_E1,
            "Client.InvalidContentType",
            "not SOAP 1.1",
            id="soap12-type",
        ),
        pytest.param(
            "application/json", b"{}", "Client.InvalidContentType", "not SOAP 1.1", id="json"
        ),
        pytest.param(
            "multipart/related",
            swa(ANNEX_E1),
            "Client.MimeParsingFailed",
            "boundary",
            id="no-boundary",
        ),
        pytest.param(ANNEX_F_TYPE, b"garbage", "Client.MimeParsingFailed", "", id="no-parts"),
        pytest.param(
            ANNEX_F_TYPE,
            ATTACHMENT_PART,
            "Client.MimeParsingFailed",
            "first part must be the SOAP envelope",
            id="attachment-first",
        ),
        pytest.param(
            ANNEX_F_TYPE,
            swa(
                base64.b64encode(ANNEX_E1),
                soap_headers=b"Content-Type: text/xml\r\nContent-Transfer-Encoding: base64\r\n",
            ),
            "Client.MimeParsingFailed",
            "8bit",
            id="soap-part-base64",
        ),
    ],
)
def test_bad_multipart_is_refused(content_type: str, body: bytes, code: str, words: str) -> None:
    with pytest.raises(ClientError) as caught:
        soap.soap_part(content_type, body)
    assert caught.value.code == code
    assert words in caught.value.message


# --- responses, requestHash and faults -----------------------------------------------------------


def backend_response(request: bytes = ANNEX_E1, *, echo: bool = True) -> bytes:
    root = etree.fromstring(request)
    body = root[1]
    body.remove(body[0])
    out = etree.SubElement(body, "{http://producer.x-road.eu}exampleServiceResponse")
    etree.SubElement(out, "exampleOutput").text = "bar"
    if not echo:
        root.remove(root[0])
    return etree.tostring(root)


@pytest.mark.parametrize("echo", [True, False], ids=["service-echoes", "service-forgets-header"])
def test_finished_response_echoes_the_header_and_carries_request_hash(echo: bool) -> None:
    request = soap.parse_request(ANNEX_E1)
    response = soap.parse_response(backend_response(echo=echo))
    assert response.fault is None
    soap.check_echo(response, request)
    finished = soap.parse_response(soap.finish_response(response, request))
    value, algorithm = soap.response_request_hash(finished)
    assert algorithm == "http://www.w3.org/2001/04/xmlenc#sha512"
    assert value == base64.b64encode(hashlib.sha512(ANNEX_E1).digest()).decode()
    soap.check_echo(finished, request)
    assert finished.header is not None
    names = [etree.QName(el).localname for el in finished.header]
    assert names == ["client", "service", "id", "userId", "issue", "protocolVersion", "requestHash"]
    assert etree.QName(finished.body).localname == "exampleServiceResponse"


def test_a_request_hash_from_the_service_is_replaced() -> None:
    request = soap.parse_request(ANNEX_E1)
    forged = backend_response().replace(
        b"</SOAP-ENV:Header>",
        b'<xrd:requestHash algorithmId="urn:md5">Zm9yZ2Vk</xrd:requestHash></SOAP-ENV:Header>',
    )
    finished = soap.parse_response(soap.finish_response(soap.parse_response(forged), request))
    assert soap.response_request_hash(finished) == (
        soap.request_hash(ANNEX_E1),
        soap.REQUEST_HASH_ALGORITHM_ID,
    )
    assert finished.header is not None
    assert len(finished.header.findall(f"{{{soap.XROAD_NS}}}requestHash")) == 1


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        pytest.param(b"MEMBER1<", b"MEMBER9<", "client", id="client"),
        pytest.param(b">exampleService<", b">otherService<", "service", id="service"),
        pytest.param(b"4894e35d-", b"00000000-", "id", id="id"),
    ],
)
def test_echo_mismatch_is_inconsistent(old: bytes, new: bytes, field: str) -> None:
    request = soap.parse_request(ANNEX_E1)
    response = soap.parse_response(backend_response().replace(old, new, 1))
    with pytest.raises(ClientError) as caught:
        soap.check_echo(response, request)
    assert caught.value.code == "Client.InconsistentHeaders"
    assert field in caught.value.message


def test_fault_envelope_round_trips_and_is_annex_d_shaped() -> None:
    data = soap.fault_envelope("Server.ServerProxy.AccessDenied", "denied \x00 here", "d-1")
    response = soap.parse_response(data)
    assert response.fault == soap.SoapFault(
        "Server.ServerProxy.AccessDenied", "denied \ufffd here", "d-1"
    )
    assert soap.fault_code(response.fault) == "Server.ServerProxy.AccessDenied"
    assert soap.fault_code(soap.SoapFault("SOAP-ENV:Server", "", None)) == "Server"
    root = etree.fromstring(data)
    assert root.tag == f"{{{soap.SOAP_ENV_NS}}}Envelope"
    assert [el.tag for el in root[0][0]] == ["faultcode", "faultstring", "detail"]


def test_fault_without_faultcode_is_invalid() -> None:
    data = (
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><e:Fault>'
        b"<faultstring>x</faultstring></e:Fault></e:Body></e:Envelope>"
    )
    with pytest.raises(ClientError) as caught:
        soap.parse_response(data)
    assert caught.value.code == "Client.InvalidSoap"


# --- the parser's contract: parse or Client.* ----------------------------------------------------


def _parse_or_client_error(data: bytes) -> None:
    try:
        soap.parse_request(data)
    except ClientError as exc:
        assert exc.code.startswith("Client."), exc.code
    try:
        soap.parse_response(data)
    except ClientError as exc:
        assert exc.code.startswith("Client."), exc.code


@given(st.binary(max_size=2048))
def test_any_bytes_parse_or_raise_a_client_error(data: bytes) -> None:
    _parse_or_client_error(data)


@given(
    st.lists(
        st.tuples(st.integers(0, len(ANNEX_E1) - 1), st.binary(min_size=0, max_size=4)),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_envelopes_parse_or_raise_a_client_error(edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(ANNEX_E1)
    for position, replacement in edits:
        at = min(position, len(data))
        data[at : at + len(replacement)] = replacement
    _parse_or_client_error(bytes(data))


@given(st.text(max_size=200), st.binary(max_size=300))
def test_any_multipart_parses_or_raises_a_client_error(params: str, body: bytes) -> None:
    try:
        soap.soap_part("multipart/related; " + params, body)
    except ClientError as exc:
        assert exc.code.startswith("Client.")


def test_replacing_the_soap_part_keeps_everything_else() -> None:
    envelope = ANNEX_E1.replace(b"\n", b"\r\n")
    message = b"preamble\r\n" + swa(envelope)
    replaced = soap.replace_soap_part(ANNEX_F_TYPE, message, b"<new/>")
    assert replaced == message.replace(envelope, b"<new/>")
    assert soap.soap_part(ANNEX_F_TYPE, replaced).envelope == b"<new/>"


def test_replacing_needs_crlf_line_ends() -> None:
    message = swa(ANNEX_E1).replace(b"\r\n", b"\n")
    assert soap.soap_part(ANNEX_F_TYPE, message).envelope  # the MIME parser reads it
    with pytest.raises(ClientError) as caught:
        soap.replace_soap_part(ANNEX_F_TYPE, message, b"<new/>")
    assert caught.value.code == "Client.MimeParsingFailed"
