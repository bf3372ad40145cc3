"""``exchange ca``: create a test CA, issue authentication and signing certificates, show one.

The commands read files and the environment and print; the work is done by
``exchange.trust.ca`` and ``exchange.trust.profiles``. The CA key's passphrase comes from
``--passphrase-file`` or the environment variable ``EXCHANGE_KEY_PASSPHRASE``; a newly issued key
is encrypted only when ``--out-passphrase-file`` is given. No command overwrites a key or a
certificate.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.cli.common import ExchangeGroup, console, echo, err_console, print_json, reports
from exchange.errors import ConfigurationError, InvalidIdentifier
from exchange.identifiers import MemberId, SecurityServerId, parse_member, parse_security_server
from exchange.protocol.jws import cert_thumbprint
from exchange.trust import keys
from exchange.trust.ca import CERT_FILE, KEY_FILE, CertificateAuthority
from exchange.trust.profiles import (
    key_usage_names,
    member_id_of_signing_cert,
    profile_of,
    purpose_name,
    server_id_of_auth_cert,
)
from exchange.trust.revocation import record_in_ca_dir
from exchange.trust.validation import name_text

PASSPHRASE_ENV = "EXCHANGE_KEY_PASSPHRASE"

_DIR = click.Path(file_okay=False, path_type=Path)
_EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_NEW_FILE = click.Path(dir_okay=False, path_type=Path)
_EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _read_passphrase(path: Path | None, *, use_env: bool) -> bytes | None:
    if path is not None:
        secret = path.read_bytes().rstrip(b"\r\n")
        if not secret:
            raise ConfigurationError(f"passphrase file {path} is empty")
        return secret
    from_env = os.environ.get(PASSPHRASE_ENV) if use_env else None
    return from_env.encode("utf-8") if from_env else None


def _server_id(ctx: click.Context, param: click.Parameter, value: str) -> SecurityServerId:
    try:
        return parse_security_server(value)
    except InvalidIdentifier as exc:
        raise click.BadParameter(exc.message) from None


def _member_id(ctx: click.Context, param: click.Parameter, value: str) -> MemberId:
    try:
        return parse_member(value)
    except InvalidIdentifier as exc:
        raise click.BadParameter(exc.message) from None


def _ip_addresses(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    for address in value:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise click.BadParameter(f"{address!r} is not an IPv4 or IPv6 address") from None
    return value


def _dns_names(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    for name in value:
        if not name or not name.isascii() or any(c.isspace() for c in name):
            raise click.BadParameter(f"{name!r} is not a DNS name (use the A-label form)")
    return value


def _refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            raise ConfigurationError(f"{path} already exists: remove it or choose another path")


def describe_certificate(cert: x509.Certificate) -> dict[str, Any]:
    """What ``exchange ca show`` prints, as a JSON-ready dict."""
    profile = profile_of(cert)
    identifier: str | None = None
    if profile == "auth":
        identifier = str(server_id_of_auth_cert(cert))
    elif profile == "sign":
        identifier = str(member_id_of_signing_cert(cert))
    return {
        "subject": name_text(cert.subject),
        "issuer": name_text(cert.issuer),
        "serial": f"{cert.serial_number:x}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key_usage": sorted(_key_usage(cert)),
        "extended_key_usage": sorted(_extended_key_usage(cert)),
        "sha256_fingerprint": keys.fingerprint(cert),
        "x5t#S256": cert_thumbprint(cert),
        "profile": profile,
        "identifier": identifier,
    }


def _key_usage(cert: x509.Certificate) -> frozenset[str]:
    try:
        return key_usage_names(cert.extensions.get_extension_for_class(x509.KeyUsage).value)
    except x509.ExtensionNotFound:
        return frozenset()


def _extended_key_usage(cert: x509.Certificate) -> list[str]:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []
    return [purpose_name(oid) for oid in eku]


def _print(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(data)
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        echo(f"{key.replace('_', ' '):<{width}}  {'-' if shown in (None, '') else shown}")


def _issued(cert: x509.Certificate, key_path: Path, cert_path: Path) -> dict[str, Any]:
    return {
        "key": str(key_path),
        "certificate": str(cert_path),
        **describe_certificate(cert),
    }


@click.group(name="ca", cls=ExchangeGroup)
def group() -> None:
    """Trust services: a minimal CA for authentication and signing certificates.

    \b
    Example:
      exchange ca init --dir certs/ca
      exchange ca issue-auth --ca-dir certs/ca --server PS/GOV/MOI/ss1 \\
          --out-key certs/moi/auth.key.pem --out-cert certs/moi/auth.cert.pem
    """


@group.command("init")
@click.option("--dir", "directory", type=_DIR, required=True, help="Directory for the CA files.")
@click.option("--name", default="Exchange Test CA", show_default=True, help="CA common name.")
@click.option(
    "--days", type=click.IntRange(min=1), default=3650, show_default=True, help="Validity."
)
@click.option(
    "--passphrase-file",
    type=_EXISTING_FILE,
    help=f"File holding the passphrase that encrypts the CA key (else ${PASSPHRASE_ENV}).",
)
@click.option(
    "--path-length",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="How many intermediate CAs may follow this one (0: it issues end entities only).",
)
@click.option(
    "--parent-dir",
    type=_EXISTING_DIR,
    help="Make an intermediate CA certified by the CA in this directory (whose key's "
    f"passphrase is in --parent-passphrase-file, else ${PASSPHRASE_ENV}).",
)
@click.option(
    "--parent-passphrase-file", type=_EXISTING_FILE, help="The parent CA key's passphrase."
)
@reports
def init(
    directory: Path,
    name: str,
    days: int,
    passphrase_file: Path | None,
    path_length: int,
    parent_dir: Path | None,
    parent_passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Create a CA: a P-256 key (mode 0600) and a self-signed root certificate, or with
    --parent-dir an intermediate CA certificate issued by that CA.

    Writes DIR/ca.key.pem and DIR/ca.cert.pem; refuses if a CA is already there. A root that
    is to certify an intermediate needs --path-length 1. The central server approves the root
    and the intermediate (with its OCSP URL); certificates then chain through it.

    \b
    Example:
      exchange ca init --dir certs/ca --name "PS Government CA" --passphrase-file ca.pass
      exchange ca init --dir root --name "PS Root CA" --path-length 1
      exchange ca init --dir issuing --name "PS Issuing CA" --parent-dir root
    """
    passphrase = _read_passphrase(passphrase_file, use_env=True)
    if parent_dir is not None:
        parent = CertificateAuthority.load(
            parent_dir, _read_passphrase(parent_passphrase_file, use_env=True)
        )
        ca = parent.create_intermediate(
            directory, name, passphrase=passphrase, days=days, path_length=path_length
        )
    else:
        ca = CertificateAuthority.create(
            directory, name, passphrase=passphrase, days=days, path_length=path_length
        )
    if passphrase is None:
        err_console.print(
            f"warning: the CA key is not encrypted; give --passphrase-file or ${PASSPHRASE_ENV}"
        )
    _print(_issued(ca.cert, directory / KEY_FILE, directory / CERT_FILE), as_json)


_ca_options = [
    click.option(
        "--ca-dir", type=_EXISTING_DIR, required=True, help="Directory made by 'exchange ca init'."
    ),
    click.option(
        "--passphrase-file",
        type=_EXISTING_FILE,
        help=f"File holding the CA key's passphrase (else ${PASSPHRASE_ENV}).",
    ),
    click.option("--out-key", type=_NEW_FILE, required=True, help="New private key file (0600)."),
    click.option("--out-cert", type=_NEW_FILE, required=True, help="New certificate file."),
    click.option(
        "--out-passphrase-file",
        type=_EXISTING_FILE,
        help="Encrypt the new key with the passphrase in this file (default: not encrypted).",
    ),
    click.option(
        "--days", type=click.IntRange(min=1), default=365, show_default=True, help="Validity."
    ),
]


def _with_ca_options(func: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_ca_options):
        func = option(func)
    return func


def _load_ca(ca_dir: Path, passphrase_file: Path | None) -> CertificateAuthority:
    return CertificateAuthority.load(ca_dir, _read_passphrase(passphrase_file, use_env=True))


def _new_key(
    out_key: Path, out_cert: Path, out_passphrase_file: Path | None
) -> ec.EllipticCurvePrivateKey:
    _refuse_existing(out_key, out_cert)
    key = keys.generate_key()
    keys.save_private_key(out_key, key, _read_passphrase(out_passphrase_file, use_env=False))
    return key


@group.command("issue-auth")
@_with_ca_options
@click.option(
    "--server",
    "server_id",
    required=True,
    callback=_server_id,
    help="Security server identifier INSTANCE/CLASS/CODE/SERVERCODE.",
)
@click.option(
    "--dns",
    multiple=True,
    default=["localhost"],
    show_default=True,
    callback=_dns_names,
    help="DNS name the server is reached at (repeatable).",
)
@click.option(
    "--ip",
    multiple=True,
    default=["127.0.0.1"],
    show_default=True,
    callback=_ip_addresses,
    help="IP address the server is reached at (repeatable).",
)
@reports
def issue_auth(
    ca_dir: Path,
    passphrase_file: Path | None,
    out_key: Path,
    out_cert: Path,
    out_passphrase_file: Path | None,
    days: int,
    as_json: bool,
    server_id: SecurityServerId,
    dns: tuple[str, ...],
    ip: tuple[str, ...],
) -> None:
    """Issue a security server's authentication (TLS) certificate with a new key.

    \b
    Example:
      exchange ca issue-auth --ca-dir certs/ca --server PS/GOV/MOI/ss1 \\
          --dns ss1.moi.example --ip 10.0.0.5 \\
          --out-key certs/moi/auth.key.pem --out-cert certs/moi/auth.cert.pem
    """
    ca = _load_ca(ca_dir, passphrase_file)
    key = _new_key(out_key, out_cert, out_passphrase_file)
    cert = ca.issue_auth_cert(
        key.public_key(), server_id, dns_names=dns, ip_addresses=ip, days=days
    )
    record_in_ca_dir(ca_dir, cert, "auth")
    keys.save_certificate(out_cert, cert)
    _print(_issued(cert, out_key, out_cert), as_json)


@group.command("issue-sign")
@_with_ca_options
@click.option(
    "--member",
    "member_id",
    required=True,
    callback=_member_id,
    help="Member identifier INSTANCE/CLASS/CODE.",
)
@reports
def issue_sign(
    ca_dir: Path,
    passphrase_file: Path | None,
    out_key: Path,
    out_cert: Path,
    out_passphrase_file: Path | None,
    days: int,
    as_json: bool,
    member_id: MemberId,
) -> None:
    """Issue a member's signing certificate (message signatures) with a new key.

    \b
    Example:
      exchange ca issue-sign --ca-dir certs/ca --member PS/GOV/MOI \\
          --out-key certs/moi/sign.key.pem --out-cert certs/moi/sign.cert.pem
    """
    ca = _load_ca(ca_dir, passphrase_file)
    key = _new_key(out_key, out_cert, out_passphrase_file)
    cert = ca.issue_sign_cert(key.public_key(), member_id, days=days)
    record_in_ca_dir(ca_dir, cert, "sign")
    keys.save_certificate(out_cert, cert)
    _print(_issued(cert, out_key, out_cert), as_json)


@group.command("revoke")
@click.option(
    "--ca-dir",
    "--config",
    "ca_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="The CA directory (its revocations.sqlite is what its OCSP responder answers from).",
)
@click.option("--cert", "cert_file", required=True, type=_EXISTING_FILE, help="Certificate (PEM).")
@click.option(
    "--reason",
    default="unspecified",
    show_default=True,
    help="RFC 5280 reason: keyCompromise, superseded, cessationOfOperation, ...",
)
@reports
def revoke(ca_dir: Path, cert_file: Path, reason: str, as_json: bool) -> None:
    """Revoke a certificate this CA issued; its OCSP responder says so from now on.

    \b
    Example:
      exchange ca revoke --ca-dir certs/ca --cert certs/moi/sign.cert.pem --reason keyCompromise
    """
    from exchange.trust.revocation import REVOCATIONS_FILE, RevocationStore, parse_reason

    cert = keys.load_certificate(cert_file)
    with RevocationStore(ca_dir / REVOCATIONS_FILE, create=False) as store:
        store.revoke(cert, parse_reason(reason))
    if as_json:
        print_json(
            {
                "serial": f"{cert.serial_number:x}",
                "subject": name_text(cert.subject),
                "sha256_fingerprint": keys.fingerprint(cert),
                "reason": reason,
                "register": ca_dir / REVOCATIONS_FILE,
            }
        )
    else:
        console.print(f"revoked serial {cert.serial_number:x} ({reason})")


@group.command("show")
@click.argument("cert_file", metavar="CERT.pem", type=_EXISTING_FILE)
@reports
def show(cert_file: Path, as_json: bool) -> None:
    """Show a certificate: subject, issuer, serial, validity, usages, fingerprint, identifier.

    Of a file with several certificates, the first is shown.

    \b
    Example:
      exchange ca show certs/moi/auth.cert.pem --json
    """
    _print(describe_certificate(keys.load_certificate(cert_file)), as_json)
