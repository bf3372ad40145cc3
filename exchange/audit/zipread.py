"""Reading a zip file someone else made, within bounds: what an evidence bundle is to its auditor.

:func:`read_members` returns every member's bytes, or one :class:`VerificationFailed` saying why
the file is not acceptable: not a zip, truncated, an unsupported or encrypted member, a name that
is not a plain relative file name, a name given twice, a member that is not a regular file, too
many members, a member or a total larger than the bounds, or a compression ratio no honest bundle
has (a zip bomb). Sizes are checked as the bytes are inflated, never trusted from the headers, so
memory stays within the bounds whatever the file claims.
"""

from __future__ import annotations

import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from exchange.errors import VerificationFailed

MAX_MEMBERS: Final = 4096
MAX_MEMBER_BYTES: Final = 64 * 2**20
"""A record holds at most both bodies of one exchange, base64 (the body limit is 10 MiB)."""
MAX_TOTAL_BYTES: Final = 256 * 2**20
MAX_RATIO: Final = 100
"""Inflated over compressed size beyond which a member larger than :data:`RATIO_FROM` is
refused: JSON, base64 bodies, PEM and DER deflate far less."""
RATIO_FROM: Final = 1 * 2**20
_CHUNK: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Bounds:
    members: int = MAX_MEMBERS
    member_bytes: int = MAX_MEMBER_BYTES
    total_bytes: int = MAX_TOTAL_BYTES
    ratio: int = MAX_RATIO
    ratio_from: int = RATIO_FROM


def read_members(path: Path, bounds: Bounds = Bounds()) -> dict[str, bytes]:
    """Every member of the zip at ``path`` by name, read within ``bounds``."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            _check_directory(infos, bounds)
            members: dict[str, bytes] = {}
            total = 0
            for info in infos:
                if info.is_dir():
                    continue
                data = _read(archive, info, bounds, bounds.total_bytes - total)
                total += len(data)
                members[info.filename] = data
            return members
    except VerificationFailed as exc:
        raise VerificationFailed(
            f"{path.name} is not an acceptable evidence bundle: {exc.message}"
        ) from None
    except (
        OSError,
        EOFError,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        NotImplementedError,
        RuntimeError,
        ValueError,
    ) as exc:
        raise VerificationFailed(
            f"{path.name} is not an evidence bundle (not a readable zip file: {exc})"
        ) from None


def _check_directory(infos: list[zipfile.ZipInfo], bounds: Bounds) -> None:
    """The central directory alone: count, names, kinds, declared sizes."""
    if len(infos) > bounds.members:
        raise VerificationFailed(f"it has {len(infos)} members, more than {bounds.members}")
    seen: set[str] = set()
    declared = 0
    for info in infos:
        name = info.filename
        if name in seen:
            raise VerificationFailed(f"member {name!r} is in it twice")
        seen.add(name)
        parts = PurePosixPath(name).parts
        if (
            not name
            or name.startswith("/")
            or "\\" in name
            or any(p in ("..", ".") for p in parts)
            or not name.isprintable()
        ):
            raise VerificationFailed(f"member name {name!r} is not a plain relative file name")
        if info.flag_bits & 0x1:
            raise VerificationFailed(f"member {name!r} is encrypted")
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no type recorded (writestr)
        if not info.is_dir() and kind and kind != stat.S_IFREG:
            raise VerificationFailed(f"member {name!r} is not a regular file")
        if info.file_size > bounds.member_bytes:
            raise VerificationFailed(
                f"member {name!r} would inflate to {info.file_size} bytes, more than "
                f"{bounds.member_bytes}"
            )
        declared += info.file_size
        if declared > bounds.total_bytes:
            raise VerificationFailed(
                f"its members would inflate to more than {bounds.total_bytes} bytes"
            )
        _check_ratio(name, info.file_size, info.compress_size, bounds)


def _check_ratio(name: str, inflated: int, compressed: int, bounds: Bounds) -> None:
    if inflated > bounds.ratio_from and inflated > bounds.ratio * max(compressed, 1):
        raise VerificationFailed(
            f"member {name!r} inflates {inflated // max(compressed, 1)} times (a zip bomb?)"
        )


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, bounds: Bounds, left: int) -> bytes:
    """One member, stopping as soon as it inflates past what its header declared or the bounds
    allow (zipfile checks the CRC at its end)."""
    limit = min(info.file_size, bounds.member_bytes, left)
    chunks: list[bytes] = []
    size = 0
    with archive.open(info) as member:
        while chunk := member.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise VerificationFailed(f"member {info.filename!r} inflates past its bounds")
            chunks.append(chunk)
    _check_ratio(info.filename, size, info.compress_size, bounds)
    return b"".join(chunks)
