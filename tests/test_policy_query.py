"""A grant's ``query``: which query parameters a request may carry (docs/design.md §7, deny by
default).

Before, the query string was not part of the policy: a grant whose paths include the service
root allowed every query on it (the population registry's search, say). A grant may now list
the only parameter names it allows (``query = []``: none); without ``query`` any query passes,
as before. Names are judged as a backend reads them: ``+`` and percent-encoding decoded once,
strict UTF-8; a name that could be read more than one way is refused.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from exchange.cli.policy import group as policy_cli
from exchange.identifiers import parse_client, parse_member, parse_service
from exchange.policy import PolicyError, PolicyRequest, PolicySet, evaluate, load_policy_dir
from exchange.policy.evaluate import query_names
from exchange.policy.lint import SHADOWED, lint

NOW = datetime(2026, 6, 1, tzinfo=UTC)
WINDOW = "PS/GOV/PALPOST/unified-window"
HEALTH = "PS/GOV/MOH/health-records"
PERSONS = "PS/GOV/MOI/population-registry/persons"
DENIED = "Server.ServerProxy.AccessDenied"

POLICY = f"""\
provider = "PS/GOV/MOI"

[[grant]]
id = "window-search"
client = "{WINDOW}"
service = "{PERSONS}"
methods = ["GET"]
query = ["name", "date_of_birth"]

[[grant]]
id = "health-no-query"
client = "{HEALTH}"
service = "{PERSONS}"
methods = ["GET"]
paths = ["/*"]
query = []

[[grant]]
id = "finance-any-query"
client = "PS/GOV/MOF/payments"
service = "{PERSONS}"
methods = ["GET"]
"""


@pytest.fixture
def policy(tmp_path: Path) -> PolicySet:
    (tmp_path / "MOI").mkdir()
    (tmp_path / "MOI" / "moi.toml").write_text(POLICY, encoding="utf-8")
    return load_policy_dir(tmp_path / "MOI", parse_member("PS/GOV/MOI"))


def judge(policy: PolicySet, client: str, path: str, query: str, protocol: str = "rest") -> object:
    request = PolicyRequest(
        parse_client(client), parse_service(PERSONS), "GET", path, query=query, protocol=protocol
    )
    return evaluate(policy, request, groups=frozenset(), now=NOW)


def test_the_grant_holds_its_query_names(policy: PolicySet) -> None:
    by_id = {grant.id: grant for grant in policy.grants}
    assert by_id["window-search"].query == frozenset({"name", "date_of_birth"})
    assert by_id["health-no-query"].query == frozenset()
    assert by_id["finance-any-query"].query is None


@pytest.mark.parametrize(
    ("client", "path", "query"),
    [
        pytest.param(WINDOW, "", "name=Amal", id="one-listed-name"),
        pytest.param(WINDOW, "/", "name=Amal&date_of_birth=1984-03-02", id="both-listed-names"),
        pytest.param(WINDOW, "", "name=Amal&name=Sami", id="a-name-twice"),
        pytest.param(WINDOW, "", "na%6De=Amal", id="percent-encoded-name"),
        pytest.param(WINDOW, "", "", id="no-query"),
        pytest.param(WINDOW, "", "&name=Amal&", id="empty-parts"),
        pytest.param(HEALTH, "/123456782", "", id="no-query-where-none-allowed"),
        pytest.param("PS/GOV/MOF/payments", "", "anything=1&else", id="grant-without-query"),
    ],
)
def test_allowed_queries(policy: PolicySet, client: str, path: str, query: str) -> None:
    decision = judge(policy, client, path, query)
    assert decision.allowed, decision.reason  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("client", "path", "query", "reason"),
    [
        pytest.param(
            WINDOW,
            "",
            "national_id=123456782",
            "query parameter 'national_id' is not in date_of_birth, name",
            id="unlisted-name",
        ),
        pytest.param(
            WINDOW,
            "",
            "name=Amal&limit=100",
            "query parameter 'limit' is not in date_of_birth, name",
            id="one-unlisted-among-listed",
        ),
        pytest.param(
            WINDOW, "", "name+x=1", "query parameter 'name x' is not in", id="plus-is-a-space"
        ),
        pytest.param(
            WINDOW, "", "name;limit=1", "query parameter 'name;limit' is not in", id="semicolon"
        ),
        pytest.param(
            HEALTH,
            "/123456782",
            "x=1",
            "query parameter 'x' is not in no query parameter",
            id="any-query-where-none-allowed",
        ),
        pytest.param(
            WINDOW, "", "na%25me=1", "could be read more than one way", id="still-encoded"
        ),
        pytest.param(WINDOW, "", "name%00=1", "could be read more than one way", id="nul"),
        pytest.param(WINDOW, "", "%ff=1", "could be read more than one way", id="not-utf8"),
    ],
)
def test_refused_queries(
    policy: PolicySet, client: str, path: str, query: str, reason: str
) -> None:
    decision = judge(policy, client, path, query)
    assert not decision.allowed  # type: ignore[attr-defined]
    assert decision.code == DENIED  # type: ignore[attr-defined]
    assert any(reason in why for _, why in decision.considered), decision.considered  # type: ignore[attr-defined]


def test_soap_requests_are_not_judged_by_query(policy: PolicySet) -> None:
    """A SOAP request has no query string of its own; ``methods``, ``paths`` and ``query`` scope
    REST requests only."""
    decision = judge(policy, WINDOW, "", "national_id=1", protocol="soap")
    assert decision.allowed  # type: ignore[attr-defined]


def test_query_names_reads_as_a_backend_does() -> None:
    assert query_names("") == frozenset()
    assert query_names("a=1&b&c=&a=2") == frozenset({"a", "b", "c"})
    assert query_names("x%20y=1&p+q=2") == frozenset({"x y", "p q"})
    assert query_names("%E2%82%AC=1") == frozenset({"€"})
    for ambiguous in ("%ff=1", "a%00=1", "a%25=1", "a%5C=1", "%E2%80%8B=1"):
        assert query_names(ambiguous) is None, ambiguous


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param('"name"', "'query' must be a list of strings", id="not-a-list"),
        pytest.param("[1]", "'query' must be a list of strings", id="not-strings"),
        pytest.param('["na me"]', "bad query parameter name 'na me'", id="space"),
        pytest.param('["a=b"]', "bad query parameter name 'a=b'", id="equals"),
        pytest.param('[""]', "bad query parameter name ''", id="empty"),
    ],
)
def test_bad_query_lists_are_refused_with_file_and_line(
    tmp_path: Path, value: str, message: str
) -> None:
    (tmp_path / "MOI").mkdir()
    text = POLICY.replace('query = ["name", "date_of_birth"]', f"query = {value}")
    (tmp_path / "MOI" / "moi.toml").write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as refused:
        load_policy_dir(tmp_path / "MOI", parse_member("PS/GOV/MOI"))
    assert message in str(refused.value)
    assert "moi.toml:8" in str(refused.value)


def test_a_query_restricted_grant_does_not_shadow_a_later_open_one(tmp_path: Path) -> None:
    """Lint: an earlier grant that allows fewer query parameters does not decide every request
    of a later one that allows any; the other way round, it does."""

    def shadowed(first: str, second: str) -> set[str]:
        text = f"""\
provider = "PS/GOV/MOI"

[[grant]]
id = "first"
client = "{WINDOW}"
service = "{PERSONS}"
methods = ["GET"]
{first}

[[grant]]
id = "second"
client = "{WINDOW}"
service = "{PERSONS}"
methods = ["GET"]
{second}
"""
        folder = tmp_path / f"MOI-{len(first)}-{len(second)}"
        folder.mkdir()
        (folder / "moi.toml").write_text(text, encoding="utf-8")
        policy = load_policy_dir(folder, parse_member("PS/GOV/MOI"))
        return {f.grant for f in lint(policy, NOW) if f.kind == SHADOWED}

    assert shadowed("query = []", "") == set()
    assert shadowed('query = ["name"]', 'query = ["name", "limit"]') == set()
    assert shadowed("", "query = []") == {"second"}
    assert shadowed('query = ["name", "limit"]', 'query = ["name"]') == {"second"}


def test_cli_explain_takes_a_query(tmp_path: Path) -> None:
    (tmp_path / "MOI").mkdir()
    (tmp_path / "MOI" / "moi.toml").write_text(POLICY, encoding="utf-8")
    args = ["explain", "--dir", str(tmp_path / "MOI"), "--client", WINDOW, "--service", PERSONS]
    args += ["--at", "2026-06-01T00:00:00Z"]
    allowed = CliRunner().invoke(policy_cli, [*args, "--query", "name=Amal"])
    assert allowed.exit_code == 0, allowed.output
    assert "?name=Amal" in allowed.output
    refused = CliRunner().invoke(policy_cli, [*args, "--query", "limit=100"])
    assert refused.exit_code == 1, refused.output
    assert "query parameter 'limit' is not in date_of_birth, name" in refused.output


def test_cli_check_lists_each_grants_query(tmp_path: Path) -> None:
    (tmp_path / "MOI").mkdir()
    (tmp_path / "MOI" / "moi.toml").write_text(POLICY, encoding="utf-8")
    listed = CliRunner().invoke(policy_cli, ["check", str(tmp_path / "MOI")])
    assert listed.exit_code == 0, listed.output
    assert "query: date_of_birth, name" in listed.output
    assert "query: (none)" in listed.output
    as_json = CliRunner().invoke(policy_cli, ["check", str(tmp_path / "MOI"), "--json"])
    queries = {g["id"]: g["query"] for g in json.loads(as_json.output)["grants"]}
    assert queries == {
        "window-search": ["date_of_birth", "name"],
        "health-no-query": [],
        "finance-any-query": None,
    }
