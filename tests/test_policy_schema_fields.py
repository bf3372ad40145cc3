"""``policy lint`` / ``policy check`` and a grant's ``fields`` against the service's published
OpenAPI document (issue 14: a typo in ``fields`` releases nothing and used to fail silently)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from adapters.population.app import create_app
from adapters.population.openapi import openapi_document
from adapters.population.store import build_registry
from exchange.cli.policy import group as policy_cli
from exchange.globalconf.anchor import Anchor
from exchange.identifiers import parse_security_server, parse_service
from exchange.policy.lint import UNKNOWN_FIELD, lint
from exchange.policy.loader import load_policy_dir
from exchange.policy.model import PathPattern
from exchange.policy.schema_fields import undescribed_fields
from exchange.protocol.metadata import openapi_description
from exchange.server.setup import init_server
from exchange.trust import keys

ROOT = Path(__file__).resolve().parents[1]
PERSONS = "PS/GOV/MOI/population-registry/persons"
NOW_ISO = "2026-06-01T00:00:00Z"

POLICY = """\
provider = "PS/GOV/MOI"

[[grant]]
id = "window"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/population-registry/persons"
methods = ["GET"]
paths = ["/*"]
fields = ["national_id", "name_en.full", "adress", "name_en.fulll"]
"""


def _patterns(*texts: str) -> list[PathPattern]:
    return [PathPattern.parse(t) for t in texts]


def _published() -> dict[str, Any]:
    """The registry's document as getOpenAPI publishes it for the service at ``/persons``."""
    body = json.dumps(openapi_document()).encode()
    published: dict[str, Any] = json.loads(
        openapi_description(body, "application/json", "/persons")[0]
    )
    return published


def test_the_example_policys_fields_are_all_in_the_registrys_openapi_document() -> None:
    policy = load_policy_dir(ROOT / "exchange" / "demo" / "policies" / "MOI")
    described = {parse_service(PERSONS): _published()}
    from datetime import UTC, datetime

    found = lint(policy, datetime(2026, 6, 1, tzinfo=UTC), described)
    assert [f for f in found if f.kind == UNKNOWN_FIELD] == []


def test_a_misspelt_or_missing_field_is_found_under_the_paths_the_grant_reaches() -> None:
    doc = _published()
    fields = ["address.locality", "adress", "children[].national_id", "children[].x", "father"]
    # GET /persons/{id}: Person has no family links in depth, /family's schema has them
    person_only = undescribed_fields(fields, doc, ("GET",), _patterns("/*"))
    assert person_only == ["adress", "children[].national_id", "children[].x", "father"]
    with_family = undescribed_fields(fields, doc, ("GET",), _patterns("/*", "/*/family"))
    assert with_family == ["adress", "children[].x"]


def _doc(schema: dict[str, Any], components: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = {"200": {"description": "", "content": {"application/json": {"schema": schema}}}}
    return {
        "openapi": "3.0.3",
        "paths": {"/{id}": {"get": {"responses": answer}}},
        "components": {"schemas": components or {}},
    }


@pytest.mark.parametrize(
    ("schema", "components", "unknown"),
    [
        pytest.param(
            {"type": "object", "properties": {"a": {"type": "string"}}},
            None,
            ["b", "a.x"],
            id="closed-object",
        ),
        pytest.param({"type": "object"}, None, [], id="open-object-accepts-anything"),
        pytest.param(
            {"type": "object", "properties": {"a": {}}, "additionalProperties": True},
            None,
            [],
            id="additional-properties-true",
        ),
        pytest.param(
            {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "additionalProperties": {"type": "object", "properties": {"x": {}}},
            },
            None,
            ["a.x"],
            id="additional-properties-schema",
        ),
        pytest.param(
            {"allOf": [{"$ref": "#/components/schemas/A"}, {"properties": {"b": {}}}]},
            {"A": {"type": "object", "properties": {"a": {"properties": {"x": {}}}}}},
            [],
            id="allof-and-ref",
        ),
        pytest.param(
            {"$ref": "#/components/schemas/Loop"},
            {"Loop": {"$ref": "#/components/schemas/Loop"}},
            [],
            id="cyclic-ref-ends",
        ),
        pytest.param(
            {"type": "array", "items": {"type": "object", "properties": {"a": {}}}},
            None,
            ["b"],
            id="top-level-list",
        ),
        pytest.param({"$ref": "other.json#/A"}, None, [], id="remote-ref-not-followed"),
        pytest.param({"type": "string"}, None, ["a", "b", "a.x"], id="scalar-answer"),
    ],
)
def test_schema_shapes(
    schema: dict[str, Any], components: dict[str, Any] | None, unknown: list[str]
) -> None:
    fields = ["a", "b", "a.x"]
    assert undescribed_fields(fields, _doc(schema, components)) == unknown


def test_nothing_is_reported_when_the_document_describes_no_json_answer_there() -> None:
    doc = _doc({"type": "object", "properties": {"a": {}}})
    assert undescribed_fields(["zzz"], doc, ("POST",)) == []
    assert undescribed_fields(["zzz"], doc, ("GET",), _patterns("/*/elsewhere")) == []


def _write(tmp_path: Path) -> tuple[Path, Path]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "moi.toml").write_text(POLICY)
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(_published()))
    return policies, document


def test_lint_and_check_name_the_grant_and_field_with_the_document_given(tmp_path: Path) -> None:
    policies, document = _write(tmp_path)
    runner = CliRunner()
    given = ["--openapi", f"{PERSONS}={document}", "--at", NOW_ISO]
    out = runner.invoke(policy_cli, ["lint", str(policies), *given])
    assert out.exit_code == 1, out.output
    assert "moi.toml:3: unknown-field: grant 'window' releases field 'adress'" in out.output
    assert "'name_en.fulll'" in out.output
    assert "'name_en.full'" not in out.output.replace("'name_en.fulll'", "")
    as_json = runner.invoke(policy_cli, ["lint", str(policies), *given, "--json"])
    assert [f["kind"] for f in json.loads(as_json.output)["findings"]] == [UNKNOWN_FIELD] * 2
    checked = runner.invoke(
        policy_cli, ["check", str(policies), "--openapi", f"{PERSONS}={document}", "--json"]
    )
    assert checked.exit_code == 0, checked.output  # a warning, not a broken policy
    assert len(json.loads(checked.output)["warnings"]) == 2
    plain = runner.invoke(policy_cli, ["lint", str(policies), "--at", NOW_ISO])
    assert plain.exit_code == 0, plain.output  # no document given: nothing to compare with


def test_a_bad_openapi_option_or_an_unreadable_document(tmp_path: Path) -> None:
    policies, _ = _write(tmp_path)
    runner = CliRunner()
    bad = runner.invoke(policy_cli, ["lint", str(policies), "--openapi", "nonsense"])
    assert bad.exit_code == 2 and "SERVICE=FILE_OR_URL" in bad.output
    missing = runner.invoke(
        policy_cli, ["lint", str(policies), "--openapi", f"{PERSONS}={tmp_path}/none.json"]
    )
    assert missing.exit_code == 0
    assert "could not be read" in missing.output and "not checked" in missing.output


async def test_lint_with_a_servers_config_reads_what_its_running_adapter_publishes(
    tmp_path: Path,
) -> None:
    policies, _ = _write(tmp_path)
    db = tmp_path / "registry.sqlite"
    build_registry(db, count=50, seed=1)
    runner = web.AppRunner(create_app(db))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        anchor = Anchor(
            instance="PS",
            download_url="http://127.0.0.1:9/globalconf",
            generated_at=int(time.time()),
            verification_certs=(
                keys.cert_pem(keys.self_signed_certificate(keys.generate_key(), "PS central")),
            ),
        ).save(tmp_path / "anchor.json")
        service = {
            "id": PERSONS,
            "url": f"http://127.0.0.1:{port}/persons",
            "type": "rest",
            "openapi_url": f"http://127.0.0.1:{port}/openapi.json",
        }
        init_server(
            tmp_path / "ss", parse_security_server("PS/GOV/MOI/ss1"), anchor,
            policy_dir=policies, extra={"services": [service]},
        )  # fmt: skip
        config = tmp_path / "ss" / "server.toml"
        out = await asyncio.to_thread(
            CliRunner().invoke, policy_cli, ["lint", "--config", str(config), "--at", NOW_ISO]
        )
        assert out.exit_code == 1, out.output
        assert "releases field 'adress'" in out.output
    finally:
        await runner.cleanup()
