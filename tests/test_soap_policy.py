"""Access policy and data minimisation for SOAP requests (docs/design.md §7).

- A SOAP request is judged on client, service and conditions; a grant's REST ``methods`` and
  ``paths`` are not consulted, and a grant without ``methods`` allows no REST request at all.
- A grant's ``fields`` cut the children of ``<{code}Response>`` and fail closed like the JSON
  filter: nothing ungranted survives, not in attributes, text, comments or tails.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from exchange.identifiers import parse_client, parse_member, parse_service
from exchange.policy.evaluate import evaluate
from exchange.policy.loader import PolicyError, load_policy_dir
from exchange.policy.model import PolicyRequest, PolicySet
from exchange.policy.xml_fields import filter_response_element

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
WINDOW = "PS/GOV/PALPOST/unified-window"
HEALTH = "PS/GOV/MOH/health-records"
GET_PERSON = "PS/GOV/MOI/population-registry/getPerson"
PERSONS = "PS/GOV/MOI/population-registry/persons"

POLICY = f"""
provider = "PS/GOV/MOI"

[[grant]]
id = "soap-only"
client = "{WINDOW}"
service = "{GET_PERSON}"
fields = ["nationalId"]

[[grant]]
id = "rest-scoped"
client = "{HEALTH}"
service = "{GET_PERSON}"
methods = ["GET"]
paths = ["/only/this"]
purposes = ["patient-care"]

[[grant]]
id = "rest-without-methods"
client = "{WINDOW}"
service = "{PERSONS}"
"""


@pytest.fixture
def policy(tmp_path: Path) -> PolicySet:
    (tmp_path / "p.toml").write_text(POLICY)
    return load_policy_dir(tmp_path, parse_member("PS/GOV/MOI"))


def decide(
    policy: PolicySet,
    client: str,
    service: str,
    *,
    protocol: str,
    method: str = "POST",
    path: str = "",
    purpose: str | None = None,
) -> tuple[bool, str, str]:
    request = PolicyRequest(
        parse_client(client),
        parse_service(service),
        method,
        path,
        purpose=purpose,
        protocol=protocol,
    )
    decision = evaluate(policy, request, groups=frozenset(), now=NOW)
    return decision.allowed, decision.code, decision.reason


def test_a_grant_without_methods_allows_soap(policy: PolicySet) -> None:
    allowed, _, reason = decide(policy, WINDOW, GET_PERSON, protocol="soap")
    assert allowed and "soap-only" in reason


def test_a_grant_without_methods_allows_no_rest_request(policy: PolicySet) -> None:
    for method in ("GET", "POST", "DELETE"):
        allowed, code, _ = decide(policy, WINDOW, PERSONS, protocol="rest", method=method)
        assert (allowed, code) == (False, "Server.ServerProxy.AccessDenied")
    explained = evaluate(
        policy,
        PolicyRequest(parse_client(WINDOW), parse_service(PERSONS), "GET", "/1"),
        groups=frozenset(),
        now=NOW,
    )
    assert ("rest-without-methods", "the grant lists no methods: it allows SOAP requests only") in (
        explained.considered
    )


def test_rest_methods_and_paths_are_not_consulted_for_soap(policy: PolicySet) -> None:
    allowed, _, reason = decide(policy, HEALTH, GET_PERSON, protocol="soap", purpose="patient-care")
    assert allowed and "rest-scoped" in reason
    # the same grant still scopes REST
    assert not decide(policy, HEALTH, GET_PERSON, protocol="rest", purpose="patient-care")[0]


def test_conditions_and_clients_still_hold_for_soap(policy: PolicySet) -> None:
    assert decide(policy, HEALTH, GET_PERSON, protocol="soap")[1] == (
        "Server.ServerProxy.AccessDenied.PurposeNotAllowed"
    )
    allowed, code, reason = decide(policy, "PS/GOV/MOF/payments", GET_PERSON, protocol="soap")
    assert (allowed, code) == (False, "Server.ServerProxy.AccessDenied")
    assert "SOAP PS/GOV/MOI/population-registry/getPerson" in reason


def test_an_explicitly_empty_method_list_is_still_an_error(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(POLICY.replace('fields = ["nationalId"]', "methods = []"))
    with pytest.raises(PolicyError, match="at least one method"):
        load_policy_dir(tmp_path, parse_member("PS/GOV/MOI"))


# --- fields on XML -------------------------------------------------------------------------------

RESPONSE = b"""<p:getPersonResponse xmlns:p="urn:pop" xmlns:x="urn:x" x:secret="a1">
  leaked text
  <nationalId>123</nationalId>
  <name lang="en" x:secret="a2"><first>Amal</first>mixed secret<full>Amal Haddad</full>
    <!-- comment secret --><?pi secret?></name>
  <address><governorate>Jerusalem</governorate><locality>Biddu</locality></address>
  <dateOfBirth>1990-04-01</dateOfBirth>
  <children><nationalId>2</nationalId><name>Sami</name></children>
  <children><nationalId>3</nationalId><name>Lina</name></children>
  <children><name>no id</name></children>
  <p:nationalId>qualified names count by local name</p:nationalId>
</p:getPersonResponse>"""


def cut(fields: tuple[str, ...], data: bytes = RESPONSE) -> tuple[bytes, tuple[str, ...]]:
    element = etree.fromstring(data)
    released = filter_response_element(element, fields)
    return etree.tostring(element), released


def test_fields_keep_only_granted_children() -> None:
    out, released = cut(("nationalId", "name.full", "address", "children[].nationalId"))
    assert out == (
        b'<p:getPersonResponse xmlns:p="urn:pop" xmlns:x="urn:x"><nationalId>123</nationalId>'
        b"<name><full>Amal Haddad</full></name>"
        b"<address><governorate>Jerusalem</governorate><locality>Biddu</locality></address>"
        b"<children><nationalId>2</nationalId></children>"
        b"<children><nationalId>3</nationalId></children>"
        b"<p:nationalId>qualified names count by local name</p:nationalId>"
        b"</p:getPersonResponse>"
    )
    assert released == ("address", "children[].nationalId", "name.full", "nationalId")


def test_list_marker_is_optional_in_xml() -> None:
    assert cut(("children.nationalId",))[0] == cut(("children[].nationalId",))[0]


def test_a_whole_granted_element_keeps_its_attributes() -> None:
    out, released = cut(("name",))
    assert b'lang="en"' in out and b"mixed secret" in out
    assert released == ("name",)


def test_nothing_granted_present_leaves_an_empty_response_element() -> None:
    out, released = cut(("unknown.field",))
    assert out == b'<p:getPersonResponse xmlns:p="urn:pop" xmlns:x="urn:x"/>'
    assert released == ()


@given(
    st.lists(
        st.sampled_from(
            [
                "nationalId",
                "name",
                "name.first",
                "name.full",
                "address.locality",
                "children",
                "children[].name",
                "children.nationalId",
                "dateOfBirth",
                "x.y.z",
            ]
        ),
        min_size=1,
        max_size=5,
    )
)
def test_nothing_outside_the_grant_survives(fields: list[str]) -> None:
    out, released = cut(tuple(fields))
    assert set(released) <= set(fields)
    for secret in (b"secret", b"leaked"):
        if "name" not in fields:
            assert secret not in out
    if "dateOfBirth" not in fields:
        assert b"1990" not in out
    if not {"name", "name.first"} & set(fields):
        assert b"<first>" not in out
