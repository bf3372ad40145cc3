"""No import cycles inside any package of ``exchange`` (issue 13: the security server's modules
imported each other through ``server/core.py``, so every pipeline depended on the whole server).

Imports are read from the source (``ast``), all of them: at the top, inside functions, and under
``if TYPE_CHECKING`` (a cycle hidden there is still a cycle of design). A package importing its
own ``__init__`` is not counted. The layering between packages is checked too: the sans-IO core
imports nothing of the servers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import exchange

ROOT = Path(exchange.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _package(name: str) -> str:
    return name.rpartition(".")[0]


def _cycles(nodes: list[str], edges: dict[str, set[str]]) -> Iterator[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(v: str) -> Iterator[list[str]]:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                yield from visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                yield sorted(component)

    for node in sorted(nodes):
        if node not in index:
            yield from visit(node)


PACKAGES = sorted({_package(n) for n in MODULES if "." in n})


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_the_package(package: str) -> None:
    members = [n for n in MODULES if _package(n) == package]
    edges = {n: {m for m in GRAPH[n] if m in members} for n in members}
    assert list(_cycles(members, edges)) == []


def test_the_cycle_finder_finds_one() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert list(_cycles(list(edges), edges)) == [["a", "b", "c"]]


SANS_IO = ("exchange.protocol", "exchange.trustcore", "exchange.globalconf.verifier")
SHELLS = ("exchange.server", "exchange.audit", "exchange.cli", "exchange.central", "aiohttp")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(SANS_IO)))
def test_the_sans_io_core_imports_no_server(module: str) -> None:
    """docs/design.md §10: protocol/, the trust core and the configuration verifier import nothing
    from the servers (nor aiohttp, ssl or sqlite3)."""
    path = MODULES[module]
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            imported.add(node.module or "")
    bad = {m for m in imported if m.startswith((*SHELLS, "ssl", "sqlite3"))}
    assert bad == set(), f"{module} imports {sorted(bad)}"
