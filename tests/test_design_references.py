"""The project's documents stand on their own: what the code and the documents cite as
``docs/design.md §N`` is a section of that file, and nothing points to a document outside the
repository (the design contract and the reference costs once lived beside it, unread by anyone
who had only the repository)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_CITED = re.compile(r"docs/design\.md §(\d+)")
_OUTSIDE = re.compile(r"(?<![/\w])(DESIGN|PERFORMANCE)\.md|shared/(DESIGN|PERFORMANCE)")


def _texts() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    names = out.stdout.decode().split("\0")
    suffixes = (".py", ".md", ".toml", ".sh", ".html", ".txt")
    return [ROOT / n for n in names if n.endswith(suffixes) and (ROOT / n).is_file()]


def test_every_cited_section_of_the_design_contract_exists() -> None:
    sections = set(re.findall(r"^## (\d+)\. ", (ROOT / "docs/design.md").read_text(), re.M))
    assert len(sections) >= 12
    cited = {
        (str(path.relative_to(ROOT)), number)
        for path in _texts()
        for number in _CITED.findall(path.read_text(errors="replace"))
    }
    assert len(cited) > 30, "the citations were not found"
    assert sorted(c for c in cited if c[1] not in sections) == []


def test_no_document_outside_the_repository_is_cited() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}"
        for path in _texts()
        if path.name != "test_design_references.py"
        for text in [path.read_text(errors="replace")]
        for m in _OUTSIDE.finditer(text)
    ]
    assert found == []
