"""Moving a configuration's paths into the directory a backup restores to.

A configuration names its files relative to its own directory, or absolutely. A relative path
that stays inside that directory survives a restore unchanged. Every other one is rewritten: an
absolute path inside it becomes relative, and a path outside it (``/srv/policies``,
``../shared/anchor.json``) becomes ``outside/SETTING/...`` inside it, so that the restored
directory holds everything its configuration names and nothing points back at the old machine.
Each rewrite is reported to the operator (and written as a comment at the top of the restored
file, whose other comments are lost when anything is rewritten).

No IO.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from exchange.backup.manifest import Rewrite

Key = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class PathSetting:
    """Where a path is set in a TOML document, and whether it names a directory."""

    key: Key
    is_dir: bool = False

    @property
    def name(self) -> str:
        out = ""
        for part in self.key:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "-", self.name).strip("-")


def lookup(doc: Any, key: Key) -> Any:
    """The value at ``key`` in ``doc``, None when any step is missing."""
    for part in key:
        if isinstance(part, int):
            if not isinstance(doc, list) or part >= len(doc):
                return None
        elif not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def relocate(
    doc: dict[str, Any], base: Path, settings: Iterable[PathSetting]
) -> tuple[dict[str, Any], tuple[Rewrite, ...]]:
    """``doc`` with every path setting that would not survive a move of ``base`` rewritten."""
    out = copy.deepcopy(doc)
    rewrites: list[Rewrite] = []
    for setting in settings:
        value = lookup(doc, setting.key)
        if not isinstance(value, str) or not value:
            continue
        given = Path(value)
        full = Path(os.path.normpath(given if given.is_absolute() else base / given))
        if full.is_relative_to(base) and not given.is_absolute():
            continue
        if full.is_relative_to(base):
            now = full.relative_to(base).as_posix() or "."
        else:
            now = f"outside/{setting.slug}" + ("" if setting.is_dir else f"/{full.name}")
        _assign(out, setting.key, now)
        rewrites.append(Rewrite(setting=setting.name, was=value, now=now))
    return out, tuple(rewrites)


def rewritten_toml(doc: dict[str, Any], rewrites: Iterable[Rewrite], note: str) -> bytes:
    """The TOML of ``doc`` under a comment saying what was rewritten."""
    lines = [f"# {note}; paths rewritten:"]
    lines += [f"#   {r.setting}: {r.was} -> {r.now}" for r in rewrites]
    return ("\n".join(lines) + "\n\n" + tomli_w.dumps(doc)).encode("utf-8")


def _assign(doc: Any, key: Key, value: str) -> None:
    for part in key[:-1]:
        doc = doc[part]
    doc[key[-1]] = value
