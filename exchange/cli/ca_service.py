"""Certificates from CSRs: ``exchange ca serve`` / ``ca sign-csr`` for the CA's operator, and
``exchange server request-certs`` / ``server import-cert`` for a security server's operator.

These commands are added to the existing ``ca`` and ``server`` groups when this module is
imported. They read files and the environment and print; issuing and checking are in
``exchange.trust.ca_service``. A security server's CSRs sit next to its certificates
(``keys/auth.csr.pem`` beside ``keys/auth.cert.pem``, as ``exchange server init`` writes them).
No certificate is installed before its profile, identifier, key and validity are checked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import click
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from exchange import sdnotify
from exchange.cli.ca import PASSPHRASE_ENV, _print, _read_passphrase, describe_certificate
from exchange.cli.ca import group as ca_group
from exchange.cli.checkconfig import (
    add_check_config,
    reject_options_beside_config,
    settings_from_command_line,
)
from exchange.cli.common import console, err_console, handle_errors, print_json, reports
from exchange.cli.server import group as server_group
from exchange.errors import ConfigurationError, InvalidIdentifier
from exchange.identifiers import MemberId, parse_member
from exchange.oplog import configure_logging
from exchange.server.config import ServerConfig, load_server_config
from exchange.trust import keys
from exchange.trust.ca import CertificateAuthority
from exchange.trust.ca_service import (
    CertificateMismatch,
    CertificateRequest,
    Identifier,
    check_certificate_for,
    create_ca_app,
    csr_public_key,
    issue_requested,
    parse_identifier,
    request_certificate,
    running_ca_service,
)
from exchange.trust.profiles import ProfileName
from exchange.trust.service_config import (
    CA_SERVICE_PORT,
    CaServiceSettings,
    ca_service_settings,
    load_ca_service_config,
)

DEFAULT_PORT: Final = CA_SERVICE_PORT
TOKEN_ENV: Final = "EXCHANGE_ENROLMENT_TOKEN"

_EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_NEW_FILE = click.Path(dir_okay=False, path_type=Path)
_PROFILE = click.Choice(["auth", "sign"])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- exchange ca serve / sign-csr ---------------------------------------------------------------


@ca_group.command("serve")
@click.option(
    "--config",
    "config_path",
    type=_EXISTING_FILE,
    help="ca.toml with the settings below and [logging] (then give no other option).",
)
@click.option("--ca-dir", type=_EXISTING_DIR, help="Directory of the CA.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; keep loopback unless access is controlled otherwise.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port (0: any free port).",
)
@click.option(
    "--passphrase-file",
    type=_EXISTING_FILE,
    help=f"File holding the CA key's passphrase (else ${PASSPHRASE_ENV}).",
)
@click.option("--days-auth", type=click.IntRange(min=1), default=365, show_default=True)
@click.option("--days-sign", type=click.IntRange(min=1), default=365, show_default=True)
@click.option("--ready-line", is_flag=True, help="Print one line READY {json} with the bound port.")
@click.pass_context
@handle_errors
def serve(
    ctx: click.Context,
    config_path: Path | None,
    ca_dir: Path | None,
    host: str,
    port: int,
    passphrase_file: Path | None,
    days_auth: int,
    days_sign: int,
    ready_line: bool,
) -> None:
    """Issue certificates from CSRs over HTTP until SIGINT or SIGTERM.

    POST /certificates takes {"profile": "auth"|"sign", "identifier": ..., "csr": PEM,
    "token": ...}; GET /ca.pem gives the CA certificate. A certificate is issued only against
    an enrolment token for exactly that profile and identifier ('exchange ca token issue'),
    once, for one key. Every certificate issued is recorded in the CA's revocation register,
    so its OCSP responder answers "good" for it.

    \b
    Example:
      exchange ca serve --ca-dir certs/ca --port 4200
      exchange ca token issue --ca-dir certs/ca --auth PS/GOV/MOI/ss1 --sign PS/GOV/MOI
      exchange ca serve --config /etc/exchange/ca.toml
    """
    if config_path is not None:
        reject_options_beside_config(ctx, keep=("ready_line",))
        settings = load_ca_service_config(config_path)
    elif ca_dir is None:
        raise click.UsageError("give --ca-dir (or --config)")
    else:
        options = {k: v for k, v in ctx.params.items() if k not in ("config_path", "ready_line")}
        settings = settings_from_command_line(ca_service_settings, options)
    configure_logging(settings.logging)
    _serve_ca(settings, ready_line)


def _serve_ca(settings: CaServiceSettings, ready_line: bool) -> None:
    passphrase = _read_passphrase(settings.passphrase_file, use_env=True)
    ca_dir, host, port = settings.ca_dir, settings.host, settings.port
    days_auth, days_sign = settings.days_auth, settings.days_sign
    ca = CertificateAuthority.load(ca_dir, passphrase)
    if not _is_loopback(host):
        err_console.print(
            f"warning: listening on {host} over plain HTTP: enrolment tokens cross the network "
            "in the clear; put TLS in front of this port"
        )
    app = create_ca_app(ca, ca_dir, days_auth=days_auth, days_sign=days_sign)
    asyncio.run(_serve(app, host, port, ready_line))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def _serve(app: web.Application, host: str, port: int, ready_line: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_ca_service(app, host, port) as bound:
        url = f"http://{host}:{bound}/"
        if ready_line:
            print("READY " + json.dumps({"port": bound, "url": url}), flush=True)
        else:
            console.print(f"CA service serving on {url} (Ctrl-C stops)")
        sdnotify.ready(f"CA service serving on {url}")
        await stop.wait()
        sdnotify.stopping()


@ca_group.command("sign-csr")
@click.option("--ca-dir", type=_EXISTING_DIR, required=True, help="Directory of the CA.")
@click.option(
    "--passphrase-file",
    type=_EXISTING_FILE,
    help=f"File holding the CA key's passphrase (else ${PASSPHRASE_ENV}).",
)
@click.option("--csr", "csr_file", type=_EXISTING_FILE, required=True, help="PEM PKCS#10 request.")
@click.option("--profile", type=_PROFILE, required=True, help="auth (TLS) or sign (messages).")
@click.option(
    "--identifier",
    required=True,
    help="auth: security server id INSTANCE/CLASS/CODE/SERVER; sign: member INSTANCE/CLASS/CODE.",
)
@click.option("-o", "--out", "out_file", type=_NEW_FILE, required=True, help="New certificate.")
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True)
@reports
def sign_csr(
    ca_dir: Path,
    passphrase_file: Path | None,
    csr_file: Path,
    profile: ProfileName,
    identifier: str,
    out_file: Path,
    days: int,
    as_json: bool,
) -> None:
    """Issue a certificate from a CSR offline, with the same checks as the CA service.

    The CSR's self-signature must verify; a signing key must be P-256. Subject and extensions
    come from the profile and the identifier, never from the CSR. The certificate is recorded
    in the CA's revocation register.

    \b
    Example:
      exchange ca sign-csr --ca-dir certs/ca --csr ss-moi/keys/sign-MOI.csr.pem \\
          --profile sign --identifier PS/GOV/MOI -o sign-MOI.cert.pem
    """
    if out_file.exists():
        raise ConfigurationError(f"{out_file} already exists: remove it or choose another path")
    request = CertificateRequest(profile, _identifier(profile, identifier), csr_file.read_bytes())
    ca = CertificateAuthority.load(ca_dir, _read_passphrase(passphrase_file, use_env=True))
    cert = issue_requested(ca, ca_dir, request, days=days, now=_now())
    keys.save_certificate(out_file, cert)
    _print({"certificate": str(out_file), **describe_certificate(cert)}, as_json)
    if not as_json:
        option = _import_option(request, out_file)
        console.print(
            "next: give it to the server's operator, who installs it with "
            f"'exchange server import-cert --config server.toml {option}'"
        )


def _identifier(profile: ProfileName, text: str) -> Identifier:
    try:
        return parse_identifier(profile, text)
    except InvalidIdentifier as exc:
        raise click.BadParameter(exc.message, param_hint="--identifier") from None


def _import_option(request: CertificateRequest, cert_file: Path) -> str:
    if request.profile == "auth":
        return f"--auth {cert_file}"
    return f"--sign {request.identifier}={cert_file}"


# --- exchange server request-certs / import-cert ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Slot:
    """One certificate a security server needs: which profile, for whom, key and cert paths."""

    profile: ProfileName
    identifier: Identifier
    key: Path
    cert: Path

    @property
    def csr(self) -> Path:
        stem = self.cert.name.removesuffix(".pem").removesuffix(".cert")
        return self.cert.with_name(f"{stem}.csr.pem")

    @property
    def title(self) -> str:
        kind = "authentication" if self.profile == "auth" else "signing"
        return f"{kind} certificate for {self.identifier}"


def _slots(config: ServerConfig) -> list[_Slot]:
    auth = _Slot("auth", config.server_id, config.auth_key, config.auth_cert)
    return [auth, *(_Slot("sign", s.member, s.key, s.cert) for s in config.signing)]


def _public_key(slot: _Slot, config: ServerConfig) -> CertificatePublicKeyTypes:
    from exchange.server.ownkeys import passphrase_from_env

    return keys.load_private_key(slot.key, passphrase_from_env(config)).public_key()


def _csr_of(slot: _Slot, config: ServerConfig) -> bytes:
    """The slot's CSR, checked to be for the slot's private key."""
    if not slot.csr.is_file():
        raise ConfigurationError(
            f"no certificate request {slot.csr} for the {slot.title}; make one with "
            "'exchange server init', or install a certificate got otherwise with "
            "'exchange server import-cert'"
        )
    csr_pem = slot.csr.read_bytes()
    if csr_public_key(csr_pem) != _public_key(slot, config):
        raise ConfigurationError(
            f"{slot.csr} is not a request for the key in {slot.key}; make a new request"
        )
    return csr_pem


@server_group.command("request-certs")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=_EXISTING_FILE,
    help="The security server's server.toml.",
)
@click.option("--ca-url", required=True, help="URL of the CA service ('exchange ca serve').")
@click.option(
    "--token-file",
    type=_EXISTING_FILE,
    help=f"File holding the enrolment token the CA's operator issued (else ${TOKEN_ENV}).",
)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
@reports
def request_certs(
    config_path: Path, ca_url: str, token_file: Path | None, timeout: float, as_json: bool
) -> None:
    """Send the server's CSRs to the CA service and install the certificates it returns.

    Each CSR next to a configured certificate path (keys/auth.csr.pem, keys/sign-CODE.csr.pem)
    goes out with its profile and identifier (the server id; the member of the signing key)
    and the enrolment token the CA's operator issued for them ('exchange ca token issue').
    A certificate is installed only if its key is the CSR's and its profile and identifier are
    right. Certificates already installed are left as they are.

    \b
    Example:
      exchange server request-certs --config ss-moi/server.toml \\
          --ca-url http://127.0.0.1:4200/ --token-file moi.token
    """
    config = load_server_config(config_path)
    done = _Installed(as_json)
    pending = []
    for slot in _slots(config):
        if slot.cert.exists():
            done.add(slot, "kept", None)
        else:
            pending.append(slot)
    requests = [(slot, _csr_of(slot, config)) for slot in pending]
    token = _token(token_file) if requests else None
    for slot, csr_pem in requests:
        cert = asyncio.run(
            request_certificate(
                ca_url, slot.profile, slot.identifier, csr_pem, token=token, timeout=timeout
            )
        )
        keys.save_certificate(slot.cert, cert)
        done.add(slot, "installed", cert)
    done.finish(config)


def _token(token_file: Path | None) -> str:
    """The enrolment token from ``--token-file`` or the environment."""
    if token_file is not None:
        with token_file.open("rb") as f:  # the mode of the file read, not of a name checked
            mode = os.fstat(f.fileno()).st_mode
            if mode & 0o077:
                # whoever reads it first may enrol a key of theirs under the token's identity
                raise ConfigurationError(
                    f"enrolment token file {token_file} is open to others "
                    f"(mode {oct(mode & 0o777)}); run: chmod 600 {token_file}"
                )
            text = f.read(64 * 1024).decode("ascii", errors="replace").strip()
        where = str(token_file)
    else:
        text = os.environ.get(TOKEN_ENV, "").strip()
        where = f"${TOKEN_ENV}"
    if not text:
        raise ConfigurationError(
            f"the CA service needs an enrolment token and {where} holds none: ask the CA's "
            "operator for one ('exchange ca token issue') and give it with --token-file"
        )
    return text


class _Installed:
    """What ``request-certs`` and ``import-cert`` did with each certificate: a line each as it
    happens, or one JSON document at the end."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.certificates: list[dict[str, object]] = []

    def add(self, slot: _Slot, action: str, cert: x509.Certificate | None) -> None:
        """``action``: installed, replaced, or kept (already installed, left as it is)."""
        self.certificates.append(
            {
                "profile": slot.profile,
                "identifier": str(slot.identifier),
                "path": str(slot.cert),
                "action": action,
                "serial": None if cert is None else f"{cert.serial_number:x}",
                "not_after": None if cert is None else cert.not_valid_after_utc.isoformat(),
            }
        )
        if self.as_json:
            return
        if cert is None:
            console.print(f"{slot.title}: {slot.cert} already installed, left as it is")
        else:
            summary = (
                f"(serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d})"
            )
            console.print(f"{slot.title}: {action} {slot.cert} {summary}")

    def finish(self, config: ServerConfig) -> None:
        register = f"exchange server register --config {config.path} --central-url CENTRAL_URL"
        run = f"exchange server run --config {config.path}"
        if self.as_json:
            print_json({"certificates": self.certificates, "next": [register, run]})
            return
        console.print(f"next: {register}")
        console.print(f"and once approved: {run}")


def _sign_items(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> list[tuple[MemberId, Path]]:
    items = []
    for item in value:
        member, sep, path = item.partition("=")
        if not sep or not path:
            raise click.BadParameter(f"use MEMBER=CERT.pem, not {item!r}")
        try:
            items.append((parse_member(member), Path(path)))
        except InvalidIdentifier as exc:
            raise click.BadParameter(exc.message) from None
    return items


@server_group.command("import-cert")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=_EXISTING_FILE,
    help="The security server's server.toml.",
)
@click.option("--auth", "auth_file", type=_EXISTING_FILE, help="Authentication certificate.")
@click.option(
    "--sign",
    "sign_items",
    multiple=True,
    callback=_sign_items,
    help="MEMBER=CERT.pem: a member's signing certificate (repeatable).",
)
@reports
def import_cert(
    config_path: Path,
    auth_file: Path | None,
    sign_items: list[tuple[MemberId, Path]],
    as_json: bool,
) -> None:
    """Install certificates obtained by other means, after checking them.

    Each certificate must be for the server's own private key (keys/auth.key.pem, or the
    member's signing key), of the right profile (an authentication certificate is never taken
    for signing, nor a signing certificate for TLS), issued to this server or member, and valid
    now. Nothing is installed unless every certificate given passes.

    \b
    Example:
      exchange server import-cert --config ss-moi/server.toml \\
          --auth auth.cert.pem --sign PS/GOV/MOI=sign-MOI.cert.pem
    """
    if auth_file is None and not sign_items:
        raise click.UsageError("give --auth CERT.pem and/or --sign MEMBER=CERT.pem")
    config = load_server_config(config_path)
    chosen = _chosen_slots(config, auth_file, sign_items)
    certs = [(slot, _checked(slot, source, config)) for slot, source in chosen]
    done = _Installed(as_json)
    for slot, cert in certs:
        replaced = "replaced" if slot.cert.exists() else "installed"
        keys.save_certificate(slot.cert, cert)
        done.add(slot, replaced, cert)
    done.finish(config)


def _chosen_slots(
    config: ServerConfig, auth_file: Path | None, sign_items: list[tuple[MemberId, Path]]
) -> list[tuple[_Slot, Path]]:
    by_member = {s.identifier: s for s in _slots(config) if s.profile == "sign"}
    chosen = [] if auth_file is None else [(_slots(config)[0], auth_file)]
    for member, source in sign_items:
        if member not in by_member:
            known = ", ".join(str(m) for m in by_member)
            raise ConfigurationError(
                f"{config.path} has no signing key for {member} (it has: {known}); "
                "add a [[keys.signing]] entry with its key first"
            )
        if not source.is_file():
            raise ConfigurationError(f"{source} does not exist")
        chosen.append((by_member[member], source))
    return chosen


def _checked(slot: _Slot, source: Path, config: ServerConfig) -> x509.Certificate:
    cert = keys.load_certificate(source)
    try:
        check_certificate_for(
            cert, slot.profile, slot.identifier, _public_key(slot, config), _now()
        )
    except CertificateMismatch as exc:
        raise CertificateMismatch(f"{source}: {exc.message}; nothing was installed") from None
    return cert


add_check_config(
    ca_group,
    load_ca_service_config,
    "CA service",
    lambda s: [
        (("ca_dir",), s.ca_dir, "directory"),
        (("passphrase_file",), s.passphrase_file, "file"),
    ],
)
