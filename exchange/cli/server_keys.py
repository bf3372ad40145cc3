"""``exchange server keys ...`` and ``exchange server reload``: key rotation without downtime.

Signing key: ``keys new-sign`` adds a key and certificate next to the old one (both are presented
to peers; the newest signs), ``reload`` activates it in the running server, ``keys retire-sign``
removes the old one and ``reload`` again. Authentication key: ``keys new-auth`` makes the key and
certificate and prints its fingerprint; register it at the central server next to the old one
(``exchange server register`` or ``exchange central server add-auth-cert``); then
``keys activate-auth`` and ``reload``; then remove the old fingerprint at the central server.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import tomli_w
from cryptography import x509

from exchange.cli.common import console, print_json, reports
from exchange.cli.server import group as server_group
from exchange.configfile import read_toml
from exchange.durable import write_durably
from exchange.errors import ConfigurationError
from exchange.identifiers import MemberId, parse_member
from exchange.server.config import load_server_config, pid_file_of
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import fingerprint, generate_key, save_certificate, save_private_key
from exchange.trust.revocation import record_in_ca_dir

_CONFIG = click.Path(exists=True, dir_okay=False, path_type=Path)
RELOAD_WAIT_SECONDS = 30.0
"""How long ``reload`` waits for the server's outcome (new certificates' OCSP fetches included)."""
_CA_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


def _edit(config: Path, change: Callable[[dict[str, Any]], None]) -> None:
    _, doc = read_toml(config)
    change(doc)
    write_durably(config, tomli_w.dumps(doc).encode("utf-8"))
    load_server_config(config)  # the result must still load


def _stamp() -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime())


@server_group.group("keys")
def keys_group() -> None:
    """Rotate signing and authentication keys while the server keeps serving.

    \b
    Example:
      exchange server keys new-sign --config ss-moi/server.toml --member PS/GOV/MOI --ca-dir ca
      exchange server reload --config ss-moi/server.toml
    """


@keys_group.command("new-sign")
@click.option("--config", "config_path", required=True, type=_CONFIG)
@click.option("--member", required=True, help="The member the key signs for, INSTANCE/CLASS/CODE.")
@click.option("--ca-dir", required=True, type=_CA_DIR, help="Issue the certificate from this CA.")
@reports
def new_sign(config_path: Path, member: str, ca_dir: Path, as_json: bool) -> None:
    """Add a new signing key and certificate; after ``reload`` it signs, the old one still verifies.

    \b
    Example:
      exchange server keys new-sign --config ss-moi/server.toml --member PS/GOV/MOI --ca-dir ca
    """
    member_id: MemberId = parse_member(member)
    ca = CertificateAuthority.load(ca_dir)
    name = f"sign-{member_id.member_code}-{_stamp()}"
    keys_dir = config_path.resolve().parent / "keys"
    key = generate_key()
    cert = ca.issue_sign_cert(key.public_key(), member_id)
    record_in_ca_dir(ca_dir, cert, "sign")
    save_private_key(keys_dir / f"{name}.key.pem", key)
    save_certificate(keys_dir / f"{name}.cert.pem", cert)
    entry = {
        "member": str(member_id),
        "key": f"keys/{name}.key.pem",
        "cert": f"keys/{name}.cert.pem",
    }
    _edit(config_path, lambda d: d["keys"].setdefault("signing", []).append(entry))
    reload = f"exchange server reload --config {config_path}"
    if as_json:
        print_json({**entry, "sha256_fingerprint": fingerprint(cert), "next": [reload]})
        return
    console.print(f"added signing key keys/{name}.key.pem (certificate {fingerprint(cert)})")
    console.print(f"next: {reload}")
    console.print("then, once peers have seen it: exchange server keys retire-sign --config ...")


@keys_group.command("retire-sign")
@click.option("--config", "config_path", required=True, type=_CONFIG)
@click.option("--cert", "cert_path", required=True, help="The certificate path as in server.toml.")
@reports
def retire_sign(config_path: Path, cert_path: str, as_json: bool) -> None:
    """Remove a signing key from the configuration (at least one per member stays).

    \b
    Example:
      exchange server keys retire-sign --config ss-moi/server.toml --cert keys/sign-MOI.cert.pem
    """

    retired: dict[str, Any] = {}

    def change(doc: dict[str, Any]) -> None:
        signing = doc["keys"].get("signing", [])
        kept = [s for s in signing if s.get("cert") != cert_path]
        if len(kept) == len(signing):
            raise ConfigurationError(f"no [[keys.signing]] entry has cert = {cert_path!r}")
        gone = next(s for s in signing if s.get("cert") == cert_path)
        if not any(s.get("member") == gone.get("member") for s in kept):
            raise ConfigurationError(f"{gone.get('member')} would be left without a signing key")
        doc["keys"]["signing"] = kept
        retired.update(gone)

    _edit(config_path, change)
    reload = f"exchange server reload --config {config_path}"
    if as_json:
        print_json({"retired": retired, "next": [reload]})
        return
    console.print(f"retired {cert_path}; next: {reload}")


@keys_group.command("new-auth")
@click.option("--config", "config_path", required=True, type=_CONFIG)
@click.option("--ca-dir", required=True, type=_CA_DIR, help="Issue the certificate from this CA.")
@reports
def new_auth(config_path: Path, ca_dir: Path, as_json: bool) -> None:
    """Make a new authentication key and certificate (not active yet) and print its fingerprint.

    \b
    Example:
      exchange server keys new-auth --config ss-moi/server.toml --ca-dir ca
    """
    config = load_server_config(config_path)
    ca = CertificateAuthority.load(ca_dir)
    name = f"auth-{_stamp()}"
    keys_dir = config_path.resolve().parent / "keys"
    key = generate_key()
    cert: x509.Certificate = ca.issue_auth_cert(key.public_key(), config.server_id)
    record_in_ca_dir(ca_dir, cert, "auth")
    save_private_key(keys_dir / f"{name}.key.pem", key)
    save_certificate(keys_dir / f"{name}.cert.pem", cert)
    register = (
        f"exchange central server add-auth-cert --config central.toml {config.server_id} "
        f"--cert {keys_dir / (name + '.cert.pem')}"
    )
    activate = (
        f"exchange server keys activate-auth --config {config_path} "
        f"--key keys/{name}.key.pem --cert keys/{name}.cert.pem"
    )
    reload = f"exchange server reload --config {config_path}"
    if as_json:
        print_json(
            {
                "server": str(config.server_id),
                "key": f"keys/{name}.key.pem",
                "cert": f"keys/{name}.cert.pem",
                "sha256_fingerprint": fingerprint(cert),
                "next": [register, activate, reload],
            }
        )
        return
    console.print(f"new authentication key keys/{name}.key.pem, fingerprint {fingerprint(cert)}")
    console.print("next: register the fingerprint next to the old one, e.g.")
    console.print(f"  {register}")
    console.print(f"then: {activate} && {reload}")


@keys_group.command("activate-auth")
@click.option("--config", "config_path", required=True, type=_CONFIG)
@click.option("--key", "key_path", required=True, help="Key path relative to server.toml.")
@click.option(
    "--cert", "cert_path", required=True, help="Certificate path relative to server.toml."
)
@reports
def activate_auth(config_path: Path, key_path: str, cert_path: str, as_json: bool) -> None:
    """Make a new authentication key the one the server uses (after ``reload``).

    \b
    Example:
      exchange server keys activate-auth --config ss-moi/server.toml \\
          --key keys/auth-2.key.pem --cert keys/auth-2.cert.pem
    """
    _edit(config_path, lambda d: d["keys"].update(auth_key=key_path, auth_cert=cert_path))
    reload = f"exchange server reload --config {config_path}"
    if as_json:
        print_json({"auth_key": key_path, "auth_cert": cert_path, "next": [reload]})
        return
    console.print(f"activated {cert_path}; next: {reload}")
    console.print("then remove the old fingerprint at the central server (remove-auth-cert)")


@server_group.command("reload")
@click.option("--config", "config_path", required=True, type=_CONFIG)
@reports
def reload(config_path: Path, as_json: bool) -> None:
    """Make the running server re-read server.toml (SIGHUP) and say what changed; it keeps
    serving.

    Keys and certificates, [[services]], [[clients]], the policy, [logging] and the limits
    take effect at once. A change to what is bound at start (ports, state paths, the server
    id) is refused, naming it, and the configuration in force stays: restart for those.
    Exits 0 when applied, 2 when refused.

    \b
    Example:
      exchange server reload --config ss-moi/server.toml
    """
    from exchange.server.reload import read_outcome
    from exchange.server.runtime import running_server

    config = load_server_config(config_path)  # a file the server would refuse: exit 2 here
    running = running_server(config)
    if running is None:
        raise ConfigurationError(
            f"no running server for {config.path} ({pid_file_of(config.path).name} names no "
            "live process): start it with exchange server run --config ..."
        )
    before = read_outcome(config.state_dir)
    pid = running.pid
    os.kill(pid, signal.SIGHUP)
    outcome = None
    deadline = time.monotonic() + RELOAD_WAIT_SECONDS
    while time.monotonic() < deadline:
        outcome = read_outcome(config.state_dir)
        if outcome is not None and (before is None or outcome.seq > before.seq):
            break
        outcome = None
        time.sleep(0.1)
    if outcome is None:
        raise ConfigurationError(
            f"server process {running.pid} did not report the reload within "
            f"{RELOAD_WAIT_SECONDS:g} s: see its log"
        )
    if not outcome.applied:
        raise ConfigurationError(f"reload refused: {outcome.error}")
    if as_json:
        print_json(
            {
                "pid": running.pid,
                "signal": "SIGHUP",
                "config": config_path,
                "applied": True,
                "changes": outcome.changes,
            }
        )
        return
    console.print(f"server process {running.pid} reloaded its configuration", highlight=False)
    for line in outcome.changes or ["nothing changed"]:
        console.print(f"  {line}", highlight=False, markup=False)
