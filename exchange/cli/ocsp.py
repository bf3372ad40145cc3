"""``exchange ocsp``: run the CA's OCSP responder, and ask a responder about a certificate.

The commands read files and the environment and print; the work is done by
``exchange.trust.ocsp`` (building and verifying), ``exchange.trust.ocsp_service`` (HTTP) and
``exchange.trust.revocation`` (the register). ``serve`` signs with a delegated responder
certificate: the one given by ``--responder-key``/``--responder-cert``, or else a new one it
issues at start with the CA key (recorded in the register, valid ``--responder-days``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from pathlib import Path

import click
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from exchange import sdnotify
from exchange.cli.ca import PASSPHRASE_ENV, _read_passphrase
from exchange.cli.checkconfig import (
    add_check_config,
    reject_options_beside_config,
    settings_from_command_line,
)
from exchange.cli.common import (
    ExchangeGroup,
    cancel_on_sigterm,
    console,
    echo,
    err_console,
    handle_errors,
    print_json,
    reports,
)
from exchange.oplog import configure_logging
from exchange.trust import keys
from exchange.trust.ca import CERT_FILE, CertificateAuthority
from exchange.trust.ocsp import issue_ocsp_responder_cert, verify_ocsp_response
from exchange.trust.ocsp_service import OcspFetcher, create_ocsp_app, serve_ocsp
from exchange.trust.revocation import RevocationStore
from exchange.trust.service_config import (
    OCSP_PORT,
    OcspSettings,
    load_ocsp_config,
    ocsp_settings,
)
from exchange.trust.validation import describe

_EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_FILE = click.Path(dir_okay=False, path_type=Path)


@click.group(name="ocsp", cls=ExchangeGroup)
def group() -> None:
    """OCSP (RFC 6960): the CA's responder, and status checks against it.

    \b
    Example:
      exchange ocsp serve --ca-dir certs/ca --db certs/ca/revocations.sqlite --port 4100
      exchange ocsp check --cert certs/moi/sign.cert.pem --issuer certs/ca/ca.cert.pem \\
          --url http://127.0.0.1:4100/
    """


@group.command("serve")
@click.option(
    "--config",
    "config_path",
    type=_EXISTING_FILE,
    help="ocsp.toml with the settings below and [logging] (then give no other option).",
)
@click.option("--ca-dir", type=_EXISTING_DIR, help="Directory of the CA.")
@click.option("--db", "db_path", type=_FILE, help="Revocation database (created if missing).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=OCSP_PORT,
    show_default=True,
    help="Port (0: any free port).",
)
@click.option(
    "--passphrase-file",
    type=_EXISTING_FILE,
    help=f"File holding the CA key's passphrase (else ${PASSPHRASE_ENV}).",
)
@click.option("--responder-key", type=_EXISTING_FILE, help="Delegated responder's key.")
@click.option("--responder-cert", type=_EXISTING_FILE, help="Delegated responder's certificate.")
@click.option(
    "--responder-days",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Validity of the responder certificate issued at start.",
)
@click.option(
    "--validity",
    "validity_seconds",
    type=click.IntRange(min=1),
    default=3600,
    show_default=True,
    help="Seconds from thisUpdate to nextUpdate in each response.",
)
@click.option("--ready-line", is_flag=True, help="Print one line READY {json} with the bound port.")
@click.pass_context
@handle_errors
def serve(
    ctx: click.Context,
    config_path: Path | None,
    ca_dir: Path | None,
    db_path: Path | None,
    host: str,
    port: int,
    passphrase_file: Path | None,
    responder_key: Path | None,
    responder_cert: Path | None,
    responder_days: int,
    validity_seconds: int,
    ready_line: bool,
) -> None:
    """Answer OCSP requests about the CA's certificates until interrupted (Ctrl-C).

    Statuses come from the revocation database: recorded and not revoked is good, revoked is
    revoked with its time and reason, never recorded is unknown.

    \b
    Example:
      exchange ocsp serve --ca-dir certs/ca --db certs/ca/revocations.sqlite --port 4100
      exchange ocsp serve --config /etc/exchange/ocsp.toml
    """
    if config_path is not None:
        reject_options_beside_config(ctx, keep=("ready_line",))
        settings = load_ocsp_config(config_path)
    elif ca_dir is None or db_path is None:
        raise click.UsageError("give --ca-dir and --db (or --config)")
    else:
        options = {k: v for k, v in ctx.params.items() if k not in ("config_path", "ready_line")}
        options["database"] = options.pop("db_path")
        flags = {"database": "--db", "validity_seconds": "--validity"}
        settings = settings_from_command_line(ocsp_settings, options, flags)
    configure_logging(settings.logging)
    _run_responder(settings, ready_line)


def _run_responder(settings: OcspSettings, ready_line: bool) -> None:
    created = not settings.database.exists()
    with RevocationStore(settings.database) as store:
        if created:
            err_console.print(f"note: created an empty revocation database {settings.database}")
        if settings.responder_key is not None and settings.responder_cert is not None:
            ca_cert = keys.load_certificate(settings.ca_dir / CERT_FILE)
            passphrase = _read_passphrase(None, use_env=True)
            key = keys.load_private_key(settings.responder_key, passphrase)
            cert = keys.load_certificate(settings.responder_cert)
        else:
            passphrase = _read_passphrase(settings.passphrase_file, use_env=True)
            ca = CertificateAuthority.load(settings.ca_dir, passphrase)
            ca_cert = ca.cert
            key, cert = _new_responder(ca, store, settings.responder_days)
        app = create_ocsp_app(ca_cert, key, cert, store, validity_seconds=settings.validity_seconds)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(app, settings.host, settings.port, ready_line, cert))


def _new_responder(
    ca: CertificateAuthority, store: RevocationStore, days: int
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = keys.generate_key()
    cert = issue_ocsp_responder_cert(ca, key.public_key(), days=days)
    store.record_issued(cert, "ocsp")
    return key, cert


async def _serve(
    app: web.Application, host: str, port: int, ready_line: bool, cert: x509.Certificate
) -> None:
    cancel_on_sigterm()

    def bound(bound_port: int) -> None:
        url = f"http://{host}:{bound_port}/"
        if ready_line:
            ready = {"port": bound_port, "url": url, "responder": keys.fingerprint(cert)}
            print("READY " + json.dumps(ready), flush=True)
        else:
            console.print(f"OCSP responder ({describe(cert)}) serving on {url}")
        sdnotify.ready(f"OCSP responder serving on {url}")

    with contextlib.suppress(asyncio.CancelledError):
        await serve_ocsp(app, host, port, on_bound=bound)


@group.command("check")
@click.option("--cert", "cert_path", type=_EXISTING_FILE, required=True, help="Certificate.")
@click.option("--issuer", "issuer_path", type=_EXISTING_FILE, required=True, help="Its CA.")
@click.option("--url", required=True, help="OCSP responder URL.")
@click.option(
    "--max-age",
    type=click.IntRange(min=1),
    default=3600,
    show_default=True,
    help="Refuse a response older than this many seconds (the OCSP freshness).",
)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
@click.option("--save", "save_path", type=_FILE, help="Write the DER response to this file.")
@reports
def check(
    cert_path: Path,
    issuer_path: Path,
    url: str,
    max_age: int,
    timeout: float,
    save_path: Path | None,
    as_json: bool,
) -> None:
    """Ask an OCSP responder about a certificate; exit 0 only for a fresh, verified "good".

    Revoked, unknown, stale and badly signed answers are errors (exit status 1).

    \b
    Example:
      exchange ocsp check --cert certs/moi/sign.cert.pem --issuer certs/ca/ca.cert.pem \\
          --url http://127.0.0.1:4100/ --save moi-sign.ocsp.der
    """
    cert = keys.load_certificate(cert_path)
    issuer = keys.load_certificate(issuer_path)
    response_der = asyncio.run(_fetch(cert, issuer, url, timeout))
    if save_path is not None:
        save_path.write_bytes(response_der)
    status = verify_ocsp_response(
        response_der,
        cert=cert,
        issuer=issuer,
        now=dt.datetime.now(dt.UTC),
        max_age_seconds=max_age,
    )
    result = {
        "certificate": describe(cert),
        "serial": f"{cert.serial_number:x}",
        "status": "good",
        "this_update": status.this_update.isoformat(),
        "next_update": status.next_update.isoformat() if status.next_update else None,
        "responder": describe(status.responder),
    }
    if as_json:
        print_json(result)
    else:
        echo(f"{cert_path}: good (this update {result['this_update']})")


async def _fetch(
    cert: x509.Certificate, issuer: x509.Certificate, url: str, timeout: float
) -> bytes:
    async with OcspFetcher(timeout_seconds=timeout) as fetcher:
        return await fetcher.fetch(cert, issuer, url)


add_check_config(
    group,
    load_ocsp_config,
    "OCSP responder",
    lambda s: [
        (("ca_dir",), s.ca_dir, "directory"),
        (("passphrase_file",), s.passphrase_file, "file"),
        (("responder_key",), s.responder_key, "file"),
        (("responder_cert",), s.responder_cert, "file"),
    ],
)
