"""Archives and retention (issue 4 item 6): old records move to signed, linked archive files that
verify together with the live database, and every kind of tampering with them is named.

Real SQLite files, a real signing key issued by a real CA, and real RFC 3161 tokens from the TSA
code (:func:`build_timestamp_response`); archives are tampered with as an attacker with the files
would (re-zipping, renaming, editing the index after dropping the append-only triggers).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.identifiers import SecurityServerId, parse_member
from exchange.messagelog import merkle
from exchange.messagelog.archive import (
    MANIFEST,
    MANIFEST_JWS,
    RECORDS,
    ArchivingBusy,
    _Moved,
    _plan,
    _write_archive,
    archive_log,
    read_index,
)
from exchange.messagelog.proofs import (
    check_consistency,
    check_inclusion,
    consistency_between,
    inclusion_for_message,
)
from exchange.messagelog.store import (
    MessageLog,
    MessageLogError,
    TreeHead,
    open_readonly,
    tree_head_digest,
)
from exchange.messagelog.verify import VerifyReport, verify_log
from exchange.protocol import jws
from exchange.protocol.jws import Signer
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import generate_key
from exchange.trust.profiles import sign_template
from exchange.trust.timestamp import (
    build_timestamp_request,
    build_timestamp_response,
    issue_tsa_cert,
    token_of_response,
)

OWNER = SecurityServerId("PS", "GOV", "MOI", "ss1")

RECORDS_OLD = 30
RECORDS_NEW = 5
STAMP_EVERY = 10
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    signer: Signer
    tsa_key: ec.EllipticCurvePrivateKey
    tsa_cert: x509.Certificate
    rogue: Signer

    def stamp(self, head: TreeHead) -> tuple[bytes, int]:
        now = dt.datetime.now(dt.UTC)
        response = build_timestamp_response(
            build_timestamp_request(tree_head_digest(head)),
            tsa_key=self.tsa_key,
            tsa_cert=self.tsa_cert,
            serial=time.time_ns(),
            now=now,
        )
        return token_of_response(response), int(now.timestamp() * 1000)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    back = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    ca = CertificateAuthority.create(tmp_path_factory.mktemp("ca"), now=back)
    key = generate_key()
    cert = ca.issue(key.public_key(), sign_template(parse_member("PS/GOV/MOI")), now=back)
    tsa_key = generate_key()
    tsa_cert = issue_tsa_cert(ca, tsa_key.public_key(), "Test TSA", now=back)
    rogue_ca = CertificateAuthority.create(tmp_path_factory.mktemp("rogue"), now=back)
    rogue_key = generate_key()
    rogue = Signer(
        rogue_key,
        rogue_ca.issue(rogue_key.public_key(), sign_template(parse_member("PS/GOV/MOI")), now=back),
    )
    return Pki(ca, Signer(key, cert), tsa_key, tsa_cert, rogue)


class Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def entry(i: int) -> dict[str, Any]:
    return {"message_id": f"msg-{i}", "client": "PS/GOV/MOF/tax", "side": "consumer"}


async def _append(log: MessageLog, pki: Pki, first: int, count: int) -> dict[int, TreeHead]:
    """One record per batch (a signed tree head per record); every 10th head time-stamped."""
    heads: dict[int, TreeHead] = {}
    for i in range(first, first + count):
        await log.append(entry(i))
        head = await log.sign_tree_head()
        assert head is not None and head.size == i + 1
        heads[head.size] = head
        if head.size % STAMP_EVERY == 0:
            token, gen_time = pki.stamp(head)
            await log.add_timestamp(head.size, token, "Test TSA", gen_time)
    return heads


@dataclass
class Log:
    db: Path
    archives: Path
    heads: dict[int, TreeHead]
    now: float

    def cutoff(self, days: float = 30) -> int:
        return int((self.now - days * 86400) * 1000)


async def build(tmp_path: Path, pki: Pki) -> Log:
    """30 records logged 40 days ago (stamped at 10, 20, 30), then 5 recent ones."""
    now = time.time()
    clock = Clock(now - 40 * 86400)
    db = tmp_path / "messagelog.sqlite"
    with MessageLog(db, pki.signer, owner=OWNER, now=clock) as log:
        heads = await _append(log, pki, 0, RECORDS_OLD)
        clock.at = now
        heads |= await _append(log, pki, RECORDS_OLD, RECORDS_NEW)
    return Log(db, tmp_path / "archives", heads, now)


def archive(log: Log, pki: Pki, max_records: int = 10) -> list[Any]:
    return archive_log(
        log.db, log.archives, pki.signer, older_than_ms=log.cutoff(), max_records=max_records
    )


def verify(log: Log, pki: Pki) -> VerifyReport:
    return verify_log(
        log.db,
        owner=OWNER,
        check_records=False,
        trusted_cas=[pki.ca.cert],
        tsa_certs=[pki.tsa_cert],
        archive_dir=log.archives,
    )


def live_seqs(db: Path) -> list[int]:
    conn = open_readonly(db)
    try:
        return [s for (s,) in conn.execute("SELECT seq FROM records ORDER BY seq")]
    finally:
        conn.close()


def sql(db: Path, statement: str, params: tuple[Any, ...] = ()) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for table in ("records", "tree_heads", "timestamps", "archives"):
            for op in ("UPDATE", "DELETE"):
                conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_{op}")
        conn.execute(statement, params)
    finally:
        conn.close()


def rezip(path: Path, change: Callable[[dict[str, bytes]], None]) -> None:
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    change(parts)
    path.unlink()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in parts.items():
            z.writestr(name, data)


def edit_line(
    index: int, edit: Callable[[bytes], bytes | None]
) -> Callable[[dict[str, bytes]], None]:
    def change(parts: dict[str, bytes]) -> None:
        lines = parts[RECORDS].split(b"\n")[:-1]
        new = edit(lines[index])
        lines[index : index + 1] = [] if new is None else [new]
        parts[RECORDS] = b"".join(line + b"\n" for line in lines)

    return change


def archive_problems(report: VerifyReport) -> list[tuple[str | None, str]]:
    return [(p.archive, p.reason) for p in report.problems if p.kind == "archive"]


# --- archiving and verifying -------------------------------------------------------------------


async def test_archive_then_verify_across_archives_and_database(tmp_path: Path, pki: Pki) -> None:
    log = await build(tmp_path, pki)
    written = archive(log, pki)
    assert [(e.index, e.first_seq, e.end_seq) for e in written] == [
        (1, 0, 10),
        (2, 10, 20),
        (3, 20, 30),
    ]
    assert live_seqs(log.db) == list(range(RECORDS_OLD, RECORDS_OLD + RECORDS_NEW))
    report = verify(log, pki)
    assert report.ok, report.to_dict()
    assert (report.records, report.archives, report.archives_verified) == (35, 3, 3)
    assert report.archived_records == 30
    assert (report.tree_heads, report.tree_heads_verified) == (35, 35)
    assert (report.timestamps, report.timestamps_verified) == (3, 3)
    assert report.unindexed_files == ()


async def test_archive_is_standard_and_inspectable(tmp_path: Path, pki: Pki) -> None:
    log = await build(tmp_path, pki)
    [first, *_] = archive(log, pki)
    with zipfile.ZipFile(log.archives / first.file) as z:
        names = set(z.namelist())
        lines = z.read(RECORDS).split(b"\n")[:-1]
        manifest_bytes = z.read(MANIFEST)
        token = z.read(MANIFEST_JWS).decode()
    assert names == {RECORDS, "tree-heads.jsonl", "timestamps.jsonl", MANIFEST, MANIFEST_JWS}
    # each line is the entry exactly as logged: it hashes to the leaf under the signed heads
    leaves = [merkle.leaf_hash(line) for line in lines]
    assert merkle.root(leaves) == log.heads[10].root
    assert [orjson.loads(line)["seq"] for line in lines] == list(range(10))
    manifest = orjson.loads(manifest_bytes)
    assert (manifest["first_seq"], manifest["end_seq"], manifest["previous"]) == (0, 10, None)
    # the manifest JWS is a standard compact JWS over manifest.json's bytes
    verified = jws.verify(token, lambda _: pki.signer.cert.public_key())  # type: ignore[arg-type,return-value]
    assert verified.payload == manifest_bytes


async def test_only_old_records_under_a_time_stamped_head_move(tmp_path: Path, pki: Pki) -> None:
    now = time.time()
    clock = Clock(now - 40 * 86400)
    db = tmp_path / "messagelog.sqlite"
    with MessageLog(db, pki.signer, owner=OWNER, now=clock) as log:
        await _append(log, pki, 0, 25)  # stamped at 10 and 20; 21..25 under no stamped head
    archives = tmp_path / "archives"
    # (1) everything is old, but only what a time-stamped tree head covers moves
    written = archive_log(db, archives, pki.signer, older_than_ms=int(now * 1000))
    assert [(e.first_seq, e.end_seq) for e in written] == [(0, 20)]
    assert live_seqs(db) == list(range(20, 25))
    # (2) nothing newer than the cut-off moves, even when stamped
    with MessageLog(db, pki.signer, owner=OWNER, now=clock) as log:
        clock.at = now
        await _append(log, pki, 25, 15)  # recent; stamped at 30 and 40
    cutoff = int((now - 30 * 86400) * 1000)
    assert archive_log(db, archives, pki.signer, older_than_ms=cutoff) == []
    assert live_seqs(db)[0] == 20
    report = verify_log(
        db,
        owner=OWNER,
        check_records=False,
        trusted_cas=[pki.ca.cert],
        tsa_certs=[pki.tsa_cert],
        archive_dir=archives,
    )
    assert report.ok, report.to_dict()


async def test_a_log_without_time_stamps_is_never_archived(tmp_path: Path, pki: Pki) -> None:
    db = tmp_path / "messagelog.sqlite"
    with MessageLog(db, pki.signer, owner=OWNER) as log:
        await log.append_many([entry(i) for i in range(5)])
    written = archive_log(db, tmp_path / "archives", pki.signer, older_than_ms=2**62)
    assert written == []
    assert live_seqs(db) == list(range(5))


async def test_appending_and_proofs_keep_working_across_the_boundary(
    tmp_path: Path, pki: Pki
) -> None:
    log = await build(tmp_path, pki)
    published = log.heads[15]  # a tree head an auditor kept before archiving
    archive(log, pki)
    # (1) the reopened log resumes from the archived frontier: new heads extend the old tree
    with MessageLog(log.db, pki.signer, owner=OWNER) as live:
        assert live.size == 35
        heads = await _append(live, pki, 35, 5)
    latest = heads[40]
    proof = consistency_between(log.db, published.size, latest.size, archive_dir=log.archives)
    assert proof.root_m == published.root and proof.root_n == latest.root
    assert check_consistency(proof.to_dict())
    # (2) from an archived head to another archived one, and from the boundary to the end
    assert check_consistency(consistency_between(log.db, 5, 25, archive_dir=log.archives).to_dict())
    assert check_consistency(
        consistency_between(log.db, 30, 40, archive_dir=log.archives).to_dict()
    )
    # (3) inclusion of an archived record and of a live one under the latest head
    for message_id, seq in (("msg-3", 3), ("msg-37", 37)):
        [inclusion] = inclusion_for_message(log.db, message_id, archive_dir=log.archives)
        assert (inclusion.seq, inclusion.tree_size) == (seq, 40)
        assert check_inclusion(inclusion.to_dict())
    # (4) under an archived, time-stamped head, its token comes from the archive
    [old] = inclusion_for_message(log.db, "msg-3", size=10, archive_dir=log.archives)
    assert old.timestamp_token is not None and check_inclusion(old.to_dict())
    assert verify(log, pki).ok


async def test_archiving_twice_continues_the_chain(tmp_path: Path, pki: Pki) -> None:
    log = await build(tmp_path, pki)
    archive_log(log.db, log.archives, pki.signer, older_than_ms=log.cutoff(), max_records=10**6)
    with MessageLog(log.db, pki.signer, owner=OWNER) as live:
        await _append(live, pki, 35, 15)  # stamped at 40 and 50
    later = archive_log(log.db, log.archives, pki.signer, older_than_ms=2**62)
    assert [(e.index, e.first_seq, e.end_seq) for e in later] == [(2, 30, 50)]
    with zipfile.ZipFile(log.archives / later[0].file) as z:
        link = orjson.loads(z.read(MANIFEST))["previous"]
    conn = open_readonly(log.db)
    try:
        first = read_index(conn)[0]
    finally:
        conn.close()
    assert link == {"index": 1, "file": first.file, "sha256": first.sha256}
    assert verify(log, pki).ok
    assert live_seqs(log.db) == []
    with MessageLog(log.db, pki.signer, owner=OWNER) as live:  # an empty live table still resumes
        await live.append(entry(50))
        assert live.size == 51
    assert verify(log, pki).ok


# --- crash safety ------------------------------------------------------------------------------


async def test_file_written_but_rows_not_deleted_still_verifies_and_rerun_does_not_duplicate(
    tmp_path: Path, pki: Pki
) -> None:
    log = await build(tmp_path, pki)
    # the run stops after the file's rename, before its transaction (a crash there)
    conn = open_readonly(log.db)
    try:
        plan = _plan(conn, log.cutoff(), 10)
    finally:
        conn.close()
    assert plan is not None
    _write_archive(log.db, log.archives, pki.signer, plan, _Moved(None, 0, 0), int(log.now * 1000))
    (log.archives / ".messagelog-000002.zip.tmp").write_bytes(b"half a file")
    report = verify(log, pki)
    assert report.ok, report.to_dict()
    assert (report.archives, report.unindexed_files) == (0, ("messagelog-000001.zip",))
    assert live_seqs(log.db) == list(range(35))
    # the next run writes the same archives again, over the leftovers, once
    written = archive(log, pki)
    assert [e.file for e in written] == [f"messagelog-00000{i}.zip" for i in (1, 2, 3)]
    assert sorted(p.name for p in log.archives.glob("messagelog-*.zip")) == [
        e.file for e in written
    ]
    report = verify(log, pki)
    assert report.ok and report.archives == 3 and report.unindexed_files == ()
    assert report.records == 35


async def test_a_second_archiving_run_at_once_is_refused(tmp_path: Path, pki: Pki) -> None:
    import fcntl

    log = await build(tmp_path, pki)
    fd = os.open(log.db.with_name(log.db.name + ".archive.lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ArchivingBusy, match="another archiving run is in progress"):
            archive(log, pki)
        with pytest.raises(ArchivingBusy):
            archive_log(log.db, log.archives, pki.signer, older_than_ms=log.cutoff(), wait=0.2)
    finally:
        os.close(fd)
    assert live_seqs(log.db) == list(range(35))


async def test_live_rows_stay_append_only_after_archiving(tmp_path: Path, pki: Pki) -> None:
    log = await build(tmp_path, pki)
    archive(log, pki)
    conn = sqlite3.connect(log.db, isolation_level=None)
    try:
        for statement in (
            "DELETE FROM records WHERE seq = 31",
            "DELETE FROM tree_heads WHERE size = 30",
            "DELETE FROM timestamps WHERE size = 30",
            "DELETE FROM archives WHERE idx = 3",
            "UPDATE archives SET sha256 = 'x' WHERE idx = 1",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
    finally:
        conn.close()


async def test_a_damaged_log_is_not_archived(tmp_path: Path, pki: Pki) -> None:
    log = await build(tmp_path, pki)
    sql(log.db, "UPDATE records SET entry = ? WHERE seq = 4", (b'{"seq":4,"edited":true}',))
    with pytest.raises(
        MessageLogError, match="record 4 is missing or damaged; nothing was archived"
    ):
        archive(log, pki)
    assert live_seqs(log.db) == list(range(35))
    assert not list(log.archives.glob("*.zip"))


# --- tampering ---------------------------------------------------------------------------------


def _delete_archive(log: Log) -> None:
    (log.archives / "messagelog-000002.zip").unlink()


def _flip_byte(log: Log) -> None:
    path = log.archives / "messagelog-000001.zip"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_record(log: Log) -> None:
    def other_client(line: bytes) -> bytes:
        return line.replace(b"PS/GOV/MOF/tax", b"PS/GOV/MOF/own")

    rezip(log.archives / "messagelog-000001.zip", edit_line(3, other_client))


def _remove_record(log: Log) -> None:
    rezip(log.archives / "messagelog-000002.zip", edit_line(5, lambda _: None))


def _swap_archives(log: Log) -> None:
    one, two = log.archives / "messagelog-000001.zip", log.archives / "messagelog-000002.zip"
    one.rename(log.archives / "tmp.zip")
    two.rename(one)
    (log.archives / "tmp.zip").rename(two)


def _replace_archive(log: Log) -> None:
    """Archive 2 replaced by the same range of a forged log (another key, same entries)."""
    shutil.copy(log.archives / "messagelog-000003.zip", log.archives / "messagelog-000002.zip")


def _index_digest(log: Log) -> None:
    sql(log.db, "UPDATE archives SET sha256 = ? WHERE idx = 2", ("0" * 64,))


def _index_range(log: Log) -> None:
    sql(log.db, "UPDATE archives SET end_seq = 19 WHERE idx = 2")


def _altered_with_index(log: Log) -> None:
    """Archive 1 altered and its index digest updated to match: archive 2's signed link says."""
    from exchange.messagelog.archive import file_sha256

    _edit_record(log)
    digest = file_sha256(log.archives / "messagelog-000001.zip")
    sql(log.db, "UPDATE archives SET sha256 = ? WHERE idx = 1", (digest,))


def _forged_manifest(log: Log, pki: Pki) -> None:
    def resign(parts: dict[str, bytes]) -> None:
        parts[MANIFEST_JWS] = pki.rogue.sign(parts[MANIFEST]).encode()

    rezip(log.archives / "messagelog-000003.zip", resign)


def _last_archive_and_index_row(log: Log) -> None:
    (log.archives / "messagelog-000003.zip").unlink()
    sql(log.db, "DELETE FROM archives WHERE idx = 3")


def _middle_index_row(log: Log) -> None:
    sql(log.db, "DELETE FROM archives WHERE idx = 2")


def _live_record(log: Log) -> None:
    sql(log.db, "DELETE FROM records WHERE seq = 32")


A1 = "1 (messagelog-000001.zip)"
A2 = "2 (messagelog-000002.zip)"
A3 = "3 (messagelog-000003.zip)"
TAMPERING = [
    pytest.param(
        _delete_archive,
        (A2, "the file is missing: its records cannot be checked"),
        (10, "archive 2 (messagelog-000002.zip), records 10..19: the file is missing"),
        id="deleted-archive",
    ),
    pytest.param(
        _flip_byte,
        (A1, "the file's SHA-256 differs from the archive index (archive altered or replaced)"),
        None,  # where the changed byte lands decides which record or part shows it first
        id="archive-byte-changed",
    ),
    pytest.param(
        _edit_record,
        (A1, "records.jsonl differs from the digest in the signed manifest (altered)"),
        (3, "a record with seq 3..3 was altered in an archive"),
        id="record-edited-and-rezipped",
    ),
    pytest.param(
        _remove_record,
        (A2, "records.jsonl differs from the digest in the signed manifest (altered)"),
        (15, "record 15 is missing (deleted)"),
        id="record-removed-in-the-middle",
    ),
    pytest.param(
        _swap_archives,
        (A1, "the file is archive 2, not 1 (archives reordered or replaced)"),
        (0, "records 0..9 are missing (deleted)"),
        id="archives-reordered",
    ),
    pytest.param(
        _replace_archive,
        (A2, "the file is archive 3, not 2 (archives reordered or replaced)"),
        (10, "records 10..19 are missing (deleted)"),
        id="archive-replaced",
    ),
    pytest.param(
        _index_digest,
        (A2, "the file's SHA-256 differs from the archive index (archive altered or replaced)"),
        (10, "archive 2 (messagelog-000002.zip), records 10..19: the file's SHA-256 differs"),
        id="index-digest-edited",
    ),
    pytest.param(
        _index_range,
        (A2, "the signed manifest covers records 10..19, the index 10..18"),
        (10, "archive 2 (messagelog-000002.zip), records 10..18: the signed manifest covers"),
        id="index-range-edited",
    ),
    pytest.param(
        _altered_with_index,
        (A2, "its signed link to archive 1 does not match that archive's SHA-256 in the index"),
        (3, "a record with seq 3..3 was altered in an archive"),
        id="archive-altered-and-index-updated",
    ),
    pytest.param(
        _last_archive_and_index_row,
        None,
        (20, "records 20..29 are missing (deleted)"),
        id="last-archive-and-its-index-row-removed",
    ),
    pytest.param(
        _middle_index_row,
        (A3, "the index gives records 20..29, but the previous archive ends at 10"),
        (10, "records 10..19 are missing (deleted)"),
        id="middle-index-row-deleted",
    ),
    pytest.param(
        _live_record,
        None,
        (32, "record 32 is missing (deleted)"),
        id="live-record-removed-after-archiving",
    ),
]


@pytest.mark.parametrize(("tamper", "problem", "first_bad"), TAMPERING)
async def test_tampering_with_archives_is_named(
    tmp_path: Path,
    pki: Pki,
    tamper: Callable[[Log], None],
    problem: tuple[str, str] | None,
    first_bad: tuple[int, str] | None,
) -> None:
    log = await build(tmp_path, pki)
    archive(log, pki)
    assert verify(log, pki).ok
    tamper(log)
    report = verify(log, pki)
    assert not report.ok
    if problem is not None:
        assert any(
            where == problem[0] and reason.startswith(problem[1])
            for where, reason in archive_problems(report)
        ), archive_problems(report)
    assert report.first_bad is not None
    if first_bad is None:
        assert 0 <= report.first_bad.seq < 10, report.first_bad
        return
    assert (report.first_bad.seq, report.first_bad.reason[: len(first_bad[1])]) == first_bad


async def test_forged_manifest_signature_is_named(tmp_path: Path, pki: Pki) -> None:
    log = await build(tmp_path, pki)
    archive(log, pki)
    _forged_manifest(log, pki)
    report = verify(log, pki)
    assert not report.ok
    reasons = [reason for where, reason in archive_problems(report) if where == A3]
    assert any(r.startswith("manifest signature: signing certificate") for r in reasons), reasons
    assert "is not in the log" in " ".join(reasons)
    assert report.first_bad is not None and report.first_bad.reason.startswith("archive 3")


async def test_edited_index_frontier_stops_the_writer(tmp_path: Path, pki: Pki) -> None:
    log = await build(tmp_path, pki)
    archive(log, pki)
    sql(log.db, "UPDATE archives SET frontier = ? WHERE idx = 3", (bytes(4 * 32),))
    with pytest.raises(MessageLogError, match="does not match its last signed tree head"):
        MessageLog(log.db, pki.signer, owner=OWNER).open()
    report = verify(log, pki)
    assert (A3, "its records do not end in the Merkle tree state the index holds for size 30") in (
        archive_problems(report)
    )


async def test_records_without_bodies_are_counted_in_archives_too(tmp_path: Path, pki: Pki) -> None:
    db = tmp_path / "messagelog.sqlite"
    with MessageLog(db, pki.signer, owner=OWNER) as log:
        for i in range(12):
            await log.append({**entry(i), "bodies": "digests-only" if i % 2 else "logged"})
            head = await log.sign_tree_head()
            assert head is not None
            if head.size == 10:
                token, gen_time = pki.stamp(head)
                await log.add_timestamp(head.size, token, "Test TSA", gen_time)
    archives = tmp_path / "archives"
    assert len(archive_log(db, archives, pki.signer, older_than_ms=2**62)) == 1
    report = verify_log(
        db, owner=OWNER, check_records=False, trusted_cas=[pki.ca.cert], archive_dir=archives
    )
    assert report.ok, report.to_dict()
    assert (report.records, report.records_without_bodies) == (12, 6)


async def test_audit_watch_stays_consistent_across_archiving(tmp_path: Path, pki: Pki) -> None:
    from exchange.audit.watch import watch_once

    log = await build(tmp_path, pki)
    state = tmp_path / "heads.json"
    assert watch_once(log.db, state, log.archives).consistent  # remembers the head of size 35
    with MessageLog(log.db, pki.signer, owner=OWNER) as live:
        await _append(live, pki, 35, 8)  # stamped at 40
    archive_log(log.db, log.archives, pki.signer, older_than_ms=2**62)  # the head of 35 too
    assert live_seqs(log.db) == [40, 41, 42]
    result = watch_once(log.db, state, log.archives)
    assert result.consistent, result.message
    assert (result.previous_size, result.size) == (35, 43)


async def test_queries_find_archived_and_live_records_in_order(tmp_path: Path, pki: Pki) -> None:
    from exchange.messagelog.query import query_records

    log = await build(tmp_path, pki)
    archive(log, pki)
    everything = query_records(log.db, archive_dir=log.archives, limit=100)
    assert [v.seq for v in everything] == list(range(35))
    assert [v.seq for v in query_records(log.db, limit=100)] == list(range(30, 35))
    [found] = query_records(log.db, message_id="msg-12", archive_dir=log.archives)
    assert (found.seq, found.client, found.entry["seq"]) == (12, "PS/GOV/MOF/tax", 12)
    page = query_records(log.db, archive_dir=log.archives, limit=5, offset=28)
    assert [v.seq for v in page] == [28, 29, 30, 31, 32]
    recent = dt.datetime.fromtimestamp(log.now - 86400, dt.UTC)
    assert [v.seq for v in query_records(log.db, since=recent, archive_dir=log.archives)] == [
        30, 31, 32, 33, 34
    ]  # fmt: skip
    old = query_records(log.db, until=recent, archive_dir=log.archives, limit=3)
    assert [v.seq for v in old] == [0, 1, 2]


async def test_opmon_counts_archived_records_and_skips_a_line_that_is_no_record(
    tmp_path: Path, pki: Pki
) -> None:
    """`server opmon --archives` reads the archive files as they are (verifying them is `log
    verify`'s job): a line that is not a JSON object is left out of the counts, not a traceback."""
    from exchange.messagelog.opmon import summarise

    log = await build(tmp_path, pki)
    archive(log, pki)
    window = (log.cutoff(days=50), int(log.now * 1000) + 1000)

    def counted() -> int:
        return sum(row.count for row in summarise(log.db, *window, archive_dir=log.archives))

    assert counted() == RECORDS_OLD + RECORDS_NEW
    rezip(log.archives / "messagelog-000001.zip", edit_line(3, lambda _: b"not json"))
    rezip(log.archives / "messagelog-000002.zip", edit_line(5, lambda _: b"[1, 2]"))
    assert counted() == RECORDS_OLD + RECORDS_NEW - 2
    assert not verify(log, pki).ok  # what the counts leave out, the verification names
