"""Defences of THREAT_MODEL.md that no single-request test shows, tried against real servers.

- EXM/1 order and kinds: a REQUEST before HELLO, or a frame kind a consumer never sends, ends
  the connection with an unsigned ERROR frame on stream 0; other connections go on.
- The in-flight cap: a connection that keeps sending without reading answers is paused at 512
  requests in flight, and resumed when they are answered.
- The TLS floor: TLS 1.0 and 1.1 are refused on the provider port.
- Replay protection survives a restart of the provider (the cache is seeded from the log).
- Listeners bind 127.0.0.1 unless the configuration says otherwise.
- Backend response headers are bounded; a configuration download larger than 32 MiB is refused
  and the held configuration stays.
- Unsigned ERROR frames from a provider are relayed only as provider-side refusals, and a
  malformed signed response is an inconsistent one. (Not yet for ERROR frames on stream 0: those
  cases are held to the same rule by ``peer.unsigned_refusal``.)

Each asserts the exact X-Road code and that the servers keep serving. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import ssl
import struct
import sys
import time
import tomllib
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import tomli_w
from aiohttp import web

from exchange.globalconf.anchor import Anchor
from exchange.globalconf.client import MAX_CONF_BYTES, GlobalConfDownloadError, GlobalConfPoller
from exchange.globalconf.verifier import TrustedGlobalConf
from exchange.identifiers import (
    ServiceId,
    parse_member,
    parse_security_server,
    parse_service,
    parse_subsystem,
)
from exchange.protocol.frames import Frame, FrameDecoder, FrameKind, encode_frame
from exchange.protocol.jws import Signer
from exchange.server import tls
from exchange.server.config import ServerConfig, load_server_config
from exchange.server.core import SecurityServer
from exchange.server.httpclient import MAX_HEADER_BYTES
from exchange.server.provider import ProviderConnection
from exchange.server.setup import init_server
from exchange.trust.keys import (
    fingerprint,
    generate_key,
    load_certificate,
    save_certificate,
    save_private_key,
)
from tests.integration.conftest import MOI, PALPOST, WINDOW, Net
from tests.integration.rogue import (
    MAX_FRAME,
    Incoming,
    RogueClient,
    RogueProvider,
    hello_frame,
    read_signed_response,
    sign_request,
    sign_response,
)
from tests.integration.support import (
    as_registered_peer,
    assert_serving,
    assert_xroad_error,
    launch,
    logged,
    new_id,
    publish,
    record_of_response,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

NAME = "moi-hardening"
HARD_SS = parse_security_server(f"{MOI}/ss-hardening")
SUBSYSTEM = parse_subsystem(f"{MOI}/hardening")
HARD = f"/r1/{SUBSYSTEM}"
INVALID = "Server.ServerProxy.InvalidMessage"
REPLAYED = "Server.ServerProxy.ReplayedMessage"
SECRET = "secret-header-content"


def _service(code: str) -> ServiceId:
    return parse_service(f"{SUBSYSTEM}/{code}")


# --- a provider of our own, with backends that misbehave in their headers ----------------------


async def _many_headers(request: web.Request) -> web.StreamResponse:
    headers = {f"X-Header-{i}": SECRET for i in range(250)}
    return web.json_response({"ok": True}, headers=headers)


async def _long_header(request: web.Request) -> web.StreamResponse:
    return web.json_response({"ok": True}, headers={"X-Long": SECRET + "x" * MAX_HEADER_BYTES})


def _header_backend() -> web.Application:
    app = web.Application()
    app.router.add_get("/many-headers", _many_headers)
    app.router.add_get("/long-header", _long_header)
    return app


def _policy() -> str:
    grants = "".join(
        f"""
[[grant]]
id = "window-{code}"
client = "{WINDOW}"
service = "{SUBSYSTEM}/{code}"
methods = ["*"]
"""
        for code in ("echo", "many-headers", "long-header")
    )
    return f'provider = "{MOI}"\n{grants}'


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def hardened(net: Net) -> AsyncIterator[SecurityServer]:
    """MOI's server for these tests: an echo service, and backends with too many or too long
    response headers."""
    runner = web.AppRunner(_header_backend())
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        bad = f"http://127.0.0.1:{runner.addresses[0][1]}"
        services = [
            {"id": f"{SUBSYSTEM}/echo", "url": f"{net.backend_url}/echo"},
            {"id": f"{SUBSYSTEM}/many-headers", "url": f"{bad}/many-headers"},
            {"id": f"{SUBSYSTEM}/long-header", "url": f"{bad}/long-header"},
        ]
        server = await launch(
            net,
            NAME,
            HARD_SS,
            clients=[SUBSYSTEM],
            policy=_policy(),
            extra={"services": services},
        )
        yield server
    finally:
        server_now = net.servers.pop(NAME, None)
        if server_now is not None:
            await server_now.stop()
        await runner.cleanup()


async def _assert_hardened_serving(net: Net) -> None:
    status, _, body = await net.call("palpost", f"{HARD}/echo/still-here")
    assert status == 200, body
    assert orjson.loads(body)["path"] == "/echo/still-here"


def _attacker(net: Net, target: SecurityServer) -> RogueClient:
    """A client holding PALPOST's server's authentication key, a registered peer."""
    return as_registered_peer(net, target)


def _echo_request(net: Net) -> str:
    token, _ = sign_request(
        net.servers["palpost"].signers[PALPOST],
        client=WINDOW,
        service=_service("echo"),
        security_server=HARD_SS,
        path="/x",
    )
    return token


def _provider_side(server: SecurityServer, client: RogueClient) -> ProviderConnection:
    """The provider's end of ``client``'s one connection."""
    conn = client.pool.connections[0]
    assert conn is not None and conn.transport is not None
    ours = conn.transport.get_extra_info("sockname")
    (found,) = [
        c
        for c in server.provider_connections
        if c.transport is not None and c.transport.get_extra_info("peername") == ours
    ]
    return found


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Let the event loop run until ``condition`` holds (both ends live in this loop)."""
    try:
        async with asyncio.timeout(5):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


# --- EXM/1: frame order and kinds ---------------------------------------------------------------


def _unknown_kind_frame(kind: int) -> bytes:
    meta = b"{}"
    return struct.pack("!IIBI", 9 + len(meta), 1, kind, len(meta)) + meta


def _before_hello(net: Net) -> bytes:
    return encode_frame(1, FrameKind.REQUEST, {"jws": _echo_request(net)})


def _after_hello(frame: bytes) -> Callable[[Net], bytes]:
    def make(net: Net) -> bytes:
        palpost = net.servers["palpost"]
        hello = hello_frame(palpost.config.server_id, [palpost.signers[PALPOST].cert])
        return hello + frame

    return make


def _hello_with_certs(net: Net, count: int) -> bytes:
    palpost = net.servers["palpost"]
    return hello_frame(palpost.config.server_id, [palpost.signers[PALPOST].cert] * count)


FRAME_ABUSE = [
    pytest.param(_before_hello, [], INVALID, 400, id="request-before-hello"),
    pytest.param(
        _after_hello(encode_frame(1, FrameKind.RESPONSE, {"jws": "a.b.c"})),
        [FrameKind.HELLO],
        INVALID,
        400,
        id="response-frame-from-a-consumer",
    ),
    pytest.param(
        _after_hello(encode_frame(0, FrameKind.ERROR, {"type": "Server.ServerProxy.X"})),
        [FrameKind.HELLO],
        INVALID,
        400,
        id="error-frame-from-a-consumer",
    ),
    # a validly signed request whose meta carries more than its JWS: 1 MiB of `{}` parses into
    # about 24 MiB held until the answer (red team: 40 such requests, +975 MiB at the provider)
    pytest.param(
        lambda net: _after_hello(
            encode_frame(1, FrameKind.REQUEST, {"jws": _echo_request(net), "pad": [{}] * 2**18})
        )(net),
        [FrameKind.HELLO],
        INVALID,
        400,
        id="request-meta-padded-beside-its-jws",
    ),
    # junk in HELLO's certificate list (Hello.from_meta): refused before anything is admitted
    pytest.param(
        lambda net: _hello_with_certs(net, 33),
        [],
        "Server.ProtocolError",
        502,
        id="hello-with-33-certificates",
    ),
    pytest.param(
        lambda net: encode_frame(0, FrameKind.HELLO, {"v": 1, "certs": ["not base64url DER!"]}),
        [],
        "Server.ProtocolError",
        502,
        id="hello-cert-not-der",
    ),
    pytest.param(
        lambda net: encode_frame(0, FrameKind.HELLO, {"v": 1, "certs": "a certificate"}),
        [],
        "Server.ProtocolError",
        502,
        id="hello-certs-not-a-list",
    ),
    # not an EXM/1 kind at all: the decoder refuses it (FrameError), before any HELLO is read
    pytest.param(
        lambda net: _unknown_kind_frame(9), [], "Server.ProtocolError", 502, id="unknown-kind"
    ),
]


async def _raw_session(net: Net, target: SecurityServer, data: bytes) -> list[Frame]:
    """Connect to ``target``'s provider port as PALPOST's server, send ``data`` as it is, and
    return every frame the provider sends until it closes the connection."""
    palpost = net.servers["palpost"]
    conf = target.trusted.current
    assert conf is not None
    ctx = tls.peer_client_context(
        palpost.config.auth_cert, palpost.config.auth_key, None, conf.ca_certs()
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", target.provider_port, ssl=ctx)
    try:
        writer.write(data)
        async with asyncio.timeout(5):
            received = await reader.read()  # to end of stream: the provider closes
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return FrameDecoder(MAX_FRAME).feed(received)


@pytest.mark.parametrize(("send", "before", "code", "status"), FRAME_ABUSE)
async def test_provider_refuses_frames_out_of_order_or_of_a_wrong_kind(
    net: Net,
    hardened: SecurityServer,
    caplog: pytest.LogCaptureFixture,
    send: Callable[[Net], bytes],
    before: list[FrameKind],
    code: str,
    status: int,
) -> None:
    bystander = _attacker(net, hardened)  # an open connection of the same peer, unaffected
    try:
        first, conn = await bystander.send(_echo_request(net))
        assert read_signed_response(first, conn)[0].status == 200
        with caplog.at_level(logging.WARNING, logger="exchange.server.provider"):
            frames = await _raw_session(net, hardened, send(net))
        assert [f.kind for f in frames] == [*before, FrameKind.ERROR]
        refusal = frames[-1]
        assert refusal.stream_id == 0
        assert (refusal.meta["type"], refusal.meta["status"]) == (code, status)
        assert any("protocol error from" in r.getMessage() for r in caplog.records)
        again, _ = await bystander.send(_echo_request(net))
        assert read_signed_response(again, conn)[0].status == 200
    finally:
        bystander.close()
    await _assert_hardened_serving(net)


async def test_a_peer_deregistered_while_connected_is_told_why_and_disconnected(
    net: Net, hardened: SecurityServer
) -> None:
    """When the configuration stops registering a connected peer's authentication certificate,
    the provider sends it an ERROR frame on stream 0 with ``SslAuthenticationFailed`` (403) and
    closes the connection; it serves the peer again once it is registered again."""
    palpost = net.servers["palpost"]
    conf = hardened.trusted.current
    assert conf is not None
    ctx = tls.peer_client_context(
        palpost.config.auth_cert, palpost.config.auth_key, None, conf.ca_certs()
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", hardened.provider_port, ssl=ctx)
    fp = fingerprint(load_certificate(palpost.config.auth_cert))
    try:
        writer.write(hello_frame(palpost.config.server_id, [palpost.signers[PALPOST].cert]))
        decoder = FrameDecoder(MAX_FRAME)
        frames: list[Frame] = []
        async with asyncio.timeout(5):
            while not frames:
                frames += decoder.feed(await reader.read(65536))
        assert [f.kind for f in frames] == [FrameKind.HELLO]
        with net.registry() as reg:
            reg.remove_auth_cert(palpost.config.server_id, fp)
        try:
            await publish(net)
            async with asyncio.timeout(5):
                rest = await reader.read()  # to end of stream: the provider closes
        finally:
            with net.registry() as reg:
                reg.add_auth_cert(palpost.config.server_id, fp)
            await publish(net)
        [refusal] = decoder.feed(rest)
        assert (refusal.kind, refusal.stream_id) == (FrameKind.ERROR, 0)
        assert (refusal.meta["type"], refusal.meta["status"]) == (
            "Server.ServerProxy.SslAuthenticationFailed",
            403,
        )
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    await _assert_hardened_serving(net)


# --- the in-flight cap per connection ----------------------------------------------------------

FLOOD = 600  # more than the cap of 512 requests in flight


async def test_a_flooding_connection_is_paused_and_others_are_served(
    net: Net, hardened: SecurityServer
) -> None:
    """Answers cannot complete while the log's write lock is held elsewhere, so every request
    stays in flight: the provider stops reading that connection past 512 of them, keeps serving
    other connections, and reads again once the answers went out."""
    flood, other = _attacker(net, hardened), _attacker(net, hardened)
    try:
        conn = await flood.pool.connection()  # HELLO exchanged
        provider_side = _provider_side(hardened, flood)
        lock = sqlite3.connect(hardened.config.log_path, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            pending = [conn.send({}, b"") for _ in range(FLOOD)]  # one coalesced write
            await _until(lambda: provider_side.paused, "the provider paused the connection")
            assert provider_side.transport is not None
            assert not provider_side.transport.is_reading()
            assert len(provider_side.tasks) > 512
            await other.pool.connection()  # another connection: handshake and HELLO answered
        finally:
            if lock.in_transaction:
                lock.execute("ROLLBACK")
            lock.close()
        async with asyncio.timeout(10):
            frames = await asyncio.gather(*pending)
        assert {read_signed_response(f, conn)[0].error_type for f in frames} == {INVALID}
        assert not provider_side.paused
        assert provider_side.transport is not None and provider_side.transport.is_reading()
        ok, _ = await flood.send(_echo_request(net))
        assert read_signed_response(ok, conn)[0].status == 200
    finally:
        flood.close()
        other.close()
    await _assert_hardened_serving(net)


# --- the TLS version floor ----------------------------------------------------------------------


def _old_tls_client(net: Net, version: ssl.TLSVersion) -> ssl.SSLContext:
    """PALPOST's server's valid client certificate, offering nothing newer than ``version``."""
    palpost = net.servers["palpost"]
    ctx = tls.peer_client_context(palpost.config.auth_cert, palpost.config.auth_key, None, [])
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 offers TLS < 1.2 only at level 0
    return ctx


async def _permissive_server(net: Net) -> asyncio.Server:
    """A TLS server that accepts TLS 1.0 and 1.1: the control that the client offers them."""
    moi = net.servers["moi"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(str(moi.config.auth_cert), str(moi.config.auth_key))

    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    return await asyncio.start_server(close, "127.0.0.1", 0, ssl=ctx)


@pytest.mark.parametrize(
    ("version", "name"),
    [
        pytest.param(ssl.TLSVersion.TLSv1_1, "TLSv1.1", id="tls1.1"),
        pytest.param(ssl.TLSVersion.TLSv1, "TLSv1", id="tls1.0"),
    ],
)
async def test_provider_port_refuses_tls_before_1_2(
    net: Net, version: ssl.TLSVersion, name: str
) -> None:
    """The client negotiates ``name`` with a server that allows it, then fails the handshake
    with the provider port."""
    ctx = _old_tls_client(net, version)
    control = await _permissive_server(net)
    try:
        port = control.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        assert writer.get_extra_info("ssl_object").version() == name
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    finally:
        control.close()
        await control.wait_closed()
    with pytest.raises(OSError):  # ssl.SSLError, or a reset after the server's alert
        _, writer = await asyncio.open_connection(
            "127.0.0.1", net.servers["moi"].provider_port, ssl=ctx
        )
        writer.close()  # reached only if the provider accepted the handshake
    await assert_serving(net)


# --- replay protection across a restart --------------------------------------------------------

RESTART_SS = parse_security_server(f"{MOI}/ss-restart")
RESTART_SUB = parse_subsystem(f"{MOI}/restart")


async def test_replay_is_refused_after_a_restart_of_the_provider(net: Net) -> None:
    """The replay cache is in memory; a restarted provider seeds it from its message log."""
    name = "moi-restart"
    echo = parse_service(f"{RESTART_SUB}/echo")
    policy = f"""
provider = "{MOI}"

[[grant]]
id = "window-restart"
client = "{WINDOW}"
service = "{echo}"
methods = ["GET"]
"""
    old = await launch(
        net,
        name,
        RESTART_SS,
        clients=[RESTART_SUB],
        services=[(echo, f"{net.backend_url}/echo")],
        policy=policy,
    )
    signer = net.servers["palpost"].signers[PALPOST]
    token, _ = sign_request(signer, client=WINDOW, service=echo, security_server=RESTART_SS)
    before = _attacker(net, old)
    try:
        frame, conn = await before.send(token)
        assert read_signed_response(frame, conn)[0].status == 200
    finally:
        before.close()
    await old.stop()
    restarted = net.servers[name] = SecurityServer(load_server_config(old.config.path))
    try:
        await restarted.start()
        assert (restarted.config.log_path, restarted.provider_port) == (
            old.config.log_path,
            old.provider_port,
        )
        after = _attacker(net, restarted)
        try:
            frame, conn = await after.send(token)
            response, body = read_signed_response(frame, conn)
            assert (response.error_type, response.status, body["type"]) == (REPLAYED, 409, REPLAYED)
            assert record_of_response(restarted, frame.meta["jws"])["error"]["type"] == REPLAYED
            token, _ = sign_request(signer, client=WINDOW, service=echo, security_server=RESTART_SS)
            fresh, _ = await after.send(token)
            assert read_signed_response(fresh, conn)[0].status == 200
        finally:
            after.close()
    finally:
        await net.servers.pop(name).stop()


# --- listeners bind 127.0.0.1 unless told otherwise --------------------------------------------


def _strip_hosts(config: ServerConfig) -> None:
    doc = tomllib.loads(config.path.read_text(encoding="utf-8"))
    assert doc["consumer"]["host"] == doc["provider"]["host"] == "127.0.0.1"  # init_server
    for section in ("consumer", "provider"):
        del doc[section]["host"]
    config.path.write_text(tomli_w.dumps(doc), encoding="utf-8")


@pytest.mark.skipif(sys.platform != "linux", reason="needs 127.0.0.2 routed to loopback")
async def test_listeners_bind_loopback_by_default(net: Net) -> None:
    name = "palpost-defaults"
    server = await launch(
        net,
        name,
        parse_security_server(f"{PALPOST}/ss-defaults"),
        clients=[WINDOW],
        prepare=_strip_hosts,
    )
    try:
        assert server.config.consumer.host == server.config.provider.host == "127.0.0.1"
        for port in (server.consumer_port, server.provider_port):
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.2", port)
        await assert_serving(net, name)
    finally:
        await net.servers.pop(name).stop()


async def test_init_server_writes_loopback_listeners(net: Net, tmp_path: Path) -> None:
    result = init_server(tmp_path / "server", parse_security_server(f"{MOI}/ss-init"), net.anchor)
    config = load_server_config(result.config)
    assert (config.consumer.host, config.provider.host) == ("127.0.0.1", "127.0.0.1")
    assert config.consumer_tls is None


# --- backend response headers are bounded -------------------------------------------------------


@pytest.mark.parametrize(
    "code", [pytest.param("many-headers", id="250-headers"), pytest.param("long-header", id="64k")]
)
async def test_backend_response_headers_are_bounded(
    net: Net, hardened: SecurityServer, code: str
) -> None:
    mid = new_id("headers")
    result = await net.call("palpost", f"{HARD}/{code}", headers={"X-Road-Id": mid})
    failed = "Server.ServerProxy.ServiceFailed"
    assert_xroad_error(*result, failed, 502)
    assert SECRET.encode() not in result[2]
    logged(hardened, mid, "provider", failed)
    logged(net.servers["palpost"], mid, "consumer", failed)
    await _assert_hardened_serving(net)


# --- an oversized global configuration download ------------------------------------------------


async def _declared(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"x" * (MAX_CONF_BYTES + 1), content_type="application/jose")


async def _streamed(request: web.Request) -> web.StreamResponse:
    """No Content-Length: the size shows only while reading."""
    resp = web.StreamResponse(headers={"Content-Type": "application/jose"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    chunk = b"x" * 2**20
    with contextlib.suppress(ConnectionError):
        for _ in range(MAX_CONF_BYTES // len(chunk) + 2):
            await resp.write(chunk)
        await resp.write_eof()
    return resp


@pytest.mark.parametrize(
    "handler",
    [pytest.param(_declared, id="content-length"), pytest.param(_streamed, id="chunked")],
)
async def test_oversized_configuration_download_is_refused(
    net: Net,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    handler: Callable[[web.Request], Any],
) -> None:
    held_bytes = net.servers["moi"].trusted.current_bytes
    assert held_bytes is not None
    trusted = TrustedGlobalConf(Anchor.load(net.anchor), now=int(time.time()))
    assert trusted.update(held_bytes, int(time.time()))
    held = trusted.current
    app = web.Application()
    app.router.add_get("/globalconf", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/globalconf"
    poller = GlobalConfPoller(trusted, url, tmp_path / "globalconf.jws")
    try:
        with (
            caplog.at_level(logging.WARNING, logger="exchange.globalconf.client"),
            pytest.raises(GlobalConfDownloadError, match=f"larger than {MAX_CONF_BYTES} bytes"),
        ):
            await poller.fetch_once()
    finally:
        await poller.close()
        await runner.cleanup()
    assert trusted.current is held
    assert not (tmp_path / "globalconf.jws").exists()
    assert any("cannot download" in r.getMessage() for r in caplog.records)


# --- unsigned ERROR frames from a provider -------------------------------------------------------

LIAR = parse_member("PS/GOV/LIAR")
LIAR_SS = parse_security_server(f"{LIAR}/ss1")
LIAR_API = parse_subsystem(f"{LIAR}/api")
LIAR_PATH = f"/r1/{LIAR_API}/data"


@dataclass
class Liar:
    provider: RogueProvider
    signer: Signer


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def liar(net: Net) -> AsyncIterator[Liar]:
    """A registered provider whose answers each test chooses."""
    directory = net.root / "liar-provider"
    auth_key = generate_key()
    save_private_key(directory / "auth.key.pem", auth_key)
    save_certificate(
        directory / "auth.cert.pem", net.ca.issue_auth_cert(auth_key.public_key(), LIAR_SS)
    )
    sign_key = generate_key()
    signer = Signer(sign_key, net.ca.issue_sign_cert(sign_key.public_key(), LIAR))
    conf = net.servers["palpost"].trusted.current
    assert conf is not None
    provider = RogueProvider(
        LIAR_SS,
        auth_cert=directory / "auth.cert.pem",
        auth_key=directory / "auth.key.pem",
        cas=conf.ca_certs(),
        presented=[signer.cert],
    )
    port = await provider.start()
    auth_fp = fingerprint(load_certificate(directory / "auth.cert.pem"))
    with net.registry() as reg:
        reg.add_member(LIAR, "Liar")
        reg.add_subsystem(LIAR_API)
        reg.add_server(LIAR_SS, f"127.0.0.1:{port}", [auth_fp])
        reg.add_server_client(LIAR_SS, LIAR_API)
    await publish(net)
    try:
        yield Liar(provider, signer)
    finally:
        await provider.close()


def _error_frame(meta: dict[str, Any]) -> Callable[[Liar, Incoming], None]:
    def answer(liar: Liar, inc: Incoming) -> None:
        inc.transport.write(encode_frame(inc.frame.stream_id, FrameKind.ERROR, meta))

    return answer


def _connection_error_frame(meta: dict[str, Any]) -> Callable[[Liar, Incoming], None]:
    """An ERROR frame on stream 0: the provider refuses the whole connection."""

    def answer(liar: Liar, inc: Incoming) -> None:
        inc.transport.write(encode_frame(0, FrameKind.ERROR, meta))

    return answer


def _malformed_signed_response(liar: Liar, inc: Incoming) -> None:
    doc = {"v": 1, "type": "response", "id": inc.request.message_id}
    inc.reply(liar.signer.sign(orjson.dumps(doc)), b"")


def _honest(liar: Liar, inc: Incoming) -> None:
    body = b'{"ok":true}'
    inc.reply(sign_response(liar.signer, inc, body), body)


CONSISTENCY = "Server.ClientProxy.InconsistentResponse"

UNSIGNED = [
    pytest.param(
        _error_frame({"type": "Server.ServerProxy.ServiceFailed", "message": "m", "status": 502}),
        "Server.ServerProxy.ServiceFailed",
        502,
        id="provider-refusal-relayed",
    ),
    pytest.param(
        _error_frame({"type": "Client.BadRequest", "message": "blame the client", "status": 400}),
        CONSISTENCY,
        502,
        id="client-code",
    ),
    pytest.param(
        _error_frame({"type": "Server.ClientProxy.X", "message": "m", "status": 500}),
        CONSISTENCY,
        502,
        id="consumer-side-code",
    ),
    pytest.param(
        _error_frame({"type": "Server.ServerProxy.AccessDenied", "status": 200}),
        "Server.ServerProxy.AccessDenied",
        502,
        id="success-status",
    ),
    pytest.param(
        _error_frame({"type": "Server.ServerProxy.AccessDenied", "status": "403"}),
        CONSISTENCY,
        502,
        id="status-not-a-number",
    ),
    pytest.param(_malformed_signed_response, CONSISTENCY, 502, id="malformed-signed-response"),
    pytest.param(
        _connection_error_frame(
            {"type": "Client.BadRequest", "message": "blame the client", "status": 400}
        ),
        CONSISTENCY,
        502,
        id="client-code-on-stream-0",
    ),
    pytest.param(
        _connection_error_frame({"type": "Server.ServerProxy.AccessDenied", "status": 200}),
        "Server.ServerProxy.AccessDenied",
        502,
        id="success-status-on-stream-0",
    ),
]


@pytest.mark.parametrize(("answer", "code", "status"), UNSIGNED)
async def test_consumer_relays_unsigned_errors_only_as_provider_refusals(
    net: Net,
    liar: Liar,
    answer: Callable[[Liar, Incoming], None],
    code: str,
    status: int,
) -> None:
    liar.provider.answer = lambda inc: answer(liar, inc)
    mid = new_id("unsigned")
    async with asyncio.timeout(10):
        result = await net.call("palpost", LIAR_PATH, headers={"X-Road-Id": mid})
    doc = assert_xroad_error(*result, code, status)
    assert "blame" not in doc["message"]
    logged(net.servers["palpost"], mid, "consumer", code)
    liar.provider.answer = lambda inc: _honest(liar, inc)
    ok, _, body = await net.call("palpost", LIAR_PATH)
    assert (ok, body) == (200, b'{"ok":true}')
    await assert_serving(net)
