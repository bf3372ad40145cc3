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
from exchange.identifiers import SecurityServerId, ServiceId, SubsystemId
from exchange.protocol import fields, forwarding, soap
from exchange.protocol.canonical import canonical_bytes
from exchange.protocol.fields import FieldError
from exchange.protocol.forwarding import is_end_to_end
from exchange.protocol.messages import SignedRequest, SignedResponse, body_digest
from exchange.protocol.rest import end_to_end_headers, parse_method, parse_xroad_headers
from exchange.protocol.syntax import LAYOUT_CONTROLS, is_field_value, is_text, is_token

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


# --- fuzz: each validator passes or raises its documented error, and the sides agree -----------

header_names = st.sampled_from(
    [
        "Accept",
        "Content-Type",
        "Connection",
        "content-length",
        "Transfer-Encoding",
        "TE",
        "Upgrade",
        "Keep-Alive",
        "Proxy-Authorization",
        "Proxy-Anything",
        "X-Custom",
        "x-custom",
        "Host",
        "X-Road-Client",
        "X-Road-Anything",
    ]
) | st.text(max_size=12)
header_values = st.text(max_size=30) | st.sampled_from(["close", "x-custom", "keep-alive, accept"])
any_headers = st.lists(st.tuples(header_names, header_values), max_size=8)


@given(headers=any_headers)
def test_end_to_end_headers_are_client_errors_or_travel_and_the_provider_takes_them(
    headers: list[tuple[str, str]],
) -> None:
    try:
        kept = end_to_end_headers(headers)
    except ClientError as exc:
        assert (exc.code, exc.status) == ("Client.InvalidHeader", 400)
        return
    named = {
        option.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for option in value.split(",")
    }
    for name, _ in kept:
        assert name == name.lower() and is_end_to_end(name) and name not in named
    # what the consumer keeps and signs, the provider accepts
    forwarding.check_signed_headers([(n, v) for n, v in kept])
    doc = SignedRequest.from_payload(signed(headers=kept))
    assert list(doc.headers) == kept


def _end_to_end_read_literally(headers: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """RFC 9110 §7.6.1 and PR-REST §4.3 as written: drop what never travels and what the
    ``Connection`` header names; every header left must be HTTP (``None``: one is not)."""
    named = {
        option.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for option in value.split(",")
    }
    kept = [(n, v) for n, v in headers if is_end_to_end(n.lower()) and n.lower() not in named]
    if not all(is_token(n) and is_field_value(v) for n, v in kept):
        return None
    return [(n.lower(), v) for n, v in kept]


@given(headers=any_headers)
def test_end_to_end_is_the_rule_read_literally(headers: list[tuple[str, str]]) -> None:
    expected = _end_to_end_read_literally(headers)
    if expected is None:
        with pytest.raises(FieldError):
            forwarding.end_to_end(headers)
    else:
        assert forwarding.end_to_end(headers) == expected


_PRINTABLE_OR_NOT = st.text(
    alphabet=st.characters(codec=None)
    | st.sampled_from(LAYOUT_CONTROLS + "\x00\x1f\x7f\x80\x9f\xa0\ud7ff\ud800\udfff\ue000\uffff"),
    max_size=6,
)


@given(text=_PRINTABLE_OR_NOT)
def test_header_values_and_text_are_their_definitions(text: str) -> None:
    """One character class each (the hot path runs one match), as the docstrings define them."""
    value = all(0x20 <= ord(c) <= 0x7E or 0xA0 <= ord(c) <= 0xFFFF for c in text) and not any(
        0xD800 <= ord(c) <= 0xDFFF for c in text
    )
    assert is_field_value(text) == value
    assert is_text(text) == (value and not any(c in LAYOUT_CONTROLS for c in text))


@given(status=st.integers())
def test_a_status_is_final_or_refused(status: int) -> None:
    try:
        assert forwarding.check_status(status) == status
    except FieldError:
        assert not 200 <= status <= 599


@given(method=st.text(max_size=40))
def test_a_method_is_accepted_by_both_sides_or_by_neither(method: str) -> None:
    try:
        parse_method(method)
        consumer = True
    except ClientError as exc:
        assert exc.code == "Client.BadRequest"
        consumer = False
    try:
        SignedRequest.from_payload(signed(method=method))
        provider = True
    except ExchangeError as exc:
        assert exc.code == INVALID_MESSAGE
        provider = False
    assert consumer == provider


xroad_text = st.none() | st.text(max_size=30) | st.sampled_from(["", " ", "clerk 17", "أمل"])


@given(
    user_id=xroad_text,
    purpose=xroad_text,
    issue=xroad_text,
    party=xroad_text,
    message_id=xroad_text,
    method=st.sampled_from(["GET", "POST", "get", "M-SEARCH", "PATCH "]),
    headers=any_headers,
)
def test_whatever_the_rest_consumer_signs_the_provider_accepts_unchanged(
    user_id: str | None,
    purpose: str | None,
    issue: str | None,
    party: str | None,
    message_id: str | None,
    method: str,
    headers: list[tuple[str, str]],
) -> None:
    """The end-to-end property: the consumer's parsing of a whole request (method, X-Road
    headers, forwarded headers) either refuses it with a Client.* error, or yields a signed
    request the provider's from_payload accepts and reads back field for field."""
    given_headers = [CLIENT, *headers]
    for name, value in (
        ("X-Road-UserId", user_id),
        ("X-Road-Purpose", purpose),
        ("X-Road-Issue", issue),
        ("X-Road-Represented-Party", party),
        ("X-Road-Id", message_id),
    ):
        if value is not None:
            given_headers.append((name, value))
    try:
        checked_method = parse_method(method)
        xh = parse_xroad_headers(given_headers)
        forwarded = tuple(end_to_end_headers(given_headers))
    except ClientError as exc:
        assert exc.code.startswith("Client.")
        return
    request = SignedRequest(
        message_id=xh.message_id,
        client=SubsystemId("PS", "GOV", "MOF", "tax-office"),
        service=ServiceId("PS", "GOV", "MOI", "population-registry", "persons"),
        method=checked_method,
        path="/123",
        query="",
        headers=forwarded,
        body_sha256=body_digest(b"")["sha256"],
        body_length=0,
        user_id=xh.user_id,
        purpose=xh.purpose,
        issue=xh.issue,
        represented_party=xh.represented_party,
        security_server=SecurityServerId("PS", "GOV", "MOI", "ss1"),
        client_server=SecurityServerId("PS", "GOV", "MOF", "ss1"),
        timestamp_ms=1_700_000_000_000,
    )
    assert SignedRequest.from_payload(request.canonical()) == request


@given(value=st.text(max_size=40), element=st.sampled_from(["xrd:userId", "xrd:issue", "xrd:id"]))
def test_any_soap_header_text_parses_or_is_a_client_error(value: str, element: str) -> None:
    try:
        envelope = soap_request(element, value)
    except UnicodeEncodeError:
        return  # a lone surrogate: no information system can send it
    try:
        header = soap.parse_request(envelope).header
    except ClientError as exc:
        assert exc.code.startswith("Client.")
        return
    kept = {"xrd:userId": header.user_id, "xrd:issue": header.issue, "xrd:id": header.message_id}
    signed_field = {"xrd:userId": "user_id", "xrd:issue": "issue", "xrd:id": "id"}[element]
    SignedRequest.from_payload(signed(**{signed_field: kept[element]}))


@given(headers=any_headers, status=st.integers(min_value=-10, max_value=1100))
def test_whatever_the_provider_passes_on_from_a_backend_the_consumer_accepts(
    headers: list[tuple[str, str]], status: int
) -> None:
    """The backend's answer as the provider passes it on (``forwarding.end_to_end`` and
    ``check_status``, else ServiceFailed) is a signed response the consumer reads back unchanged;
    nothing it would refuse is ever signed by an honest provider."""
    try:
        kept = tuple(forwarding.end_to_end(headers))
        forwarding.check_status(status)
    except FieldError:
        return
    response = SignedResponse(
        message_id="m-1",
        request_id="r-1",
        request_hash="aGFzaA==",
        status=status,
        headers=kept,
        body_sha256=body_digest(b"")["sha256"],
        body_length=0,
        error_type=None,
        error_message=None,
        policy_version=None,
        released_fields=None,
        timestamp_ms=1_700_000_000_000,
    )
    assert SignedResponse.from_payload(response.canonical()) == response
