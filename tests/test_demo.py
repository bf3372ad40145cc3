"""The example federation as a newcomer runs it: ``exchange demo`` and ``--serve`` mode.

Real processes on 127.0.0.1; every process the federation starts is stopped by it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXCHANGE = [sys.executable, "-m", "exchange"]


def test_demo_runs_exchanges_and_verifies_logs(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *EXCHANGE,
            "demo",
            "--people",
            "3000",
            "--no-progress",
            "--state-dir",
            str(tmp_path / "s"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # under --json the narration goes to stderr and stdout is one document of the same facts
    summary = json.loads(result.stdout)
    assert summary["ok"] and summary["state_dir"] == str(tmp_path / "s")
    assert len(summary["exchanges"]) == 28 and all(e["passed"] for e in summary["exchanges"])
    assert "Server.ServerProxy.AccessDenied" in {e["error"] for e in summary["exchanges"]}
    assert len(summary["logs"]) == 5 and all(log["ok"] for log in summary["logs"].values())
    assert summary["session"] and all(step["ok"] for step in summary["session"])
    out = result.stderr
    assert "28/28 exchanges as expected, 5/5 message logs verified: all as expected" in out
    assert "Server.ServerProxy.AccessDenied" in out
    assert "Server.ServerProxy.UnknownService" in out
    # the window's exchanges with the four ministries gave it two signed documents, each
    # verified offline with the trust bundle as an auditor would
    assert re.search(
        r"certificate of residence MOI-RC-\d{4}-000001: signed by PS/GOV/MOI .*, verified", out
    )
    assert re.search(r"receipt MOF-\d{4}-000001: signed by PS/GOV/MOF .*, verified", out)
    # ... and a clerk's session through the window app's HTTP interface paid a fee: the next receipt
    assert "✓ sign in as clerk-biddu: signed in" in out
    assert re.search(r"✓ pay it in cash \(Finance\): receipt MOF-\d{4}-000002", out)
    assert "✗" not in out
    # every server fetched, stapled and verified OCSP responses; every tree head was time-stamped
    assert out.count("own certificates with a fresh 'good' OCSP response: 2/2") == 5
    assert out.count(", verified") >= 5


def _export_and_verify_evidence(tmp_path: Path, config: str, message_id: str) -> None:
    """An auditor's evidence bundle from the running federation: the server time-stamps a tree
    head on the spot (SIGUSR1) and the bundle verifies offline with the exported trust folder."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*EXCHANGE, "audit", *args], capture_output=True, text=True, timeout=120
        )

    trust, bundle = tmp_path / "trust", tmp_path / "evidence.zip"
    for step in (
        run("trust-export", "--config", config, "-o", str(trust)),
        run("export", "--config", config, "--id", message_id, "-o", str(bundle)),
        run("verify", str(bundle), "--trust", str(trust)),
    ):
        assert step.returncode == 0, step.stdout + step.stderr
    assert "time-stamped by an approved TSA ... ok" in step.stdout
    assert "signer's certificate was good (OCSP) when it signed ... ok" in step.stdout
    # a bundle whose OCSP responses were swapped for garbage no longer shows a good status
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(forged, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, b"garbage" if name.startswith("ocsp/") else src.read(name))
    refused = run("verify", str(forged), "--trust", str(trust))
    assert refused.returncode == 1, refused.stdout
    assert "when it signed ... FAILED" in refused.stdout


def _rotate_signing_key(state: Path, endpoints: dict[str, Any]) -> None:
    """The post office's operator rotates its signing key on the running federation."""
    config = endpoints["servers"]["PS/GOV/PALPOST"]["config"]
    new = subprocess.run(
        [*EXCHANGE, "server", "keys", "new-sign", "--config", config,
         "--member", "PS/GOV/PALPOST", "--ca-dir", endpoints["trust"]["ca_dir"]],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert new.returncode == 0, new.stdout + new.stderr
    log = state / "logs" / "ss-PALPOST.log"
    before = log.read_text().count("keys reloaded")
    reload = subprocess.run(
        [*EXCHANGE, "server", "reload", "--config", config],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reload.returncode == 0, reload.stdout + reload.stderr
    deadline = time.monotonic() + 30
    while log.read_text().count("keys reloaded") == before:  # the server says when it is done
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)
    assert "keys reloaded: 2 signing certificate(s)" in log.read_text()


def _sign_in_at_the_window(window: dict[str, Any]) -> None:
    """The clerk endpoints.json names signs in to the window's URL, as a newcomer would."""
    import asyncio

    from examples.window.clerk import ClerkSession

    async def sign_in() -> tuple[list[str], str]:
        async with ClerkSession(window["url"]) as clerk:
            clerk_info = window["clerk"]
            await clerk.sign_in(clerk_info["username"], clerk_info["password"])
            page = await clerk.get("/find")
            return page.alerts(), page.html

    alerts, html = asyncio.run(sign_in())
    assert alerts == [] and 'for="national_id"' in html


def _verify_the_receipt(state: Path, trust_bundle: str) -> None:
    """The receipt the window was given verifies offline (and a changed one does not)."""
    receipt = state / "documents" / "receipt.json"
    command = [*EXCHANGE, "audit", "document", "verify", str(receipt), "--trust", trust_bundle]
    ok = subprocess.run([*command, "--issuer", "PS/GOV/MOF"], capture_output=True, text=True,
                        timeout=60)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "exchange-receipt+jwt signed by PS/GOV/MOF" in ok.stdout
    wrong = subprocess.run([*command, "--issuer", "PS/GOV/MOI"], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert (
        wrong.returncode == 1
        and "signed by PS/GOV/MOF, not PS/GOV/MOI" in wrong.stdout + wrong.stderr
    )


def _wait_for_serving(proc: subprocess.Popen[str]) -> list[str]:
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C (SIGINT) or SIGTERM stops the federation" in line:
            return lines
    raise AssertionError("demo --serve exited before serving:\n" + "".join(lines))


@pytest.mark.skipif(not Path("/usr/bin/curl").exists(), reason="curl is not installed")
def test_serve_mode_endpoints_curl_and_log_commands(tmp_path: Path) -> None:
    state = tmp_path / "ps"
    proc = subprocess.Popen(
        [
            *EXCHANGE,
            "demo",
            "--serve",
            "--people",
            "3000",
            "--no-progress",
            "--state-dir",
            str(state),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        _wait_for_serving(proc)
        endpoints = json.loads((state / "endpoints.json").read_text())
        assert endpoints["instance"] == "PS"
        assert set(endpoints["servers"]) == {
            "PS/GOV/MOI",
            "PS/GOV/PALPOST",
            "PS/GOV/MOH",
            "PS/GOV/MTIT",
            "PS/GOV/MOF",
        }
        assert endpoints["sample_national_ids"]
        assert "PS/GOV/MOI/population-registry/persons" in endpoints["adapters"]
        assert set(endpoints["adapters"]) >= {
            "PS/GOV/MOI/population-registry/residence-certificates",
            "PS/GOV/MOH/health-insurance/status",
            "PS/GOV/MTIT/sim-registry/sims",
            "PS/GOV/MOF/payments/fees",
            "PS/GOV/MOF/payments/receipts",
        }
        _sign_in_at_the_window(endpoints["window"])
        _verify_the_receipt(state, endpoints["trust"]["trust_bundle"])
        trust = endpoints["trust"]
        assert trust["ocsp_url"].startswith("http://127.0.0.1:")
        assert trust["tsa_url"].startswith("http://127.0.0.1:")
        assert "BEGIN CERTIFICATE" in Path(trust["trust_bundle"]).read_text()
        for server in endpoints["servers"].values():
            assert Path(server["auth_cert"]).is_file() and Path(server["sign_cert"]).is_file()
        tried = subprocess.run(
            ["bash", str(ROOT / "examples" / "try-exchanges.sh"), str(state)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHON": sys.executable},
        )
        assert tried.returncode == 0, tried.stdout + tried.stderr
        _rotate_signing_key(state, endpoints)
        tried = subprocess.run(
            ["bash", str(ROOT / "examples" / "try-exchanges.sh"), str(state)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHON": sys.executable},
        )
        assert tried.returncode == 0, tried.stdout + tried.stderr
        config = endpoints["servers"]["PS/GOV/MOI"]["config"]
        verify = subprocess.run(
            [*EXCHANGE, "log", "verify", "--config", config, "--no-progress"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "OK" in verify.stdout
        show = subprocess.run(
            [
                *EXCHANGE,
                "log",
                "show",
                "--config",
                config,
                "--client",
                "PS/GOV/MOF/payments",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert show.returncode == 0, show.stderr
        records = json.loads(show.stdout)
        assert any(r["client"] == "PS/GOV/MOF/payments" for r in records)
        _export_and_verify_evidence(tmp_path, config, records[0]["message_id"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0


def _processes_naming(path: Path) -> dict[int, str]:
    """Running processes whose command line mentions ``path``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue  # it ended meanwhile
            if str(path) in cmdline:
                found[int(entry.name)] = cmdline
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_signal_while_the_federation_starts_stops_every_process(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Before, SIGTERM ahead of serving killed the demo at once and left the central server,
    trust services and whichever security servers had started running on their own."""
    state = tmp_path / "ps"
    proc = subprocess.Popen(
        [*EXCHANGE, "demo", "--serve", "--people", "3000", "--no-progress", "--state-dir", state],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the central server, OCSP, TSA and CA run; onboarding follows
            lines.append(line)
            if "CA service (certificates from CSRs) serving" in line:
                break
        assert _processes_naming(state), "".join(lines)
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = _processes_naming(state)
        for pid in left:  # what a regression would leave behind is stopped here, then reported
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "stopped by a signal; every process the demo started is stopped" in rest
    assert left == {}
