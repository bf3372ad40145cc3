"""Local groups in policy files and ``exchange policy lint`` (issue 6, items 1 and 8)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from exchange.cli.policy import group as policy_cli
from exchange.identifiers import parse_client, parse_global_group, parse_service
from exchange.policy import PolicyError, PolicyRequest, PolicySet, evaluate, explain
from exchange.policy.lint import lint
from exchange.policy.loader import load_policy_dir

DENIED = "Server.ServerProxy.AccessDenied"
PERSONS = "PS/GOV/MOI/population-registry/persons"
UNIFIED = "PS/GOV/PALPOST/unified-window"
BIDDU = "PS/GOV/PALPOST/biddu-window"
HEALTH = "PS/GOV/MOH/health-records"
NOW = datetime(2026, 6, 1, tzinfo=UTC)

GROUPS_FILE = """\
provider = "PS/GOV/MOI"

[groups]
one-stop-windows = ["PS/GOV/PALPOST/unified-window", "PS/GOV/PALPOST/biddu-window"]
nobody = []
"""

GRANTS_FILE = """\
provider = "PS/GOV/MOI"

[[grant]]
id = "windows"
group = "local:one-stop-windows"
service = "PS/GOV/MOI/population-registry/persons"
methods = ["GET"]
paths = ["/*"]
fields = ["national_id"]

[[grant]]
id = "global-health"
group = "PS/health-providers"
service = "PS/GOV/MOI/population-registry/persons"
methods = ["GET"]
paths = ["/*/family"]
"""


def write(directory: Path, **files: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / f"{name}.toml").write_text(text, encoding="utf-8")
    return directory


@pytest.fixture
def moi(tmp_path: Path) -> PolicySet:
    return load_policy_dir(write(tmp_path / "MOI", a_groups=GROUPS_FILE, b_grants=GRANTS_FILE))


def req(client: str, path: str = "/123", method: str = "GET") -> PolicyRequest:
    return PolicyRequest(parse_client(client), parse_service(PERSONS), method, path)


# --- local groups -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "path", "global_groups", "code", "grant"),
    [
        pytest.param(UNIFIED, "/123", (), "Allowed", "windows", id="first-member"),
        pytest.param(BIDDU, "/123", (), "Allowed", "windows", id="second-member"),
        pytest.param(HEALTH, "/123", (), DENIED, None, id="not-a-member"),
        pytest.param(
            "PS/GOV/PALPOST", "/123", (), DENIED, None, id="member-of-member-is-not-subsystem"
        ),
        pytest.param(BIDDU, "/123/family", (), DENIED, None, id="member-outside-path"),
        pytest.param(
            HEALTH, "/123/family", ("PS/health-providers",), "Allowed", "global-health",
            id="global-group-still-works",
        ),
        pytest.param(
            HEALTH, "/123", ("PS/one-stop-windows",), DENIED, None,
            id="global-group-of-same-name-is-not-local",
        ),
    ],
)  # fmt: skip
def test_local_group_decisions(
    moi: PolicySet,
    client: str,
    path: str,
    global_groups: tuple[str, ...],
    code: str,
    grant: str | None,
) -> None:
    groups = frozenset(parse_global_group(g) for g in global_groups)
    decision = evaluate(moi, req(client, path), groups=groups, now=NOW)
    assert (decision.code, decision.grant_id) == (code, grant)


def test_loaded_groups(moi: PolicySet) -> None:
    assert [g.name for g in moi.groups] == ["one-stop-windows", "nobody"]
    assert moi.groups[0].location.endswith("a_groups.toml:4")
    assert moi.local_groups_of(parse_client(BIDDU))[0].name == "one-stop-windows"


def test_explain_shows_group_membership(moi: PolicySet) -> None:
    allowed = explain(moi, req(BIDDU), frozenset(), NOW)
    assert "local groups local:one-stop-windows" in allowed
    assert "group:    local:one-stop-windows" in allowed and BIDDU in allowed
    denied = explain(moi, req(HEALTH), frozenset(), NOW)
    assert "not a member of local group local:one-stop-windows" in denied


GRANT_TO = """\
provider = "PS/GOV/MOI"

[[grant]]
id = "g"
group = "{group}"
service = "PS/GOV/MOI/population-registry/persons"
methods = ["GET"]
"""


@pytest.mark.parametrize(
    ("files", "where", "message"),
    [
        pytest.param(
            {"a": GRANT_TO.format(group="local:missing")}, "a.toml:5",
            "unknown local group local:missing", id="unknown-group",
        ),
        pytest.param(
            {"a": GROUPS_FILE, "b": GRANT_TO.format(group="local:one-stop")}, "b.toml:5",
            "unknown local group local:one-stop", id="unknown-group-other-file",
        ),
        pytest.param(
            {"a": GRANT_TO.format(group="local:bad name")}, "a.toml:5", "bad local group",
            id="bad-reference",
        ),
        pytest.param(
            {"a": GROUPS_FILE, "b": GROUPS_FILE}, "b.toml:4",
            "duplicate local group 'one-stop-windows'",
            id="duplicate-across-files",
        ),
        pytest.param(
            {"a": 'provider = "PS/GOV/MOI"\n[groups]\nw = ["PS/GOV/X/a", "not an id"]\n'},
            "a.toml:3", "group 'w'", id="bad-member",
        ),
        pytest.param(
            {"a": 'provider = "PS/GOV/MOI"\n\n[groups]\nw = "PS/GOV/X/a"\n'},
            "a.toml:4", "must be a list of client identifiers", id="member-not-a-list",
        ),
        pytest.param(
            {"a": 'provider = "PS/GOV/MOI"\n[groups]\n"b c" = []\n'}, "a.toml:2",
            "bad group name", id="bad-group-name",
        ),
        pytest.param(
            {"a": 'provider = "PS/GOV/MOI"\ngroups = 3\n'}, "a.toml:2",
            "'groups' must be a table", id="groups-not-a-table",
        ),
    ],
)  # fmt: skip
def test_bad_groups_are_refused_with_file_and_line(
    tmp_path: Path, files: dict[str, str], where: str, message: str
) -> None:
    with pytest.raises(PolicyError) as raised:
        load_policy_dir(write(tmp_path / "p", **files))
    assert f"{raised.value.file}:{raised.value.line}".endswith(where), raised.value.message
    assert message in raised.value.message


def test_cli_check_lists_groups(tmp_path: Path) -> None:
    directory = write(tmp_path / "p", a=GROUPS_FILE, b=GRANTS_FILE)
    result = CliRunner().invoke(policy_cli, ["check", str(directory), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["groups"]["one-stop-windows"] == sorted([UNIFIED, BIDDU])
    assert document["grants"][0]["group"] == "local:one-stop-windows"


# --- lint ---------------------------------------------------------------------------------------

HEAD = 'provider = "PS/GOV/MOI"\n[groups]\nwindows = ["PS/GOV/PALPOST/unified-window"]\nnone = []\n'


def grant(gid: str, subject: str = f'client = "{UNIFIED}"', **extra: str) -> str:
    methods = extra.pop("methods", '["GET"]')
    paths = extra.pop("paths", '["/*"]')
    lines = [
        "[[grant]]",
        f'id = "{gid}"',
        subject,
        f'service = "{PERSONS}"',
        f"methods = {methods}",
        f"paths = {paths}",
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


LINT_CASES = [
    pytest.param([grant("a")], [], id="single-grant-clean"),
    pytest.param(
        [grant("a"), grant("b", paths='["/*/family"]')], [], id="disjoint-paths-clean"
    ),
    pytest.param(
        [grant("a"), grant("b", methods='["POST"]')], [], id="disjoint-methods-clean"
    ),
    pytest.param(
        [grant("a"), grant("b", f'client = "{HEALTH}"')], [], id="other-client-clean"
    ),
    pytest.param([grant("a"), grant("b")], [("shadowed", "b", "a")], id="identical"),
    pytest.param(
        [grant("a", paths='["/**"]', methods='["*"]'), grant("b", paths='["/*/family"]')],
        [("shadowed", "b", "a")], id="superset-scope",
    ),
    pytest.param(
        [grant("a", paths='["/*/**"]'), grant("b", paths='["/**"]')],
        [("overlap", "b", "a")], id="earlier-narrower-overlaps",
    ),
    pytest.param(
        [grant("a", purposes='["x"]'), grant("b")],
        [("overlap", "b", "a")], id="earlier-stricter-purpose-overlaps",
    ),
    pytest.param(
        [grant("a"), grant("b", purposes='["x"]')],
        [("shadowed", "b", "a")], id="later-stricter-purpose-shadowed",
    ),
    pytest.param(
        [grant("a", require_user_id="true"), grant("b")],
        [("overlap", "b", "a")], id="earlier-requires-user-id",
    ),
    pytest.param(
        [grant("a", valid_until="2027-01-01T00:00:00Z"), grant("b")],
        [("overlap", "b", "a")], id="earlier-ends-sooner",
    ),
    pytest.param(
        [grant("a", 'group = "local:windows"'), grant("b")],
        [("shadowed", "b", "a")], id="group-shadows-member",
    ),
    pytest.param(
        [grant("a"), grant("b", 'group = "local:windows"', paths='["/**"]')],
        [("overlap", "b", "a")], id="member-overlaps-group",
    ),
    pytest.param(
        [grant("a", 'group = "PS/g"'), grant("b")], [], id="global-group-not-consulted",
    ),
    pytest.param(
        [grant("a", valid_until="2026-05-31T00:00:00Z")], [("expired", "a", None)],
        id="expired",
    ),
    pytest.param(
        [grant("a", 'group = "local:none"')], [("empty-group", "a", None)], id="empty-group",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("grants", "expected"), LINT_CASES)
def test_lint_findings(
    tmp_path: Path, grants: list[str], expected: list[tuple[str, str, str | None]]
) -> None:
    policy = load_policy_dir(write(tmp_path / "p", moi=HEAD + "\n".join(grants)))
    found = [(f.kind, f.grant, f.other) for f in lint(policy, NOW)]
    assert found == expected


def test_overlap_message_names_the_winner(tmp_path: Path) -> None:
    policy = load_policy_dir(
        write(tmp_path / "p", moi=HEAD + grant("a", purposes='["x"]') + grant("b"))
    )
    (finding,) = lint(policy, NOW)
    assert finding.location.endswith("moi.toml:12")
    assert finding.other_location is not None and finding.other_location.endswith("moi.toml:5")
    assert "'a' wins" in finding.message


def test_example_policy_has_no_overlapping_or_shadowed_grants() -> None:
    policy = load_policy_dir(
        Path(__file__).resolve().parents[1] / "exchange" / "demo" / "policies" / "MOI"
    )
    assert [f for f in lint(policy, NOW) if f.kind not in ("expired",)] == []


def test_cli_lint_exit_codes(tmp_path: Path) -> None:
    clean = write(tmp_path / "clean", moi=HEAD + grant("a"))
    dirty = write(tmp_path / "dirty", moi=HEAD + grant("a") + grant("b"))
    broken = write(tmp_path / "broken", moi="provider = 3\n")
    runner = CliRunner()
    ok = runner.invoke(policy_cli, ["lint", str(clean)])
    assert (ok.exit_code, "no findings" in ok.output) == (0, True), ok.output
    bad = runner.invoke(policy_cli, ["lint", str(dirty), "--json"])
    assert bad.exit_code == 1
    assert [f["kind"] for f in json.loads(bad.output)["findings"]] == ["shadowed"]
    text = runner.invoke(policy_cli, ["lint", str(dirty)])
    assert "moi.toml:11: shadowed: grant 'b'" in text.output
    assert runner.invoke(policy_cli, ["lint", str(broken)]).exit_code == 2


def test_cli_lint_judges_expiry_at(tmp_path: Path) -> None:
    directory = write(tmp_path / "p", moi=HEAD + grant("a", valid_until="2026-05-31T00:00:00Z"))
    runner = CliRunner()
    assert (
        runner.invoke(
            policy_cli, ["lint", str(directory), "--at", "2026-01-01T00:00:00Z"]
        ).exit_code
        == 0
    )
    assert (
        runner.invoke(
            policy_cli, ["lint", str(directory), "--at", "2026-06-01T00:00:00Z"]
        ).exit_code
        == 1
    )
