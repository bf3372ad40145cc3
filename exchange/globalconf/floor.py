"""The version floor of the global configuration: the highest version this security server has
saved to put in force, kept next to the persisted configuration (docs/design.md §6).

The persisted configuration (``globalconf.jws``) protects against rollback across a restart only
as long as nobody replaces it: an insider who copies back an older, validly signed file would
roll the server back. The floor file, ``<globalconf_state>.floor`` (``globalconf.jws.floor``),
holds ``{"version": N}``. :class:`~exchange.globalconf.client.GlobalConfPoller` reads it at start
and gives it to :class:`~exchange.globalconf.verifier.TrustedGlobalConf`, which then refuses any
configuration below ``N``, persisted or downloaded. The poller writes it durably right after the
configuration file, and only when a higher version is saved, so that after a crash it is never
above the version in the configuration file.

- Missing: no floor (a first start, or the first start after an upgrade from a version that did
  not write it); it is written when a configuration is next put in force.
- Unreadable, or anything but ``{"version": N}`` with ``N`` a non-negative integer:
  :class:`GlobalConfFloorError`, and the server does not start. :func:`~exchange.durable.
  write_durably` never leaves a torn file, so a damaged one was edited or the disk failed; to
  guess a floor would either drop the protection silently or lock out the right version.

Deleting both files is not stopped: the server then starts with nothing in force (exchanges fail
with ``OutdatedGlobalConf``) and takes whatever validly signed, unexpired configuration it is
served next.

IO only (reading and writing one small file); the decision is the verifier's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from exchange.durable import write_durably
from exchange.errors import ConfigurationError

FLOOR_SUFFIX: Final = ".floor"


class GlobalConfFloorError(ConfigurationError):
    """The floor file exists but cannot be read, or does not hold a version."""


def floor_path(state: Path) -> Path:
    """Where the floor of the configuration persisted at ``state`` is kept."""
    return state.with_name(state.name + FLOOR_SUFFIX)


def read_floor(path: Path) -> int | None:
    """The version recorded at ``path``; None when there is no such file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise GlobalConfFloorError(
            f"cannot read the global configuration floor {path} ({exc.strerror or exc}); "
            "the server does not start without it"
        ) from None
    version = _parse(data)
    if version is None:
        raise GlobalConfFloorError(
            f"the global configuration floor {path} does not hold "
            '{"version": N}: it was edited or damaged, and the server does not start. '
            "Find out who changed it; then restore it from a backup, or remove it to start "
            "without a floor (the persisted configuration is then taken as it is)"
        )
    return version


def write_floor(path: Path, version: int) -> None:
    """Record ``version`` at ``path`` durably (the old record or the new, never a torn one)."""
    write_durably(path, json.dumps({"version": version}).encode() + b"\n")


def _parse(data: bytes) -> int | None:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(doc, dict) or set(doc) != {"version"}:
        return None
    version = doc["version"]
    if type(version) is not int or version < 0:
        return None
    return version
