"""The registration workflow's commands, added to the existing ``central`` and ``server`` groups.

- ``exchange server register``: sign a registration request with the server's authentication key
  and its owner's signing key, send it to the central server, print the request id.
- ``exchange server registration-status``: ask the central server what became of a request.
- ``exchange central registration list | approve | reject``: the central server's operator
  decides; these act on the registry database directly, and a running central server publishes
  the new global configuration within a second of an approval.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import click

from exchange.central.app import load_central_config
from exchange.central.registration import (
    RegistrationRequest,
    RegistrationStore,
    StoredRequest,
    new_request,
    sign_registration,
)
from exchange.central.registry import Registry
from exchange.cli.central import config_option
from exchange.cli.central import group as central_group
from exchange.cli.common import console, markup_text, print_json, reports
from exchange.cli.server import group as server_group
from exchange.cli.server import run_async
from exchange.errors import ClientError, ConfigurationError, NetworkError
from exchange.globalconf.document import valid_address
from exchange.protocol.jws import Signer
from exchange.server.config import ServerConfig, load_server_config
from exchange.trust.keys import fingerprint, load_certificate, load_private_key

_TIMEOUT = aiohttp.ClientTimeout(total=30)

# --- the security server's side ----------------------------------------------------------------


def build_registration(
    config: ServerConfig, address: str | None, passphrase: bytes | None, now: int
) -> tuple[RegistrationRequest, bytes]:
    """The signed request body for the server ``config`` describes (reads its keys)."""
    signing = [s for s in config.signing if s.member == config.owner]
    if not signing:
        raise ConfigurationError(
            f"{config.path}: no signing key for the owner {config.owner} in [[keys.signing]]"
        )
    address = address or f"{config.provider.host}:{config.provider.port}"
    if not valid_address(address):
        raise ConfigurationError(f"invalid address {address!r}: expected host:port")
    auth = Signer(load_private_key(config.auth_key, passphrase), load_certificate(config.auth_cert))
    member = Signer(load_private_key(signing[0].key, passphrase), load_certificate(signing[0].cert))
    clients = [c.id for c in config.clients if c.id.member == config.owner]
    request = new_request(config.server_id, address, clients, auth.cert, member.cert, now)
    return request, sign_registration(request, auth, member)


async def submit_registration(central_url: str, body: bytes) -> dict[str, Any]:
    """POST a signed request to ``central_url``/registration; the answer, or the refusal raised."""
    url = central_url.rstrip("/") + "/registration"
    headers = {"Content-Type": "application/json"}
    try:
        async with (
            aiohttp.ClientSession(timeout=_TIMEOUT) as session,
            session.post(url, data=body, headers=headers) as response,
        ):
            return _answer(url, response.status, await response.read())
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NetworkError(f"cannot reach the central server at {url}: {exc}") from None


async def registration_status(central_url: str, request_id: str) -> dict[str, Any]:
    url = f"{central_url.rstrip('/')}/registration/{request_id}"
    try:
        async with (
            aiohttp.ClientSession(timeout=_TIMEOUT) as session,
            session.get(url) as response,
        ):
            return _answer(url, response.status, await response.read())
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NetworkError(f"cannot reach the central server at {url}: {exc}") from None


def _answer(url: str, status: int, raw: bytes) -> dict[str, Any]:
    import orjson

    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise NetworkError(
            f"{url} answered {status} without a JSON object; is it the central server?"
        )
    if status >= 400:
        raise ClientError(
            f"the central server refused: {body.get('type')}: {body.get('message')}",
            code=str(body.get("type") or "Client.InvalidRegistrationRequest"),
        )
    return body


_server_config = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The security server's server.toml.",
)
_central_url = click.option(
    "--central-url", required=True, help="The central server's base URL, e.g. http://HOST:4000."
)


@server_group.command("register")
@_server_config
@_central_url
@click.option("--address", help="host:port peers reach the provider at (default from config).")
@reports
def register_cmd(config_path: Path, central_url: str, address: str | None, as_json: bool) -> None:
    """Ask the central server to register this security server, its authentication certificate
    and its owner's client subsystems. Signed with the auth key and the owner's signing key
    (passphrase from the environment variable the config names).

    \b
    Example:
      exchange server register --config ss-moi/server.toml --central-url http://127.0.0.1:4000
    """
    import os

    config = load_server_config(config_path)
    value = os.environ.get(config.passphrase_env)
    passphrase = value.encode() if value else None
    request, body = build_registration(config, address, passphrase, int(time.time()))
    answer: dict[str, Any] = {}

    async def main() -> None:
        answer.update(await submit_registration(central_url, body))

    run_async(main())
    request_id = answer.get("id")
    next_steps = [
        f"exchange central registration approve --config central.toml {request_id}",
        f"exchange server registration-status --config {config_path} --central-url {central_url} "
        f"{request_id}",
    ]
    if as_json:
        print_json(
            {
                "id": request_id,
                "status": answer.get("status"),
                "server": str(request.server),
                "address": request.address,
                "clients": [str(c) for c in request.clients],
                "auth_fingerprint": fingerprint(request.auth_cert),
                "central_url": central_url,
                "next": next_steps,
            }
        )
        return
    console.print(
        f"registration request [bold]{markup_text(answer.get('id'))}[/bold] for "
        f"{request.server} ({markup_text(request.address)}) is "
        f"{markup_text(answer.get('status'))}",
        markup=True,
    )
    console.print("next: the central server's operator runs")
    console.print(f"  {next_steps[0]}")
    console.print(f"then check: {next_steps[1]}")


@server_group.command("registration-status")
@_server_config
@_central_url
@click.argument("request_id")
@reports
def registration_status_cmd(
    config_path: Path, central_url: str, request_id: str, as_json: bool
) -> None:
    """Show whether a registration request is pending, approved or rejected.

    \b
    Example:
      exchange server registration-status --config ss-moi/server.toml \\
          --central-url http://127.0.0.1:4000 1a2b3c4d
    """
    load_server_config(config_path)
    answer: dict[str, Any] = {}

    async def main() -> None:
        answer.update(await registration_status(central_url, request_id))

    run_async(main())
    if as_json:
        print_json(
            {"id": request_id, "status": answer.get("status"), "reason": answer.get("reason")}
        )
        return
    reason = f": {answer['reason']}" if answer.get("reason") else ""
    console.print(f"registration request {request_id} is {answer.get('status')}{reason}")


# --- the central server's operator -------------------------------------------------------------


@central_group.group("registration")
def registration() -> None:
    """Registration requests from security servers: list, approve, reject.

    \b
    Example:
      exchange central registration list --config central.toml
      exchange central registration approve --config central.toml 1a2b3c4d
      exchange central registration reject --config central.toml 1a2b3c4d --reason "unknown"
    """


@registration.command("list")
@config_option
@click.option("--all", "include_decided", is_flag=True, help="Also approved and rejected ones.")
@reports
def list_cmd(config_path: Path, as_json: bool, include_decided: bool) -> None:
    """List pending registration requests (all with --all).

    \b
    Example:
      exchange central registration list --config central.toml
    """
    config = load_central_config(config_path)
    with RegistrationStore.open(config.db_path) as store:
        requests = store.requests(include_decided=include_decided)
    if as_json:
        print_json([r.to_dict() for r in requests])
        return
    if not requests:
        console.print("no pending registration requests" if not include_decided else "none")
        return
    for r in requests:
        _print_request(r)


def _print_request(r: StoredRequest) -> None:
    received = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(r.received_at))
    reason = f": {r.reason}" if r.reason else ""
    console.print(
        f"[bold]{markup_text(r.id)}[/bold]  {markup_text(f'{r.status}{reason}')}",
        markup=True,
    )
    console.print(f"  server     {r.server} at {r.address}")
    console.print(f"  clients    {', '.join(str(c) for c in r.clients) or '-'}")
    console.print(f"  auth cert  SHA-256 {r.auth_fingerprint}")
    console.print(f"  received   {received}")


@registration.command("approve")
@config_option
@click.argument("request_id")
@reports
def approve_cmd(config_path: Path, request_id: str, as_json: bool) -> None:
    """Register the server, its auth certificate and clients a pending request asks for.

    \b
    Example:
      exchange central registration approve --config central.toml 1a2b3c4d
    """
    config = load_central_config(config_path)
    with (
        RegistrationStore.open(config.db_path) as store,
        Registry.open(config.db_path) as registry,
    ):
        stored = store.approve(request_id, registry, int(time.time()))
        version = registry.version()
    if as_json:
        print_json({**stored.to_dict(), "registry_version": version})
        return
    console.print(
        f"approved {stored.id}: {stored.server} at {stored.address} "
        f"(registry version {version}); the next global configuration includes it"
    )


@registration.command("reject")
@config_option
@click.argument("request_id")
@click.option("--reason", required=True, help="Why; the security server's operator sees it.")
@reports
def reject_cmd(config_path: Path, request_id: str, reason: str, as_json: bool) -> None:
    """Reject a pending request; nothing is registered.

    \b
    Example:
      exchange central registration reject --config central.toml 1a2b3c4d --reason "not ours"
    """
    config = load_central_config(config_path)
    with RegistrationStore.open(config.db_path) as store:
        stored = store.reject(request_id, reason, int(time.time()))
    if as_json:
        print_json(stored.to_dict())
        return
    console.print(f"rejected {stored.id} ({stored.server}): {reason}")
