"""Auditors' commands read each archive file once per run, and find exactly what they found when
they read them several times.

``log verify`` reads a file of up to ``IN_MEMORY_MAX`` bytes once and decompresses each part
once; with ``IN_MEMORY_MAX = 0`` it streams every pass from the file again, as it did before. Both
give the same report, for an intact log and for every kind of tampering of ``test_archive``. The
number of times a file is opened is seen by a ``sys.addaudithook`` hook on ``open`` (no mock).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest

from exchange.messagelog import archive as archive_module
from tests.test_archive import (
    TAMPERING,
    Log,
    Pki,
    archive,
    build,
    edit_line,
    pki,
    rezip,
    verify,
)

__all__ = ["pki"]  # the module-scoped fixture, shared with test_archive


class _Opens:
    folder: str | None = None
    counts: ClassVar[Counter[str]] = Counter()

    @classmethod
    def hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if cls.folder is not None and event == "open" and isinstance(args[0], str | Path):
            path = str(args[0])
            if path.startswith(cls.folder):
                cls.counts[Path(path).name] += 1


sys.addaudithook(_Opens.hook)


@contextmanager
def opens_in(folder: Path) -> Iterator[Counter[str]]:
    """How often each file in ``folder`` is opened while the block runs."""
    _Opens.folder = str(folder)
    _Opens.counts.clear()
    try:
        yield _Opens.counts
    finally:
        _Opens.folder = None


def _untouched(log: Log) -> None:
    pass


def _garbled_line(log: Log) -> None:
    rezip(log.archives / "messagelog-000003.zip", edit_line(2, lambda _: b"not json"))


CASES = [
    pytest.param(_untouched, id="intact"),
    pytest.param(_garbled_line, id="record-line-not-json"),
    *[pytest.param(p.values[0], id=p.id) for p in TAMPERING],
]


@pytest.mark.parametrize("tamper", CASES)
async def test_verify_reads_each_archive_once_and_reports_as_when_streaming_each_pass(
    tmp_path: Path, pki: Pki, tamper: Callable[[Log], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await build(tmp_path, pki)
    archive(log, pki)
    tamper(log)
    with opens_in(log.archives) as opens:
        once = verify(log, pki)
    assert set(opens.values()) <= {1}, opens
    monkeypatch.setattr(archive_module, "IN_MEMORY_MAX", 0)
    streamed = verify(log, pki)
    assert once.to_dict() == streamed.to_dict()
    assert once.ok is (tamper is _untouched)
