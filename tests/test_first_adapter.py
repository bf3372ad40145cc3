"""docs/adapters.md's "Write your first adapter", run as written: the example adapter's own test
(through the test kit), and ``python -m adapters.sdk try`` answering the guide's curl requests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "first_adapter"
HEADERS = {"X-Road-Client": "PS/GOV/POLICE/traffic", "X-Road-Purpose": "traffic-control"}


def test_the_example_is_under_30_lines() -> None:
    lines = (EXAMPLE / "licences.py").read_text().splitlines()
    assert len([line for line in lines if line.strip()]) < 30


def test_the_examples_own_test_passes() -> None:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-c", "pytest.ini", "--rootdir", ".", "."]  # fmt: skip
    result = subprocess.run(command, cwd=EXAMPLE, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], object]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_try_serves_it_behind_two_security_servers() -> None:
    command = [sys.executable, "-m", "adapters.sdk", "try", "licences:adapter",
               "--policy", "policy.toml", "--service", "licences=/licences",
               "--provider", "PS/GOV/MOT/licences",
               "--client", "PS/GOV/POLICE/traffic"]  # fmt: skip
    with subprocess.Popen(
        command, cwd=EXAMPLE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        assert process.stdout is not None
        try:
            ready = ""
            lines = []
            while not ready.startswith("READY"):
                ready = process.stdout.readline()
                assert ready, "the command ended before it was ready"
                lines.append(ready)
            consumer = ready.split("consumer=")[1].strip()
            url = f"{consumer}/r1/PS/GOV/MOT/licences/licences"
            status, headers, body = get(f"{url}/401409669", HEADERS)
            assert (status, body) == (200, LICENCE) and headers["X-Road-Request-Hash"]
            status, headers, _ = get(f"{url}/401409669", {**HEADERS, "X-Road-Purpose": "x"})
            assert (status, headers["X-Road-Error"]) == (
                403,
                "Server.ServerProxy.AccessDenied.PurposeNotAllowed",
            )
            assert get(f"{url}/123456789", HEADERS)[::2] == (
                404,
                {"error": "not_found", "message": "no licence for 123456789"},
            )
            adapter = next(line for line in lines if line.startswith("adapter on ")).split()[-1]
            soap = subprocess.run(
                [sys.executable, "call_soap.py", adapter, consumer],
                cwd=EXAMPLE, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert soap.returncode == 0, soap.stderr
            assert "'categories': [" in soap.stdout and "'checked_for': None" in soap.stdout
            assert "'algorithmId': 'http://www.w3.org/2001/04/xmlenc#sha512'" in soap.stdout
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0


LICENCE = {"national_id": "401409669", "categories": ["B", "C1"], "valid_until": "2029-03-31"}
