"""docs/adapters.md's recipe, "From `try` to a service in the running federation", run as
written against a real ``exchange demo --serve`` (issue 14).

Before, ``exchange server reload`` re-read only keys and certificates: a new ``[[services]]``
entry answered 404 ``UnknownService`` until the demo's server was killed and started by hand.
The guide's commands are taken from the guide itself (only ``/tmp/ps`` and the adapter's port
are replaced), so the recipe cannot drift from what works.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from exchange.demo.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "adapters.md"
HEADING = "## From `try` to a service in the running federation"
SERVICE = "PS/GOV/MOH/health-records/vaccinations"
WINDOW = "PS/GOV/PALPOST/unified-window"


def recipe_blocks() -> list[str]:
    """The ``sh`` code blocks of the recipe's section, in order."""
    text = GUIDE.read_text()
    section = text[text.index(HEADING) :]
    section = section[: section.index("\n## ", len(HEADING))]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def _call(consumer_url: str, person: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"{consumer_url}/r1/{SERVICE}/{person}",
        headers={
            "X-Road-Client": WINDOW,
            "X-Road-Purpose": "citizen-service",
            "X-Road-UserId": "clerk-amal",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _wait_for_serving(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C (SIGINT) or SIGTERM stops the federation" in line:
            return
    raise AssertionError("demo --serve exited before serving:\n" + "".join(lines))


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_recipe_adds_a_service_to_the_running_federation(tmp_path: Path) -> None:
    federation, adapter, steps = recipe_blocks()
    state, port = tmp_path / "ps", free_port()

    def as_here(text: str) -> str:
        return text.replace("/tmp/ps", str(state)).replace("8082", str(port)).strip()

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    assert federation.strip() == "exchange demo --serve --state-dir /tmp/ps"
    demo = subprocess.Popen(
        [*shlex.split(as_here(federation)), "--people", "3000", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**env, "COLUMNS": "200"},
    )
    served = None
    try:
        _wait_for_serving(demo)
        generate, serve = as_here(adapter).splitlines()
        made = subprocess.run(
            ["bash", "-ec", generate], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert made.returncode == 0, made.stdout + made.stderr
        served = subprocess.Popen(
            ["bash", "-ec", f"exec {serve}"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        assert served.stdout is not None
        assert served.stdout.readline().startswith(f"READY url=http://127.0.0.1:{port}")
        endpoints = json.loads((state / "endpoints.json").read_text())
        consumer_url = endpoints["servers"]["PS/GOV/PALPOST"]["consumer_url"]
        person = endpoints["sample_national_ids"][0]
        # (1), (2): declared and granted, not yet reloaded: the running server does not know it
        script = as_here(steps)
        before, reload, after = script.partition("\nexchange server reload")
        done = subprocess.run(["bash", "-ec", before], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        status, headers, _ = _call(consumer_url, person)
        assert (status, headers.get("X-Road-Error")) == (404, "Server.ServerProxy.UnknownService")
        # (3), (4): reloaded, and called with curl as the guide shows
        done = subprocess.run(["bash", "-ec", reload.lstrip("\n") + after], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"service {SERVICE} added" in done.stdout
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        assert answer["national_id"] == person and answer["count"] == len(answer["vaccinations"])
        assert answer["vaccinations"], answer
        # the grant releases which vaccine and when, not where or the lot
        released = {key for dose in answer["vaccinations"] for key in dose}
        assert released == {"vaccine", "dose", "date"}
    finally:
        if served is not None:
            _stop(served)
        _stop(demo)
    assert demo.returncode == 0
