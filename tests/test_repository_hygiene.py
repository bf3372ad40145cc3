"""The repository's text files hold no leftovers of a merge: a conflict marker in THREAT_MODEL.md
or a module once reached main through a hurried merge and read as if it were the document."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_MARKER = re.compile(r"^(<{7}|>{7})( |$)|^={7}$", re.MULTILINE)
_TEXT = (".py", ".md", ".toml", ".json", ".txt", ".sh", ".html", ".css", ".js", ".ini", ".cfg")


def _tracked() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in out.split("\0") if name.endswith(_TEXT)]


def test_no_tracked_text_file_holds_a_merge_conflict_marker() -> None:
    files = _tracked()
    assert len(files) > 100, "the repository's files were not found"
    found = [
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}"
        for path in files
        if path.is_file()
        for text in [path.read_text(errors="replace")]
        for m in _MARKER.finditer(text)
    ]
    assert found == []
