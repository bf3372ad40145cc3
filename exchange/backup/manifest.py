"""The backup's manifest: what each member is, its size and SHA-256, and how it was made.

A backup file is a zip holding ``MANIFEST.json``, ``MANIFEST.hmac`` (HMAC-SHA256 of the
manifest's bytes under the passphrase's key, :mod:`exchange.backup.sealing`) and one
``data/PATH`` per member, where ``PATH`` is where the member goes under the restored directory.
Parsing is strict: anything unexpected is a :class:`~exchange.backup.sealing.BackupError`.

No IO.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final, Literal

import orjson

from exchange.backup.sealing import BackupError, KdfParams

FORMAT: Final = "exchange-backup/1"
MANIFEST: Final = "MANIFEST.json"
MANIFEST_MAC: Final = "MANIFEST.hmac"
DATA: Final = "data/"
MAX_MANIFEST_BYTES: Final = 16 * 2**20
MAX_MEMBERS: Final = 200_000

Role = Literal["server", "central", "ca"]
ROLES: Final[dict[str, str]] = {
    "server": "security server",
    "central": "central server",
    "ca": "certification authority",
}
Kind = Literal["file", "sqlite", "secret"]
KINDS: Final = ("file", "sqlite", "secret")


@dataclass(frozen=True, slots=True)
class Member:
    """One stored file: ``path`` under the restored directory; ``size`` and ``sha256`` are of
    the bytes stored in the zip (for a ``secret``, the sealed bytes)."""

    path: str
    kind: Kind
    size: int
    sha256: str
    mode: int

    @property
    def zip_name(self) -> str:
        return DATA + self.path

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "size": self.size,
            "sha256": self.sha256,
            "mode": self.mode,
        }


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A path setting of the configuration changed so the restored directory holds the file."""

    setting: str
    was: str
    now: str

    def to_json(self) -> dict[str, str]:
        return {"setting": self.setting, "was": self.was, "now": self.now}


@dataclass(frozen=True, slots=True)
class Manifest:
    role: Role
    identity: str
    created_at: int
    config: str | None
    kdf: KdfParams
    check: str
    members: tuple[Member, ...]
    rewrites: tuple[Rewrite, ...] = ()
    facts: tuple[tuple[str, str], ...] = ()
    """What the operator is told at restore (message log size, archives, registry version)."""

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "role": self.role,
            "identity": self.identity,
            "created_at": self.created_at,
            "config": self.config,
            "kdf": self.kdf.to_json(),
            "check": self.check,
            "members": [m.to_json() for m in self.members],
            "rewrites": [r.to_json() for r in self.rewrites],
            "facts": dict(self.facts),
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def safe_path(value: Any) -> str:
    """A relative POSIX path with no ``..``, ``.``, empty part, backslash or NUL, else
    :class:`BackupError` (a member must land inside the restored directory)."""
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise BackupError(f"member path {value!r} is not a path")
    if "\\" in value or "\x00" in value or value.startswith("/"):
        raise BackupError(f"member path {value!r} would land outside the restored directory")
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts) or PurePosixPath(value).is_absolute():
        raise BackupError(f"member path {value!r} would land outside the restored directory")
    return value


def parse_manifest(data: bytes) -> Manifest:
    """The manifest in ``data``, checked field by field (its HMAC is checked by the caller)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BackupError("the backup's manifest is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BackupError(f"not an Exchange backup (format is not {FORMAT})")
    role = doc.get("role")
    if role not in ROLES:
        raise BackupError(f"the backup's role {role!r} is unknown")
    members = doc.get("members")
    if not isinstance(members, list) or not members or len(members) > MAX_MEMBERS:
        raise BackupError("the backup's manifest lists no members")
    parsed = tuple(_member(item) for item in members)
    if len({m.path for m in parsed}) != len(parsed):
        raise BackupError("the backup's manifest lists a member twice")
    config = doc.get("config")
    return Manifest(
        role=role,
        identity=_text(doc.get("identity"), "identity"),
        created_at=_int(doc.get("created_at"), "created_at"),
        config=None if config is None else safe_path(config),
        kdf=KdfParams.from_json(doc.get("kdf")),
        check=_text(doc.get("check"), "check"),
        members=parsed,
        rewrites=tuple(_rewrite(item) for item in _list(doc.get("rewrites"), "rewrites")),
        facts=tuple((str(k), str(v)) for k, v in _dict(doc.get("facts"), "facts").items()),
    )


def _member(item: Any) -> Member:
    if not isinstance(item, dict):
        raise BackupError("a manifest member is not an object")
    kind = item.get("kind")
    if kind not in KINDS:
        raise BackupError(f"member kind {kind!r} is unknown")
    digest = _text(item.get("sha256"), "sha256")
    if len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise BackupError(f"member SHA-256 {digest!r} is not 64 hex digits")
    mode = _int(item.get("mode"), "mode")
    if mode & ~0o777:
        raise BackupError(f"member mode {oct(mode)} is more than permission bits")
    return Member(
        path=safe_path(item.get("path")),
        kind=kind,
        size=_int(item.get("size"), "size"),
        sha256=digest,
        mode=mode,
    )


def _rewrite(item: Any) -> Rewrite:
    doc = _dict(item, "rewrite")
    return Rewrite(
        setting=_text(doc.get("setting"), "setting"),
        was=_text(doc.get("was"), "was"),
        now=_text(doc.get("now"), "now"),
    )


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BackupError(f"the backup's manifest: {what} is not text")
    return value


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BackupError(f"the backup's manifest: {what} is not a count")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise BackupError(f"the backup's manifest: {what} is not a list")
    return value


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BackupError(f"the backup's manifest: {what} is not an object")
    return value
