"""``exchange server status``: what an operator reads about a server without starting it.

It printed nested values as Python dicts (``auth_cert: {'subject': ...}``); it now prints one
indented ``key: value`` line each, and ``--json`` keeps the same content for programs.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from exchange.central.setup import init_central
from exchange.cli.server import group as server_group
from exchange.cli.server import status_lines
from exchange.identifiers import parse_security_server, parse_subsystem
from exchange.server.setup import init_server
from exchange.trust.ca import CertificateAuthority

SS1 = parse_security_server("PS/GOV/MOI/ss1")


def test_nested_values_are_indented_lines() -> None:
    status = {
        "server": "PS/GOV/MOI/ss1",
        "auth_cert": {"subject": "CN=ss1", "warning": None},
        "signing_certs": {"PS/GOV/MOI": {"days_left": 364}},
        "clients": ["PS/GOV/MOI/a", "PS/GOV/MOI/b"],
        "services": {},
        "globalconf": None,
    }
    assert status_lines(status) == [
        "server: PS/GOV/MOI/ss1",
        "auth_cert:",
        "  subject: CN=ss1",
        "  warning: -",
        "signing_certs:",
        "  PS/GOV/MOI:",
        "    days_left: 364",
        "clients:",
        "  - PS/GOV/MOI/a",
        "  - PS/GOV/MOI/b",
        "services: -",
        "globalconf: -",
    ]


def test_status_of_a_new_server_reads_as_lines_and_as_json(tmp_path: Path) -> None:
    central = init_central(tmp_path / "central", "PS", port=0)
    server = init_server(
        tmp_path / "ss-moi",
        SS1,
        central.anchor_path,
        clients=[parse_subsystem("PS/GOV/MOI/population-registry")],
        ca=CertificateAuthority.create(tmp_path / "ca", "PS Test CA"),
    )
    shown = CliRunner().invoke(server_group, ["status", "--config", str(server.config)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == "server: PS/GOV/MOI/ss1"
    assert "auth_cert:" in lines and "clients:" in lines
    assert "  - PS/GOV/MOI/population-registry" in lines
    assert "globalconf: -" in lines  # never fetched yet
    assert not any("{" in line for line in lines), shown.output
    as_json = CliRunner().invoke(server_group, ["status", "--config", str(server.config), "--json"])
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.output)
    assert doc["clients"] == ["PS/GOV/MOI/population-registry"]
    assert doc["auth_cert"]["subject"] in shown.output
