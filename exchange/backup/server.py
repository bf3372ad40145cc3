"""What a security server's backup holds, and where each file goes when it is restored.

From the server's configuration: the configuration itself (paths rewritten where they would not
survive a move, :mod:`exchange.backup.relocate`), the anchor, the authentication and member
signing keys (sealed) and certificates, the information systems' TLS certificates, the policy
files, the global configuration state and its version floor, online copies of the message log,
the quota store and the policy audit trail, and the log's archive files (those its copied index
names, each checked against the SHA-256 the index holds). Not in it: the process id file, the
log's lock file, CSRs and anything else in the directory that the configuration does not name.

A restored server has the same identity and keys, and its message log goes on from the copied
tree head: exchanges logged after the backup was taken are not in it.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from exchange.backup.manifest import Manifest
from exchange.backup.relocate import PathSetting, relocate, rewritten_toml
from exchange.backup.writer import BackupWriter, Placer
from exchange.configfile import read_toml
from exchange.errors import VerificationFailed
from exchange.globalconf.floor import floor_path
from exchange.messagelog.archive import ArchiveFileError, archive_file, read_index
from exchange.policy.audit import TRAIL_FILE
from exchange.policy.loader import policy_files
from exchange.server.config import ServerConfig, load_server_config
from exchange.server.quota_store import QUOTA_FILE
from exchange.utc import iso_seconds


def path_settings(doc: dict[str, Any]) -> Iterator[PathSetting]:
    """Every path a ``server.toml`` may set."""
    yield PathSetting(("state_dir",), is_dir=True)
    yield PathSetting(("anchor",))
    yield PathSetting(("globalconf_state",))
    yield PathSetting(("keys", "auth_key"))
    yield PathSetting(("keys", "auth_cert"))
    for i, _ in enumerate(_items(doc.get("keys", {}), "signing")):
        yield PathSetting(("keys", "signing", i, "key"))
        yield PathSetting(("keys", "signing", i, "cert"))
    for i, client in enumerate(_items(doc, "clients")):
        for j, _ in enumerate(_items(client, "is_certs")):
            yield PathSetting(("clients", i, "is_certs", j))
    yield PathSetting(("policy", "dir"), is_dir=True)
    yield PathSetting(("messagelog", "path"))
    yield PathSetting(("messagelog", "archive_dir"), is_dir=True)


def _items(doc: Any, key: str) -> list[Any]:
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, list) else []


def backup_server(
    config_path: Path, output: Path, passphrase: bytes, *, archives: bool = True, now: int
) -> Manifest:
    """Write the backup of the server configured at ``config_path`` to ``output``."""
    config = load_server_config(config_path)
    base = config.path.parent
    _, doc = read_toml(config.path)
    moved_doc, rewrites = relocate(doc, base, path_settings(doc))
    text = (
        rewritten_toml(moved_doc, rewrites, f"restored from a backup of {config.server_id}")
        if rewrites
        else config.path.read_bytes()
    )
    moved = _as_restored(config.path.name, text)
    with BackupWriter(output, passphrase, "server", str(config.server_id)) as writer:
        placer = Placer(writer, moved.path.parent)
        writer.add_bytes(placer.place(moved.path), text)
        for rewrite in rewrites:
            writer.rewrite(rewrite)
        _keys_and_certs(placer, config, moved)
        _policy(placer, config, moved)
        _globalconf(placer, config, moved)
        placer.database(config.state_dir / QUOTA_FILE, moved.state_dir / QUOTA_FILE)
        placer.database(config.state_dir / TRAIL_FILE, moved.state_dir / TRAIL_FILE)
        log = placer.database(config.log_path, moved.log_path)
        if log is None:
            writer.fact("message log", "none yet (the server has not run)")
        else:
            writer.fact("message log", _log_fact(log))
            writer.fact("archives", _archives(placer, log, config, moved, archives))
        return writer.finish(placer.place(moved.path), now=now)


def _as_restored(name: str, text: bytes) -> ServerConfig:
    """The configuration as it will be read in the restored directory."""
    with tempfile.TemporaryDirectory(prefix="exchange-restore-") as directory:
        path = Path(directory) / name
        path.write_bytes(text)
        return load_server_config(path)


def _keys_and_certs(placer: Placer, config: ServerConfig, moved: ServerConfig) -> None:
    placer.file(config.anchor, moved.anchor)
    placer.secret(config.auth_key, moved.auth_key)
    placer.file(config.auth_cert, moved.auth_cert)
    for item, new in zip(config.signing, moved.signing, strict=True):
        placer.secret(item.key, new.key)
        placer.file(item.cert, new.cert)
    for client, new_client in zip(config.clients, moved.clients, strict=True):
        for cert, new_cert in zip(client.is_certs, new_client.is_certs, strict=True):
            placer.file(cert, new_cert)


def _globalconf(placer: Placer, config: ServerConfig, moved: ServerConfig) -> None:
    """The persisted global configuration and its version floor. The floor is copied first: the
    server writes it after the configuration file, so the copies of a running server's files
    never hold a floor above the configuration (which the restored server would refuse)."""
    floor = floor_path(config.globalconf_state)
    if floor.exists():
        placer.file(floor, floor_path(moved.globalconf_state))
    if config.globalconf_state.exists():
        placer.file(config.globalconf_state, moved.globalconf_state)


def _policy(placer: Placer, config: ServerConfig, moved: ServerConfig) -> None:
    if config.policy_dir is None or moved.policy_dir is None:
        return
    for path in policy_files(config.policy_dir):
        placer.file(path, moved.policy_dir / path.name)


def _log_fact(snapshot: Path) -> str:
    try:
        with closing(sqlite3.connect(f"{snapshot.as_uri()}?mode=ro", uri=True)) as conn:
            (records,) = conn.execute("SELECT count(*) FROM records").fetchone()
            row = conn.execute(
                "SELECT size, signed_at FROM tree_heads ORDER BY size DESC LIMIT 1"
            ).fetchone()
    except sqlite3.Error as exc:
        return f"copied (its records could not be counted: {exc})"
    if row is None:
        return f"{records} records in the database, no signed tree head yet"
    size, signed_at = row
    when = iso_seconds(signed_at / 1000)
    return f"{records} records in the database; latest signed tree head: size {size}, {when}"


def _archives(
    placer: Placer, log: Path, config: ServerConfig, moved: ServerConfig, include: bool
) -> str:
    with closing(sqlite3.connect(f"{log.as_uri()}?mode=ro", uri=True)) as conn:
        index = read_index(conn)
    if not index:
        return "none (the log has not been archived)"
    if not include:
        return (
            f"{len(index)} archive files NOT included (--no-archives): keep the files of "
            f"{config.archive_dir} with this backup: without them, records before "
            f"{index[-1].end_seq} cannot be verified or proven after a restore"
        )
    for entry in index:
        try:
            origin = archive_file(config.archive_dir, entry.file)
        except ArchiveFileError as exc:
            raise VerificationFailed(f"the log's archive index is damaged: {exc}") from None
        if not origin.is_file():
            raise VerificationFailed(
                f"archive {origin} named by the log's index is missing: run `exchange log verify`"
            )
        path = placer.fresh(origin, archive_file(moved.archive_dir, entry.file))
        if path is not None and placer.writer.add_file(path, origin).sha256 != entry.sha256:
            raise VerificationFailed(
                f"archive {origin} is not the file its index names (SHA-256 differs): "
                "run `exchange log verify`"
            )
    return f"{len(index)} archive files included (records up to {index[-1].end_seq - 1})"
