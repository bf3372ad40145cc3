"""Auditors' commands read each archive file once per run, and find exactly what they found when
they read them several times.

Proofs and evidence bundles share one :class:`ArchiveReader` per run; its answers equal those of
fresh reads, and a file replaced during the run is read again.

``log verify`` reads a file of up to ``IN_MEMORY_MAX`` bytes once and decompresses each part
once; with ``IN_MEMORY_MAX = 0`` it streams every pass from the file again, as it did before. Both
give the same report, for an intact log and for every kind of tampering of ``test_archive``. The
number of times a file is opened is seen by a ``sys.addaudithook`` hook on ``open`` (no mock).
"""

from __future__ import annotations

import sys
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from exchange.audit import bundle
from exchange.messagelog import archive as archive_module
from exchange.messagelog.archive import ArchiveReader
from exchange.messagelog.proofs import (
    check_consistency,
    check_inclusion,
    consistency_between,
    inclusion_for_message,
)
from exchange.messagelog.store import MessageLogError
from exchange.trust.keys import cert_pem
from tests.test_archive import (
    OWNER,
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


def _heads_part_does_not_inflate(log: Log) -> None:
    """Bytes inside the heads part's compressed data changed in place: it no longer inflates."""
    path = log.archives / "messagelog-000002.zip"
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("tree-heads.jsonl")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 2, start + min(info.compress_size, 40)):
        data[i] ^= 0x55
    path.write_bytes(bytes(data))


def _garbled_line(log: Log) -> None:
    rezip(log.archives / "messagelog-000003.zip", edit_line(2, lambda _: b"not json"))


CASES = [
    pytest.param(_untouched, id="intact"),
    pytest.param(_garbled_line, id="record-line-not-json"),
    pytest.param(_heads_part_does_not_inflate, id="heads-part-does-not-inflate"),
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


# --- proofs and evidence: one reader per run ---------------------------------------------------


async def test_a_proof_reads_each_archive_once_and_proves_what_fresh_reads_prove(
    tmp_path: Path, pki: Pki
) -> None:
    log = await build(tmp_path, pki)
    archive(log, pki)
    fresh = [p.to_dict() for p in inclusion_for_message(log.db, "msg-3", archive_dir=log.archives)]
    with opens_in(log.archives) as opens:
        reader = ArchiveReader(log.db, log.archives, message_id="msg-3")
        found = reader.find("msg-3")
        shared = inclusion_for_message(log.db, "msg-3", reader=reader)
        assert reader.find("msg-3") == found
    assert opens == {f"messagelog-00000{i}.zip": 1 for i in (1, 2, 3)}
    assert [p.to_dict() for p in shared] == fresh
    assert [(seq, orjson.loads(line)["seq"]) for seq, line in found] == [(3, 3)]
    assert fresh[0]["tree_size"] == 35 and check_inclusion(fresh[0])


async def test_archived_heads_and_stamps_come_from_the_same_single_read(
    tmp_path: Path, pki: Pki
) -> None:
    log = await build(tmp_path, pki)
    archive(log, pki)
    with opens_in(log.archives) as opens:
        [old] = inclusion_for_message(log.db, "msg-3", size=10, archive_dir=log.archives)
        proof = consistency_between(log.db, 5, 25, archive_dir=log.archives)
    assert set(opens.values()) == {2}  # once per command, the two commands each read all three
    assert (old.tree_size, old.root) == (10, log.heads[10].root)
    assert old.timestamp_token is not None and check_inclusion(old.to_dict())
    assert (proof.root_m, proof.root_n) == (log.heads[5].root, log.heads[25].root)
    assert check_consistency(proof.to_dict())


async def test_a_file_replaced_during_the_run_is_read_again(tmp_path: Path, pki: Pki) -> None:
    log = await build(tmp_path, pki)
    archive(log, pki)
    reader = ArchiveReader(log.db, log.archives, message_id="msg-3")
    assert [seq for seq, _ in reader.find("msg-3")] == [3]
    rezip(log.archives / "messagelog-000001.zip", edit_line(3, lambda line: line + b" "))
    [(seq, line)] = reader.find("msg-3")
    assert (seq, line.endswith(b" ")) == (3, True)
    (log.archives / "messagelog-000001.zip").unlink()
    with pytest.raises(MessageLogError, match=r"archive messagelog-000001\.zip cannot be read"):
        reader.find("msg-3")


async def test_the_evidence_of_an_archived_record_reads_each_archive_once_and_verifies(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await build(tmp_path, pki)
    archive(log, pki)
    trust = tmp_path / "trust"
    for sub, cert in (("ca", pki.ca.cert), ("tsa", pki.tsa_cert)):
        (trust / sub).mkdir(parents=True)
        (trust / sub / "cert.pem").write_text(cert_pem(cert))
    files = bundle.LogFiles(log.db, log.archives)
    with opens_in(log.archives) as opens:
        out = await bundle.export_bundle(
            files, "msg-13", tmp_path / "evidence.zip", cas=[pki.ca.cert]
        )
    assert opens == {f"messagelog-00000{i}.zip": 1 for i in (1, 2, 3)}
    checks = bundle.verify_bundle(out, trust, OWNER)
    # the test's entries carry no signed request or response: the record, its inclusion, the
    # tree head's signature and its time-stamp are what this bundle can show, and the record
    # is no evidence of an exchange
    assert [(c.what, c.ok) for c in checks] == [
        ("the manifest names this exchange and its records", True),
        ("record 13 hashes to the inclusion proof's leaf", True),
        ("record 13's inclusion proof leads to the tree head's root", True),
        (f"the tree head is signed by the log's owner {OWNER}", True),
        ("the tree head is time-stamped by an approved TSA", True),
        ("record 13 is evidence of nothing: no signature, only the log owner's statement", False),
    ]


async def test_a_part_that_does_not_inflate_is_named_not_a_crash(tmp_path: Path, pki: Pki) -> None:
    log = await build(tmp_path, pki)
    archive(log, pki)
    _heads_part_does_not_inflate(log)
    report = verify(log, pki)
    assert not report.ok
    [digest, (where, reason)] = [(p.archive, p.reason) for p in report.problems]
    assert digest == (
        "2 (messagelog-000002.zip)",
        "the file's SHA-256 differs from the archive index (archive altered or replaced)",
    )
    assert where == "2 (messagelog-000002.zip)"
    assert reason.startswith("tree-heads.jsonl cannot be read (Error -3 while decompressing")
    assert reason.endswith(": its records cannot be checked")
