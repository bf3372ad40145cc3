"""``exchange server``: create, run and inspect a security server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click
from cryptography import x509

from exchange import sdnotify
from exchange.cli.checkconfig import add_check_config
from exchange.cli.common import (
    ExchangeGroup,
    console,
    handle_errors,
    markup_text,
    print_json,
    reports,
)
from exchange.errors import ExchangeError
from exchange.identifiers import parse_member, parse_security_server, parse_service, parse_subsystem
from exchange.oplog import configure_logging
from exchange.server.config import DEFAULT_STATUS_PORT, ServerConfig, load_server_config


@click.group("server", cls=ExchangeGroup)
def group() -> None:
    """Run a ministry's security server.

    \b
    Example:
      exchange server init --dir ss-moi --server PS/GOV/MOI/ss1 --anchor anchor.json --ca-dir ca
      exchange server run --config ss-moi/server.toml
    """


@group.command("init")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(path_type=Path),
    help="New directory for this server.",
)
@click.option(
    "--server",
    "server_id",
    required=True,
    help="Security server id INSTANCE/CLASS/CODE/SERVERCODE.",
)
@click.option(
    "--anchor",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Anchor file from the central server.",
)
@click.option(
    "--ca-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Issue certificates from this CA now (otherwise CSRs are written).",
)
@click.option(
    "--member", "members", multiple=True, help="Another member this server signs for (repeatable)."
)
@click.option(
    "--client", "clients", multiple=True, help="Client subsystem hosted here (repeatable)."
)
@click.option(
    "--service",
    "services",
    multiple=True,
    help="SERVICE_ID=URL of a provided service (repeatable).",
)
@click.option(
    "--policy-dir",
    type=click.Path(path_type=Path),
    help="Directory of this provider's policy TOML files.",
)
@click.option("--consumer-port", default=8080, show_default=True)
@click.option("--provider-port", default=8443, show_default=True)
@click.option(
    "--status-port",
    default=DEFAULT_STATUS_PORT,
    show_default=True,
    help="Port of /health and /metrics (bound to 127.0.0.1).",
)
@reports
def init_cmd(
    directory: Path,
    server_id: str,
    anchor: Path,
    ca_dir: Path | None,
    members: tuple[str, ...],
    clients: tuple[str, ...],
    services: tuple[str, ...],
    policy_dir: Path | None,
    consumer_port: int,
    provider_port: int,
    status_port: int,
    as_json: bool,
) -> None:
    """Create keys, certificates (or CSRs), the anchor and server.toml in a new directory.

    \b
    Example:
      exchange server init --dir ss-palpost --server PS/GOV/PALPOST/ss1 \\
          --anchor anchor.json --ca-dir ca --client PS/GOV/PALPOST/unified-window
    """
    from exchange.server.setup import init_server
    from exchange.trust.ca import CertificateAuthority

    ca = CertificateAuthority.load(ca_dir) if ca_dir else None
    parsed_services = []
    for item in services:
        sid, sep, url = item.partition("=")
        if not sep:
            raise click.BadParameter("use SERVICE_ID=URL", param_hint="--service")
        parsed_services.append((parse_service(sid), url))
    record = None
    if ca_dir is not None:
        from exchange.trust.revocation import record_in_ca_dir

        def record(cert: x509.Certificate, profile: str) -> None:
            record_in_ca_dir(ca_dir, cert, profile)

    result = init_server(
        directory,
        parse_security_server(server_id),
        anchor,
        members=[parse_member(m) for m in members],
        clients=[parse_subsystem(c) for c in clients],
        services=parsed_services,
        ca=ca,
        consumer_port=consumer_port,
        provider_port=provider_port,
        status_port=status_port,
        policy_dir=policy_dir,
        record=record,
    )
    request_certs = (
        f"exchange server request-certs --config {result.config} --ca-url CA_URL "
        "--token-file TOKEN_FILE"
    )
    register = f"exchange server register --config {result.config} --central-url CENTRAL_URL"
    run = f"exchange server run --config {result.config}"
    if as_json:
        print_json(
            {
                "server": server_id,
                "config": result.config,
                "auth_cert": result.auth_cert,
                "signing_certs": {str(m): path for m, path in result.signing_certs.items()},
                "certificates_issued": not result.csrs,
                "csrs": result.csrs,
                "next": [*([request_certs] if result.csrs else []), register, run],
            }
        )
        return
    console.print(f"created [bold]{markup_text(result.config)}[/bold]", markup=True)
    for path in result.csrs:
        console.print(f"certificate request: {path}  (have it signed by an approved CA)")
    if result.csrs:
        console.print(f"next: {request_certs}")
        console.print(
            "  (TOKEN_FILE: the enrolment token the CA's operator issued for this server)"
        )
        console.print("  (or: exchange ca sign-csr ... and exchange server import-cert ...)")
    console.print(f"then: {register}")
    console.print(f"and once approved: {run}")


@group.command("run")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--ready-line", is_flag=True, help="Print one JSON line with the bound ports when serving."
)
@handle_errors
def run_cmd(config_path: Path, ready_line: bool) -> None:
    """Run the security server until SIGINT or SIGTERM.

    On SIGTERM (or SIGINT) it stops taking exchanges, finishes those in flight (at most
    [limits] drain_timeout, 30 s), signs and time-stamps the last tree head, then exits.

    \b
    Example:
      exchange server run --config ss-moi/server.toml
    """
    from exchange.server.config import load_server_config
    from exchange.server.core import SecurityServer
    from exchange.server.ownkeys import passphrase_from_env
    from exchange.server.runtime import remove_runtime, write_runtime

    config = load_server_config(config_path)
    configure_logging(config.logging)

    async def main() -> None:
        server = SecurityServer(config, passphrase=passphrase_from_env(config))
        await server.start()
        tune_collector()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: _reload(server))
        loop.add_signal_handler(signal.SIGUSR1, lambda: _stamp(server))
        ports = {
            "consumer_port": server.consumer_port,
            "provider_port": server.provider_port,
            "consumer_tls_port": server.consumer_tls_port,
            "status_port": server.status_port,
        }
        write_runtime(config, ports)
        serving = (
            f"security server {config.server_id} serving: "
            f"consumer http://{config.consumer.host}:{server.consumer_port}, "
            f"provider {config.provider.host}:{server.provider_port}"
        )
        if ready_line:
            print("READY " + json.dumps(ports), flush=True)
        else:
            console.print(f"{serving} (Ctrl-C stops)")
        sdnotify.ready(serving)
        try:
            await stop.wait()
        finally:
            sdnotify.stopping()
            try:
                await server.drain()
            finally:
                await server.stop()
                remove_runtime(config)

    profile = os.environ.get("EXCHANGE_PROFILE")
    if profile:
        import cProfile

        with cProfile.Profile() as prof:
            run_async(main())
        prof.dump_stats(profile.replace("%s", config.server_id.member_code))
    else:
        run_async(main())


@group.command("status")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@reports
def status_cmd(config_path: Path, as_json: bool) -> None:
    """Show the server's identity, certificates and stored global configuration.

    \b
    Example:
      exchange server status --config ss-moi/server.toml
    """
    from exchange.server.status import server_status

    status = server_status(config_path)
    if as_json:
        print_json(status)
        return
    for line in status_lines(status):
        console.print(line, markup=False, highlight=False)


def status_lines(value: Any, indent: str = "") -> list[str]:
    """``server status`` as indented ``key: value`` lines: a nested mapping is indented under its
    key, a list is one ``- item`` line per item, a missing value is ``-``."""
    lines: list[str] = []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        label = f"{indent}{key}:" if isinstance(value, dict) else f"{indent}-"
        if isinstance(item, dict | list) and item:
            lines.append(label)
            lines += status_lines(item, indent + "  ")
        else:
            shown = "-" if item is None or item == {} or item == [] else item
            lines.append(f"{label} {shown}")
    return lines


_RELOADS: set[asyncio.Future[Any]] = set()


def _stamp(server: Any) -> None:
    """SIGUSR1: sign a tree head over the whole log and time-stamp it now (evidence export)."""
    task = asyncio.ensure_future(server.stamper.stamp_now())
    _RELOADS.add(task)
    task.add_done_callback(_RELOADS.discard)


def _reload(server: Any) -> None:
    """SIGHUP, sent by ``exchange server reload`` or systemd's ``ExecReload``: re-read
    ``server.toml`` (keys, services, clients, policy, logging, limits; see
    :mod:`exchange.server.reload`); a refusal keeps the configuration in force. The outcome goes
    to ``reload.json`` for the command. systemd is told the reload started and, once it is over
    (done or refused), that the server is ready again."""
    import logging
    import time

    from exchange.server.reload import write_outcome

    async def reload() -> None:
        log = logging.getLogger("exchange.server")
        sdnotify.reloading()
        try:
            done = await server.reload()
        except Exception as exc:
            reason = exc.message if isinstance(exc, ExchangeError) else f"{exc}"
            log.error("reload refused, the configuration in force stays: %s", reason)
            with contextlib.suppress(OSError):
                write_outcome(server.config.state_dir, time.time(), False, reason)
        else:
            # applied: nothing that fails after this point makes it a refusal
            try:
                configure_logging(server.config.logging)
            except Exception as exc:
                log.error("reload applied, but its [logging] could not be set up: %s", exc)
            try:
                write_outcome(server.config.state_dir, time.time(), True, done)
            except OSError as exc:
                log.error("reload applied, but its outcome could not be written: %s", exc)
        finally:
            sdnotify.ready()

    task = asyncio.ensure_future(reload())
    _RELOADS.add(task)
    task.add_done_callback(_RELOADS.discard)


GC_YOUNG_THRESHOLD = 10_000
"""Container objects allocated (net of those freed) before the cyclic collector runs: nearly
every object an exchange makes is freed by its reference count, so Python's default of 700
ran the collector dozens of times a second under load, each time walking the exchanges in
flight (bench/README.md, "The cyclic garbage collector")."""


def tune_collector() -> None:
    """Once the server is up: what start-up built (modules, configuration, keys, certificates)
    lives as long as the server, so it leaves the collector's generations for good and each
    full collection walks only what came after; and the youngest generation waits for
    :data:`GC_YOUNG_THRESHOLD` allocations."""
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def run_async(coro: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where available (20-25% faster on our machines: the reference costs in
    bench/README.md)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _inputs(config: ServerConfig) -> list[tuple[tuple[str | int, ...], Path | None, str]]:
    """What ``server.toml`` names that must exist before the server can start."""
    inputs: list[tuple[tuple[str | int, ...], Path | None, str]] = [
        (("anchor",), config.anchor, "file"),
        (("keys", "auth_key"), config.auth_key, "file"),
        (("keys", "auth_cert"), config.auth_cert, "file"),
        (("policy", "dir"), config.policy_dir, "directory"),
    ]
    for i, signing in enumerate(config.signing):
        inputs += [
            (("keys", "signing", i, "key"), signing.key, "file"),
            (("keys", "signing", i, "cert"), signing.cert, "file"),
        ]
    for i, client in enumerate(config.clients):
        inputs += [(("clients", i, "is_certs"), cert, "file") for cert in client.is_certs]
    return inputs


add_check_config(group, load_server_config, "security server", _inputs)
