"""Durable files on POSIX: fsync by path, and a rename into place that survives a crash.

After :func:`durable_replace` the target holds the old bytes or the new ones, never a torn mix,
and the rename itself is on disk (the folder is synced too). IO only; no file formats here.
"""

from __future__ import annotations

import os
from pathlib import Path


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
