"""The wheel: what an operator gets from ``pip install exchange-*.whl`` (not ``-e``).

The wheel is built here from a copy of the source tree (``python -m build --no-isolation``, with
the dev environment's setuptools, so nothing is downloaded). ``.ci/run`` also installs it into a
fresh virtual environment and runs ``exchange demo`` from there.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("exchange", "adapters", "examples/window")
_NOT_SOURCE = shutil.ignore_patterns(
    ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".git", ".*_cache", "state"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    tree = tmp_path_factory.mktemp("source") / "exchange"
    shutil.copytree(ROOT, tree, ignore=_NOT_SOURCE)
    out = tree / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), "."],
        cwd=tree,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("exchange-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def _data_files() -> list[str]:
    """Every file inside the packages that is not Python source: what the code reads at run time
    (through ``importlib.resources``) lives there and nowhere else (see the test below)."""
    return sorted(
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    )


def _traverse(item: Traversable, prefix: str) -> Iterator[str]:
    for child in item.iterdir():
        name = f"{prefix}/{child.name}"
        if child.is_dir():
            yield from _traverse(child, name)
        else:
            yield name


def test_the_wheel_ships_every_file_the_code_reads(wheel: zipfile.ZipFile) -> None:
    """From a wheel, ``exchange demo`` exited 2: "No such file or directory: …/policies/MOI/…"
    (it read ``policies/`` beside the source tree). Now the example policies are package data."""
    names = set(wheel.namelist())
    policies = sorted(_traverse(resources.files("exchange.demo") / "policies", "policies"))
    assert "policies/MOI/population-registry.toml" in policies
    assert {f"exchange/demo/{p}" for p in policies} <= names
    assert [f for f in _data_files() if f not in names] == []


def test_the_wheel_has_its_license_type_markers_and_command(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{info}/licenses/LICENSE" in names
    assert wheel.read(f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
    metadata = wheel.read(f"{info}/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    assert {"exchange/py.typed", "adapters/sdk/py.typed"} <= names
    entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert "exchange = exchange.cli:main" in entry_points
    # of examples/, only the unified window is an installed package (python -m examples.window)
    assert {"examples/__init__.py", "examples/window/templates/base.html"} <= names
    shipped = ("tests/", "bench/", "examples/first_adapter/", "examples/soap/")
    assert not [n for n in names if n.startswith(shipped) or n == "examples/try-exchanges.sh"]


def test_no_module_reads_files_beside_its_source() -> None:
    """``Path(__file__)`` finds the source tree under ``pip install -e`` and nothing in a wheel:
    package data is read with ``importlib.resources`` instead."""
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Name) and node.id == "__file__"
    ]
    assert offenders == []
