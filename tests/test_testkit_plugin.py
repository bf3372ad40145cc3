"""An adapter project with no pytest configuration of its own runs its async tests through the
test kit's plugin (issue 14: without ``asyncio_mode``, pytest said pytest-asyncio was missing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = 'pytest_plugins = ["adapters.sdk.testkit"]\n'
TESTS = """\
import asyncio


async def test_an_unmarked_async_test_runs():
    await asyncio.sleep(0)
    assert asyncio.get_running_loop().is_running()
"""


def _pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_adapter.py").write_text(TESTS)
    return tmp_path


def test_async_tests_run_in_a_project_without_pytest_configuration(project: Path) -> None:
    done = _pytest(project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_a_project_that_chose_strict_mode_keeps_it(project: Path) -> None:
    (project / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    chosen = _pytest(project, "--asyncio-mode=strict")
    assert chosen.returncode != 0  # the unmarked async test is not run in strict mode
    assert "test_an_unmarked_async_test_runs" in chosen.stdout
