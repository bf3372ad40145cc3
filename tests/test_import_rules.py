"""The import rules of docs/design.md §10 and issue 13, checked on the source so they stay true.

The auditor's tools stand alone: ``exchange/audit/`` imports nothing from ``exchange/server/``
(what both need lives below both: ``trustcore``, ``messagelog``, ``trust``); the command line reads
a server's configuration and passes plain values. ``trustcore`` is below the servers and the
auditor's tools: sans-IO, it imports no server, audit, cli or message log code, no aiohttp and
no sqlite3. ``protocol``, ``policy`` and ``globalconf`` import nothing from ``server``. Every
import counts, at module level or inside a function, so a lazy import cannot slip through.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "exchange"

RULES: list[tuple[str, tuple[str, ...]]] = [
    ("audit", ("exchange.server",)),
    (
        "trustcore",
        (
            "exchange.server",
            "exchange.audit",
            "exchange.cli",
            "exchange.messagelog",
            "exchange.demo",
            "aiohttp",
            "sqlite3",
        ),
    ),
    ("protocol", ("exchange.server",)),
    ("policy", ("exchange.server",)),
    ("globalconf", ("exchange.server",)),
]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (absolute names), with its line."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return imports_in(path.read_text(encoding="utf-8"), module)


def imports_in(source: str, module: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _offends(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f"{f}.") for f in forbidden)


@pytest.mark.parametrize(("package", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_package_imports_nothing_it_must_not(package: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((PACKAGE / package).rglob("*.py"))
    assert files, f"exchange/{package} has no modules"
    offences = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for path in files
        for line, name in imports_of(path)
        if _offends(name, forbidden)
    ]
    assert offences == []


def test_the_rule_sees_lazy_and_relative_imports() -> None:
    """The check itself: an import inside a function and a relative one are both found."""
    names = [name for _, name in imports_of(PACKAGE / "audit" / "bundle.py")]
    assert "exchange.trustcore.records.verify_record" in names
    lazy = "def f() -> None:\n    from exchange.server.config import ServerConfig\n"
    relative = "from ..server import core\n"
    for source in (lazy, relative):
        [(_, name)] = imports_in(source, "exchange.audit.probe")
        assert _offends(name, ("exchange.server",)), name
