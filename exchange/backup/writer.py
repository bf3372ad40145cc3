"""Writing a backup file: members streamed into a zip with their SHA-256, keys sealed, SQLite
databases copied online, the manifest authenticated last.

The file is written under a temporary name next to the output and renamed into place only once
complete (:func:`exchange.durable.durable_replace`), so a backup that failed halfway never sits
under the name the operator asked for. A database is copied with SQLite's online backup API
(``sqlite3.Connection.backup``, one step inside one read transaction): a consistent snapshot
while its server keeps running and appending, never a torn copy of a file being written.

What goes into a backup is decided by the role's module (:mod:`exchange.backup.server`,
:mod:`exchange.backup.central`, :mod:`exchange.backup.ca`); this one only writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import stat
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from exchange.backup.manifest import (
    MANIFEST,
    MANIFEST_MAC,
    Kind,
    Manifest,
    Member,
    Rewrite,
    Role,
    safe_path,
)
from exchange.backup.sealing import BackupKeys, KdfParams
from exchange.durable import durable_replace, new_file
from exchange.errors import ConfigurationError

CHUNK: Final = 1 << 20
MAX_SECRET_BYTES: Final = 1 << 20
SQLITE_MAGIC: Final = b"SQLite format 3\x00"


def is_private_key(data: bytes) -> bool:
    """PEM private keys of any kind (PKCS#8, encrypted or not, SEC1, PKCS#1)."""
    return b"-----BEGIN " in data and b"PRIVATE KEY-----" in data


def is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def snapshot_sqlite(origin: Path, target: Path) -> None:
    """A consistent copy of the database ``origin`` at ``target``, taken through a read-only
    connection while writers go on (WAL readers do not block them)."""
    source = sqlite3.connect(f"{origin.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
    finally:
        source.close()


class BackupWriter:
    """One backup being written; :meth:`finish` makes it complete, leaving the ``with`` block
    without it removes the partial file."""

    def __init__(self, output: Path, passphrase: bytes, role: Role, identity: str) -> None:
        self.output = output = output.absolute()
        if output.exists() or output.is_symlink():
            raise ConfigurationError(f"{output} already exists: choose a new file name")
        if not output.parent.is_dir():
            raise ConfigurationError(f"{output.parent} is not a directory")
        self.role, self.identity = role, identity
        self._keys = BackupKeys(passphrase, KdfParams.fresh())
        self._members: list[Member] = []
        self._rewrites: list[Rewrite] = []
        self._facts: dict[str, str] = {}
        self._partial = output.with_name(f".{output.name}.partial")
        self._scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
        self._file: IO[bytes] = new_file(self._partial)
        self._zip = zipfile.ZipFile(
            self._file, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True
        )
        self._done = False

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release everything; a backup not finished is removed."""
        with contextlib.suppress(Exception):
            self._zip.close()
        with contextlib.suppress(Exception):
            self._file.close()
        shutil.rmtree(self._scratch, ignore_errors=True)
        if not self._done:
            with contextlib.suppress(FileNotFoundError):
                self._partial.unlink()

    # -- members ---------------------------------------------------------------------------------

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(m.path for m in self._members)

    def add_file(self, path: str, origin: Path, *, mode: int | None = None) -> Member:
        """The file ``origin`` as ``path``; a private key found in it is sealed instead."""
        with _open_regular(origin) as source:
            head = source.read(CHUNK)
            if is_private_key(head):
                return self.add_secret(path, origin)
            perms = stat.S_IMODE(os.fstat(source.fileno()).st_mode) if mode is None else mode
            return self._stream(path, "file", perms, _chain(head, source))

    def add_secret(self, path: str, origin: Path) -> Member:
        """A private key file, sealed with the passphrase's key: never stored in clear."""
        with _open_regular(origin) as source:
            data = source.read(MAX_SECRET_BYTES + 1)
        if len(data) > MAX_SECRET_BYTES:
            raise ConfigurationError(f"{origin} is too large to be a private key file")
        sealed = self._keys.seal(safe_path(path), data)
        return self._stream(path, "secret", 0o600, iter((sealed,)))

    def add_sqlite(self, path: str, origin: Path) -> Path:
        """An online snapshot of the database ``origin`` as ``path``; returns the snapshot (a
        file that lives until :meth:`close`) for the caller to read facts from."""
        if not origin.is_file():
            raise ConfigurationError(f"database {origin} does not exist")
        if not is_sqlite(origin):
            raise ConfigurationError(f"{origin} is not an SQLite database")
        copy = self._scratch / f"{len(self._members)}.sqlite"
        try:
            snapshot_sqlite(origin, copy)
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot copy database {origin}: {exc}") from None
        with copy.open("rb") as source:
            self._stream(path, "sqlite", 0o600, _chain(b"", source))
        return copy

    def add_bytes(self, path: str, data: bytes, *, mode: int = 0o600) -> Member:
        return self._stream(path, "file", mode, iter((data,)))

    def rewrite(self, rewrite: Rewrite) -> None:
        self._rewrites.append(rewrite)

    def fact(self, key: str, value: str) -> None:
        self._facts[key] = value

    def _stream(self, path: str, kind: Kind, mode: int, chunks: Iterator[bytes]) -> Member:
        name = safe_path(path)
        if name in self.paths:
            raise ConfigurationError(f"two files of this backup would both restore as {name}")
        info = zipfile.ZipInfo("data/" + name, time.gmtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = (stat.S_IFREG | mode) << 16
        digest, size = hashlib.sha256(), 0
        with self._zip.open(info, "w", force_zip64=True) as out:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        member = Member(name, kind, size, digest.hexdigest(), mode)
        self._members.append(member)
        return member

    # -- completion ------------------------------------------------------------------------------

    def finish(self, config: str | None, *, now: int) -> Manifest:
        """Write the manifest and its HMAC, then move the backup to its name."""
        if config is not None and config not in self.paths:
            raise ConfigurationError(f"the configuration {config} is not in the backup")
        manifest = Manifest(
            role=self.role,
            identity=self.identity,
            created_at=now,
            config=config,
            kdf=self._keys.params,
            check=self._keys.check(),
            members=tuple(self._members),
            rewrites=tuple(self._rewrites),
            facts=tuple(sorted(self._facts.items())),
        )
        data = manifest.to_bytes()
        self._zip.writestr(MANIFEST, data)
        self._zip.writestr(MANIFEST_MAC, self._keys.manifest_mac(data) + "\n")
        self._zip.close()
        self._file.close()
        if self.output.exists():
            raise ConfigurationError(f"{self.output} appeared while the backup was written")
        durable_replace(self._partial, self.output)
        self._done = True
        return manifest


class Placer:
    """Adds each file a configuration names at the place the restored configuration names for
    it (paths under ``restored_base``); a file named twice is stored once."""

    def __init__(self, writer: BackupWriter, restored_base: Path) -> None:
        self.writer, self.base = writer, restored_base
        self._origins: dict[str, Path] = {}

    def place(self, restored: Path) -> str:
        try:
            return restored.relative_to(self.base).as_posix()
        except ValueError:
            raise ConfigurationError(
                f"{restored} would be restored outside its directory"
            ) from None

    def fresh(self, origin: Path, restored: Path) -> str | None:
        """The member path, or None when this very file is already in the backup."""
        path = self.place(restored)
        known = self._origins.get(path)
        if known is not None:
            if known.resolve() == origin.resolve():
                return None
            raise ConfigurationError(f"{known} and {origin} would both be restored as {path}")
        self._origins[path] = origin
        return path

    def file(self, origin: Path, restored: Path) -> None:
        if (path := self.fresh(origin, restored)) is not None:
            self.writer.add_file(path, origin)

    def secret(self, origin: Path, restored: Path) -> None:
        if (path := self.fresh(origin, restored)) is not None:
            self.writer.add_secret(path, origin)

    def database(self, origin: Path, restored: Path) -> Path | None:
        if not origin.exists() or (path := self.fresh(origin, restored)) is None:
            return None
        return self.writer.add_sqlite(path, origin)


@contextlib.contextmanager
def _open_regular(origin: Path) -> Iterator[IO[bytes]]:
    try:
        f = origin.open("rb")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {origin}: {exc.strerror}") from None
    with f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ConfigurationError(f"{origin} is not a regular file")
        yield f


def _chain(head: bytes, rest: IO[bytes]) -> Iterator[bytes]:
    if head:
        yield head
    while chunk := rest.read(CHUNK):
        yield chunk
