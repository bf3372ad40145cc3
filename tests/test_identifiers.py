"""Identifiers (docs/design.md §3): tables of valid and invalid forms, percent-encoding, and the
parser contract (any input parses or raises InvalidIdentifier) under Hypothesis."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import InvalidIdentifier
from exchange.identifiers import (
    MAX_PART_LENGTH,
    GlobalGroupId,
    MemberId,
    SecurityServerId,
    ServiceId,
    SubsystemId,
    parse_client,
    parse_global_group,
    parse_member,
    parse_security_server,
    parse_service,
    parse_subsystem,
    split_encoded,
    validate_part,
)

Parser = Callable[..., Any]
PARSERS: dict[str, Parser] = {
    "member": parse_member,
    "subsystem": parse_subsystem,
    "service": parse_service,
    "security-server": parse_security_server,
    "global-group": parse_global_group,
    "client": parse_client,
}
ALLOWED = "ABCXYZabcxyz0189'()+,-.=?_"
LONGEST = "a" * MAX_PART_LENGTH
TOO_LONG = "a" * (MAX_PART_LENGTH + 1)


# --- valid forms -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parser", "text", "expected"),
    [
        pytest.param(parse_member, "PS/GOV/MOI", MemberId("PS", "GOV", "MOI"), id="member"),
        pytest.param(
            parse_subsystem,
            "PS/GOV/MOI/population-registry",
            SubsystemId("PS", "GOV", "MOI", "population-registry"),
            id="subsystem",
        ),
        pytest.param(
            parse_service,
            "PS/GOV/MOI/population-registry/persons",
            ServiceId("PS", "GOV", "MOI", "population-registry", "persons"),
            id="service",
        ),
        pytest.param(
            parse_security_server,
            "PS/GOV/MOI/ss1",
            SecurityServerId("PS", "GOV", "MOI", "ss1"),
            id="security-server",
        ),
        pytest.param(
            parse_global_group, "PS/ministries", GlobalGroupId("PS", "ministries"), id="group"
        ),
        pytest.param(parse_client, "PS/GOV/MOI", MemberId("PS", "GOV", "MOI"), id="client-member"),
        pytest.param(
            parse_client,
            "PS/GOV/MOI/sub",
            SubsystemId("PS", "GOV", "MOI", "sub"),
            id="client-subsystem",
        ),
        pytest.param(
            parse_member,
            f"PS/GOV/{ALLOWED}",
            MemberId("PS", "GOV", ALLOWED),
            id="all-allowed-characters",
        ),
        pytest.param(
            parse_member, f"PS/GOV/{LONGEST}", MemberId("PS", "GOV", LONGEST), id="255-char-part"
        ),
        pytest.param(parse_member, "ps/gov/moi", MemberId("ps", "gov", "moi"), id="lowercase"),
    ],
)
def test_valid_identifiers(parser: Parser, text: str, expected: object) -> None:
    parsed = parser(text)
    assert parsed == expected
    assert str(parsed) == text


def test_parts_are_case_sensitive() -> None:
    assert parse_member("PS/GOV/MOI") != parse_member("PS/GOV/moi")


def test_identifier_views() -> None:
    service = parse_service("PS/GOV/MOI/registry/persons")
    assert service.subsystem == parse_subsystem("PS/GOV/MOI/registry")
    assert service.member == parse_member("PS/GOV/MOI")
    assert service.subsystem.member == service.member
    assert service.member.member == service.member
    assert service.subsystem.service("persons") == service
    assert parse_security_server("PS/GOV/MOI/ss1").owner == service.member
    with pytest.raises(InvalidIdentifier):
        service.subsystem.service("a/b")


# --- invalid forms -----------------------------------------------------------------------------

INVALID_MEMBERS = [
    pytest.param("", id="empty"),
    pytest.param("PS/GOV", id="too-few-parts"),
    pytest.param("PS/GOV/MOI/sub", id="too-many-parts"),
    pytest.param("PS//MOI", id="empty-middle-part"),
    pytest.param("/GOV/MOI", id="empty-first-part"),
    pytest.param("PS/GOV/", id="empty-last-part"),
    pytest.param("PS/GOV/M OI", id="space"),
    pytest.param(" PS/GOV/MOI", id="leading-space"),
    pytest.param("PS/GOV/MOI\n", id="trailing-newline"),
    pytest.param("PS/GOV/M%OI", id="percent"),
    pytest.param("PS/GOV/M#OI", id="hash"),
    pytest.param("PS/GOV/M\\OI", id="backslash"),
    pytest.param("PS/GOV/MÖI", id="unicode-letter"),
    pytest.param("PS/GOV/MOI\u0660", id="unicode-digit"),
    pytest.param("PS/GOV/M\x00OI", id="nul"),
    pytest.param("PS/GOV/M\x1fOI", id="control-character"),
    pytest.param("PS/GOV/M\x7fOI", id="del"),
    pytest.param("PS/GOV/M:OI", id="colon"),
    pytest.param("PS/GOV/M;OI", id="semicolon"),
    pytest.param("PS/GOV/M*OI", id="asterisk"),
    pytest.param(f"PS/GOV/{TOO_LONG}", id="256-char-part"),
    pytest.param("PS/GOV/" + "a" * 10_000, id="huge"),
]


@pytest.mark.parametrize("text", INVALID_MEMBERS)
def test_invalid_member(text: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        parse_member(text)
    assert info.value.code == "Client.InvalidIdentifier"
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("parser", "text"),
    [
        pytest.param(parse_subsystem, "PS/GOV/MOI", id="subsystem-3-parts"),
        pytest.param(parse_subsystem, "PS/GOV/MOI/a/b", id="subsystem-5-parts"),
        pytest.param(parse_service, "PS/GOV/MOI/sub", id="service-4-parts"),
        pytest.param(parse_service, "PS/GOV/MOI/sub/svc/x", id="service-6-parts"),
        pytest.param(parse_security_server, "PS/GOV/MOI", id="server-3-parts"),
        pytest.param(parse_global_group, "PS", id="group-1-part"),
        pytest.param(parse_global_group, "PS/a/b", id="group-3-parts"),
        pytest.param(parse_client, "PS/GOV", id="client-2-parts"),
        pytest.param(parse_client, "PS/GOV/MOI/sub/x", id="client-5-parts"),
        pytest.param(parse_client, "PS/GOV/MOI/", id="client-empty-subsystem"),
    ],
)
def test_wrong_part_count(parser: Parser, text: str) -> None:
    with pytest.raises(InvalidIdentifier):
        parser(text)


@pytest.mark.parametrize("parser", list(PARSERS.values()), ids=list(PARSERS))
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param(b"PS/GOV/MOI", id="bytes"),
        pytest.param(42, id="int"),
        pytest.param(["PS", "GOV", "MOI"], id="list"),
    ],
)
@pytest.mark.parametrize("encoded", [False, True], ids=["plain", "encoded"])
def test_non_text_input(parser: Parser, value: object, encoded: bool) -> None:
    with pytest.raises(InvalidIdentifier):
        parser(value, encoded=encoded)


@pytest.mark.parametrize(
    "value",
    [pytest.param(None, id="none"), pytest.param(7, id="int"), pytest.param("", id="empty")],
)
def test_validate_part_refuses(value: Any) -> None:
    with pytest.raises(InvalidIdentifier):
        validate_part(value)


def test_validate_part_returns_the_part() -> None:
    assert validate_part("persons") == "persons"


def test_split_encoded_refuses_non_text() -> None:
    with pytest.raises(InvalidIdentifier):
        split_encoded(None)  # type: ignore[arg-type]


# --- percent-encoding --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("PS/GOV/%41BC", MemberId("PS", "GOV", "ABC"), id="percent-41-is-A"),
        pytest.param("%50%53/GOV/MOI", MemberId("PS", "GOV", "MOI"), id="every-char-encoded"),
        pytest.param("PS/GOV/a%2Bb", MemberId("PS", "GOV", "a+b"), id="encoded-plus"),
        pytest.param("PS/GOV/a+b", MemberId("PS", "GOV", "a+b"), id="plus-is-not-space"),
        pytest.param("PS/GOV/%28x%29", MemberId("PS", "GOV", "(x)"), id="encoded-parens"),
        pytest.param("PS/GOV/%3f", MemberId("PS", "GOV", "?"), id="lowercase-hex"),
    ],
)
def test_encoded_parsing(text: str, expected: MemberId) -> None:
    assert parse_member(text, encoded=True) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("PS/GOV/a%2Fb", id="encoded-slash"),
        pytest.param("PS/GOV%2FMOI", id="encoded-slash-joins-parts"),
        pytest.param("PS/GOV/%ff", id="invalid-utf8"),
        pytest.param("PS/GOV/%c3", id="truncated-utf8"),
        pytest.param("PS/GOV/%C3%96", id="valid-utf8-but-not-allowed"),
        pytest.param("PS/GOV/%20", id="encoded-space"),
        pytest.param("PS/GOV/%00", id="encoded-nul"),
        pytest.param("PS/GOV/%25", id="encoded-percent"),
        pytest.param("PS/GOV/%zz", id="bad-escape"),
        pytest.param("PS/GOV/%", id="lone-percent"),
        pytest.param("PS/GOV/", id="empty-part"),
        pytest.param("PS/GOV/" + "%41" * (MAX_PART_LENGTH + 1), id="256-decoded-chars"),
    ],
)
def test_encoded_invalid(text: str) -> None:
    with pytest.raises(InvalidIdentifier):
        parse_member(text, encoded=True)


def test_percent_is_literal_when_not_decoding() -> None:
    with pytest.raises(InvalidIdentifier):
        parse_member("PS/GOV/%41BC")


def test_encoded_255_decoded_chars_are_allowed() -> None:
    parsed = parse_member("PS/GOV/" + "%41" * MAX_PART_LENGTH, encoded=True)
    assert parsed.member_code == "A" * MAX_PART_LENGTH


@pytest.mark.parametrize("parser", list(PARSERS.values()), ids=list(PARSERS))
@pytest.mark.parametrize("encoded", [False, True], ids=["plain", "encoded"])
def test_code_is_passed_through(parser: Parser, encoded: bool) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        parser("bad id/%ff", encoded=encoded, code="Client.InvalidClientIdentifier")
    assert info.value.code == "Client.InvalidClientIdentifier"
    assert info.value.status == 400


def test_code_is_passed_through_non_text() -> None:
    with pytest.raises(InvalidIdentifier) as info:
        parse_client(None, code="Client.X")  # type: ignore[arg-type]
    assert info.value.code == "Client.X"


def test_encoded_form_escapes_nothing_allowed() -> None:
    member = MemberId("PS", "GOV", ALLOWED)
    assert member.encoded() == str(member)


# --- properties --------------------------------------------------------------------------------

parts = st.text(
    alphabet=ALLOWED + "DEFGHIJKLMNOPQRSTUVWdefghijklmnopqrstuvw234567", min_size=1, max_size=20
)
members = st.builds(MemberId, parts, parts, parts)
subsystems = st.builds(SubsystemId, parts, parts, parts, parts)
services = st.builds(ServiceId, parts, parts, parts, parts, parts)
servers = st.builds(SecurityServerId, parts, parts, parts, parts)
groups = st.builds(GlobalGroupId, parts, parts)
ROUND_TRIPS: list[tuple[Parser, st.SearchStrategy[Any]]] = [
    (parse_member, members),
    (parse_subsystem, subsystems),
    (parse_service, services),
    (parse_security_server, servers),
    (parse_global_group, groups),
    (parse_client, members),
    (parse_client, subsystems),
]


@pytest.mark.parametrize("parser", list(PARSERS.values()), ids=list(PARSERS))
@given(text=st.text(), encoded=st.booleans())
def test_any_text_parses_or_raises_invalid_identifier(
    parser: Parser, text: str, encoded: bool
) -> None:
    try:
        parsed = parser(text, encoded=encoded)
    except InvalidIdentifier:
        return
    assert isinstance(parsed, MemberId | SubsystemId | ServiceId | SecurityServerId | GlobalGroupId)


slashy = st.lists(
    st.one_of(
        st.sampled_from(["/", "%", "%2F", "%41", "%ff", "%c3%96", "%", "A", "z", "-", " ", "é"]),
        st.text(max_size=3),
    ),
    max_size=20,
).map("".join)


@pytest.mark.parametrize("parser", list(PARSERS.values()), ids=list(PARSERS))
@given(text=slashy, encoded=st.booleans())
def test_near_valid_text_parses_or_raises_invalid_identifier(
    parser: Parser, text: str, encoded: bool
) -> None:
    with contextlib.suppress(InvalidIdentifier):
        parser(text, encoded=encoded)


@pytest.mark.parametrize(
    ("parser", "ids"),
    ROUND_TRIPS,
    ids=[
        "member",
        "subsystem",
        "service",
        "security-server",
        "global-group",
        "client-member",
        "client-subsystem",
    ],
)
@given(data=st.data())
def test_round_trip(parser: Parser, ids: st.SearchStrategy[Any], data: st.DataObject) -> None:
    identifier = data.draw(ids)
    assert parser(str(identifier)) == identifier
    encoded = identifier.encoded() if hasattr(identifier, "encoded") else str(identifier)
    assert parser(encoded, encoded=True) == identifier


@given(identifier=services)
def test_encoded_form_is_url_safe(identifier: ServiceId) -> None:
    encoded = identifier.encoded()
    assert encoded.count("/") == 4
    assert all(c.isascii() and (c.isalnum() or c in "'()+,-.=?_/%") for c in encoded)
