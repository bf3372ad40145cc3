"""Opening a backup and unpacking it into a new directory, refusing anything not as written.

:func:`open_backup` checks, in order: (1) the file is a complete zip; (2) every entry is a plain
file named ``MANIFEST.json``, ``MANIFEST.hmac`` or ``data/PATH`` with a safe relative ``PATH``,
stored or deflated, unencrypted, never a link or a directory, none twice; (3) the manifest
parses; (4) the passphrase opens it (its check value); (5) its HMAC verifies, and it is of the
role asked for; (6) the entries are exactly the manifest's members, (7) each of the size the
manifest says.
:func:`restore` then (8) checks the space the members need, (9) unpacks each into a staging
directory beside the target, reading no more than its stated size and comparing its SHA-256
(sealed keys are opened and written 0600), and (10) renames the staging directory into place:
the target receives every file or none.

A damaged, altered or unsafe backup is a :class:`~exchange.backup.sealing.BackupError`
(exit status 1); a target that is not new and empty, or a backup of another role, is a
:class:`~exchange.errors.ConfigurationError` (exit status 2).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from exchange.backup.manifest import (
    DATA,
    MANIFEST,
    MANIFEST_MAC,
    MAX_MANIFEST_BYTES,
    ROLES,
    Manifest,
    Member,
    Role,
    parse_manifest,
    safe_path,
)
from exchange.backup.sealing import BackupError, BackupKeys
from exchange.backup.writer import CHUNK, MAX_SECRET_BYTES
from exchange.durable import fsync_path
from exchange.errors import ConfigurationError

SPACE_MARGIN: Final = 64 * 2**20
"""Free space left over after a restore, besides the members' bytes."""
_COMPRESSIONS: Final = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_ZIP_ERRORS: Final = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


class OpenBackup:
    """A backup whose manifest is authenticated and whose entries match it (steps 1-7)."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, manifest: Manifest, keys: BackupKeys):
        self.path, self._zip, self.manifest, self._keys = path, zf, manifest, keys

    def __enter__(self) -> OpenBackup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._zip.close()

    def read_member(self, member: Member, limit: int) -> bytes:
        """A small member whole (its hash checked), opened if sealed."""
        if member.size > limit:
            raise BackupError(f"member {member.path} is too large ({member.size} bytes)")
        data = b"".join(self._chunks(member))
        return self._keys.open(member.path, data) if member.kind == "secret" else data

    def unpack(self, member: Member, target: Path) -> None:
        """Write ``member`` at ``target`` (a new file), its bytes checked on the way."""
        target.parent.mkdir(parents=True, exist_ok=True)
        if member.kind == "secret":
            data = self.read_member(member, MAX_SECRET_BYTES + 64)
            _write_new(target, (data,), 0o600)
        else:
            _write_new(target, self._chunks(member), member.mode)

    def _chunks(self, member: Member) -> Iterator[bytes]:
        """``member``'s bytes, at most its stated size, its SHA-256 compared at the end."""
        digest, left = hashlib.sha256(), member.size
        try:
            with self._zip.open(member.zip_name) as source:
                while left > 0:
                    chunk = source.read(min(CHUNK, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    digest.update(chunk)
                    yield chunk
                extra = source.read(1)
        except _ZIP_ERRORS as exc:
            raise BackupError(f"member {member.path} is damaged: {exc}") from None
        if left or extra:
            raise BackupError(f"member {member.path} is not the size its manifest says")
        if digest.hexdigest() != member.sha256:
            raise BackupError(f"member {member.path} was altered: its SHA-256 differs")


def open_backup(path: Path, passphrase: bytes, role: Role) -> OpenBackup:
    """Steps 1-7 of the module docstring."""
    if not path.is_file():
        raise ConfigurationError(f"no backup file at {path}")
    try:
        zf = zipfile.ZipFile(path)
    except (*_ZIP_ERRORS, OSError) as exc:
        raise BackupError(
            f"{path} is not a complete backup (truncated or not a zip): {exc}"
        ) from None
    try:
        # (1)-(2) a complete zip whose entries are plain, safely named files
        entries = _entries(zf)
        # (3) the manifest parses
        data = _small(zf, entries, MANIFEST, MAX_MANIFEST_BYTES)
        manifest = parse_manifest(data)
        # (4)-(5) the passphrase opens it, the manifest is the one written with it, and it is
        # of this role
        keys = BackupKeys(passphrase, manifest.kdf)
        keys.verify_check(manifest.check)
        keys.verify_manifest(data, _small(zf, entries, MANIFEST_MAC, 256))
        if manifest.role != role:
            raise ConfigurationError(
                f"{path} is the backup of a {ROLES[manifest.role]}, not of a {ROLES[role]}: "
                f"restore it with `exchange {manifest.role} restore`"
            )
        # (6)-(7) exactly the manifest's members, each of its stated size
        _match(entries, manifest)
    except BaseException:
        zf.close()
        raise
    return OpenBackup(path, zf, manifest, keys)


def _entries(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    entries: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        name = info.filename
        if name in entries:
            raise BackupError(f"the backup holds {name!r} twice")
        if name not in (MANIFEST, MANIFEST_MAC):
            if not name.startswith(DATA):
                raise BackupError(f"the backup holds {name!r}, which no backup has")
            safe_path(name[len(DATA) :])
        kind = stat.S_IFMT(info.external_attr >> 16)
        if info.is_dir() or kind not in (0, stat.S_IFREG):
            raise BackupError(f"member {name!r} is not a plain file (a link or a directory)")
        if info.flag_bits & 0x1:
            raise BackupError(f"member {name!r} is encrypted by zip, which no backup is")
        if info.compress_type not in _COMPRESSIONS:
            raise BackupError(f"member {name!r} has an unexpected compression")
        entries[name] = info
    return entries


def _small(
    zf: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], name: str, limit: int
) -> bytes:
    info = entries.get(name)
    if info is None:
        raise BackupError(f"the backup has no {name}: not an Exchange backup, or cut short")
    if info.file_size > limit:
        raise BackupError(f"{name} is larger than any backup writes")
    try:
        with zf.open(info) as f:
            data = f.read(limit + 1)
    except _ZIP_ERRORS as exc:
        raise BackupError(f"{name} is damaged: {exc}") from None
    if len(data) > limit:
        raise BackupError(f"{name} is larger than any backup writes")
    return data


def _match(entries: dict[str, zipfile.ZipInfo], manifest: Manifest) -> None:
    stored = {name for name in entries if name.startswith(DATA)}
    listed = {m.zip_name: m for m in manifest.members}
    for name in sorted(set(listed) - stored):
        raise BackupError(f"member {name[len(DATA) :]} is missing from the backup")
    for name in sorted(stored - set(listed)):
        raise BackupError(f"member {name[len(DATA) :]} is not in the backup's manifest")
    for name, member in listed.items():
        if entries[name].file_size != member.size:
            raise BackupError(
                f"member {member.path} is {entries[name].file_size} bytes in the zip, "
                f"{member.size} in the manifest"
            )


@dataclass(frozen=True, slots=True)
class Restored:
    directory: Path
    manifest: Manifest

    @property
    def config(self) -> Path | None:
        return None if self.manifest.config is None else self.directory / self.manifest.config


def check_target(into: Path) -> None:
    """The target must be new or an empty directory."""
    if into.is_symlink() or (into.exists() and not into.is_dir()):
        raise ConfigurationError(f"{into} exists and is not a directory: choose a new directory")
    if into.is_dir() and any(into.iterdir()):
        raise ConfigurationError(f"{into} is not empty: restore into a new or empty directory")
    if not into.parent.is_dir():
        raise ConfigurationError(f"{into.parent} does not exist")


def restore(backup: OpenBackup, into: Path) -> Restored:
    """Steps 8-10: every member under ``into``, or nothing."""
    into = into.absolute()
    check_target(into)
    # (8) the space the members need
    need = sum(m.size for m in backup.manifest.members)
    free = shutil.disk_usage(into.parent).free
    if need + SPACE_MARGIN > free:
        raise ConfigurationError(
            f"restoring needs {need} bytes and {SPACE_MARGIN} to spare; "
            f"{into.parent} has {free} free"
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{into.name}.restoring-", dir=into.parent))
    try:
        # (9) each member, read within its size and compared with its SHA-256
        for member in backup.manifest.members:
            try:
                backup.unpack(member, staging / member.path)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                raise BackupError(f"member {member.path} collides with another member") from None
        # (10) into place at once
        fsync_path(staging)
        if into.is_dir():
            into.rmdir()
        os.rename(staging, into)
        fsync_path(into.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Restored(into, backup.manifest)


def _write_new(target: Path, chunks: Iterable[bytes], mode: int) -> None:
    """A new file (never through a link), synced, with ``mode`` less group and world write."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
        os.fchmod(out.fileno(), mode & 0o755)
        out.flush()
        os.fsync(out.fileno())
