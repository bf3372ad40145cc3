"""Durable files on POSIX: fsync by path, and a rename into place that survives a crash.

After :func:`durable_replace` the target holds the old bytes or the new ones, never a torn mix,
and the rename itself is on disk (the folder is synced too). IO only; no file formats here.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder: so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, rename it over ``final`` (atomic), fsync the folder."""
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def new_file(path: Path, mode: int = 0o600) -> IO[bytes]:
    """A new file at ``path`` (a temporary name), open for writing, never through a link.

    Whatever is at ``path`` (a stale temporary file, or a symbolic link someone planted there to
    make the writer clobber, or receive, another file) is removed, not written through; the
    file is then created exclusively (``O_EXCL | O_NOFOLLOW``) with ``mode``.
    """
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    return os.fdopen(fd, "wb")


def write_durably(path: Path, data: bytes, *, private: bool = False) -> None:
    """Replace ``path`` with ``data``: readers see the old bytes or the new, never a mix, and
    after a crash the file holds one of them (fsync of the file and of its folder). The
    temporary file is created afresh, never through a planted link. ``private`` files (keys)
    are exactly 0600; others are 0666 less the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with new_file(tmp, 0o600 if private else 0o666) as f:
        if private:
            os.fchmod(f.fileno(), 0o600)
        f.write(data)
    durable_replace(tmp, path)
