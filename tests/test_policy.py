"""Access policies (docs/design.md §7): decisions, path tricks, loading, reloading, CLI,
properties."""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from exchange.cli.policy import group as policy_cli
from exchange.identifiers import (
    GlobalGroupId,
    MemberId,
    ServiceId,
    SubsystemId,
    parse_client,
    parse_global_group,
    parse_member,
    parse_service,
)
from exchange.policy import (
    BadPath,
    Grant,
    PathPattern,
    PolicyError,
    PolicyRequest,
    PolicySet,
    PolicyStore,
    UnsafeAllowAll,
    evaluate,
    explain,
    load_policy_dir,
    request_segments,
)

DENIED = "Server.ServerProxy.AccessDenied"
BAD_PATH = f"{DENIED}.BadPath"
EXPIRED = f"{DENIED}.GrantExpired"
NOT_YET = f"{DENIED}.GrantNotYetValid"
PURPOSE = f"{DENIED}.PurposeNotAllowed"
USER_ID = f"{DENIED}.UserIdRequired"

WINDOW = "PS/GOV/PALPOST/unified-window"
PERSONS = "PS/GOV/MOI/population-registry/persons"
ADDRESSES = "PS/GOV/MOI/population-registry/addresses"
ONE_STOP = "PS/one-stop-windows"
NOW = datetime(2026, 6, 1, tzinfo=UTC)

MOI_POLICY = """\
provider = "PS/GOV/MOI"

[[grant]]
id = "palpost-window"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/population-registry/persons"
methods = ["GET"]
paths = ["/*", "/*/family"]
fields = ["national_id", "name_ar", "address.locality", "children[].national_id"]
purposes = ["citizen-service", "benefits"]
valid_from = 2026-01-01T00:00:00Z
valid_until = 2027-12-31T00:00:00Z
rate = "600/minute"

[[grant]]
id = "one-stop"
group = "PS/one-stop-windows"
service = "PS/GOV/MOI/population-registry/addresses"
methods = ["get", "POST"]
require_user_id = true

[[grant]]
id = "moh-births"
client = "PS/GOV/MOH/births"
service = "PS/GOV/MOI/population-registry/persons"
methods = ["*"]
paths = ["/births/**"]
"""


def write_policy(directory: Path, text: str = MOI_POLICY, name: str = "moi.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def moi(tmp_path: Path) -> PolicySet:
    write_policy(tmp_path / "MOI")
    return load_policy_dir(tmp_path / "MOI", parse_member("PS/GOV/MOI"))


def request(
    client: str = WINDOW,
    service: str = PERSONS,
    method: str = "GET",
    path: str = "/123456789",
    purpose: str | None = "citizen-service",
    user_id: str | None = None,
) -> PolicyRequest:
    return PolicyRequest(
        parse_client(client), parse_service(service), method, path, purpose, user_id
    )


def groups(*names: str) -> frozenset[GlobalGroupId]:
    return frozenset(parse_global_group(n) for n in names)


# --- decisions ----------------------------------------------------------------------------------

ALLOWED_CASES = [
    pytest.param(request(), (), NOW, "palpost-window", id="subsystem-grant"),
    pytest.param(request(path="/123/family"), (), NOW, "palpost-window", id="star-then-literal"),
    pytest.param(request(method="get"), (), NOW, "palpost-window", id="method-case-insensitive"),
    pytest.param(request(purpose="benefits"), (), NOW, "palpost-window", id="second-purpose"),
    pytest.param(request(path="/%31%32%33"), (), NOW, "palpost-window", id="encoded-digits"),
    pytest.param(request(path="/caf%C3%A9"), (), NOW, "palpost-window", id="utf8-segment"),
    pytest.param(
        request(), (), datetime(2026, 1, 1, tzinfo=UTC), "palpost-window", id="valid-from-inclusive"
    ),
    pytest.param(
        request(service=ADDRESSES, path="/x/y", purpose=None, user_id="clerk-7"),
        (ONE_STOP,),
        NOW,
        "one-stop",
        id="group-grant",
    ),
    pytest.param(
        request(service=ADDRESSES, path="", purpose=None, user_id="c", method="post"),
        (ONE_STOP,),
        NOW,
        "one-stop",
        id="default-paths-cover-root",
    ),
    pytest.param(
        request(service=ADDRESSES, path="/", purpose=None, user_id="c"),
        (ONE_STOP,),
        NOW,
        "one-stop",
        id="slash-is-root",
    ),
    pytest.param(
        request(client="PS/GOV/MOH/births", path="/births", method="DELETE", purpose=None),
        (),
        NOW,
        "moh-births",
        id="double-star-zero-segments",
    ),
    pytest.param(
        request(client="PS/GOV/MOH/births", path="/births/2026/01", method="PATCH", purpose=None),
        (),
        NOW,
        "moh-births",
        id="double-star-many-segments",
    ),
]


@pytest.mark.parametrize(("req", "client_groups", "now", "grant_id"), ALLOWED_CASES)
def test_allowed(
    moi: PolicySet,
    req: PolicyRequest,
    client_groups: tuple[str, ...],
    now: datetime,
    grant_id: str,
) -> None:
    decision = evaluate(moi, req, groups=groups(*client_groups), now=now)
    assert (decision.allowed, decision.code, decision.grant_id) == (True, "Allowed", grant_id)
    assert decision.policy_version == moi.version
    grant = moi.grant(grant_id)
    assert grant is not None
    assert decision.fields == grant.fields
    assert decision.grant_source == f"{grant.source}:{grant.line}"


DENIED_CASES = [
    pytest.param(request(client="PS/GOV/MOF/tax"), (), NOW, DENIED, id="wrong-client"),
    pytest.param(request(client="PS/GOV/PALPOST"), (), NOW, DENIED, id="member-not-subsystem"),
    pytest.param(
        request(client="XX/GOV/PALPOST/unified-window"), (), NOW, DENIED, id="other-instance"
    ),
    pytest.param(
        request(service="PS/GOV/MOI/population-registry/other"), (), NOW, DENIED, id="wrong-service"
    ),
    pytest.param(request(method="POST"), (), NOW, DENIED, id="wrong-method"),
    pytest.param(request(path="/123/address"), (), NOW, DENIED, id="unlisted-sub-path"),
    pytest.param(request(path="/123/family/x"), (), NOW, DENIED, id="star-is-one-segment"),
    pytest.param(request(path="/"), (), NOW, DENIED, id="star-needs-a-segment"),
    pytest.param(request(path="/123/Family"), (), NOW, DENIED, id="literal-case-sensitive"),
    pytest.param(request(), (), datetime(2028, 1, 1, tzinfo=UTC), EXPIRED, id="expired"),
    pytest.param(
        request(), (), datetime(2027, 12, 31, tzinfo=UTC), EXPIRED, id="valid-until-exclusive"
    ),
    pytest.param(
        request(), (), datetime(2025, 12, 31, 23, 59, tzinfo=UTC), NOT_YET, id="not-yet-valid"
    ),
    pytest.param(request(purpose=None), (), NOW, PURPOSE, id="purpose-missing"),
    pytest.param(request(purpose="curiosity"), (), NOW, PURPOSE, id="purpose-unlisted"),
    pytest.param(request(purpose="Citizen-Service"), (), NOW, PURPOSE, id="purpose-case-sensitive"),
    pytest.param(
        request(service=ADDRESSES, purpose=None, user_id="c"), (), NOW, DENIED, id="not-in-group"
    ),
    pytest.param(
        request(service=ADDRESSES, purpose=None, user_id="c"),
        ("XX/one-stop-windows",),
        NOW,
        DENIED,
        id="group-of-other-instance",
    ),
    pytest.param(
        request(service=ADDRESSES, purpose=None), (ONE_STOP,), NOW, USER_ID, id="user-id-missing"
    ),
    pytest.param(
        request(service=ADDRESSES, purpose=None, user_id=""),
        (ONE_STOP,),
        NOW,
        USER_ID,
        id="user-id-empty",
    ),
    pytest.param(
        request(service=ADDRESSES, purpose=None, user_id="c", method="DELETE"),
        (ONE_STOP,),
        NOW,
        DENIED,
        id="group-grant-wrong-method",
    ),
    pytest.param(
        request(client="PS/GOV/MOH/births", path="/birthsx", purpose=None),
        (),
        NOW,
        DENIED,
        id="prefix-is-not-segment",
    ),
    pytest.param(
        request(client="PS/GOV/MOH/births", path="/deaths/1", purpose=None),
        (),
        NOW,
        DENIED,
        id="other-subtree",
    ),
]


@pytest.mark.parametrize(("req", "client_groups", "now", "code"), DENIED_CASES)
def test_denied(
    moi: PolicySet, req: PolicyRequest, client_groups: tuple[str, ...], now: datetime, code: str
) -> None:
    decision = evaluate(moi, req, groups=groups(*client_groups), now=now)
    assert (decision.allowed, decision.code) == (False, code)
    assert decision.grant_id is None and decision.fields is None
    assert decision.reason
    error = decision.error()
    assert (error.code, error.status) == (code, 403)
    assert error.internal == decision.reason


def test_empty_policy_denies(tmp_path: Path) -> None:
    policy = load_policy_dir(tmp_path)
    assert policy.grants == () and policy.provider is None
    decision = evaluate(policy, request(), groups=frozenset(), now=NOW)
    assert (decision.allowed, decision.code) == (False, DENIED)
    assert "no grant" in decision.reason


def test_considered_lists_the_grants_of_the_service(moi: PolicySet) -> None:
    decision = evaluate(moi, request(purpose=None), groups=frozenset(), now=NOW)
    assert [gid for gid, _ in decision.considered] == ["palpost-window", "moh-births"]
    assert "X-Road-Purpose" in dict(decision.considered)["palpost-window"]
    assert "client is PS/GOV/MOH/births" in dict(decision.considered)["moh-births"]


def test_a_later_full_match_beats_an_earlier_near_miss(tmp_path: Path) -> None:
    old = "valid_until = 2026-01-01T00:00:00Z\n"
    text = "".join(
        f'[[grant]]\nid = "g{i}"\nclient = "{WINDOW}"\nservice = "{PERSONS}"\nmethods = ["GET"]\n'
        + (old if i == 0 else "")
        for i in range(3)
    )
    write_policy(tmp_path, f'provider = "PS/GOV/MOI"\n{text}')
    decision = evaluate(load_policy_dir(tmp_path), request(), groups=frozenset(), now=NOW)
    assert (decision.allowed, decision.grant_id) == (True, "g1")
    assert decision.considered == (("g0", "grant expired at 2026-01-01T00:00:00+00:00"),)


def test_first_file_in_name_order_decides(tmp_path: Path) -> None:
    grant = f'[[grant]]\nclient = "{WINDOW}"\nservice = "{PERSONS}"\nmethods = ["GET"]\n'
    write_policy(tmp_path, f'provider = "PS/GOV/MOI"\n{grant}id = "from-b"\n', "b.toml")
    write_policy(tmp_path, f'provider = "PS/GOV/MOI"\n{grant}id = "from-a"\n', "a.toml")
    decision = evaluate(load_policy_dir(tmp_path), request(), groups=frozenset(), now=NOW)
    assert decision.grant_id == "from-a"
    assert decision.grant_source == f"{tmp_path / 'a.toml'}:2"


def test_naive_now_is_refused(moi: PolicySet) -> None:
    with pytest.raises(ValueError, match="timezone"):
        evaluate(moi, request(), groups=frozenset(), now=datetime(2026, 6, 1))


def test_unsafe_allow_all_warns_and_allows(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        policy = UnsafeAllowAll()
    assert any("UNSAFE" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    decision = evaluate(policy, request(client="PS/GOV/ANY/x"), groups=frozenset(), now=NOW)
    assert (decision.allowed, decision.code, decision.fields) == (
        True,
        "Allowed.UnsafeAllowAll",
        None,
    )
    bad = evaluate(policy, request(path="/a/../b"), groups=frozenset(), now=NOW)
    assert (bad.allowed, bad.code) == (False, BAD_PATH)


def test_log_entry_is_json_ready(moi: PolicySet) -> None:
    decision = evaluate(moi, request(), groups=frozenset(), now=NOW)
    assert decision.log_entry() == {
        "allowed": True,
        "code": "Allowed",
        "grant": "palpost-window",
        "source": decision.grant_source,
        "fields": ["national_id", "name_ar", "address.locality", "children[].national_id"],
        "policy_version": moi.version,
    }
    assert decision.rate is not None and decision.rate.period_seconds == 60


def test_explain_names_the_grant_its_line_fields_and_the_others(moi: PolicySet) -> None:
    text = explain(moi, request(), frozenset(), NOW)
    assert "decision: ALLOWED (Allowed)" in text
    assert f"grant:    palpost-window at {moi.grants[0].source}:3" in text
    assert "fields:   national_id, name_ar, address.locality, children[].national_id" in text
    assert "rate:     600/minute" in text
    assert "one-stop" in text and "grant is for service " + ADDRESSES in text
    assert "moh-births" in text and "client is PS/GOV/MOH/births" in text


def test_explain_a_denial(moi: PolicySet) -> None:
    text = explain(moi, request(path="/1/%2e%2e/2"), frozenset(), NOW)
    assert f"DENIED ({BAD_PATH})" in text
    assert "not considered" in text


# --- path tricks --------------------------------------------------------------------------------

ATTACKS = [
    pytest.param("/123/../456", id="dot-dot"),
    pytest.param("/123/./family", id="dot"),
    pytest.param("/%2e%2e/x", id="encoded-dot-dot"),
    pytest.param("/%2E%2e", id="encoded-dot-dot-mixed-case"),
    pytest.param("/123/%2E", id="encoded-dot"),
    pytest.param("/123%2Ffamily", id="encoded-slash-upper"),
    pytest.param("/123%2ffamily", id="encoded-slash-lower"),
    pytest.param("/123%252Ffamily", id="double-encoded-slash"),
    pytest.param("/%252e%252e/x", id="double-encoded-dot-dot"),
    pytest.param("/123%25", id="encoded-percent"),
    pytest.param("/12%zz", id="malformed-escape"),
    pytest.param("//123", id="leading-empty-segment"),
    pytest.param("/123//family", id="inner-empty-segment"),
    pytest.param("/123/", id="trailing-slash"),
    pytest.param("/123\\family", id="backslash"),
    pytest.param("/123%5Cfamily", id="encoded-backslash"),
    pytest.param("/123%5c..%5c456", id="encoded-backslash-dot-dot"),
    pytest.param("/123\x00", id="nul"),
    pytest.param("/123%00", id="encoded-nul"),
    pytest.param("/123%0A", id="encoded-newline"),
    pytest.param("/123%7F", id="encoded-del"),
    pytest.param("/123%C2%85", id="c1-control"),
    pytest.param("/%c0%ae%c0%ae/x", id="overlong-utf8-dot"),
    pytest.param("/123%ff", id="invalid-utf8"),
    pytest.param("/123%E2%80%AEx", id="bidi-override"),
    pytest.param("/123%E2%80%8B", id="zero-width-space"),
    pytest.param("123", id="no-leading-slash"),
    pytest.param("/" + "a" * 9000, id="too-long"),
]


@pytest.mark.parametrize("path", ATTACKS)
def test_path_tricks_are_refused_before_any_grant(moi: PolicySet, path: str) -> None:
    for req in (
        request(path=path),
        request(service=ADDRESSES, path=path, purpose=None, user_id="c"),
        request(client="PS/GOV/MOH/births", path="/births" + path, purpose=None),
    ):
        if req.path == "/births123":
            continue
        decision = evaluate(moi, req, groups=groups(ONE_STOP), now=NOW)
        assert (decision.allowed, decision.code, decision.considered) == (False, BAD_PATH, ())
    with pytest.raises(BadPath):
        request_segments(path)


@given(st.text(alphabet="/.%2fFeE5cC\\a0\x00", max_size=14))
def test_request_segments_either_parses_or_raises_bad_path(path: str) -> None:
    try:
        segments = request_segments(path)
    except BadPath:
        return
    for segment in segments:
        assert segment not in ("", ".", "..")
        assert not set(segment) & set("/\\%\x00")
    assert request_segments("/" + "/".join(segments)) == segments


# --- property: an allowed decision always has a grant whose scope holds the request -------------

CLIENTS = [parse_client(c) for c in (WINDOW, "PS/GOV/MOH/births", "PS/GOV/PALPOST")]
GROUPS = [parse_global_group(g) for g in (ONE_STOP, "PS/ministries")]
SERVICES = [parse_service(s) for s in (PERSONS, ADDRESSES)]
PROVIDER = MemberId("PS", "GOV", "MOI")
CLEAN_SEGMENTS = ["a", "b", "%61", "c%C3%A9"]
TRICKY_SEGMENTS = ["..", ".", "", "%2F", "%2e", "%252F", "\\", "%00"]
TIMES = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=100 * i) for i in range(4)]


@st.composite
def grants(draw: st.DrawFn, index: int) -> Grant:
    fixed = draw(st.lists(st.sampled_from(["a", "b", "*", "c\u00e9"]), max_size=3))
    patterns = [
        PathPattern.parse("/" + "/".join([*fixed, "**"] if draw(st.booleans()) else fixed))
        for _ in range(draw(st.integers(1, 2)))
    ]
    start = draw(st.none() | st.sampled_from(TIMES))
    return Grant(
        id=f"g{index}",
        client=draw(st.sampled_from([*CLIENTS, *GROUPS])),
        service=draw(st.sampled_from(SERVICES)),
        methods=draw(
            st.just(frozenset({"*"})) | st.frozensets(st.sampled_from(["GET", "POST"]), min_size=1)
        ),
        paths=tuple(patterns),
        source="p.toml",
        line=index + 1,
        fields=draw(st.none() | st.just(("a",))),
        purposes=draw(st.none() | st.frozensets(st.sampled_from(["p1", "p2"]), min_size=1)),
        require_user_id=draw(st.booleans()),
        valid_from=start,
        valid_until=None if start is None else start + timedelta(days=draw(st.integers(1, 300))),
    )


@st.composite
def policies(draw: st.DrawFn) -> PolicySet:
    count = draw(st.integers(0, 4))
    return PolicySet(PROVIDER, tuple(draw(grants(i)) for i in range(count)), "v")


@st.composite
def requests(draw: st.DrawFn) -> tuple[PolicyRequest, bool]:
    clean = draw(st.booleans())
    segments = draw(
        st.lists(
            st.sampled_from(CLEAN_SEGMENTS if clean else CLEAN_SEGMENTS + TRICKY_SEGMENTS),
            max_size=4,
        )
    )
    req = PolicyRequest(
        client=draw(st.sampled_from(CLIENTS)),
        service=draw(st.sampled_from(SERVICES)),
        method=draw(st.sampled_from(["GET", "get", "POST", "DELETE"])),
        path="/" + "/".join(segments),
        purpose=draw(st.sampled_from([None, "p1", "p2", "p3"])),
        user_id=draw(st.sampled_from([None, "", "u"])),
    )
    return req, clean


def _pattern_regex(pattern: PathPattern) -> re.Pattern[str]:
    parts = ["/[^/]+" if p == "*" else "/" + re.escape(p) for p in pattern.fixed]
    return re.compile("".join(parts) + ("(?:/[^/]+)*" if pattern.rest else ""))


def _in_scope(grant: Grant, req: PolicyRequest, client_groups: frozenset[GlobalGroupId]) -> bool:
    path = "" if req.path == "/" else unquote(req.path)
    client_ok = grant.client == req.client or grant.client in client_groups
    method_ok = "*" in grant.methods or req.method.upper() in grant.methods
    path_ok = any(_pattern_regex(p).fullmatch(path) for p in grant.paths)
    return client_ok and grant.service == req.service and method_ok and path_ok


def _conditions_hold(grant: Grant, req: PolicyRequest, now: datetime) -> bool:
    return (
        (grant.valid_from is None or grant.valid_from <= now)
        and (grant.valid_until is None or now < grant.valid_until)
        and (grant.purposes is None or req.purpose in grant.purposes)
        and (not grant.require_user_id or bool(req.user_id))
    )


@given(
    policies(),
    requests(),
    st.frozensets(st.sampled_from(GROUPS)),
    st.sampled_from([*TIMES, datetime(2027, 6, 1, tzinfo=UTC)]),
)
def test_decisions_agree_with_grant_scopes(
    policy: PolicySet,
    drawn: tuple[PolicyRequest, bool],
    client_groups: frozenset[GlobalGroupId],
    now: datetime,
) -> None:
    req, clean = drawn
    decision = evaluate(policy, req, groups=client_groups, now=now)
    matching = [
        g
        for g in policy.grants
        if _in_scope(g, req, client_groups) and _conditions_hold(g, req, now)
    ]
    if decision.allowed:
        grant = policy.grant(decision.grant_id or "")
        assert grant is not None and _in_scope(grant, req, client_groups)
        assert _conditions_hold(grant, req, now)
        assert decision.fields == grant.fields
        assert grant is matching[0]
        assert not set(unquote(req.path)) & set("\\\x00%")
    else:
        assert decision.grant_id is None
        assert decision.code.startswith(DENIED)
        if clean:
            assert not matching


# --- loading ------------------------------------------------------------------------------------

GRANT = f'[[grant]]\nid = "g"\nclient = "{WINDOW}"\nservice = "{PERSONS}"\nmethods = ["GET"]\n'
HEAD = 'provider = "PS/GOV/MOI"\n\n'


def bad(extra: str, line: int, message: str, *, id: str, grant: str = GRANT) -> object:
    """A loader error case: the standard file with ``grant`` replaced and ``extra`` appended."""
    return pytest.param(HEAD + grant + extra, line, message, id=id)


LOADER_ERRORS = [
    pytest.param(
        HEAD + "[[grant]]\nid = \n",
        4,
        "TOML syntax error: Invalid value (column 6)",
        id="toml-syntax",
    ),
    pytest.param(
        'providr = "PS/GOV/MOI"\n',
        1,
        "unknown key 'providr'; did you mean 'provider'?",
        id="unknown-top-key",
    ),
    pytest.param("[[grant]]\nid = 'g'\n", 1, "missing 'provider", id="no-provider"),
    pytest.param('provider = "PS/GOV"\n', 1, "expected 3 parts", id="bad-provider"),
    pytest.param(
        HEAD + "grant = 3\n", 3, "'grant' must be a list of [[grant]] tables", id="grant-not-tables"
    ),
    bad(
        'feilds = ["a"]\n',
        8,
        "grant 'g': unknown key 'feilds'; did you mean 'fields'?",
        id="unknown-grant-key",
    ),
    bad("", 3, "grant: missing 'id'", grant=GRANT.replace('id = "g"\n', ""), id="no-id"),
    bad("", 4, "bad grant id 'a b'", grant=GRANT.replace('"g"', '"a b"'), id="bad-id"),
    bad("", 4, "'id' must be a string", grant=GRANT.replace('"g"', "7"), id="id-not-string"),
    bad(
        "",
        5,
        "invalid subsystem identifier part 'unified window'",
        grant=GRANT.replace("unified-window", "unified window"),
        id="bad-client",
    ),
    bad('group = "PS/x"\n', 3, "give exactly one of 'client'", id="client-and-group"),
    bad(
        "",
        3,
        "give exactly one of 'client'",
        grant=GRANT.replace(f'client = "{WINDOW}"\n', ""),
        id="no-client",
    ),
    bad(
        "",
        5,
        "invalid global group identifier",
        grant=GRANT.replace(f'client = "{WINDOW}"', 'group = "PS/a/b"'),
        id="bad-group",
    ),
    bad(
        "",
        6,
        "belongs to PS/GOV/MOH, but this policy is for provider PS/GOV/MOI",
        grant=GRANT.replace("MOI/population", "MOH/population"),
        id="service-of-other-provider",
    ),
    bad("", 6, "expected 5 parts", grant=GRANT.replace("/persons", ""), id="bad-service"),
    bad(
        "",
        3,
        "missing 'service'",
        grant=GRANT.replace(f'service = "{PERSONS}"\n', ""),
        id="no-service",
    ),
    bad(
        "",
        7,
        "unknown method 'FETCH'",
        grant=GRANT.replace('["GET"]', '["FETCH"]'),
        id="bad-method",
    ),
    bad(
        "",
        7,
        "unknown method 'TRACE'",
        grant=GRANT.replace('["GET"]', '["TRACE"]'),
        id="trace-method",
    ),
    bad("", 7, "at least one method", grant=GRANT.replace('["GET"]', "[]"), id="no-methods"),
    bad(
        "",
        7,
        "'methods' must be a list of strings",
        grant=GRANT.replace('["GET"]', '"GET"'),
        id="methods-not-list",
    ),
    bad(
        "", 7, "list it alone", grant=GRANT.replace('["GET"]', '["GET", "*"]'), id="star-and-method"
    ),
    bad('paths = ["no-slash"]\n', 8, "must start with '/'", id="path-no-slash"),
    bad(
        'paths = ["/a/**/b"]\n',
        8,
        "'**' is only allowed as the last segment",
        id="path-inner-double-star",
    ),
    bad('paths = ["/a//b"]\n', 8, "empty segment", id="path-empty-segment"),
    bad('paths = ["/a/"]\n', 8, "empty segment", id="path-trailing-slash"),
    bad('paths = ["/a*"]\n', 8, "must be a whole segment", id="path-partial-star"),
    bad('paths = ["/../a"]\n', 8, "'.' and '..' segments", id="path-dot-dot"),
    bad('paths = ["/a%2Fb"]\n', 8, "without %", id="path-percent"),
    bad('paths = ["/a\\\\b"]\n', 8, "may only contain", id="path-backslash"),
    bad("paths = []\n", 8, "omit it to allow every path", id="paths-empty"),
    bad('fields = ["a..b"]\n', 8, "bad field path 'a..b'", id="field-empty-part"),
    bad('fields = ["a[0]"]\n', 8, "bad field path 'a[0]'", id="field-index"),
    bad("fields = [1]\n", 8, "'fields' must be a list of strings", id="field-not-string"),
    bad('rate = "600/min"\n', 8, "bad rate '600/min'", id="rate-unit"),
    bad('rate = "0/minute"\n', 8, "bad rate '0/minute'", id="rate-zero"),
    bad("rate = 600\n", 8, "'rate' must be a string", id="rate-int"),
    bad("purposes = []\n", 8, "omit it to accept any purpose", id="purposes-empty"),
    bad('purposes = ["a b"]\n', 8, "bad purpose 'a b'", id="purpose-space"),
    bad('require_user_id = "yes"\n', 8, "must be a boolean", id="user-id-not-bool"),
    bad("valid_from = 2026-01-01T00:00:00\n", 8, "with a time zone", id="naive-datetime"),
    bad("valid_until = 2026-01-01\n", 8, "with a time zone", id="date-only"),
    bad(
        "valid_from = 2026-01-01T00:00:00Z\nvalid_until = 2026-01-01T00:00:00Z\n",
        9,
        "'valid_until' must be later than 'valid_from'",
        id="empty-validity",
    ),
    bad(GRANT, 8, "duplicate grant id 'g' (first at ", id="duplicate-id"),
]


@pytest.mark.parametrize(("text", "line", "message"), LOADER_ERRORS)
def test_loader_refuses_with_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write_policy(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy_dir(tmp_path)
    error = caught.value
    assert (error.file, error.line) == (str(path), line), error.message
    assert message in error.reason
    assert error.message.startswith(f"{path}:{line}: ")
    assert error.code == "Server.ConfigurationError"


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_bytes(b'provider = "PS/GOV/MOI"\n# \xff\n')
    with pytest.raises(PolicyError, match=r"a\.toml:2: not valid UTF-8"):
        load_policy_dir(tmp_path)


def test_duplicate_ids_across_files_are_refused(tmp_path: Path) -> None:
    write_policy(tmp_path, HEAD + GRANT, "a.toml")
    write_policy(tmp_path, HEAD + "\n" + GRANT, "b.toml")
    with pytest.raises(PolicyError) as caught:
        load_policy_dir(tmp_path)
    assert caught.value.message == (
        f"{tmp_path / 'b.toml'}:4: duplicate grant id 'g' (first at {tmp_path / 'a.toml'}:3)"
    )


def test_files_must_agree_on_the_provider(tmp_path: Path) -> None:
    write_policy(tmp_path, HEAD, "a.toml")
    write_policy(tmp_path, 'provider = "PS/GOV/MOH"\n', "b.toml")
    with pytest.raises(PolicyError, match="provider PS/GOV/MOH does not match PS/GOV/MOI"):
        load_policy_dir(tmp_path)
    with pytest.raises(PolicyError, match="provider PS/GOV/MOI does not match PS/GOV/MOF"):
        load_policy_dir(tmp_path, parse_member("PS/GOV/MOF"))


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="policy directory does not exist"):
        load_policy_dir(tmp_path / "nope")


def test_loaded_grant_values(moi: PolicySet) -> None:
    window, one_stop, births = moi.grants
    assert (window.line, one_stop.line, births.line) == (3, 15, 22)
    assert window.methods == frozenset({"GET"}) and one_stop.methods == frozenset({"GET", "POST"})
    assert [str(p) for p in one_stop.paths] == ["/**"]
    assert one_stop.client == parse_global_group(ONE_STOP) and one_stop.is_group_grant
    assert window.valid_until == datetime(2027, 12, 31, tzinfo=UTC)
    assert str(window.rate) == "600/minute"
    assert moi.provider == parse_member("PS/GOV/MOI")
    assert isinstance(window.client, SubsystemId) and isinstance(window.service, ServiceId)


def test_version_identifies_the_files(tmp_path: Path) -> None:
    write_policy(tmp_path / "one", MOI_POLICY, "a.toml")
    write_policy(tmp_path / "two", MOI_POLICY, "a.toml")
    write_policy(tmp_path / "three", MOI_POLICY, "b.toml")
    write_policy(tmp_path / "four", MOI_POLICY + "# comment\n", "a.toml")
    versions = [load_policy_dir(tmp_path / d).version for d in ("one", "two", "three", "four")]
    assert versions[0] == versions[1]
    assert len(set(versions)) == 3
    assert re.fullmatch(r"[0-9a-f]{16}", versions[0])


def test_editor_files_and_other_extensions_are_ignored(tmp_path: Path) -> None:
    write_policy(tmp_path, MOI_POLICY)
    write_policy(tmp_path, "broken [", ".#moi.toml")
    write_policy(tmp_path, "broken [", "moi.toml~")
    assert len(load_policy_dir(tmp_path).grants) == 3


# --- reloading ----------------------------------------------------------------------------------


def test_broken_reload_keeps_the_old_policy(tmp_path: Path) -> None:
    path = write_policy(tmp_path)
    store = PolicyStore(tmp_path)
    before = store.current
    assert store.reload() is False
    path.write_text(
        MOI_POLICY.replace('methods = ["GET"]', 'methods = ["FETCH"]'), encoding="utf-8"
    )
    with pytest.raises(PolicyError, match=r"moi\.toml:7: grant 'palpost-window': unknown method"):
        store.reload()
    assert store.current is before
    assert store.last_error is not None
    assert evaluate(store.current, request(), groups=frozenset(), now=NOW).allowed
    path.write_text(MOI_POLICY.replace('"benefits"', '"pensions"'), encoding="utf-8")
    assert store.reload() is True
    assert store.current.version != before.version and store.last_error is None
    decision = evaluate(store.current, request(purpose="benefits"), groups=frozenset(), now=NOW)
    assert decision.code == PURPOSE


def _touch(path: Path, text: str, stamp: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(stamp, stamp))


def test_maybe_reload_polls_files(tmp_path: Path) -> None:
    path = write_policy(tmp_path)
    store = PolicyStore(tmp_path)
    assert store.maybe_reload() is False
    _touch(path, MOI_POLICY + "# changed\n", 10**18)
    assert store.maybe_reload() is True
    assert store.maybe_reload() is False
    _touch(path, "broken [", 2 * 10**18)
    with pytest.raises(PolicyError):
        store.maybe_reload()
    assert store.maybe_reload() is False
    assert len(store.current.grants) == 3
    path.unlink()
    assert store.maybe_reload() is True
    assert not store.current.grants


def test_store_refuses_to_start_on_a_broken_policy(tmp_path: Path) -> None:
    write_policy(tmp_path, "broken [")
    with pytest.raises(PolicyError, match=r"moi\.toml:1: TOML syntax error"):
        PolicyStore(tmp_path)


# --- the command line ---------------------------------------------------------------------------


def test_cli_check_lists_grants(tmp_path: Path) -> None:
    write_policy(tmp_path)
    result = CliRunner().invoke(policy_cli, ["check", str(tmp_path), "--provider", "PS/GOV/MOI"])
    assert result.exit_code == 0, result.output
    assert "3 grant(s)" in result.output
    assert f"palpost-window  ({tmp_path / 'moi.toml'}:3)" in result.output
    as_json = CliRunner().invoke(policy_cli, ["check", str(tmp_path), "--json"])
    assert '"id": "moh-births"' in as_json.output


def test_cli_check_exits_2_with_file_and_line(tmp_path: Path) -> None:
    write_policy(tmp_path, MOI_POLICY.replace('rate = "600/minute"', 'rate = "lots"'))
    result = CliRunner().invoke(policy_cli, ["check", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path / 'moi.toml'}:13: grant 'palpost-window': bad rate 'lots'" in result.output


@pytest.mark.parametrize(
    ("extra", "code", "needle"),
    [
        pytest.param(["--purpose", "citizen-service"], 0, "decision: ALLOWED", id="allowed"),
        pytest.param([], 1, f"DENIED ({PURPOSE})", id="denied"),
        pytest.param(
            ["--purpose", "citizen-service", "--at", "2030-01-01T00:00:00Z"], 1, EXPIRED, id="at"
        ),
        pytest.param(["--at", "2030-01-01T00:00:00"], 2, "time zone", id="naive-at"),
        pytest.param(["--client", "PS/GOV"], 2, "expected 4 parts", id="bad-client"),
    ],
)
def test_cli_explain_exit_codes(tmp_path: Path, extra: list[str], code: int, needle: str) -> None:
    write_policy(tmp_path)
    args = ["explain", "--dir", str(tmp_path), "--client", WINDOW, "--service", PERSONS]
    args += ["--path", "/123", "--at", "2026-06-01T00:00:00Z", *extra]
    result = CliRunner().invoke(policy_cli, args)
    assert result.exit_code == code, result.output
    assert needle in result.output


def test_cli_explain_group_grant_json(tmp_path: Path) -> None:
    write_policy(tmp_path)
    args = ["explain", "--dir", str(tmp_path), "--client", WINDOW, "--service", ADDRESSES]
    args += ["--method", "POST", "--user-id", "clerk", "--group", ONE_STOP, "--json"]
    result = CliRunner().invoke(policy_cli, args)
    assert result.exit_code == 0, result.output
    assert '"grant": "one-stop"' in result.output


def test_cli_explain_needs_a_directory() -> None:
    result = CliRunner().invoke(policy_cli, ["explain", "--client", WINDOW, "--service", PERSONS])
    assert result.exit_code == 2 and "--dir" in result.output


@pytest.mark.parametrize("command", [[], ["check"], ["explain"]])
def test_cli_help_has_an_example(command: list[str]) -> None:
    result = CliRunner().invoke(policy_cli, [*command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.output
