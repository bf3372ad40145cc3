"""``exchange tsa``: set up and run a time-stamping authority, stamp a file, verify a stamp.

The TSA lives in a directory: ``tsa.key.pem`` (P-256, mode 0600), ``tsa.cert.pem`` (issued by
the CA, EKU timeStamping critical) and ``serials.sqlite`` (the register of issued serial
numbers). The work is done by ``exchange.trust.timestamp`` and ``exchange.trust.tsa_service``;
these commands read files and print. The CA key's passphrase, for ``init``, comes from
``--passphrase-file`` or ``EXCHANGE_KEY_PASSPHRASE``; the TSA key is not encrypted, since the
service starts unattended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import click
from aiohttp import web
from cryptography import x509

from exchange import sdnotify
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
from exchange.errors import ConfigurationError
from exchange.oplog import configure_logging
from exchange.trust import keys
from exchange.trust.ca import CertificateAuthority
from exchange.trust.service_config import (
    TSA_PORT,
    load_tsa_config,
    tsa_settings,
)
from exchange.trust.timestamp import (
    HASH_ALGORITHMS,
    TimestampInfo,
    digest_of,
    issue_tsa_cert,
    verify_timestamp_token,
)
from exchange.trust.tsa_service import (
    TimestampClient,
    TimestampReply,
    create_tsa_app,
    serve_tsa,
)

PASSPHRASE_ENV: Final = "EXCHANGE_KEY_PASSPHRASE"
KEY_FILE: Final = "tsa.key.pem"
CERT_FILE: Final = "tsa.cert.pem"
SERIAL_DB: Final = "serials.sqlite"

_DIR = click.Path(file_okay=False, path_type=Path)
_EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_HASHES = click.Choice(sorted(HASH_ALGORITHMS))


def _passphrase(path: Path | None) -> bytes | None:
    if path is not None:
        secret = path.read_bytes().rstrip(b"\r\n")
        if not secret:
            raise ConfigurationError(f"passphrase file {path} is empty")
        return secret
    from_env = os.environ.get(PASSPHRASE_ENV)
    return from_env.encode("utf-8") if from_env else None


def _certificates(paths: tuple[Path, ...]) -> list[x509.Certificate]:
    return [cert for path in paths for cert in keys.load_certificates(path)]


def _describe(info: TimestampInfo) -> dict[str, Any]:
    return {
        "time": info.gen_time.isoformat(),
        "serial": info.serial,
        "policy": info.policy,
        "hash": f"{info.hash_alg}:{info.digest.hex()}",
        "tsa_cert_sha256": info.tsa_cert_fingerprint,
    }


def _print(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(data)
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        echo(f"{key.replace('_', ' '):<{width}}  {value}")


@click.group(name="tsa", cls=ExchangeGroup)
def group() -> None:
    """Time-stamping authority (RFC 3161): tokens for signed tree heads and evidence.

    \b
    Example:
      exchange tsa init --ca-dir certs/ca --dir tsa
      exchange tsa serve --dir tsa --port 4318
      exchange tsa stamp --url http://127.0.0.1:4318/ --tsa-cert tsa/tsa.cert.pem \\
          --ca-cert ca/ca.cert.pem report.pdf
      exchange tsa verify --tsa-cert tsa/tsa.cert.pem --ca-cert ca/ca.cert.pem \\
          --data report.pdf --in report.pdf.tsr
    """


@group.command("init")
@click.option("--ca-dir", type=_EXISTING_DIR, required=True, help="Made by 'exchange ca init'.")
@click.option("--dir", "directory", type=_DIR, required=True, help="Directory for the TSA.")
@click.option("--name", default="Exchange Test TSA", show_default=True, help="TSA common name.")
@click.option(
    "--days", type=click.IntRange(min=1), default=365, show_default=True, help="Validity."
)
@click.option(
    "--passphrase-file",
    type=_EXISTING_FILE,
    help=f"File holding the CA key's passphrase (else ${PASSPHRASE_ENV}).",
)
@reports
def init(
    ca_dir: Path, directory: Path, name: str, days: int, passphrase_file: Path | None, as_json: bool
) -> None:
    """Create a TSA: a P-256 key (mode 0600) and its certificate issued by the CA.

    Writes DIR/tsa.key.pem and DIR/tsa.cert.pem; refuses if they exist.

    \b
    Example:
      exchange tsa init --ca-dir certs/ca --dir tsa --name "PS Time-Stamping Authority"
    """
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    for path in (key_path, cert_path):
        if path.exists():
            raise ConfigurationError(f"{path} already exists: a TSA is there; use another --dir")
    ca = CertificateAuthority.load(ca_dir, _passphrase(passphrase_file))
    key = keys.generate_key()
    cert = issue_tsa_cert(ca, key.public_key(), name, days=days)
    keys.save_private_key(key_path, key)
    keys.save_certificate(cert_path, cert)
    data = {
        "key": str(key_path),
        "certificate": str(cert_path),
        "subject": cert.subject.rfc4514_string(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256_fingerprint": keys.fingerprint(cert),
    }
    _print(data, as_json)
    if not as_json:
        err_console.print(f"next: exchange tsa serve --dir {directory}")


@group.command("serve")
@click.option(
    "--config",
    "config_path",
    type=_EXISTING_FILE,
    help="tsa.toml with the settings below and [logging] (then give no other option).",
)
@click.option("--dir", "directory", type=_EXISTING_DIR, help="Made by 'tsa init'.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=TSA_PORT,
    show_default=True,
    help="Port (0: any free port).",
)
@click.option("--ready-line", is_flag=True, help="Print 'READY {json}' with the port once serving.")
@click.pass_context
@handle_errors
def serve(
    ctx: click.Context,
    config_path: Path | None,
    directory: Path | None,
    host: str,
    port: int,
    ready_line: bool,
) -> None:
    """Serve time-stamps over HTTP (POST application/timestamp-query) until interrupted.

    \b
    Example:
      exchange tsa serve --dir tsa --port 4318
      exchange tsa serve --config /etc/exchange/tsa.toml
    """
    if config_path is not None:
        reject_options_beside_config(ctx, keep=("ready_line",))
        settings = load_tsa_config(config_path)
    elif directory is None:
        raise click.UsageError("give --dir (or --config)")
    else:
        options = {"dir": directory, "host": host, "port": port}
        settings = settings_from_command_line(tsa_settings, options)
    key = keys.load_private_key(settings.dir / KEY_FILE, _passphrase(None))
    cert = keys.load_certificate(settings.dir / CERT_FILE)
    if cert.public_key() != key.public_key():
        raise ConfigurationError(
            f"{settings.dir / KEY_FILE} is not the key of {settings.dir / CERT_FILE}"
        )
    configure_logging(settings.logging)
    app = create_tsa_app(key, cert, serial_db=settings.dir / SERIAL_DB)

    def bound(actual: int) -> None:
        url = f"http://{settings.host}:{actual}/"
        if ready_line:
            print("READY " + json.dumps({"port": actual, "url": url}), flush=True)
        else:
            console.print(f"TSA serving on {url} (Ctrl-C stops)")
        sdnotify.ready(f"TSA serving on {url}")

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_signalled(app, settings.host, settings.port, bound))


async def _serve_until_signalled(
    app: web.Application, host: str, port: int, bound: Callable[[int], None]
) -> None:
    cancel_on_sigterm()
    with contextlib.suppress(asyncio.CancelledError):
        await serve_tsa(app, host=host, port=port, on_bound=bound)


@group.command("stamp")
@click.option("--url", required=True, help="The TSA's URL, e.g. http://127.0.0.1:4318/.")
@click.option(
    "--tsa-cert",
    "tsa_cert_files",
    type=_EXISTING_FILE,
    required=True,
    multiple=True,
    help="PEM certificate(s) of the TSA to trust (repeatable).",
)
@click.option(
    "--ca-cert",
    "ca_cert_files",
    type=_EXISTING_FILE,
    required=True,
    multiple=True,
    help="CA the TSA certificate chains to: its root, and any intermediate (repeatable).",
)
@click.option("--hash", "hash_alg", type=_HASHES, default="sha256", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Default FILE.tsr.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
@click.argument("file", type=_EXISTING_FILE)
@reports
def stamp(
    url: str,
    tsa_cert_files: tuple[Path, ...],
    ca_cert_files: tuple[Path, ...],
    hash_alg: str,
    out: Path | None,
    timeout: float,
    as_json: bool,
    file: Path,
) -> None:
    """Time-stamp FILE at the TSA and write the verified reply to FILE.tsr.

    The reply is a DER TimeStampResp: 'openssl ts -verify -data FILE -in FILE.tsr' reads it.

    \b
    Example:
      exchange tsa stamp --url http://127.0.0.1:4318/ --tsa-cert tsa/tsa.cert.pem \\
          --ca-cert ca/ca.cert.pem report.pdf
    """
    digest = digest_of(file.read_bytes(), hash_alg)
    tsa_certs = _certificates(tsa_cert_files)
    ca_certs = _certificates(ca_cert_files)

    async def ask() -> TimestampReply:
        async with TimestampClient() as client:
            return await client.request_reply(
                digest,
                url,
                tsa_certs=tsa_certs,
                ca_certs=ca_certs,
                hash_alg=hash_alg,
                timeout=timeout,
            )

    reply = asyncio.run(ask())
    target = out or file.with_name(file.name + ".tsr")
    target.write_bytes(reply.response_der)
    _print({"file": str(file), "reply": str(target), **_describe(reply.info)}, as_json)


@group.command("verify")
@click.option(
    "--tsa-cert",
    "tsa_cert_files",
    type=_EXISTING_FILE,
    required=True,
    multiple=True,
    help="PEM certificate(s) of the TSAs to trust (repeatable).",
)
@click.option(
    "--ca-cert",
    "ca_cert_files",
    type=_EXISTING_FILE,
    required=True,
    multiple=True,
    help="CA the TSA certificate chains to: its root, and any intermediate (repeatable).",
)
@click.option("--data", "data_file", type=_EXISTING_FILE, required=True, help="The stamped file.")
@click.option(
    "--in", "reply_file", type=_EXISTING_FILE, required=True, help="Reply or token (DER)."
)
@click.option("--hash", "hash_alg", type=_HASHES, default="sha256", show_default=True)
@reports
def verify(
    tsa_cert_files: tuple[Path, ...],
    ca_cert_files: tuple[Path, ...],
    data_file: Path,
    reply_file: Path,
    hash_alg: str,
    as_json: bool,
) -> None:
    """Verify that a time-stamp reply or token stamps FILE; exit 1 with the reason if not.

    \b
    Example:
      exchange tsa verify --tsa-cert tsa/tsa.cert.pem --ca-cert ca/ca.cert.pem \\
          --data report.pdf --in report.pdf.tsr
    """
    info = verify_timestamp_token(
        reply_file.read_bytes(),
        digest=digest_of(data_file.read_bytes(), hash_alg),
        tsa_certs=_certificates(tsa_cert_files),
        ca_certs=_certificates(ca_cert_files),
        hash_alg=hash_alg,
    )
    _print({"verified": "OK", **_describe(info)}, as_json)


add_check_config(
    group, load_tsa_config, "time-stamping authority", lambda s: [(("dir",), s.dir, "directory")]
)
