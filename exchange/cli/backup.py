"""``exchange server|central|ca backup`` and ``... restore``: one file with everything a role
needs to come back after its disk died, and bringing it back into a new directory.

These commands are added to the ``server``, ``central`` and ``ca`` groups when this module is
imported. The backup's passphrase comes from the environment variable ``--passphrase-env``
names, or is asked on the terminal; it seals the private keys and authenticates the backup.
What goes into each backup and how a restore checks it is in :mod:`exchange.backup`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import click

from exchange.backup.manifest import ROLES, Manifest, Role
from exchange.backup.restore import Restored, check_target, open_backup, restore
from exchange.backup.sealing import MIN_PASSPHRASE
from exchange.cli.ca import group as ca_group
from exchange.cli.central import group as central_group
from exchange.cli.common import console, print_json, reports
from exchange.cli.server import group as server_group
from exchange.errors import ConfigurationError
from exchange.utc import iso_seconds

_FILE: Final = click.Path(path_type=Path)
_DIR: Final = click.Path(path_type=Path)

_passphrase_option = click.option(
    "--passphrase-env",
    metavar="NAME",
    help="Environment variable holding the backup's passphrase (default: asked on the terminal).",
)


def read_passphrase(env_name: str | None, *, new: bool) -> bytes:
    """The passphrase from the environment variable ``env_name``, or asked on the terminal; a
    new one (for a backup) must be at least :data:`MIN_PASSPHRASE` characters."""
    if env_name is not None:
        value = os.environ.get(env_name)
        if not value:
            raise ConfigurationError(f"the environment variable {env_name} is not set or empty")
    elif sys.stdin.isatty():
        value = click.prompt(
            "Backup passphrase", hide_input=True, confirmation_prompt=new, err=True
        )
    else:
        raise ConfigurationError(
            "no passphrase: name the environment variable that holds it with --passphrase-env, "
            "or run the command on a terminal to be asked"
        )
    if new and len(value) < MIN_PASSPHRASE:
        raise ConfigurationError(
            f"the backup passphrase must be at least {MIN_PASSPHRASE} characters"
        )
    return value.encode("utf-8")


def _summary(manifest: Manifest) -> dict[str, Any]:
    return {
        "role": manifest.role,
        "identity": manifest.identity,
        "created_at": iso_seconds(manifest.created_at),
        "members": len(manifest.members),
        "sealed_keys": sum(1 for m in manifest.members if m.kind == "secret"),
        "databases": sorted(m.path for m in manifest.members if m.kind == "sqlite"),
        "facts": dict(manifest.facts),
        "rewrites": [r.to_json() for r in manifest.rewrites],
    }


def _print_details(data: dict[str, Any]) -> None:
    for key, value in data["facts"].items():
        console.print(f"  {key}: {value}", markup=False)
    for rewrite in data["rewrites"]:
        console.print(
            f"  path rewritten: {rewrite['setting']}: {rewrite['was']} -> {rewrite['now']}",
            markup=False,
        )


def _backed_up(output: Path, manifest: Manifest, as_json: bool) -> None:
    data = {"ok": True, "backup": str(output), "bytes": output.stat().st_size, **_summary(manifest)}
    if as_json:
        print_json(data)
        return
    console.print(
        f"backup of the {ROLES[manifest.role]} {manifest.identity} written to {output} "
        f"({data['members']} files, {data['bytes']} bytes; private keys sealed with the "
        f"passphrase: {data['sealed_keys']})",
        markup=False,
    )
    _print_details(data)
    console.print(
        "Keep the passphrase apart from the backup: without it nothing can be restored. "
        "Test a restore now and then (docs/operator.md, Backup and restore).",
        markup=False,
    )


def _restored(done: Restored, next_steps: list[str], extra: dict[str, Any], as_json: bool) -> None:
    manifest = done.manifest
    data = {
        "ok": True,
        "restored": str(done.directory),
        "config": None if done.config is None else str(done.config),
        **_summary(manifest),
        **extra,
        "next": next_steps,
    }
    if as_json:
        print_json(data)
        return
    console.print(
        f"restored the {ROLES[manifest.role]} {manifest.identity} (backup of "
        f"{data['created_at']}): {data['members']} files into {done.directory}",
        markup=False,
    )
    _print_details(data)
    for key, value in extra.items():
        console.print(f"  {key.replace('_', ' ')}: {value}", markup=False)
    console.print("next:", markup=False)
    for step in next_steps:
        console.print(f"  {step}", markup=False)


def _restore(role: Role, file: Path, into: Path, passphrase_env: str | None) -> Restored:
    check_target(into.absolute())
    if not file.is_file():
        raise ConfigurationError(f"no backup file at {file}")
    passphrase = read_passphrase(passphrase_env, new=False)
    with open_backup(file, passphrase, role) as backup:
        return restore(backup, into)


def _backup(
    output: Path, passphrase_env: str | None, write: Callable[[bytes, int], Manifest]
) -> Manifest:
    if output.exists():
        raise ConfigurationError(f"{output} already exists: choose a new file name")
    return write(read_passphrase(passphrase_env, new=True), int(time.time()))


# --- security server --------------------------------------------------------------------------


@server_group.command("backup")
@click.option("--config", "config_path", required=True, type=_FILE, help="The server's TOML.")
@click.option("-o", "--output", required=True, type=_FILE, help="New backup file (a zip).")
@_passphrase_option
@click.option(
    "--no-archives",
    is_flag=True,
    help="Leave out the message log's archive files (back them up on their own).",
)
@reports
def server_backup(
    config_path: Path, output: Path, passphrase_env: str | None, no_archives: bool, as_json: bool
) -> None:
    """Back up a security server, also while it runs: configuration, keys (sealed with a
    passphrase), certificates, policies and their audit trail, global configuration state, and
    online copies of the message log (with its archives) and the quota store.

    \b
    Example:
      EXCHANGE_BACKUP_PASSPHRASE=... exchange server backup --config ss-moi/server.toml \\
          -o ss-moi-2026-12-06.zip --passphrase-env EXCHANGE_BACKUP_PASSPHRASE
    """
    from exchange.backup.server import backup_server

    manifest = _backup(
        output,
        passphrase_env,
        lambda secret, now: backup_server(
            config_path, output, secret, archives=not no_archives, now=now
        ),
    )
    _backed_up(output, manifest, as_json)


@server_group.command("restore")
@click.argument("file", type=_FILE)
@click.option("--into", required=True, type=_DIR, help="New (or empty) directory.")
@_passphrase_option
@reports
def server_restore(file: Path, into: Path, passphrase_env: str | None, as_json: bool) -> None:
    """Restore a security server's backup into a new directory; the restored server has the
    same identity and keys, and its message log goes on from the backed-up tree head.

    \b
    Example:
      exchange server restore ss-moi-2026-12-06.zip --into /srv/exchange/ss-moi \\
          --passphrase-env EXCHANGE_BACKUP_PASSPHRASE
    """
    from exchange.server.config import load_server_config

    done = _restore("server", file, into, passphrase_env)
    assert done.config is not None
    load_server_config(done.config)
    config = done.config
    _restored(
        done,
        [
            f"exchange log verify --config {config}",
            f"exchange server run --config {config}",
        ],
        {},
        as_json,
    )


# --- central server ---------------------------------------------------------------------------


@central_group.command("backup")
@click.option("--config", "config_path", required=True, type=_FILE, help="central.toml.")
@click.option("-o", "--output", required=True, type=_FILE, help="New backup file (a zip).")
@_passphrase_option
@reports
def central_backup(
    config_path: Path, output: Path, passphrase_env: str | None, as_json: bool
) -> None:
    """Back up the central server, also while it runs: central.toml, an online copy of the
    registry (and its version counter), the configuration signing key (sealed) and
    certificate, and the anchor.

    \b
    Example:
      exchange central backup --config central/central.toml -o central-2026-12-06.zip \\
          --passphrase-env EXCHANGE_BACKUP_PASSPHRASE
    """
    from exchange.backup.central import backup_central

    manifest = _backup(
        output,
        passphrase_env,
        lambda secret, now: backup_central(config_path, output, secret, now=now),
    )
    _backed_up(output, manifest, as_json)


@central_group.command("restore")
@click.argument("file", type=_FILE)
@click.option("--into", required=True, type=_DIR, help="New (or empty) directory.")
@click.option(
    "--version-above",
    type=click.IntRange(min=0),
    help="Publish versions above this one: the highest any security server holds "
    "(`exchange server status`), when the backup is older.",
)
@_passphrase_option
@reports
def central_restore(
    file: Path, into: Path, version_above: int | None, passphrase_env: str | None, as_json: bool
) -> None:
    """Restore the central server's backup into a new directory.

    Security servers refuse a global configuration with a lower version than they hold: when
    the backup is older than the last published change, give --version-above.

    \b
    Example:
      exchange central restore central-2026-12-06.zip --into /srv/exchange/central \\
          --passphrase-env EXCHANGE_BACKUP_PASSPHRASE --version-above 57
    """
    from exchange.backup.central import after_restore
    from exchange.central.app import load_central_config

    done = _restore("central", file, into, passphrase_env)
    assert done.config is not None
    version = after_restore(load_central_config(done.config), version_above)
    _restored(
        done,
        [f"exchange central run --config {done.config}"],
        {"version_published_next": version},
        as_json,
    )


# --- certification authority ------------------------------------------------------------------


@ca_group.command("backup")
@click.option("--ca-dir", required=True, type=_DIR, help="The CA's directory.")
@click.option("-o", "--output", required=True, type=_FILE, help="New backup file (a zip).")
@_passphrase_option
@reports
def ca_backup(ca_dir: Path, output: Path, passphrase_env: str | None, as_json: bool) -> None:
    """Back up a CA directory, also while its services run: the CA key (sealed) and
    certificate, and an online copy of the register of issued and revoked certificates.

    \b
    Example:
      exchange ca backup --ca-dir ca -o ca-2026-12-06.zip \\
          --passphrase-env EXCHANGE_BACKUP_PASSPHRASE
    """
    from exchange.backup.ca import backup_ca

    if not ca_dir.is_dir():
        raise ConfigurationError(f"no CA directory at {ca_dir}")
    manifest = _backup(
        output,
        passphrase_env,
        lambda secret, now: backup_ca(ca_dir, output, secret, now=now),
    )
    _backed_up(output, manifest, as_json)


@ca_group.command("restore")
@click.argument("file", type=_FILE)
@click.option("--into", required=True, type=_DIR, help="New (or empty) CA directory.")
@_passphrase_option
@reports
def ca_restore(file: Path, into: Path, passphrase_env: str | None, as_json: bool) -> None:
    """Restore a CA directory from its backup.

    \b
    Example:
      exchange ca restore ca-2026-12-06.zip --into /srv/exchange/ca \\
          --passphrase-env EXCHANGE_BACKUP_PASSPHRASE
    """
    from exchange.trust.ca import CERT_FILE
    from exchange.trust.keys import load_certificate
    from exchange.trust.revocation import REVOCATIONS_FILE

    done = _restore("ca", file, into, passphrase_env)
    load_certificate(done.directory / CERT_FILE)
    _restored(
        done,
        [f"exchange ocsp serve --ca-dir {into} --db {into / REVOCATIONS_FILE}"],
        {},
        as_json,
    )
