"""Running under systemd: the unit files of ``examples/systemd/`` and the notification protocol.

The units are checked with ``systemd-analyze verify`` and ``systemd-analyze security`` where
systemd is installed (skipped with the reason otherwise), and read here for what they must say:
``Type=notify``, the hardening options, a dedicated user, state under ``StateDirectory=``, commands
that exist. ``sd_notify`` is tested against a real unix datagram socket, and a real ``exchange tsa
serve`` process tells it READY=1 once its port is bound and STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from exchange import sdnotify
from exchange.cli import main

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "examples" / "systemd").glob("*.service"))
SYSUSERS = ROOT / "examples" / "systemd" / "exchange.sysusers.conf"
INSTALLED = "/opt/exchange/bin/exchange"
ANALYZE = shutil.which("systemd-analyze")
NEEDS_ANALYZE = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd)"
)


def _settings(unit: Path) -> dict[str, list[str]]:
    """A unit's ``[Service]`` (and other) settings, each key with all its values."""
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def _one(unit: Path, key: str) -> str:
    (value,) = _settings(unit)[key]
    return value


@pytest.fixture
def installed_units(tmp_path: Path) -> list[Path]:
    """The units as installed next to this environment's ``exchange`` command."""
    command = str(Path(sys.executable).with_name("exchange"))
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(INSTALLED, command))
        copies.append(copy)
    return copies


def test_there_is_a_unit_for_every_service() -> None:
    assert [u.name for u in UNITS] == [
        "exchange-ca.service",
        "exchange-central.service",
        "exchange-ocsp.service",
        "exchange-registry.service",
        "exchange-security-server.service",
        "exchange-tsa.service",
    ]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_a_unit_notifies_is_hardened_and_keeps_its_state_in_its_state_directory(
    unit: Path,
) -> None:
    settings = _settings(unit)
    assert _one(unit, "Type") == "notify"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }.items():
        assert settings[key] == [value], key
    user = _one(unit, "User")
    assert user.startswith("exchange-") and _one(unit, "Group") == user
    assert re.search(rf"^u {re.escape(user)} ", SYSUSERS.read_text(), re.MULTILINE)
    state = "/var/lib/" + _one(unit, "StateDirectory")
    assert _one(unit, "WorkingDirectory") == state
    start = shlex.split(_one(unit, "ExecStart"))
    check = shlex.split(_one(unit, "ExecStartPre"))
    config = start[start.index("--config") + 1]
    assert Path(config).parent == Path(state)
    assert check == [INSTALLED, start[1], "check-config", "--config", config]


def test_the_security_server_reloads_with_sighup() -> None:
    """``systemctl reload`` sends SIGHUP, which reloads what ``exchange server reload`` does."""
    unit = ROOT / "examples" / "systemd" / "exchange-security-server.service"
    assert _one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    source = (ROOT / "exchange" / "cli" / "server_keys.py").read_text()
    assert "os.kill(pid, signal.SIGHUP)" in source


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_the_commands_of_a_unit_exist(unit: Path) -> None:
    for key in ("ExecStartPre", "ExecStart"):
        args = shlex.split(_one(unit, key))[1:]
        command = [a for a in args if not a.startswith("-") and not a.startswith("/")]
        result = CliRunner().invoke(main, [*command, "--help"])
        assert result.exit_code == 0, result.output
        for option in (a for a in args if a.startswith("--")):
            assert option in result.output, (unit.name, key, option)


@NEEDS_ANALYZE
def test_systemd_analyze_verify_accepts_the_units(installed_units: list[Path]) -> None:
    """``verify`` prints unknown keys and bad values as warnings and still exits 0: both count."""
    done = subprocess.run(
        [str(ANALYZE), "verify", "--man=no", *map(str, installed_units)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@NEEDS_ANALYZE
def test_systemd_analyze_verify_notices_a_broken_unit(installed_units: list[Path]) -> None:
    """The check above can fail: a misspelt key and a missing command are reported."""
    broken = installed_units[0]
    text = broken.read_text().replace("ProtectSystem=", "ProtectSystm=")
    broken.write_text(text.replace(str(Path(sys.executable).with_name("exchange")), INSTALLED))
    done = subprocess.run(
        [str(ANALYZE), "verify", "--man=no", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Unknown key 'ProtectSystm'" in done.stderr
    assert f"Command {INSTALLED} is not executable" in done.stderr


@NEEDS_ANALYZE
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_systemd_rates_a_unit_s_exposure_ok(unit: Path, tmp_path: Path) -> None:
    """``systemd-analyze security``: 0 is fully locked down, 10 fully exposed; up to 2 is "OK"."""
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED, str(Path(sys.executable))))
    done = subprocess.run(
        [str(ANALYZE), "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", done.stdout)
    if found is None:
        pytest.skip(f"systemd-analyze security --offline is not supported here: {done.stderr}")
    assert float(found.group(1)) <= 2.0, done.stdout


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd is not installed")
def test_the_system_users_are_created_by_systemd_sysusers(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    done = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    users = {line.split(":")[0] for line in (tmp_path / "etc" / "passwd").read_text().splitlines()}
    assert users == {_one(unit, "User") for unit in UNITS}


# --- sd_notify over a real unix datagram socket ----------------------------------------------


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket, as systemd's, at a short path (unix paths hold 107 bytes)."""
    directory = tempfile.mkdtemp(prefix="sdn-")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(directory)


def _fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


def test_ready_reloading_stopping_reach_the_socket(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path}
    assert sdnotify.ready("serving on 127.0.0.1:8080", environ=env)
    assert sock.recv(4096) == (
        f"READY=1\nSTATUS=serving on 127.0.0.1:8080\nMAINPID={os.getpid()}".encode()
    )
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading(environ=env)
    fields = _fields(sock.recv(4096))
    assert fields["RELOADING"] == "1"
    assert (
        before
        <= int(fields["MONOTONIC_USEC"])
        <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    )
    assert sdnotify.stopping(environ=env)
    assert sock.recv(4096) == b"STOPPING=1"


def test_an_abstract_socket_is_reached_too() -> None:
    name = f"exchange-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(60)
        assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


def test_without_a_service_manager_nothing_is_sent_and_nothing_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert sdnotify.ready(environ={}) is False
    assert sdnotify.ready(environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert "could not notify the service manager" in caplog.text


def test_a_server_process_is_ready_once_its_port_is_bound_and_says_it_stops(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    """``exchange tsa serve --config``: READY=1 (with its URL) only once the port accepts
    connections, STOPPING=1 on SIGTERM, exit status 0; its log is JSON lines as configured."""
    sock, path = notify_socket
    runner = CliRunner()
    assert runner.invoke(main, ["ca", "init", "--dir", str(tmp_path / "ca")]).exit_code == 0
    made = runner.invoke(
        main, ["tsa", "init", "--ca-dir", str(tmp_path / "ca"), "--dir", str(tmp_path / "tsa")]
    )
    assert made.exit_code == 0, made.output
    config = tmp_path / "tsa" / "tsa.toml"
    config.write_text('dir = "."\nport = 0\n[logging]\nformat = "json"\nlevel = "info"\n')
    log = tmp_path / "tsa.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exchange", "tsa", "serve", "--config", str(config)],
            env={**os.environ, "NOTIFY_SOCKET": path},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        ready = _fields(sock.recv(4096))
        assert (ready["READY"], ready["MAINPID"]) == ("1", str(proc.pid))
        port = int(re.fullmatch(r"TSA serving on http://127.0.0.1:(\d+)/", ready["STATUS"])[1])
        socket.create_connection(("127.0.0.1", port), timeout=30).close()
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert {"level": "INFO", "logger": "exchange.trust.tsa_service"}.items() <= lines[0].items()
    assert lines[0]["message"] == f"TSA listening on 127.0.0.1:{port}"
