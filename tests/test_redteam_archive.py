"""Red-team tests of message-log archives: files that are not where, or not whose, they claim.

Builds on the real logs, keys and time-stamps of :mod:`tests.test_archive`: an attacker with
the files swaps in another log's archive, points the index outside the archive folder, or plants
a symbolic link, or plants a link at the temporary name the archiver (or the key writer)
writes to. Each case checks the exact reason ``exchange log verify`` names, or that nothing was
written through the link.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from exchange.messagelog.archive import archived_records, file_sha256
from exchange.messagelog.store import MessageLogError
from tests.test_archive import A2, Pki, archive, archive_problems, build, pki, sql, verify

__all__ = ["pki"]  # the module-scoped fixture, shared


async def test_an_archive_of_another_log_with_the_same_key_is_named(
    tmp_path: Path, pki: Pki
) -> None:
    """Archive 2 of another log (same signing key, same record contents) and the index updated to
    its digest: the signed manifest names its log."""
    mine = await build(tmp_path / "mine", pki)
    other = await build(tmp_path / "other", pki)
    archive(mine, pki)
    archive(other, pki)
    target = mine.archives / "messagelog-000002.zip"
    shutil.copy(other.archives / "messagelog-000002.zip", target)
    sql(mine.db, "UPDATE archives SET sha256 = ? WHERE idx = 2", (file_sha256(target),))
    report = verify(mine, pki)
    assert not report.ok
    reasons = [reason for where, reason in archive_problems(report) if where == A2]
    assert any(r.startswith("the archive is of log ") for r in reasons), reasons


TRAVERSAL = [
    pytest.param("../outside/messagelog-000002.zip", id="dot-dot"),
    pytest.param("{outside}/messagelog-000002.zip", id="absolute-path"),
    pytest.param("sub/../../outside/messagelog-000002.zip", id="nested-dot-dot"),
    pytest.param("messagelog-000002.zip/../../outside/messagelog-000002.zip", id="via-file"),
]


@pytest.mark.parametrize("name", TRAVERSAL)
async def test_an_index_row_naming_a_file_outside_the_archive_folder_is_refused(
    tmp_path: Path, pki: Pki, name: str
) -> None:
    """The index (in the database) names each archive's file; one that escapes the archive
    folder is never opened, by the verifier or by the queries, even if the file it names is the
    genuine archive (moved there by someone with the files)."""
    log = await build(tmp_path, pki)
    archive(log, pki)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.replace(log.archives / "messagelog-000002.zip", outside / "messagelog-000002.zip")
    sql(log.db, "UPDATE archives SET file = ? WHERE idx = 2", (name.format(outside=outside),))
    report = verify(log, pki)
    assert not report.ok
    reasons = [reason for _, reason in archive_problems(report)]
    assert any("not a file name in the archive folder" in r for r in reasons), reasons
    with pytest.raises(MessageLogError, match="not a file name in the archive folder"):
        list(archived_records(log.db, log.archives))


async def test_a_symlink_to_another_archive_is_caught_by_its_digest(
    tmp_path: Path, pki: Pki
) -> None:
    """A link in the archive folder is read like the file it points to: its bytes must still be
    the ones the index and the signed chain name."""
    log = await build(tmp_path, pki)
    archive(log, pki)
    target = log.archives / "messagelog-000002.zip"
    target.unlink()
    target.symlink_to(log.archives / "messagelog-000003.zip")
    report = verify(log, pki)
    assert not report.ok
    assert any(
        where == A2 and reason.startswith("the file's SHA-256 differs from the archive index")
        for where, reason in archive_problems(report)
    ), archive_problems(report)


async def test_a_link_planted_at_the_temporary_name_is_not_written_through(
    tmp_path: Path, pki: Pki
) -> None:
    """Someone who can write to the archive folder plants ``.messagelog-000001.zip.tmp`` as a link
    to another file of the server (its key, say). Before the fix the archiver wrote the zip
    through the link, clobbering that file, and renamed the link into place as the archive."""
    log = await build(tmp_path, pki)
    victim = tmp_path / "victim.pem"
    victim.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    log.archives.mkdir()
    (log.archives / ".messagelog-000001.zip.tmp").symlink_to(victim)
    written = archive(log, pki)
    assert [e.index for e in written] == [1, 2, 3]
    assert victim.read_bytes() == b"-----BEGIN PRIVATE KEY-----\n"
    first = log.archives / "messagelog-000001.zip"
    assert not first.is_symlink() and first.stat().st_mode & 0o777 == 0o600
    assert verify(log, pki).ok


def test_a_link_planted_at_a_private_keys_temporary_name_is_not_written_through(
    tmp_path: Path,
) -> None:
    """The same attack on the key files: the private key must not land in the link's target."""
    from exchange.trust.keys import generate_key, load_private_key, save_private_key

    victim = tmp_path / "public" / "readable.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"nothing secret\n")
    key_path = tmp_path / "keys" / "sign.key.pem"
    key_path.parent.mkdir()
    key_path.with_name(key_path.name + ".tmp").symlink_to(victim)
    key = generate_key()
    save_private_key(key_path, key)
    assert victim.read_bytes() == b"nothing secret\n"
    assert not key_path.is_symlink() and key_path.stat().st_mode & 0o777 == 0o600
    assert load_private_key(key_path, None).private_numbers() == key.private_numbers()


def _write_globalconf_cache(path: Path) -> None:
    # the global configuration cache, the anchor, keys and server.toml edits all use it
    from exchange.durable import write_durably

    write_durably(path, b"{}")


def _save_watch_state(path: Path) -> None:
    from exchange.audit.watch import _save

    _save(path, {})


def _new_file_directly(path: Path) -> None:
    from exchange.durable import new_file

    with new_file(path.with_name(path.name + ".tmp")) as f:
        f.write(b"{}")
    path.with_name(path.name + ".tmp").replace(path)


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(_write_globalconf_cache, id="globalconf-cache"),
        pytest.param(_save_watch_state, id="audit-watch-state"),
        pytest.param(_new_file_directly, id="durable-new-file"),
    ],
)
def test_other_writers_do_not_write_through_a_planted_link(tmp_path: Path, write: Any) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    target = tmp_path / "state" / "file.json"
    target.parent.mkdir()
    target.with_name(target.name + ".tmp").symlink_to(victim)
    write(target)
    assert victim.read_bytes() == b"untouched"
    assert not target.is_symlink() and target.read_bytes().strip() == b"{}"
