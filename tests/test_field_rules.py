"""One validation for both sides (issue 13, finding 5): the X-Road fields of a request obey the
same rules (exchange.protocol.fields) whether an information system sends them to the consumer
(REST headers, SOAP header) or a peer security server signed them (SignedRequest.from_payload).

Each bad value is tried three ways and refused each time with that side's code; property tests
show that the consumer never signs what the provider would refuse, and that what the provider
accepts the consumer accepts unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Any
from xml.sax.saxutils import escape

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import ClientError, ExchangeError
from exchange.protocol import fields, soap
from exchange.protocol.canonical import canonical_bytes
from exchange.protocol.fields import FieldError
from exchange.protocol.messages import SignedRequest, body_digest
from exchange.protocol.rest import parse_method, parse_xroad_headers

CLIENT = ("X-Road-Client", "PS/GOV/MOF/tax-office")
INVALID_MESSAGE = "Server.ServerProxy.InvalidMessage"

REQUEST: dict[str, Any] = {
    "v": 1,
    "type": "request",
    "protocol": "rest",
    "id": "m-1",
    "client": "PS/GOV/MOF/tax-office",
    "service": "PS/GOV/MOI/population-registry/persons",
    "method": "GET",
    "path": "/123",
    "query": "",
    "headers": [],
    "body": body_digest(b""),
    "user_id": None,
    "purpose": None,
    "issue": None,
    "represented_party": None,
    "security_server": "PS/GOV/MOI/ss1",
    "client_server": "PS/GOV/MOF/ss1",
    "ts": 1_700_000_000_000,
}

# field of the signed request -> (REST header, SOAP header element)
WHERE = {
    "id": ("X-Road-Id", "xrd:id"),
    "user_id": ("X-Road-UserId", "xrd:userId"),
    "issue": ("X-Road-Issue", "xrd:issue"),
    "purpose": ("X-Road-Purpose", "ext:purpose"),
}


def soap_request(element: str, value: str) -> bytes:
    """A SOAP request whose header holds ``element`` with ``value`` (an id of its own unless
    ``element`` is the id)."""
    blocks = {"xrd:id": "m-1", "xrd:protocolVersion": "4.0", element: value}
    header = "".join(f"<{name}>{escape(text)}</{name}>" for name, text in blocks.items())
    return f"""<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"
        xmlns:xrd="http://x-road.eu/xsd/xroad.xsd" xmlns:id="http://x-road.eu/xsd/identifiers"
        xmlns:ext="urn:exchange:xroad-ext:1"><SOAP-ENV:Header>
      <xrd:client id:objectType="SUBSYSTEM"><id:xRoadInstance>PS</id:xRoadInstance>
        <id:memberClass>GOV</id:memberClass><id:memberCode>MOF</id:memberCode>
        <id:subsystemCode>tax-office</id:subsystemCode></xrd:client>
      <xrd:service id:objectType="SERVICE"><id:xRoadInstance>PS</id:xRoadInstance>
        <id:memberClass>GOV</id:memberClass><id:memberCode>MOI</id:memberCode>
        <id:subsystemCode>population-registry</id:subsystemCode>
        <id:serviceCode>getPerson</id:serviceCode></xrd:service>{header}
    </SOAP-ENV:Header><SOAP-ENV:Body><getPerson/></SOAP-ENV:Body></SOAP-ENV:Envelope>""".encode()


def signed(**changes: Any) -> bytes:
    return canonical_bytes({**REQUEST, **changes})


BAD = [
    pytest.param("id", "x" * 100_000, id="id-100000-chars"),
    pytest.param("id", "x" * 256, id="id-256-chars"),
    pytest.param("id", "m 1", id="id-space"),
    pytest.param("id", "m-1\x1b[2J", id="id-escape-sequence"),
    pytest.param("user_id", "clerk\u2028Approved-by: minister", id="user-id-line-separator"),
    pytest.param("user_id", "clerk\u2029", id="user-id-paragraph-separator"),
    pytest.param("user_id", "\u202eklerc", id="user-id-right-to-left-override"),
    pytest.param("user_id", "clerk\u2066x\u2069", id="user-id-isolate"),
    pytest.param("user_id", "clerk\u200f", id="user-id-right-to-left-mark"),
    pytest.param("user_id", "clerk\x1b]8;;http://evil\x07", id="user-id-osc-hyperlink"),
    pytest.param("user_id", "clerk\x9b31m", id="user-id-c1-csi"),
    pytest.param("user_id", "x" * 1025, id="user-id-1025-chars"),
    pytest.param("purpose", "care\x00", id="purpose-nul"),
    pytest.param("purpose", "care\x7f", id="purpose-del"),
    pytest.param("purpose", "care\ufeff", id="purpose-zero-width-no-break-space"),
    pytest.param("issue", "case\x1b[31mred", id="issue-escape"),
]


@pytest.mark.parametrize(("field", "value"), BAD)
def test_the_consumer_refuses_it_from_rest(field: str, value: str) -> None:
    with pytest.raises(ClientError) as info:
        parse_xroad_headers([CLIENT, (WHERE[field][0], value)])
    assert (info.value.code, info.value.status) == ("Client.InvalidHeader", 400)


@pytest.mark.parametrize(("field", "value"), BAD)
def test_the_consumer_refuses_it_from_soap(field: str, value: str) -> None:
    if "\x00" in value or "\x1b" in value:
        pytest.skip("not a character XML 1.0 can hold: the XML parser refuses it already")
    with pytest.raises(ClientError) as info:
        soap.parse_request(soap_request(WHERE[field][1], value))
    assert info.value.code == "Client.InvalidHeader"


@pytest.mark.parametrize(("field", "value"), BAD)
def test_the_provider_refuses_it_signed(field: str, value: str) -> None:
    with pytest.raises(ExchangeError) as info:
        SignedRequest.from_payload(signed(**{field: value}))
    assert (info.value.code, info.value.status) == (INVALID_MESSAGE, 400)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        pytest.param({"id": ""}, "empty id", id="id-empty"),
        pytest.param({"user_id": ""}, "empty user id", id="user-id-empty"),
        pytest.param({"user_id": " clerk"}, "leading space", id="user-id-leading-space"),
        pytest.param({"method": "get"}, "lower-case method", id="method-lower-case"),
        pytest.param({"method": "Get"}, "mixed-case method", id="method-mixed-case"),
        pytest.param({"represented_party": "COM/"}, "empty part", id="party-empty-code"),
        pytest.param({"represented_party": "/42"}, "empty part", id="party-empty-class"),
    ],
)
def test_the_provider_refuses_what_no_consumer_signs(changes: dict[str, Any], why: str) -> None:
    with pytest.raises(ExchangeError) as info:
        SignedRequest.from_payload(signed(**changes))
    assert info.value.code == INVALID_MESSAGE, why


@pytest.mark.parametrize("method", ["get", "Get", "G ET", "", "X" * 33])
def test_the_consumer_refuses_a_method_the_provider_refuses(method: str) -> None:
    with pytest.raises(ClientError) as info:
        parse_method(method)
    assert info.value.code == "Client.BadRequest"
    with pytest.raises(ExchangeError):
        SignedRequest.from_payload(signed(method=method))


@pytest.mark.parametrize(
    ("header", "value"),
    [
        pytest.param("X-Road-UserId", "", id="empty-user-id"),
        pytest.param("X-Road-Purpose", "", id="empty-purpose"),
        pytest.param("X-Road-Represented-Party", "", id="empty-party"),
    ],
)
def test_an_empty_rest_header_is_absent(header: str, value: str) -> None:
    xh = parse_xroad_headers([CLIENT, (header, value)])
    assert (xh.user_id, xh.purpose, xh.represented_party) == (None, None, None)


def test_arabic_names_and_joiners_are_text() -> None:
    """Text fields carry any script, including the zero-width (non-)joiners Arabic and Persian
    spelling uses: only controls that change how text is shown are refused."""
    name = "أمل\u200cحداد موظف-17"
    xh = parse_xroad_headers([CLIENT, ("X-Road-UserId", name)])
    assert xh.user_id == name
    assert SignedRequest.from_payload(signed(user_id=name)).user_id == name


# --- properties: the consumer and the provider agree ----------------------------------------------

any_text = st.text(max_size=40)


@given(value=any_text, field=st.sampled_from(["user_id", "issue", "purpose"]))
def test_what_the_rest_consumer_accepts_the_provider_accepts(value: str, field: str) -> None:
    try:
        xh = parse_xroad_headers([CLIENT, (WHERE[field][0], value)])
    except ClientError:
        return
    kept = getattr(xh, field)
    if kept is not None:
        assert getattr(SignedRequest.from_payload(signed(**{field: kept})), field) == kept


@given(value=any_text, field=st.sampled_from(["id", "user_id", "issue", "purpose"]))
def test_what_the_provider_accepts_both_consumers_accept_unchanged(value: str, field: str) -> None:
    try:
        SignedRequest.from_payload(signed(**{field: value}))
    except ExchangeError:
        return
    xh = parse_xroad_headers([CLIENT, (WHERE[field][0], value)])
    assert getattr(xh, "message_id" if field == "id" else field) == value
    header = soap.parse_request(soap_request(WHERE[field][1], value)).header
    assert getattr(header, "message_id" if field == "id" else field) == value


@given(value=any_text)
def test_the_message_id_rule_is_the_same_on_both_sides(value: str) -> None:
    try:
        fields.message_id(value)
        valid = True
    except FieldError:
        valid = False
    try:
        parse_xroad_headers([CLIENT, ("X-Road-Id", value)])
        consumer = True
    except ClientError:
        consumer = False
    try:
        SignedRequest.from_payload(signed(id=value))
        provider = True
    except ExchangeError:
        provider = False
    # an empty X-Road-Id asks the consumer for a new one
    assert (consumer, provider) == (valid or value == "", valid)


@given(value=st.text(max_size=60) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_every_rule_passes_a_value_or_raises_field_error(value: str) -> None:
    for rule in (
        fields.message_id,
        fields.method,
        fields.represented_party,
        lambda v: fields.text(v, "user id"),
    ):
        with contextlib.suppress(FieldError):
            assert rule(value) == value
