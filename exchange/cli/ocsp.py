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
import signal
from pathlib import Path

import click
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.cli.ca import PASSPHRASE_ENV, _read_passphrase
from exchange.cli.common import console, echo, err_console, handle_errors, log_to_stderr, print_json
from exchange.trust import keys
from exchange.trust.ca import CERT_FILE, CertificateAuthority
from exchange.trust.ocsp import issue_ocsp_responder_cert, verify_ocsp_response
from exchange.trust.ocsp_service import OcspFetcher, create_ocsp_app, serve_ocsp
from exchange.trust.revocation import RevocationStore
from exchange.trust.validation import describe

DEFAULT_PORT = 4100

_EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_FILE = click.Path(dir_okay=False, path_type=Path)


@click.group(name="ocsp")
def group() -> None:
    """OCSP (RFC 6960): the CA's responder, and status checks against it.

    \b
    Example:
      exchange ocsp serve --ca-dir certs/ca --db certs/ca/revocations.sqlite --port 4100
      exchange ocsp check --cert certs/moi/sign.cert.pem --issuer certs/ca/ca.cert.pem \\
          --url http://127.0.0.1:4100/
    """


@group.command("serve")
@click.option("--ca-dir", type=_EXISTING_DIR, required=True, help="Directory of the CA.")
@click.option(
    "--db", "db_path", type=_FILE, required=True, help="Revocation database (created if missing)."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
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
@handle_errors
def serve(
    ca_dir: Path,
    db_path: Path,
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
    """
    if (responder_key is None) != (responder_cert is None):
        raise click.UsageError("give both --responder-key and --responder-cert, or neither")
    log_to_stderr()
    created = not db_path.exists()
    with RevocationStore(db_path) as store:
        if created:
            err_console.print(f"note: created an empty revocation database {db_path}")
        if responder_key is not None and responder_cert is not None:
            ca_cert = keys.load_certificate(ca_dir / CERT_FILE)
            key = keys.load_private_key(responder_key, _read_passphrase(None, use_env=True))
            cert = keys.load_certificate(responder_cert)
        else:
            ca = CertificateAuthority.load(ca_dir, _read_passphrase(passphrase_file, use_env=True))
            ca_cert = ca.cert
            key, cert = _new_responder(ca, store, responder_days)
        app = create_ocsp_app(ca_cert, key, cert, store, validity_seconds=validity_seconds)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(app, host, port, ready_line, cert))


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
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)

    def bound(bound_port: int) -> None:
        url = f"http://{host}:{bound_port}/"
        if ready_line:
            ready = {"port": bound_port, "url": url, "responder": keys.fingerprint(cert)}
            print("READY " + json.dumps(ready), flush=True)
        else:
            console.print(f"OCSP responder ({describe(cert)}) serving on {url}")

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
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
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
