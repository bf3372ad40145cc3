"""Every configuration file is checked against its schema: unknown keys refused with a
did-you-mean, strict types, ranges, each problem as ``file:line: key: what is wrong``; and
``exchange ROLE check-config`` says so with exit 0 or 2.

Before, ``server.toml`` accepted ``port = 99999`` (the server listened on another port),
``port = -1``, ``port = "8080"``, ``host = 5``, ``max_body_bytes = -5``, ``backend_timeout = 0``,
read ``bodies = "no"`` as true, ignored typos and unknown tables, and refused ``timeout = "60s"``
with "could not convert string to float" without naming the key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from adapters.population.config import load_registry_config
from exchange.central.app import load_central_config
from exchange.cli import main
from exchange.configfile import KeyLines
from exchange.errors import ConfigurationError
from exchange.server.config import load_server_config
from exchange.trust.service_config import (
    load_ca_service_config,
    load_ocsp_config,
    load_tsa_config,
)

SERVER_TOML = """\
server_id = "PS/GOV/MOI/ss1"
state_dir = "state"

[consumer]
host = "127.0.0.1"
port = 8080

[provider]
port = 8443

[keys]
auth_key = "keys/auth.key.pem"
auth_cert = "keys/auth.cert.pem"
signing = [{ member = "PS/GOV/MOI", key = "keys/sign.key.pem", cert = "keys/sign.cert.pem" }]

[messagelog]
bodies = true

[limits]
max_body_bytes = 10485760
backend_timeout = 60

[[clients]]
id = "PS/GOV/MOI/population-registry"
connection = "http"

[[services]]
id = "PS/GOV/MOI/population-registry/persons"
url = "http://127.0.0.1:4480/persons"
timeout = 60

[logging]
format = "text"
level = "info"
"""


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def _refused(load: Callable[[Path], Any], path: Path, text: str) -> str:
    path.write_text(text)
    with pytest.raises(ConfigurationError) as refused:
        load(path)
    return refused.value.message.replace(str(path.resolve()), "FILE").replace(str(path), "FILE")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            "port = 8443",
            "port = 99999",
            "FILE:9: provider.port: must be a port number from 0 to 65535 (0: any free port), "
            "not 99999",
            id="port-out-of-range",
        ),
        pytest.param(
            "port = 8443",
            "port = -1",
            "FILE:9: provider.port: must be a port number from 0 to 65535 (0: any free port), "
            "not -1",
            id="port-negative",
        ),
        pytest.param(
            "port = 8080",
            'port = "8080"',
            'FILE:6: consumer.port: must be an integer, not the string "8080"',
            id="port-text",
        ),
        pytest.param(
            'host = "127.0.0.1"',
            "host = 5",
            "FILE:5: consumer.host: must be a string, not the number 5",
            id="host-number",
        ),
        pytest.param(
            "max_body_bytes = 10485760",
            "max_body_bytes = -5",
            "FILE:20: limits.max_body_bytes: must be at least 1, not -5",
            id="max-body-bytes-negative",
        ),
        pytest.param(
            "backend_timeout = 60",
            "backend_timeout = 0",
            "FILE:21: limits.backend_timeout: must be a number of seconds in (0, 3600], not 0",
            id="backend-timeout-zero",
        ),
        pytest.param(
            "bodies = true",
            'bodies = "no"',
            'FILE:17: messagelog.bodies: must be true or false, not the string "no"',
            id="bodies-no-is-not-true",
        ),
        pytest.param(
            "bodies = true",
            "bodeis = false",
            "FILE:17: messagelog.bodeis: unknown key; did you mean 'bodies'?",
            id="typo-bodeis",
        ),
        pytest.param(
            "max_body_bytes = 10485760",
            "max_body_byte = 10485760",
            "FILE:20: limits.max_body_byte: unknown key; did you mean 'max_body_bytes'?",
            id="typo-max-body-byte",
        ),
        pytest.param(
            "[limits]",
            "[limit]",
            "FILE:19: limit: unknown table; did you mean 'limits'?",
            id="typo-table",
        ),
        pytest.param(
            "[logging]",
            "[xyz]",
            "FILE:32: xyz: unknown table (known here: server_id, state_dir, anchor, "
            "globalconf_state, consumer, consumer_tls, provider, status, keys, clients, "
            "services, policy, messagelog, limits, logging)",
            id="unknown-table",
        ),
        pytest.param(
            "\ntimeout = 60",
            '\ntimeout = "60s"',
            'FILE:30: services[0].timeout: must be a number, not the string "60s" '
            "(write the number alone, without a unit)",
            id="duration-with-unit",
        ),
        pytest.param(
            'connection = "http"',
            'connection = "htps"',
            'FILE:25: clients[0].connection: must be "http", "https" or "https-noauth", '
            'not the string "htps"',
            id="connection-unknown",
        ),
        pytest.param(
            'server_id = "PS/GOV/MOI/ss1"',
            'server_id = "PS/GOV/MOI"',
            "FILE:1: server_id: invalid security server identifier 'PS/GOV/MOI': expected 4 parts "
            "separated by '/', got 3",
            id="server-id-three-parts",
        ),
        pytest.param(
            'server_id = "PS/GOV/MOI/ss1"\n',
            "",
            "FILE:1: server_id: required, but missing",
            id="server-id-missing",
        ),
        pytest.param(
            'id = "PS/GOV/MOI/population-registry/persons"',
            'id = "PS/GOV/MOI/population-registry/listMethods"',
            "FILE:28: services[0].id: service code 'listMethods' is reserved for the metadata "
            "services the security server answers itself; choose another",
            id="reserved-service-code",
        ),
        pytest.param(
            'url = "http://127.0.0.1:4480/persons"',
            'url = "127.0.0.1:4480/persons"',
            "FILE:29: services[0].url: must be an http:// or https:// URL, "
            "not '127.0.0.1:4480/persons'",
            id="service-url-no-scheme",
        ),
        pytest.param(
            'signing = [{ member = "PS/GOV/MOI", key = "keys/sign.key.pem", '
            'cert = "keys/sign.cert.pem" }]',
            "signing = []",
            "FILE:14: keys.signing: must have at least 1 item(s), not 0",
            id="no-signing-key",
        ),
        pytest.param(
            'signing = [{ member = "PS/GOV/MOI", key = "keys/sign.key.pem", '
            'cert = "keys/sign.cert.pem" }]',
            'signing = [{ member = "PS/GOV/MOI", key = "keys/sign.key.pem" }]',
            "FILE:14: keys.signing[0].cert: required, but missing",
            id="signing-cert-missing",
        ),
        pytest.param(
            'format = "text"',
            'format = "xml"',
            'FILE:33: logging.format: must be "text" or "json", not the string "xml"',
            id="log-format",
        ),
        pytest.param(
            'level = "info"',
            'level = "verbose"',
            "FILE:34: logging.level: must be one of debug, info, warning, error, critical, "
            "not 'verbose'",
            id="log-level",
        ),
        pytest.param(
            "port = 8080",
            "port = 8080\nport = 8081",
            "FILE:7: not valid TOML: Cannot overwrite a value (column 12)",
            id="toml-duplicate-key",
        ),
    ],
)
def test_bad_server_toml(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = _edit(SERVER_TOML, old, new)
    assert _refused(load_server_config, tmp_path / "server.toml", text) == message


def test_every_problem_is_reported_at_once_in_line_order(tmp_path: Path) -> None:
    text = _edit(_edit(SERVER_TOML, "bodies = true", 'bodies = "no"'), "port = 8080", "port = -1")
    assert _refused(load_server_config, tmp_path / "server.toml", text).splitlines() == [
        "FILE:6: consumer.port: must be a port number from 0 to 65535 (0: any free port), not -1",
        'FILE:17: messagelog.bodies: must be true or false, not the string "no"',
    ]


def test_the_base_file_loads_and_bodies_false_means_false(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(SERVER_TOML)
    assert load_server_config(path).log_bodies is True
    path.write_text(_edit(SERVER_TOML, "bodies = true", "bodies = false"))
    config = load_server_config(path)
    assert config.log_bodies is False
    assert (config.consumer.port, config.provider.port) == (8080, 8443)
    assert config.services[0].timeout == 60.0
    assert (config.logging.format, config.logging.level) == ("text", "info")


def test_the_log_level_is_read_in_any_case(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(_edit(SERVER_TOML, 'level = "info"', 'level = "WARNING"'))
    assert load_server_config(path).logging.level == "warning"


# --- the other roles' files ----------------------------------------------------------------------


CENTRAL_TOML = """\
instance = "PS"
database = "central.db"
signing_key = "keys/globalconf-signing.key"
signing_cert = "keys/globalconf-signing.pem"
anchor = "anchor.json"
port = 4000
regenerate_interval_seconds = 60
expiry_seconds = 600
"""
CA_TOML = 'ca_dir = "."\nport = 4200\ndays_auth = 365\n'
OCSP_TOML = 'ca_dir = "."\ndatabase = "revocations.sqlite"\nport = 4100\nvalidity_seconds = 3600\n'
TSA_TOML = 'dir = "."\nport = 4318\n'
REGISTRY_TOML = 'database = "registry.db"\nhost = "127.0.0.1"\nport = 4480\n'


@pytest.mark.parametrize(
    ("load", "base", "old", "new", "message"),
    [
        pytest.param(
            load_central_config,
            CENTRAL_TOML,
            "port = 4000",
            "port = 65536",
            "FILE:6: port: must be a port number from 0 to 65535 (0: any free port), not 65536",
            id="central-port",
        ),
        pytest.param(
            load_central_config,
            CENTRAL_TOML,
            "expiry_seconds = 600",
            'expiry_seconds = "10m"',
            'FILE:8: expiry_seconds: must be an integer, not the string "10m"',
            id="central-expiry-text",
        ),
        pytest.param(
            load_central_config,
            CENTRAL_TOML,
            'instance = "PS"',
            'instance = "P S"',
            "FILE:1: instance: invalid instance 'P S': parts are 1-255 characters of "
            "A-Z a-z 0-9 ' ( ) + , - . = ? _",
            id="central-instance",
        ),
        pytest.param(
            load_central_config,
            CENTRAL_TOML,
            "port = 4000",
            "prot = 4000",
            "FILE:6: prot: unknown key; did you mean 'port'?",
            id="central-typo",
        ),
        pytest.param(
            load_ca_service_config,
            CA_TOML,
            "days_auth = 365",
            "days_auth = 0",
            "FILE:3: days_auth: must be at least 1 day(s), not 0",
            id="ca-days",
        ),
        pytest.param(
            load_ca_service_config,
            CA_TOML,
            "days_auth = 365",
            "days_auht = 365",
            "FILE:3: days_auht: unknown key; did you mean 'days_auth'?",
            id="ca-typo",
        ),
        pytest.param(
            load_ocsp_config,
            OCSP_TOML,
            "validity_seconds = 3600",
            "validity_seconds = 3600.5",
            "FILE:4: validity_seconds: must be an integer, not the number 3600.5",
            id="ocsp-validity-float",
        ),
        pytest.param(
            load_ocsp_config,
            OCSP_TOML,
            "port = 4100",
            'port = 4100\nresponder_key = "responder.key"',
            "FILE:4: responder_key: a delegated responder needs both its key and its "
            "certificate: give both, or neither (a responder certificate is then issued at "
            "start with the CA key)",
            id="ocsp-responder-half",
        ),
        pytest.param(
            load_tsa_config,
            TSA_TOML,
            "port = 4318",
            "port = true",
            "FILE:2: port: must be an integer, not the boolean true",
            id="tsa-port-boolean",
        ),
        pytest.param(
            load_tsa_config,
            TSA_TOML,
            'dir = "."',
            'dir = ""',
            "FILE:1: dir: must not be empty",
            id="tsa-dir-empty",
        ),
        pytest.param(
            load_registry_config,
            REGISTRY_TOML,
            "port = 4480\n",
            "",
            "FILE:1: port: required, but missing",
            id="registry-port-missing",
        ),
        pytest.param(
            load_registry_config,
            REGISTRY_TOML,
            'database = "registry.db"',
            'db = "registry.db"',
            "FILE:1: database: required, but missing\nFILE:1: db: unknown key (known here: "
            "database, host, port, certificates, logging)",
            id="registry-db-renamed",
        ),
    ],
)
def test_bad_files_of_the_other_roles(
    tmp_path: Path,
    load: Callable[[Path], Any],
    base: str,
    old: str,
    new: str,
    message: str,
) -> None:
    assert _refused(load, tmp_path / "x.toml", _edit(base, old, new)) == message


@pytest.mark.parametrize(
    ("load", "text"),
    [
        pytest.param(load_central_config, CENTRAL_TOML, id="central"),
        pytest.param(load_ca_service_config, CA_TOML, id="ca"),
        pytest.param(load_ocsp_config, OCSP_TOML, id="ocsp"),
        pytest.param(load_tsa_config, TSA_TOML, id="tsa"),
        pytest.param(load_registry_config, REGISTRY_TOML, id="registry"),
    ],
)
def test_good_files_load_with_paths_relative_to_the_file(
    tmp_path: Path, load: Callable[[Path], Any], text: str
) -> None:
    path = tmp_path / "etc" / "x.toml"
    path.parent.mkdir()
    path.write_text(text + '[logging]\nformat = "json"\nlevel = "debug"\n')
    settings = load(path)
    assert (settings.logging.format, settings.logging.level) == ("json", "debug")
    paths = [v for v in vars_of(settings).values() if isinstance(v, Path)]
    assert paths and all(p.is_relative_to(path.parent.resolve()) for p in paths)


def vars_of(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__slots__}


# --- where keys are ------------------------------------------------------------------------------


def test_key_lines_follow_tables_arrays_dotted_keys_and_skip_multiline_strings() -> None:
    lines = KeyLines(
        'a = 1\n[t]\n"quoted" = 2\nb.c = 3\n[[s]]\nx = 1\n[[s]]\nd = """\nx = 9\n"""\nx = 2\n'
        "[t.u]  # comment\nv = { w = 1 }\n"
    )
    assert lines.line_of(("a",)) == 1
    assert lines.line_of(("t", "quoted")) == 3
    assert lines.line_of(("t", "b", "c")) == 4
    assert lines.line_of(("s", 0, "x")) == 6
    assert lines.line_of(("s", 1, "x")) == 11
    assert lines.line_of(("t", "u", "v", "w")) == 13  # inside an inline table: the table's line
    assert lines.line_of(("nowhere",)) is None


# --- exchange ROLE check-config ------------------------------------------------------------------


def _check(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_check_config_says_ok_or_lists_every_problem(tmp_path: Path) -> None:
    for name in ("keys/auth.key.pem", "keys/auth.cert.pem", "keys/sign.key.pem", "anchor.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    path = tmp_path / "server.toml"
    path.write_text(SERVER_TOML)
    code, out, err = _check("server", "check-config", "--config", str(path))
    assert (code, out) == (2, "")
    assert err == f"{path}:14: keys.signing[0].cert: no such file: {tmp_path}/keys/sign.cert.pem\n"
    (tmp_path / "keys/sign.cert.pem").write_text("x")
    code, out, err = _check("server", "check-config", "--config", str(path))
    assert (code, out, err) == (0, f"{path}: OK, a valid security server configuration\n", "")
    path.write_text(_edit(SERVER_TOML, "bodies = true", 'bodies = "no"'))
    code, out, err = _check("server", "check-config", "--config", str(path), "--json")
    assert code == 2
    assert json.loads(out) == {
        "file": str(path),
        "ok": False,
        "problems": [
            {
                "line": 17,
                "key": "messagelog.bodies",
                "message": 'must be true or false, not the string "no"',
            }
        ],
    }


@pytest.mark.parametrize(
    ("role", "text", "what"),
    [
        pytest.param("central", CENTRAL_TOML, "central server", id="central"),
        pytest.param("ca", CA_TOML, "CA service", id="ca"),
        pytest.param("ocsp", OCSP_TOML, "OCSP responder", id="ocsp"),
        pytest.param("tsa", TSA_TOML, "time-stamping authority", id="tsa"),
        pytest.param("registry", REGISTRY_TOML, "population registry", id="registry"),
    ],
)
def test_every_role_has_check_config(tmp_path: Path, role: str, text: str, what: str) -> None:
    path = tmp_path / f"{role}.toml"
    for name in ("central.db", "anchor.json", "registry.db", "keys/globalconf-signing.key"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "keys/globalconf-signing.pem").write_text("x")
    path.write_text(text)
    assert _check(role, "check-config", "--config", str(path)) == (
        0,
        f"{path}: OK, a valid {what} configuration\n",
        "",
    )
    path.write_text(text + "colour = 1\n")
    code, out, err = _check(role, "check-config", "--config", str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"{path}:{text.count(chr(10)) + 1}: colour: unknown key")


@pytest.mark.parametrize("role", ["server", "central", "ca", "ocsp", "tsa", "registry"])
def test_a_file_nested_too_deeply_is_one_line_not_a_traceback(tmp_path: Path, role: str) -> None:
    path = tmp_path / f"{role}.toml"
    path.write_text("a = " + "[" * 5000 + "\n")
    code, out, err = _check(role, "check-config", "--config", str(path))
    assert (code, out) == (2, "")
    assert err == f"{path}:1: not valid TOML: arrays or inline tables nested too deeply\n"


def test_a_file_that_is_not_there_is_a_usage_error(tmp_path: Path) -> None:
    code, out, err = _check("tsa", "check-config", "--config", str(tmp_path / "nope.toml"))
    assert (code, out) == (2, "")
    assert (
        err
        == f"{tmp_path}/nope.toml: cannot read {tmp_path}/nope.toml: No such file or directory\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["tsa", "serve", "--port", "1"], id="tsa"),
        pytest.param(["ocsp", "serve", "--host", "0.0.0.0"], id="ocsp"),
        pytest.param(["ca", "serve", "--days-auth", "3"], id="ca"),
        pytest.param(["registry", "serve", "--port", "1"], id="registry"),
    ],
)
def test_config_and_options_together_are_a_usage_error(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "x.toml"
    path.write_text("")
    code, _, err = _check(*args[:2], "--config", str(path), *args[2:])
    assert code == 2
    assert f"--config replaces {args[2]}: give the settings in the file or as options" in err


def test_the_server_refuses_a_bad_file_at_start_with_exit_2(tmp_path: Path) -> None:
    """``exchange server run`` with ``port = 99999`` listened on another port (it wrapped)."""
    path = tmp_path / "server.toml"
    path.write_text(_edit(SERVER_TOML, "port = 8443", "port = 99999"))
    code, out, err = _check("server", "run", "--config", str(path))
    assert (code, out) == (2, "")
    assert "provider.port: must be a port number from 0 to 65535" in err
    assert "Traceback" not in err


def test_registry_certificates_need_all_three_settings(tmp_path: Path) -> None:
    """Interior's certificates of residence: a database and the signing key and chain, together."""
    path = tmp_path / "registry.toml"
    path.write_text('database = "r.db"\nport = 0\n[certificates]\ndatabase = "c.sqlite"\n'
                    'signing_key = "k.pem"\n')  # fmt: skip
    with pytest.raises(ConfigurationError) as refused:
        load_registry_config(path)
    assert f"{path}:3: certificates.signing_chain: required, but missing" in str(refused.value)
