"""The commands the CLI tells its operator to run next work when typed as printed.

Found by following README.md's walk-throughs on a fresh clone: a "next:" line that names a flag
the command does not have sends the operator to a usage error in the middle of a key rotation.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from exchange.central.registry import Registry
from exchange.central.setup import init_central
from exchange.cli.central import group as central_group
from exchange.cli.log import _progress as _log_progress
from exchange.cli.server import group as server_group
from exchange.demo.federation import _progress as _demo_progress
from exchange.identifiers import parse_member, parse_security_server, parse_subsystem
from exchange.server.config import load_server_config
from exchange.server.setup import init_server
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import fingerprint, load_certificate

SS1 = parse_security_server("PS/GOV/MOI/ss1")


def _printed_command(output: str, prefix: str) -> list[str]:
    """The arguments of the one printed line that starts with ``prefix`` (after the indent)."""
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith(prefix)]
    assert len(lines) == 1, output
    return shlex.split(lines[0].removeprefix(prefix))


def test_new_auth_names_the_add_auth_cert_command_as_it_is(tmp_path: Path) -> None:
    central = init_central(tmp_path / "central", "PS", port=0)
    ca = CertificateAuthority.create(tmp_path / "ca", "PS Test CA")
    server = init_server(
        tmp_path / "ss-moi",
        SS1,
        central.anchor_path,
        clients=[parse_subsystem("PS/GOV/MOI/population-registry")],
        ca=ca,
    )
    old = load_certificate(load_server_config(server.config).auth_cert)
    with Registry.open(central.db_path) as registry:
        registry.add_member(parse_member("PS/GOV/MOI"), "Ministry of Interior")
        registry.add_server(SS1, "127.0.0.1:4511", [fingerprint(old)])

    made = CliRunner().invoke(
        server_group,
        ["keys", "new-auth", "--config", str(server.config), "--ca-dir", str(tmp_path / "ca")],
    )
    assert made.exit_code == 0, made.output

    args = _printed_command(made.output, "exchange central server ")
    args[args.index("central.toml")] = str(tmp_path / "central" / "central.toml")
    added = CliRunner().invoke(central_group, ["server", *args])
    assert added.exit_code == 0, added.output
    with Registry.open(central.db_path) as registry:
        registered = registry.build_globalconf(int(time.time())).server(SS1)
    assert registered is not None and len(registered.auth_cert_fingerprints) == 2


def test_log_progress_bars_write_nothing_when_the_output_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `exchange log verify ... > report.txt` began the report with an empty line (the bar's
    # last refresh, which a terminal clears); the demo's summary had one after its second line
    with _log_progress("verifying", hidden=False) as bar:
        bar.update(bar.add_task("verifying", total=10), completed=10)
    assert capsys.readouterr().out == ""


def test_demo_progress_bar_writes_nothing_when_the_output_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _demo_progress(True, 10) as update:
        update("names", 10)
    assert capsys.readouterr().out == ""
