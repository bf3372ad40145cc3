"""What a central server's backup holds: ``central.toml`` (paths rewritten where they would not
survive a move), an online copy of the registry database (members, subsystems, security
servers, groups, approved CAs and TSAs, settings, the version counter of the published global
configuration, registration requests, the service catalogue), the configuration signing key
(sealed) and certificate, and the anchor it publishes.

The global configuration itself is not stored: the central server signs it anew from the
registry at start, with the registry's version. A registry restored from an older backup
publishes a lower version than security servers hold, which they refuse; :func:`after_restore`
moves the counter past the version they hold.
"""

from __future__ import annotations

import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

from exchange.backup.manifest import Manifest
from exchange.backup.relocate import PathSetting, relocate, rewritten_toml
from exchange.backup.writer import BackupWriter, Placer
from exchange.central.app import CentralConfig, load_central_config
from exchange.central.registry import Registry
from exchange.configfile import read_toml
from exchange.errors import ConfigurationError

PATH_SETTINGS = tuple(
    PathSetting((key,)) for key in ("database", "signing_key", "signing_cert", "anchor")
)
VERSION_FACT = "registry version"


def backup_central(config_path: Path, output: Path, passphrase: bytes, *, now: int) -> Manifest:
    """Write the backup of the central server configured at ``config_path`` to ``output``."""
    config = load_central_config(config_path)
    path = Path(config_path).resolve()
    _, doc = read_toml(path)
    moved_doc, rewrites = relocate(doc, path.parent, PATH_SETTINGS)
    text = (
        rewritten_toml(moved_doc, rewrites, f"restored from a backup of instance {config.instance}")
        if rewrites
        else path.read_bytes()
    )
    with tempfile.TemporaryDirectory(prefix="exchange-restore-") as directory:
        restored_path = Path(directory).resolve() / path.name
        restored_path.write_bytes(text)
        moved = load_central_config(restored_path)
        with BackupWriter(output, passphrase, "central", config.instance) as writer:
            placer = Placer(writer, restored_path.parent)
            writer.add_bytes(placer.place(restored_path), text)
            for rewrite in rewrites:
                writer.rewrite(rewrite)
            registry = placer.database(config.db_path, moved.db_path)
            if registry is None:
                raise ConfigurationError(f"no central registry at {config.db_path}")
            writer.fact(VERSION_FACT, str(_version(registry)))
            placer.secret(config.signing_key_path, moved.signing_key_path)
            placer.file(config.signing_cert_path, moved.signing_cert_path)
            placer.file(config.anchor_path, moved.anchor_path)
            return writer.finish(placer.place(restored_path), now=now)


def _version(snapshot: Path) -> int:
    with closing(sqlite3.connect(f"{snapshot.as_uri()}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT version FROM meta WHERE id = 1").fetchone()[0])


def after_restore(config: CentralConfig, version_above: int | None) -> int:
    """The restored registry's version, first moved past ``version_above`` when given."""
    with Registry.open(config.db_path) as registry:
        if version_above is None:
            return registry.version()
        return registry.advance_version(version_above)
