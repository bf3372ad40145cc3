"""The docs name the tests that show each claim; every test they name must exist.

THREAT_MODEL.md's "test that shows it" column cites tests as ``tests/path.py::test_name`` or,
after such a path in the same line, as ``::test_name``; the READMEs and the guides in docs/ may
cite tests the same way.
A test renamed or removed without its citation would leave a claim that looks tested but is not.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = (
    "THREAT_MODEL.md",
    "README.md",
    "bench/README.md",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")),
)
_REFERENCE = re.compile(r"(tests/[\w/]+\.py)?::(\w+)")


@functools.cache
def _defined(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text())
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return frozenset(node.name for node in ast.walk(tree) if isinstance(node, kinds))


def references(text: str) -> list[tuple[int, str, str]]:
    """(line number, test file, test name) of each citation; a bare ``::name`` belongs to the
    last file named before it on the same line, and is skipped when there is none."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        last: str | None = None
        for match in _REFERENCE.finditer(line):
            last = match.group(1) or last
            if last is not None:
                found.append((number, last, match.group(2)))
    return found


def test_references_are_read_from_both_forms() -> None:
    line = "`tests/a.py::test_one`, `::test_two`, then `tests/b/c.py::test_three`; `::Other`"
    assert references("no citation ::here\n" + line) == [
        (2, "tests/a.py", "test_one"),
        (2, "tests/a.py", "test_two"),
        (2, "tests/b/c.py", "test_three"),
        (2, "tests/b/c.py", "Other"),
    ]


@pytest.mark.parametrize("doc", DOCS)
def test_every_test_the_docs_name_exists(doc: str) -> None:
    cited = references((ROOT / doc).read_text())
    if doc == "THREAT_MODEL.md":
        assert len(cited) > 100, "the threat model's citations were not found"
    missing = [
        f"{doc}:{number}: {path}::{name}"
        for number, path, name in cited
        if not (ROOT / path).is_file() or name not in _defined(path)
    ]
    assert not missing, "\n".join(missing)
