"""Helpers for the integration tests that try to break the guarantees of docs/design.md §5.

- :func:`publish` makes the central server publish its registry now and every running security
  server fetch it (instead of waiting for the publisher's change check).
- :func:`launch` adds one more security server to the shared federation, optionally after
  ``prepare`` changed its files (swapped certificates) before it loads them.
- :func:`assert_xroad_error`, :func:`logged` and :func:`assert_serving` check the three things
  every refusal test checks: the exact X-Road error, the record in the message log, and that the
  server keeps serving.

Nothing here is mocked: these are the real servers of :mod:`tests.integration.conftest`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import sqlite3
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from cryptography import x509

from exchange.audit.bundle import LogFiles, export_bundle
from exchange.audit.trustdir import export_trust
from exchange.central.app import PUBLISHER_KEY
from exchange.identifiers import MemberId, SecurityServerId, ServiceId, SubsystemId
from exchange.messagelog.query import RecordView, query_records
from exchange.messagelog.store import open_readonly
from exchange.protocol.jws import Signer
from exchange.server import tls
from exchange.server.config import ServerConfig, load_server_config
from exchange.server.core import SecurityServer
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import fingerprint, generate_key, save_certificate, save_private_key
from tests.integration.conftest import PALPOST, WINDOW, Net
from tests.integration.rogue import RogueClient, RogueProvider, sign_request

PERSONS = "/r1/PS/GOV/MOI/population-registry/persons"
ECHO = "/r1/PS/GOV/MOI/population-registry/echo"
MISC = "/r1/PS/GOV/MOI/population-registry/misc"
TEXT = "/r1/PS/GOV/MOI/population-registry/text"

Prepare = Callable[[ServerConfig], None]


def new_id(prefix: str) -> str:
    """A fresh X-Road-Id, readable in logs."""
    return f"{prefix}-{uuid.uuid4()}"


async def publish(net: Net) -> None:
    """Publish the registry's current content now; every running server fetches it."""
    await net.central_runner.app[PUBLISHER_KEY].regenerate()
    for server in net.servers.values():
        if server.poller is not None:
            await server.poller.fetch_once()


async def launch(
    net: Net,
    name: str,
    server_id: SecurityServerId,
    *,
    clients: list[SubsystemId],
    services: list[tuple[ServiceId, str]] | None = None,
    policy: str | None = None,
    extra: dict[str, Any] | None = None,
    clock: Callable[[], float] | None = None,
    prepare: Prepare | None = None,
) -> SecurityServer:
    """Add, register and start one more security server; ``prepare`` runs before it loads."""
    server = await net.add_server(
        name,
        server_id,
        clients=clients,
        services=services or [],
        policy=policy,
        extra=extra,
        clock=clock,
        start=False,
    )
    if prepare is not None:
        prepare(server.config)
        config = load_server_config(server.config.path)
        server = SecurityServer(config, clock=clock) if clock else SecurityServer(config)
        net.servers[name] = server
    await publish(net)
    await server.start()
    return server


def replace_auth_cert(
    config: ServerConfig,
    issue: Callable[[Any], x509.Certificate],
) -> tuple[str, str]:
    """Give the server a new authentication key and the certificate ``issue(public_key)`` makes;
    returns the (old, new) certificate fingerprints."""
    old = fingerprint(x509.load_pem_x509_certificate(config.auth_cert.read_bytes()))
    key = generate_key()
    cert = issue(key.public_key())
    save_private_key(config.auth_key, key, None)
    save_certificate(config.auth_cert, cert)
    return old, fingerprint(cert)


def foreign_ca(root: Path) -> CertificateAuthority:
    """A CA the global configuration does not approve (made once per directory)."""
    directory = root / "foreign-ca"
    if (directory / "ca.cert.pem").exists():
        return CertificateAuthority.load(directory)
    return CertificateAuthority.create(directory, "Foreign CA")


def expired(now: dt.datetime | None = None) -> dt.datetime:
    """A ``not_before`` that, with ``days=1``, makes a certificate expired a day ago."""
    return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=2)


def assert_xroad_error(
    status: int, headers: Mapping[str, str], body: bytes, code: str, http_status: int
) -> dict[str, Any]:
    """The response is an exchange-layer error: header, JSON body and status all say ``code``."""
    assert (status, headers.get("X-Road-Error")) == (http_status, code), body[:500]
    doc = orjson.loads(body)
    assert isinstance(doc, dict)
    assert doc["type"] == code
    assert set(doc) == {"type", "message", "detail"}
    uuid.UUID(doc["detail"])
    return doc


def logged(
    server: SecurityServer, message_id: str, side: str, code: str | None = None
) -> RecordView:
    """The one record of ``message_id`` on ``side`` in ``server``'s message log."""
    views = records(server, message_id, side)
    assert len(views) == 1, (
        f"{len(views)} {side} records of {message_id} in {server.config.log_path}"
    )
    view = views[0]
    error = view.entry.get("error")
    if code is None:
        assert view.status == "ok", error
    else:
        assert view.status == "error"
        assert isinstance(error, dict) and error["type"] == code, error
    return view


def records(server: SecurityServer, message_id: str, side: str) -> list[RecordView]:
    """Every record of ``message_id`` on ``side`` in ``server``'s log, oldest first."""
    views = query_records(server.config.log_path, message_id=message_id)
    return [v for v in views if v.side == side]


def record_of_response(server: SecurityServer, response_jws: str) -> dict[str, Any]:
    """The provider record of the exchange answered with ``response_jws``: found even when the
    request's own message id could not be trusted (a forged signature) or was absent."""
    conn = open_readonly(server.config.log_path)
    try:
        rows = conn.execute(
            "SELECT entry FROM records WHERE side = 'provider' ORDER BY seq DESC LIMIT 500"
        ).fetchall()
    finally:
        conn.close()
    found: list[dict[str, Any]] = [
        e for (raw,) in rows if (e := orjson.loads(raw)).get("response_jws") == response_jws
    ]
    assert len(found) == 1, f"{len(found)} records answered with this response"
    return found[0]


async def assert_serving(net: Net, name: str = "palpost", path: str = PERSONS) -> None:
    """A normal exchange through ``name`` still succeeds."""
    status, headers, body = await net.call(name, f"{path}/123456782")
    assert status == 200, body[:500]
    assert "X-Road-Error" not in headers
    assert orjson.loads(body)["national_id"] == "123456782"


def palpost_peer_context(net: Net, target: SecurityServer) -> ssl.SSLContext:
    """The TLS context of PALPOST's server's authentication key, for ``target``'s provider port
    (a raw connection of a registered peer: the test writes its frames itself)."""
    palpost = net.servers["palpost"]
    conf = target.trusted.current
    assert conf is not None
    return tls.peer_client_context(
        palpost.config.auth_cert, palpost.config.auth_key, None, conf.ca_certs()
    )


async def hardly_reading_peer(
    net: Net, target: SecurityServer
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection as PALPOST's server whose socket takes in almost nothing: a peer that
    reads (next to) none of its answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", target.provider_port))
    context = palpost_peer_context(net, target)
    return await asyncio.open_connection(sock=sock, ssl=context, server_hostname="")


def as_registered_peer(net: Net, target: SecurityServer) -> RogueClient:
    """A connection to ``target``'s provider port made with PALPOST's server's own keys: a
    registered peer, under the test's control."""
    palpost = net.servers["palpost"]
    conf = target.trusted.current
    assert conf is not None
    return RogueClient(
        target,
        auth_cert=palpost.config.auth_cert,
        auth_key=palpost.config.auth_key,
        cas=conf.ca_certs(),
        presented=[palpost.signers[PALPOST].cert],
        claimed_server=palpost.config.server_id,
    )


def copy_log(server: SecurityServer, target: Path) -> Path:
    """A consistent copy of a running server's log (SQLite online backup)."""
    source = open_readonly(server.config.log_path)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return target


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """A service's aiohttp app on 127.0.0.1 (a free port) while the block runs: its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def window_request(net: Net, service: ServiceId, server: SecurityServerId, query: str = "") -> str:
    """The post-office window's request for ``service`` at ``server`` (service root, no body),
    signed with PALPOST's key as its consumer security server would sign it."""
    token, _ = sign_request(
        net.servers["palpost"].signers[PALPOST],
        client=WINDOW,
        service=service,
        security_server=server,
        path="",
        query=query,
    )
    return token


async def until(condition: Callable[[], object], what: str, tries: int = 500) -> None:
    """Wait (bounded: ``tries`` turns of 10 ms) until ``condition()`` holds; a wait for a
    server's state to change, not a timing assertion."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


@contextlib.asynccontextmanager
async def registered_rogue(
    net: Net, member: MemberId, subsystem: SubsystemId
) -> AsyncIterator[tuple[RogueProvider, Signer]]:
    """A :class:`RogueProvider` for ``member``'s server ``ss1``, registered in the global
    configuration as the provider of ``subsystem``, with a signing key of ``member`` that it
    presents: a registered peer that answers as the test says."""
    server = SecurityServerId(*member.parts, "ss1")
    directory = net.root / f"rogue-{member.member_code.lower()}"
    auth_key = generate_key()
    auth_cert = net.ca.issue_auth_cert(auth_key.public_key(), server)
    save_private_key(directory / "auth.key.pem", auth_key)
    save_certificate(directory / "auth.cert.pem", auth_cert)
    sign_key = generate_key()
    signer = Signer(sign_key, net.ca.issue_sign_cert(sign_key.public_key(), member))
    conf = net.servers["palpost"].trusted.current
    assert conf is not None
    provider = RogueProvider(
        server,
        auth_cert=directory / "auth.cert.pem",
        auth_key=directory / "auth.key.pem",
        cas=conf.ca_certs(),
        presented=[signer.cert],
    )
    port = await provider.start()
    with net.registry() as reg:
        reg.add_member(member, f"Rogue {member.member_code}")
        reg.add_subsystem(subsystem)
        reg.add_server(server, f"127.0.0.1:{port}", [fingerprint(auth_cert)])
        reg.add_server_client(server, subsystem)
    await publish(net)
    try:
        yield provider, signer
    finally:
        await provider.close()


async def export_bundle_of(server: SecurityServer, message_id: str, out: Path) -> Path:
    """The evidence bundle of ``message_id`` as ``server`` logged it (the CLI's plain values:
    its log files and the approved CAs of its global configuration)."""
    conf = server.trusted.current
    assert conf is not None
    files = LogFiles(server.config.log_path, server.config.archive_dir)
    return await export_bundle(files, message_id, out, cas=conf.ca_certs())


def export_trust_of(server: SecurityServer, out: Path) -> Path:
    """The trust folder ``exchange audit trust-export --config`` writes for ``server``."""
    conf = server.trusted.current
    assert conf is not None
    return export_trust(
        out,
        cas=conf.ca_certs(),
        tsas=conf.tsa_certs(),
        anchor=server.config.anchor,
        owner=server.config.server_id,
    )


class Clock:
    """Wall-clock time moved by ``offset`` seconds: a server's clock that a test sets ahead."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset
