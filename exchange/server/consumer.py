"""The consumer side: information systems call it with X-Road REST r1 (DESIGN.md §4).

For each request: the path and headers parse; the global configuration is fresh; the client
subsystem is hosted here and the information system is registered for it; the body is within
its limit. The request is then signed with the client member's key and sent to a provider
security server hosting the service; the signed response must verify, come from the service's
member, and be bound to our exact request. The exchange is logged durably before the answer.

The consumer port is served by aiohttp's low-level server (``web.Server``) with one handler,
:func:`consumer_handler`, rather than an app factory: the port has four fixed entry points
(``/health``, SOAP on ``POST /``, ``/listClients``, and everything else REST), no middlewares,
no per-app state and nothing to clean up, and the ``web.Application`` layers (router, match
info, ``on_response_prepare`` signal) cost about a quarter of aiohttp's serving CPU per
exchange (bench/README.md). What those layers did is done here: the handler dispatches on the
path and method as the routes did, answers ``Expect`` as aiohttp's default expect handler does,
and sets ``Server: Exchange`` on every answer (PR-REST §4.3).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Protocol

import orjson
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from exchange.bodies import read_body
from exchange.errors import (
    ClientAuthenticationFailed,
    ConsumerServerError,
    ExchangeError,
    UnknownClient,
    UnknownMember,
)
from exchange.globalconf.document import GlobalConf, SecurityServerInfo
from exchange.identifiers import ClientId, SecurityServerId, ServiceId, SubsystemId
from exchange.protocol.canonical import b64url
from exchange.protocol.frames import FrameKind
from exchange.protocol.messages import SignedRequest, SignedResponse
from exchange.protocol.rest import (
    end_to_end_headers,
    parse_method,
    parse_target,
    parse_xroad_headers,
)
from exchange.server.metadata import Handler, list_clients_handler
from exchange.server.peer import unsigned_refusal
from exchange.server.records import ExchangeRecord, guarded, internal_failure
from exchange.trustcore.messages import OwnRequest, verify_response

if TYPE_CHECKING:
    from exchange.server.core import SecurityServer

log = logging.getLogger("exchange.server.consumer")

_JSON = "application/json; charset=utf-8"


def error_response(err: ExchangeError, extra: dict[str, str] | None = None) -> web.Response:
    headers = {"X-Road-Error": err.code, "Content-Type": _JSON}
    if extra:
        headers.update(extra)
    return web.Response(status=err.status, body=orjson.dumps(err.body()), headers=headers)


async def handle(server: SecurityServer, request: web.BaseRequest) -> web.StreamResponse:
    rec = ExchangeRecord(side="consumer", started_ns=time.perf_counter_ns())
    try:
        return await guarded(rec, _consume(server, request, rec), ConsumerServerError)
    except ExchangeError as err:
        log.info("exchange %s failed: %s [%s]", rec.message_id, err.internal, err.detail)
        rec.fail(err)
        rec.response_body = orjson.dumps(err.body())
        try:
            await server.log_record(rec)
        except ExchangeError as log_err:
            return error_response(log_err)
        extra = {"X-Road-Id": rec.message_id} if rec.message_id else None
        return error_response(err, extra)


async def _consume(
    server: SecurityServer, request: web.BaseRequest, rec: ExchangeRecord
) -> web.StreamResponse:
    raw_path, _, query = request.raw_path.partition("?")
    rec.method = request.method
    rec.path = request.raw_path[:2048]
    # (1) path and X-Road headers parse (first, so that every refusal below is logged with them)
    target = parse_target(raw_path, query)
    method = parse_method(request.method)
    xh = parse_xroad_headers(request.headers.items())
    rec.message_id = xh.message_id
    rec.client = str(xh.client)
    rec.service = str(target.service)
    rec.path = target.path + ("?" + query if query else "")
    rec.user_id, rec.purpose, rec.issue = xh.user_id, xh.purpose, xh.issue
    # (2) the global configuration is fresh
    conf = server.globalconf_or_fail(provider=False)
    # (3) the client is hosted here and the information system may act for it
    client = hosted_client(server, request, conf, xh.client)
    # (4) the body is within its limit
    body = await read_body(request, server.config.limits.max_body_bytes)
    rec.request_body = body
    # (5) a security server provides the service
    provider = choose_provider(server, conf, target.service.subsystem, xh.security_server, rec)
    # (6) sign with the client member's key, send, and check what comes back
    signed = signed_request(
        server,
        provider,
        xh,
        client,
        target.service,
        method=method,
        path=target.path,
        query=query,
        headers=tuple((k, v) for k, v in end_to_end_headers(request.headers.items())),
        body=body,
    )
    response, response_body = await exchange_signed(server, provider, signed, body, rec)
    rec.http_status = response.status
    # (7) logged durably before the answer
    await server.log_record(rec)
    return _to_web_response(response, response_body, signed, rec)


class CallerFields(Protocol):
    """The X-Road fields an information system gives with its call, from the ``X-Road-*``
    headers (REST) or the envelope's header (SOAP)."""

    @property
    def message_id(self) -> str: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def purpose(self) -> str | None: ...
    @property
    def issue(self) -> str | None: ...
    @property
    def represented_party(self) -> str | None: ...


def signed_request(
    server: SecurityServer,
    provider: SecurityServerInfo,
    caller: CallerFields,
    client: SubsystemId,
    service: ServiceId,
    *,
    method: str,
    path: str,
    query: str,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    protocol: str = "rest",
) -> SignedRequest:
    """What the client member signs for one call, REST or SOAP: the call, ``body`` by its
    SHA-256 and length, the caller's X-Road fields, the chosen provider and the time now."""
    return SignedRequest(
        message_id=caller.message_id,
        client=client,
        service=service,
        method=method,
        path=path,
        query=query,
        headers=headers,
        body_sha256=b64url(hashlib.sha256(body).digest()),
        body_length=len(body),
        user_id=caller.user_id,
        purpose=caller.purpose,
        issue=caller.issue,
        represented_party=caller.represented_party,
        security_server=provider.id,
        client_server=server.config.server_id,
        timestamp_ms=int(server.clock() * 1000),
        protocol=protocol,
    )


def hosted_client(
    server: SecurityServer, request: web.BaseRequest, conf: GlobalConf, client: ClientId
) -> SubsystemId:
    """The client is a subsystem hosted here, registered for this server in the global
    configuration, and the information system on ``request`` may act for it."""
    if not isinstance(client, SubsystemId):
        raise UnknownClient(f"client {client} is a member; clients are subsystems here")
    _authorise_information_system(server, request, client)
    me = conf.server(server.config.server_id)
    if me is None or client not in me.clients:
        raise UnknownClient(
            f"client {client} is not registered for this security server "
            "in the global configuration"
        )
    return client


def choose_provider(
    server: SecurityServer,
    conf: GlobalConf,
    subsystem: SubsystemId,
    pinned: SecurityServerId | None,
    rec: ExchangeRecord,
) -> SecurityServerInfo:
    """A security server of the global configuration that hosts ``subsystem`` (the ``pinned``
    one if the caller named it), taken in turn."""
    providers = conf.servers_hosting(subsystem)
    if pinned is not None:
        providers = tuple(p for p in providers if p.id == pinned)
    if not providers:
        raise UnknownMember(f"no security server in the global configuration provides {subsystem}")
    provider = providers[server.next_index(len(providers))]
    rec.peer_server = str(provider.id)
    return provider


async def exchange_signed(
    server: SecurityServer,
    provider: SecurityServerInfo,
    signed: SignedRequest,
    body: bytes,
    rec: ExchangeRecord,
) -> tuple[SignedResponse, bytes]:
    """Sign ``signed`` with the client member's key, send it with ``body`` to ``provider``, and
    return the signed response once it verifies and is bound to this request, with its body.
    The record gets both signatures, the response body, the released fields, the provider's
    error if it refused, and the timings."""
    signer = server.signer_for(signed.client.member, consumer=True)
    sent = OwnRequest.of(signer.sign(signed.canonical()), signed)
    rec.describe(signed)
    rec.request_jws, rec.request_hash = sent.token, sent.request_hash
    rec.mark("signed")
    pool = server.pool_for(provider)
    frame, conn = await pool.request({"jws": sent.token}, body, server.response_timeout)
    rec.mark("answered")
    if frame.kind is FrameKind.ERROR:
        raise unsigned_refusal(frame.meta)
    token = frame.meta.get("jws")
    rec.response_jws = token if isinstance(token, str) else None
    # the signed response verifies, comes from the service's member and is bound to our request
    response = verify_response(token, sent, conn, body=frame.body).response
    rec.response_body = frame.body
    rec.released_fields = (
        None if response.released_fields is None else list(response.released_fields)
    )
    if response.error_type is not None:
        rec.error = ExchangeError(
            response.error_message or "", code=response.error_type, status=response.status
        )
    rec.timings["total"] = (time.perf_counter_ns() - rec.started_ns) // 1000
    return response, frame.body


def _authorise_information_system(
    server: SecurityServer, request: web.BaseRequest, client: SubsystemId
) -> None:
    hosted = server.clients.get(client)
    if hosted is None:
        raise UnknownClient(f"client {client} is not hosted by this security server")
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if hosted.connection == "http":
        return
    if ssl_object is None:
        raise ClientAuthenticationFailed(
            f"client {client} must connect over HTTPS (connection type {hosted.connection})"
        )
    if hosted.connection == "https":
        der = ssl_object.getpeercert(binary_form=True)
        if der is None or server.is_cert_fingerprint(der) not in server.is_cert_fps(client):
            raise ClientAuthenticationFailed(
                f"the information system's TLS certificate is not registered for client {client}"
            )


def _to_web_response(
    response: SignedResponse, body: bytes, signed: SignedRequest, rec: ExchangeRecord
) -> web.Response:
    out = web.Response(status=response.status, body=body)
    headers = out.headers
    for name, value in response.headers:
        headers.add(name, value)
    headers["X-Road-Client"] = str(signed.client)
    headers["X-Road-Service"] = str(signed.service)
    headers["X-Road-Id"] = signed.message_id
    headers["X-Road-Request-Id"] = response.request_id
    headers["X-Road-Request-Hash"] = response.request_hash
    if response.error_type is not None:
        headers["X-Road-Error"] = response.error_type
    return out


def health(server: SecurityServer) -> web.Response:
    return web.json_response(server.health(), dumps=lambda o: orjson.dumps(o).decode())


async def _expect(request: web.BaseRequest) -> web.Response | None:
    """``Expect`` as aiohttp's default expect handler answers it (RFC 9110 §10.1.1)."""
    expect = request.headers.get(hdrs.EXPECT)
    if not expect or request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        return web.Response(status=417, text=f"Unknown Expect: {expect}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0
    await request.writer.drain()
    return None


def consumer_handler(server: SecurityServer) -> Handler:
    """The one handler of the consumer port (see the module docstring)."""
    from exchange.server.soap_consumer import handle_soap

    list_clients = list_clients_handler(server)

    async def route(request: web.BaseRequest) -> web.StreamResponse:
        path, method = request.rel_url.path_safe, request.method
        if path == "/health" and method in _GET:
            return health(server)
        # X-Road message protocol 4.0 (SOAP) shares the port: POST / (DESIGN.md §4)
        if path == "/" and method == hdrs.METH_POST:
            return await handle_soap(server, request)
        if path == "/listClients" and method in _GET:
            return await list_clients(request)
        return await handle(server, request)

    async def consumer_port(request: web.BaseRequest) -> web.StreamResponse:
        try:
            refused = await _expect(request)
            response = refused if refused is not None else await route(request)
        except Exception as exc:
            err = internal_failure(log, ConsumerServerError, "on the consumer port", exc)
            response = error_response(err)
        # PR-REST §4.3: headers that leak the origin host or software are not passed on.
        response.headers[hdrs.SERVER] = "Exchange"
        return response

    return consumer_port


_GET = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})
