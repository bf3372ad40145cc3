"""The sans-IO parts of the metadata services: discovery of granted endpoints, the answer
documents, and the checks on fetched OpenAPI descriptions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest

from exchange.globalconf.document import GlobalConf, MemberInfo
from exchange.identifiers import GlobalGroupId, parse_member, parse_service, parse_subsystem
from exchange.policy.discovery import allowed_endpoints
from exchange.policy.loader import load_policy_dir
from exchange.policy.model import PolicySet, UnsafeAllowAll
from exchange.protocol.metadata import (
    ENDPOINT_PLACEHOLDER,
    DescriptionError,
    ServiceEntry,
    client_list,
    openapi_description,
    service_list,
)

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
A = parse_service("PS/GOV/MOI/docs/a")
B = parse_service("PS/GOV/MOI/docs/b")
C = parse_service("PS/GOV/MOI/docs/c")
ME = parse_subsystem("PS/GOV/MOH/me")
OTHER = parse_subsystem("PS/GOV/MOF/other")
GROUP = GlobalGroupId("PS", "readers")

POLICY = """
provider = "PS/GOV/MOI"
[groups]
mine = ["PS/GOV/MOH/me"]

[[grant]]
id = "me-a"
client = "PS/GOV/MOH/me"
service = "PS/GOV/MOI/docs/a"
methods = ["PUT", "GET"]
paths = ["/x", "/y/*"]

[[grant]]
id = "me-a-again"
client = "PS/GOV/MOH/me"
service = "PS/GOV/MOI/docs/a"
methods = ["GET"]
paths = ["/x"]

[[grant]]
id = "group-b"
group = "PS/readers"
service = "PS/GOV/MOI/docs/b"
methods = ["GET"]

[[grant]]
id = "local-c-window"
group = "local:mine"
service = "PS/GOV/MOI/docs/c"
methods = ["*"]
valid_from = 2026-01-01T00:00:00Z
valid_until = 2026-12-31T00:00:00Z

[[grant]]
id = "other-c"
client = "PS/GOV/MOF/other"
service = "PS/GOV/MOI/docs/c"
methods = ["GET"]
valid_until = 2026-01-01T00:00:00Z
"""


@pytest.fixture
def policy(tmp_path: Path) -> PolicySet:
    (tmp_path / "p.toml").write_text(POLICY)
    return load_policy_dir(tmp_path, provider=parse_member("PS/GOV/MOI"))


def test_grants_by_subsystem_global_and_local_group(policy: PolicySet) -> None:
    got = allowed_endpoints(policy, ME, [A, B, C], groups=frozenset({GROUP}), now=NOW)
    assert got == {
        A: (("GET", "/x"), ("GET", "/y/*"), ("PUT", "/x"), ("PUT", "/y/*")),
        B: (("GET", "/**"),),
        C: (("*", "/**"),),
    }


def test_no_group_no_grant(policy: PolicySet) -> None:
    assert allowed_endpoints(policy, ME, [A, B, C], groups=frozenset(), now=NOW).keys() == {A, C}


@pytest.mark.parametrize(
    "when",
    [
        pytest.param(dt.datetime(2025, 12, 31, tzinfo=dt.UTC), id="not-yet-valid"),
        pytest.param(dt.datetime(2026, 12, 31, tzinfo=dt.UTC), id="expired-at-the-instant"),
    ],
)
def test_grants_outside_their_window_are_not_shown(policy: PolicySet, when: dt.datetime) -> None:
    assert C not in allowed_endpoints(policy, ME, [C], groups=frozenset(), now=when)


def test_other_clients_see_only_their_own(policy: PolicySet) -> None:
    assert allowed_endpoints(policy, OTHER, [A, B, C], groups=frozenset(), now=NOW) == {}


def test_empty_policy_and_unsafe_allow_all() -> None:
    empty = PolicySet(parse_member("PS/GOV/MOI"), (), "v")
    assert allowed_endpoints(empty, ME, [A], groups=frozenset(), now=NOW) == {}
    got = allowed_endpoints(UnsafeAllowAll(), ME, [A], groups=frozenset(), now=NOW)
    assert got == {A: (("*", "/**"),)}


def test_naive_now_is_refused(policy: PolicySet) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        allowed_endpoints(policy, ME, [A], groups=frozenset(), now=dt.datetime(2026, 1, 1))


def test_service_list_never_names_metadata_services() -> None:
    listed = service_list(
        [
            ServiceEntry(B, "REST", [("GET", "/**")]),
            ServiceEntry(parse_service("PS/GOV/MOI/docs/listMethods"), "REST", []),
            ServiceEntry(A, "OPENAPI", [("*", "/**")]),
        ]
    )
    assert [s["service_code"] for s in listed["service"]] == ["a", "b"]
    assert listed["service"][0] == {
        "member_class": "GOV",
        "member_code": "MOI",
        "object_type": "SERVICE",
        "service_code": "a",
        "service_type": "OPENAPI",
        "subsystem_code": "docs",
        "xroad_instance": "PS",
        "endpoint_list": [{"method": "*", "path": "/**"}],
    }


def test_client_list_members_then_their_subsystems() -> None:
    conf = GlobalConf(
        "PS",
        1,
        0,
        600,
        members=(
            MemberInfo(parse_member("PS/GOV/MOI"), "Interior", (parse_subsystem("PS/GOV/MOI/x"),)),
        ),
    )
    assert client_list(conf)["member"] == [
        {
            "id": {
                "member_class": "GOV",
                "member_code": "MOI",
                "object_type": "MEMBER",
                "xroad_instance": "PS",
            },
            "name": "Interior",
        },
        {
            "id": {
                "member_class": "GOV",
                "member_code": "MOI",
                "subsystem_code": "x",
                "object_type": "SUBSYSTEM",
                "xroad_instance": "PS",
            },
            "name": "Interior",
        },
    ]
    assert client_list(conf, "EE") == {"member": []}


def test_openapi_servers_are_hidden_everywhere() -> None:
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "servers": [{"url": "http://10.0.0.1/"}],
        "paths": {
            "/a": {
                "servers": [{"url": "http://10.0.0.2/"}],
                "get": {"servers": [{"url": "http://10.0.0.3/"}], "responses": {}},
            }
        },
    }
    body, ctype = openapi_description(orjson.dumps(doc), "application/json; charset=utf-8")
    assert ctype.startswith("application/json")
    assert b"10.0.0." not in body
    out = orjson.loads(body)
    assert out["servers"] == out["paths"]["/a"]["servers"] == [{"url": ENDPOINT_PLACEHOLDER}]
    assert out["paths"]["/a"]["get"]["servers"] == [{"url": ENDPOINT_PLACEHOLDER}]


def _paths_seen_by_clients(paths: list[str], server: str, base: str) -> list[str]:
    doc = {
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "servers": [{"url": server}],
        "paths": {p: {"get": {"responses": {}}} for p in paths},
    }
    body, _ = openapi_description(orjson.dumps(doc), "application/json", base)
    return list(orjson.loads(body)["paths"])


@pytest.mark.parametrize(
    ("paths", "server", "base", "seen"),
    [
        pytest.param(
            ["/persons", "/persons/{id}", "/persons/{id}/family", "/health"],
            "/",
            "/persons",
            ["/", "/{id}", "/{id}/family"],
            id="adapter-root-document-service-under-persons",
        ),
        pytest.param(
            ["/persons/{id}"], "http://10.0.0.1/api", "/api/persons", ["/{id}"], id="server-path"
        ),
        pytest.param(["/{id}"], "/", "/svc/docs", ["/{id}"], id="already-relative-to-service"),
        pytest.param(["/persons/{id}"], "/", "", ["/persons/{id}"], id="service-at-root"),
    ],
)
def test_openapi_paths_are_those_a_client_writes_after_the_service_code(
    paths: list[str], server: str, base: str, seen: list[str]
) -> None:
    assert _paths_seen_by_clients(paths, server, base) == seen


@pytest.mark.parametrize(
    ("body", "ctype", "reason"),
    [
        pytest.param(b"{}", "text/html", "content type", id="html"),
        pytest.param(b"{nope", "application/json", "not valid JSON", id="bad-json"),
        pytest.param(b"[1]", "application/json", "not a JSON object", id="array"),
        pytest.param(b'{"swagger": "2.0"}', "application/json", "OpenAPI 3", id="swagger-2"),
        pytest.param(b'{"openapi": 3}', "application/json", "OpenAPI 3", id="version-number"),
        pytest.param(b"\xff\xfe", "text/yaml", "UTF-8", id="yaml-not-utf8"),
    ],
)
def test_unusable_descriptions(body: bytes, ctype: str, reason: str) -> None:
    with pytest.raises(DescriptionError, match=reason):
        openapi_description(body, ctype)


def test_soap_only_grants_show_the_service_without_endpoints(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(
        'provider = "PS/GOV/MOI"\n[[grant]]\nid = "soap"\nclient = "PS/GOV/MOH/me"\n'
        'service = "PS/GOV/MOI/docs/a"\n'
    )
    policy = load_policy_dir(tmp_path, provider=parse_member("PS/GOV/MOI"))
    assert allowed_endpoints(policy, ME, [A, B], groups=frozenset(), now=NOW) == {A: ()}


def test_wsdl_endpoints_are_replaced_and_non_wsdl_refused() -> None:
    from lxml import etree

    from exchange.protocol.metadata import wsdl_description

    wsdl = etree.fromstring(
        b'<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"'
        b' xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"'
        b' xmlns:soap12="http://schemas.xmlsoap.org/wsdl/soap12/"><wsdl:service><wsdl:port>'
        b'<soap:address location="http://10.0.0.1/a"/><soap12:address location="http://10.0.0.2/"/>'
        b"</wsdl:port></wsdl:service></wsdl:definitions>"
    )
    out = wsdl_description(wsdl)
    assert b"10.0.0." not in out and out.count(ENDPOINT_PLACEHOLDER.encode()) == 2
    with pytest.raises(DescriptionError, match="WSDL"):
        wsdl_description(etree.fromstring(b"<html/>"))


def test_multipart_related_parses_back_with_the_soap_part_first() -> None:
    from exchange.protocol import soap
    from exchange.protocol.metadata import multipart_related

    envelope = b'<?xml version="1.0"?><e/>'
    content_type, body = multipart_related(envelope, b"<wsdl/>\r\n--x--\r\n")
    assert content_type.startswith("multipart/related")
    assert soap.soap_part(content_type, body).envelope == envelope
