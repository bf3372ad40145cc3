"""The consumer-side REST r1 protocol (docs/design.md §4): request targets, X-Road headers, and
which headers travel end to end. Every bad input is a ``Client.*`` error with its exact code."""

from __future__ import annotations

import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import BadRequest, ClientError
from exchange.identifiers import MemberId, SecurityServerId, ServiceId, SubsystemId
from exchange.protocol.fields import MAX_TEXT
from exchange.protocol.forwarding import HOP_BY_HOP, ORIGIN_HEADERS, is_end_to_end
from exchange.protocol.rest import (
    MAX_URI_LENGTH,
    RestRequestTarget,
    end_to_end_headers,
    parse_target,
    parse_xroad_headers,
)

PERSONS = ServiceId("PS", "GOV", "MOI", "population-registry", "persons")
BASE = "/r1/PS/GOV/MOI/population-registry/persons"
CLIENT = ("X-Road-Client", "PS/GOV/MOF/tax-office")
TAX_OFFICE = SubsystemId("PS", "GOV", "MOF", "tax-office")

# --- request targets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_path", "query", "expected"),
    [
        pytest.param(BASE, "", RestRequestTarget(PERSONS, "", ""), id="service-only"),
        pytest.param(BASE + "/", "", RestRequestTarget(PERSONS, "/", ""), id="trailing-slash"),
        pytest.param(
            BASE + "/123/address",
            "",
            RestRequestTarget(PERSONS, "/123/address", ""),
            id="rest-path",
        ),
        pytest.param(
            BASE,
            "name=J%C3%BCri&x=1",
            RestRequestTarget(PERSONS, "", "name=J%C3%BCri&x=1"),
            id="query",
        ),
        pytest.param(
            BASE + "/a%2Fb/%20c",
            "q=1",
            RestRequestTarget(PERSONS, "/a%2Fb/%20c", "q=1"),
            id="rest-path-kept-raw",
        ),
        pytest.param(
            "/r1/PS/GOV/MOI/population%2Dregistry/%70ersons",
            "",
            RestRequestTarget(PERSONS, "", ""),
            id="encoded-identifier-parts",
        ),
        pytest.param(
            "/r1/PS/GOV/MOI/population-registry/persons//x",
            "",
            RestRequestTarget(PERSONS, "//x", ""),
            id="empty-rest-segment",
        ),
    ],
)
def test_targets(raw_path: str, query: str, expected: RestRequestTarget) -> None:
    assert parse_target(raw_path, query) == expected


@pytest.mark.parametrize(
    ("raw_path", "query", "code", "status"),
    [
        pytest.param(
            "/r2/PS/GOV/MOI/population-registry/persons",
            "",
            "Client.InvalidProtocolVersion",
            400,
            id="r2",
        ),
        pytest.param(
            "/R1/PS/GOV/MOI/population-registry/persons",
            "",
            "Client.InvalidProtocolVersion",
            400,
            id="uppercase-r1",
        ),
        pytest.param(
            "r1/PS/GOV/MOI/sub/svc", "", "Client.InvalidProtocolVersion", 400, id="no-slash"
        ),
        pytest.param(
            "//r1/PS/GOV/MOI/sub/svc", "", "Client.InvalidProtocolVersion", 400, id="double-slash"
        ),
        pytest.param("", "", "Client.InvalidProtocolVersion", 400, id="empty"),
        pytest.param("/", "", "Client.InvalidProtocolVersion", 400, id="root"),
        pytest.param("/listClients", "", "Client.InvalidProtocolVersion", 400, id="other-path"),
        pytest.param("/r1", "", "Client.InvalidServiceIdentifier", 400, id="r1-only"),
        pytest.param("/r1/", "", "Client.InvalidServiceIdentifier", 400, id="r1-slash"),
        pytest.param(
            "/r1/PS/GOV/MOI", "", "Client.InvalidServiceIdentifier", 400, id="member-only"
        ),
        pytest.param(
            "/r1/PS/GOV/MOI/population-registry",
            "",
            "Client.InvalidServiceIdentifier",
            400,
            id="subsystem-only",
        ),
        pytest.param(
            "/r1/PS/GOV/MOI/population-registry/",
            "",
            "Client.InvalidServiceIdentifier",
            400,
            id="empty-service-code",
        ),
        pytest.param(
            "/r1/PS//MOI/population-registry/persons",
            "",
            "Client.InvalidServiceIdentifier",
            400,
            id="empty-class",
        ),
        pytest.param(
            "/r1/PS/GOV/M OI/population-registry/persons",
            "",
            "Client.InvalidServiceIdentifier",
            400,
            id="space",
        ),
        pytest.param(
            "/r1/PS/GOV/M%20OI/population-registry/persons",
            "",
            "Client.InvalidServiceIdentifier",
            400,
            id="encoded-space",
        ),
        pytest.param(
            "/r1/PS/GOV/MOI/population%2Fregistry/persons",
            "",
            "Client.InvalidServiceIdentifier",
            400,
            id="encoded-slash",
        ),
        pytest.param(
            "/r1/PS/GOV/MOI/population-registry/pers%ffons",
            "",
            "Client.InvalidServiceIdentifier",
            400,
            id="invalid-utf8",
        ),
        pytest.param(
            "/r1/PS/GOV/MÖI/population-registry/persons",
            "",
            "Client.InvalidServiceIdentifier",
            400,
            id="unicode",
        ),
        pytest.param(
            "/r1/PS/GOV/MOI/population-registry/pers#ons",
            "",
            "Client.InvalidServiceIdentifier",
            400,
            id="hash",
        ),
        pytest.param(
            "/r1/PS/GOV/" + "M" * 256 + "/population-registry/persons",
            "",
            "Client.InvalidServiceIdentifier",
            400,
            id="256-char-part",
        ),
        pytest.param(
            BASE + "/" + "a" * MAX_URI_LENGTH, "", "Client.BadRequest", 414, id="long-path"
        ),
        pytest.param(BASE, "q=" + "a" * MAX_URI_LENGTH, "Client.BadRequest", 414, id="long-query"),
    ],
)
def test_bad_targets(raw_path: str, query: str, code: str, status: int) -> None:
    with pytest.raises(ClientError) as info:
        parse_target(raw_path, query)
    assert info.value.code == code
    assert info.value.status == status


def test_uri_at_the_limit_is_accepted() -> None:
    rest = "/" + "a" * (MAX_URI_LENGTH - len(BASE) - 1)
    assert parse_target(BASE + rest, "").path == rest


@given(raw_path=st.text(max_size=200), query=st.text(max_size=20))
def test_any_target_parses_or_raises_client_error(raw_path: str, query: str) -> None:
    try:
        target = parse_target(raw_path, query)
    except ClientError as exc:
        assert exc.code.startswith("Client.")
        return
    assert raw_path.startswith("/r1/")
    assert target.query == query


@given(rest=st.text(alphabet="abc/%20-._~!$&'()*+,;=:@", max_size=30))
def test_rest_of_path_is_kept_exactly(rest: str) -> None:
    target = parse_target(BASE + "/" + rest, "")
    assert target.service == PERSONS
    assert target.path == "/" + rest


@pytest.mark.parametrize(
    ("rest", "query"),
    [
        pytest.param("123#/address", "", id="fragment-in-path"),
        pytest.param("123 456", "", id="space"),
        pytest.param("caf\u00e9", "", id="raw-non-ascii"),
        pytest.param("123\r\nX-Injected: 1", "", id="crlf"),
        pytest.param("123", "a=1#frag", id="fragment-in-query"),
        pytest.param("123", "a=1 2", id="space-in-query"),
    ],
)
def test_path_and_query_must_be_percent_encoded(rest: str, query: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_target(BASE + "/" + rest, query)
    assert info.value.code == "Client.BadRequest"


# --- X-Road headers ----------------------------------------------------------------------------


def test_minimal_headers() -> None:
    xh = parse_xroad_headers([CLIENT])
    assert xh.client == TAX_OFFICE
    assert xh.message_id_generated
    assert uuid.UUID(xh.message_id).version == 7
    assert (xh.user_id, xh.issue, xh.represented_party, xh.security_server, xh.purpose) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_all_headers() -> None:
    xh = parse_xroad_headers(
        [
            ("X-Road-Client", "PS/GOV/MOF/tax-office"),
            ("X-Road-Id", "msg-1.2:3_4"),
            ("X-Road-UserId", "EE:clerk-17 Jüri"),
            ("X-Road-Issue", "case 2024/1"),
            ("X-Road-Represented-Party", "PS/COM/12345"),
            ("X-Road-Security-Server", "PS/GOV/MOI/ss1"),
            ("X-Road-Purpose", "citizen-service"),
            ("Accept", "application/json"),
        ]
    )
    assert xh.client == TAX_OFFICE
    assert xh.message_id == "msg-1.2:3_4"
    assert not xh.message_id_generated
    assert xh.user_id == "EE:clerk-17 Jüri"
    assert xh.issue == "case 2024/1"
    assert xh.represented_party == "PS/COM/12345"
    assert xh.security_server == SecurityServerId("PS", "GOV", "MOI", "ss1")
    assert xh.purpose == "citizen-service"


def test_header_names_are_case_insensitive() -> None:
    xh = parse_xroad_headers(
        [("x-road-client", "PS/GOV/MOF/tax-office"), ("X-ROAD-ID", "abc"), ("x-RoAd-UsErId", "u")]
    )
    assert (xh.client, xh.message_id, xh.user_id) == (TAX_OFFICE, "abc", "u")


def test_repeated_client_last_wins() -> None:
    xh = parse_xroad_headers(
        [("X-Road-Client", "PS/GOV/MOI/registry"), ("x-road-client", "PS/GOV/MOF/tax-office")]
    )
    assert xh.client == TAX_OFFICE


def test_member_as_client() -> None:
    assert parse_xroad_headers([("X-Road-Client", "PS/GOV/MOF")]).client == MemberId(
        "PS", "GOV", "MOF"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("  PS/GOV/MOF/tax-office ", TAX_OFFICE, id="surrounding-spaces"),
        pytest.param("PS/GOV/MOF/tax%2Doffice", TAX_OFFICE, id="percent-encoded"),
    ],
)
def test_client_forms(value: str, expected: SubsystemId) -> None:
    assert parse_xroad_headers([("X-Road-Client", value)]).client == expected


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="no-headers"),
        pytest.param([("X-Road-Id", "abc")], id="only-id"),
        pytest.param([("X-Road-Client", "")], id="empty"),
        pytest.param([("X-Road-Client", "   ")], id="blank"),
        pytest.param([("X-Road-Clients", "PS/GOV/MOF/tax-office")], id="misspelt"),
        pytest.param([("Client", "PS/GOV/MOF/tax-office")], id="unprefixed"),
    ],
)
def test_missing_client(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ClientError) as info:
        parse_xroad_headers(headers)
    assert info.value.code == "Client.MissingHeader"
    assert info.value.status == 400


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("PS/GOV", id="two-parts"),
        pytest.param("PS/GOV/MOF/tax-office/x", id="five-parts"),
        pytest.param("PS/GOV/MOF/tax office", id="space"),
        pytest.param("PS/GOV/MOF/tax%2Foffice", id="encoded-slash"),
        pytest.param("PS/GOV/MOF/%ff", id="invalid-utf8"),
        pytest.param("PS/GOV/MÖF/tax-office", id="unicode"),
        pytest.param("PS/GOV//tax-office", id="empty-part"),
        pytest.param("PS/GOV/MOF/tax-office\x00", id="nul"),
        pytest.param("PS/GOV/MOF/" + "a" * 256, id="256-char-part"),
    ],
)
def test_malformed_client(value: str) -> None:
    with pytest.raises(ClientError) as info:
        parse_xroad_headers([("X-Road-Client", value)])
    assert info.value.code == "Client.InvalidClientIdentifier"
    assert info.value.status == 400


def test_empty_message_id_is_generated() -> None:
    xh = parse_xroad_headers([CLIENT, ("X-Road-Id", "")])
    assert xh.message_id_generated
    assert uuid.UUID(xh.message_id).version == 7


def test_generated_ids_differ() -> None:
    assert parse_xroad_headers([CLIENT]).message_id != parse_xroad_headers([CLIENT]).message_id


def test_generated_ids_are_uuid7_in_time_order() -> None:
    """RFC 9562 §5.7: the first 48 bits are Unix milliseconds, the variant is RFC 9562's, and
    ids made in different milliseconds sort as text in the order they were made (so the logs'
    message_id index grows at its end)."""
    before = int(time.time() * 1000)
    first = uuid.UUID(parse_xroad_headers([CLIENT]).message_id)
    time.sleep(0.002)
    second = uuid.UUID(parse_xroad_headers([CLIENT]).message_id)
    after = int(time.time() * 1000)
    for made in (first, second):
        assert made.version == 7
        assert made.variant == uuid.RFC_4122
        assert before <= made.int >> 80 <= after
    assert str(first) < str(second)
    made_now = {parse_xroad_headers([CLIENT]).message_id for _ in range(1000)}
    assert len(made_now) == 1000


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("3f2504e0-4f89-11d3-9a0c-0305e82c3301", id="uuid"),
        pytest.param("a", id="one-char"),
        pytest.param("x" * 255, id="255-chars"),
        pytest.param("urn:ex:1.2_3-4", id="punctuation"),
    ],
)
def test_valid_message_ids(value: str) -> None:
    xh = parse_xroad_headers([CLIENT, ("X-Road-Id", value)])
    assert (xh.message_id, xh.message_id_generated) == (value, False)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("X-Road-Id", "a b", id="id-space"),
        pytest.param("X-Road-Id", "a/b", id="id-slash"),
        pytest.param("X-Road-Id", "a\nb", id="id-newline"),
        pytest.param("X-Road-Id", "ä", id="id-unicode"),
        pytest.param("X-Road-Id", "x" * 256, id="id-256-chars"),
        pytest.param("X-Road-Id", " ", id="id-blank"),
        pytest.param("X-Road-UserId", "clerk\x00", id="userid-nul"),
        pytest.param("X-Road-UserId", "clerk\r\nX-Evil: 1", id="userid-crlf"),
        pytest.param("X-Road-UserId", "clerk\t1", id="userid-tab"),
        pytest.param("X-Road-UserId", "clerk\x7f", id="userid-del"),
        pytest.param("X-Road-UserId", "clerk\x85", id="userid-c1-control"),
        pytest.param("X-Road-UserId", "clerk\udcff", id="userid-lone-surrogate"),
        pytest.param("X-Road-UserId", "x" * (MAX_TEXT + 1), id="userid-too-long"),
        pytest.param("X-Road-Issue", "case\x1b[31m", id="issue-escape"),
        pytest.param("X-Road-Represented-Party", "a\nb", id="represented-party-newline"),
        pytest.param("X-Road-Purpose", "p\x00", id="purpose-nul"),
        pytest.param("X-Road-Security-Server", "PS/GOV/MOI", id="server-3-parts"),
        pytest.param("X-Road-Security-Server", "PS/GOV/MOI/ss 1", id="server-space"),
        pytest.param("X-Road-Security-Server", "PS/GOV/MOI/%ff", id="server-invalid-utf8"),
    ],
)
def test_invalid_headers(name: str, value: str) -> None:
    with pytest.raises(ClientError) as info:
        parse_xroad_headers([CLIENT, (name, value)])
    assert info.value.code == "Client.InvalidHeader"
    assert info.value.status == 400


def test_header_value_at_the_limit_is_accepted() -> None:
    value = "x" * MAX_TEXT
    assert parse_xroad_headers([CLIENT, ("X-Road-UserId", value)]).user_id == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("PS/GOV/MOI/ss1", SecurityServerId("PS", "GOV", "MOI", "ss1"), id="plain"),
        pytest.param("PS/GOV/MOI/ss%31", SecurityServerId("PS", "GOV", "MOI", "ss1"), id="encoded"),
        pytest.param("", None, id="empty-is-none"),
    ],
)
def test_security_server_header(value: str, expected: SecurityServerId | None) -> None:
    assert (
        parse_xroad_headers([CLIENT, ("X-Road-Security-Server", value)]).security_server == expected
    )


@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "X-Road-Client",
                    "X-Road-Id",
                    "X-Road-UserId",
                    "X-Road-Security-Server",
                    "x-road-purpose",
                    "Accept",
                ]
            ),
            st.text(max_size=40),
        ),
        max_size=6,
    )
)
def test_any_headers_parse_or_raise_client_error(headers: list[tuple[str, str]]) -> None:
    try:
        parse_xroad_headers(headers)
    except ClientError as exc:
        assert exc.code.startswith("Client.")


# --- end-to-end headers ------------------------------------------------------------------------


def test_end_to_end_headers_filter_and_keep_order() -> None:
    headers = [
        ("Accept", "application/json"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Host", "ss.moi.example"),
        ("User-Agent", "curl/8"),
        ("Server", "nginx"),
        ("Content-Length", "12"),
        ("Transfer-Encoding", "chunked"),
        ("TE", "trailers"),
        ("Trailer", "Expires"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic x"),
        ("Proxy-Authenticate", "Basic"),
        ("Proxy-Connection", "keep-alive"),
        ("X-Road-Client", "PS/GOV/MOF/tax-office"),
        ("X-Road-Id", "abc"),
        ("x-road-anything", "1"),
        ("X-Request-Id", "r1"),
        ("Content-Type", "application/json"),
        ("Accept", "text/plain"),
        ("Set-Cookie", "a=1"),
        ("set-cookie", "b=2"),
    ]
    assert end_to_end_headers(headers) == [
        ("accept", "application/json"),
        ("x-request-id", "r1"),
        ("content-type", "application/json"),
        ("accept", "text/plain"),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
    ]


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP | ORIGIN_HEADERS))
def test_every_filtered_header_is_dropped_in_any_case(name: str) -> None:
    assert end_to_end_headers([(name.upper(), "v"), (name.title(), "v"), (name, "v")]) == []


@given(
    headers=st.lists(
        st.tuples(
            st.text(alphabet="abcXYZ-", min_size=1, max_size=10),
            st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=10),
        ),
        max_size=10,
    )
)
def test_end_to_end_keeps_everything_else(headers: list[tuple[str, str]]) -> None:
    assert end_to_end_headers(headers) == [
        (n.lower(), v) for n, v in headers if is_end_to_end(n.lower())
    ]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("clerk\udcff", id="lone-surrogate"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\nb", id="newline"),
    ],
)
def test_end_to_end_refuses_header_values_that_are_not_text(value: str) -> None:
    with pytest.raises(BadRequest) as info:
        end_to_end_headers([("X-Custom", value)])
    assert info.value.code == "Client.InvalidHeader"
