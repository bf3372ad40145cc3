"""The consumer side: information systems call it with X-Road REST r1 (docs/design.md §4).

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

import logging
import time
from typing import Protocol

import orjson
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError

from exchange.bodies import read_body
from exchange.errors import BadRequest, ConsumerServerError, ExchangeError, log_refusal
from exchange.globalconf.document import SecurityServerInfo
from exchange.oplog import exchange_finished, exchange_started
from exchange.protocol.messages import SignedRequest, SignedResponse
from exchange.protocol.rest import (
    end_to_end_headers,
    parse_method,
    parse_target,
    parse_xroad_headers,
)
from exchange.server.consumer_steps import (
    ConsumerHost,
    error_response,
    exchange_with_a_provider,
    hosted_client,
    providers_in_turn,
    request_document,
    run_exchange,
)
from exchange.server.health import Verdict
from exchange.server.metadata import Handler, list_clients_handler
from exchange.server.records import ExchangeRecord, internal_failure
from exchange.server.soap_consumer import handle_soap

log = logging.getLogger("exchange.server.consumer")


async def handle(host: ConsumerHost, request: web.BaseRequest) -> web.StreamResponse:
    """One REST r1 exchange of an information system."""
    rec = ExchangeRecord(side="consumer", started_ns=time.perf_counter_ns())
    return await run_exchange(host, rec, _consume(host, request, rec), _refusal)


def _refusal(err: ExchangeError, rec: ExchangeRecord | None) -> web.Response:
    if rec is None:  # the record could not be written: the log's error, without a message id
        return error_response(err)
    rec.response_body = orjson.dumps(err.body())
    return error_response(err, {"X-Road-Id": rec.message_id} if rec.message_id else None)


async def _consume(
    host: ConsumerHost, request: web.BaseRequest, rec: ExchangeRecord
) -> web.StreamResponse:
    now = host.clock()  # the one reference time of this exchange
    raw_path, _, query = request.raw_path.partition("?")
    rec.method = request.method
    rec.path = request.raw_path[:2048]
    # (1) path and X-Road headers parse (first, so that every refusal below is logged with them)
    target = parse_target(raw_path, query)
    method = parse_method(request.method)
    xh = parse_xroad_headers(request.headers.items())
    rec.message_id = xh.message_id
    exchange_started(rec.message_id)
    rec.client = str(xh.client)
    rec.service = str(target.service)
    rec.path = target.path + ("?" + query if query else "")
    rec.user_id, rec.purpose, rec.issue = xh.user_id, xh.purpose, xh.issue
    # (2) the global configuration is fresh
    conf = host.globalconf_or_fail(provider=False, now=now)
    # (3) the client is hosted here and the information system may act for it
    client = hosted_client(host, request, conf, xh.client)
    # (4) the body is within its limit
    body = await read_body(request, host.config.limits.max_body_bytes)
    rec.request_body = body
    # (5) security servers provide the service
    providers = providers_in_turn(host, conf, target.service.subsystem, xh.security_server)
    headers = tuple(end_to_end_headers(request.headers.items()))

    def document(provider: SecurityServerInfo) -> SignedRequest:
        return request_document(
            now,
            provider,
            xh,
            client,
            target.service,
            sender=host.config.server_id,
            method=method,
            path=target.path,
            query=query,
            headers=headers,
            body=body,
        )

    # (6) sign with the client member's key, send (to the next provider if one stopping
    # refused it unprocessed), and check what comes back
    signed, response, response_body = await exchange_with_a_provider(
        host, providers, document, body, rec
    )
    rec.http_status = response.status
    # (7) logged durably before the answer
    await host.log_record(rec)
    return _to_web_response(response, response_body, signed, rec)


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


class ConsumerPortHost(ConsumerHost, Protocol):
    """What the consumer port uses of the security server: the pipelines' needs, and whether
    it can serve, for ``/health``."""

    def verdict(self) -> Verdict: ...


def health(host: ConsumerPortHost) -> web.Response:
    """200 or 503 and the reason codes: what an information system needs to pick a server.
    The state behind them is the operator's, on the status listener (``statusport.py``)."""
    verdict = host.verdict()
    body = {"status": verdict.status, "reasons": [p.code for p in verdict.reasons]}
    return web.Response(
        status=verdict.http_status, body=orjson.dumps(body), content_type="application/json"
    )


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


def consumer_handler(host: ConsumerPortHost) -> Handler:
    """The one handler of the consumer port (see the module docstring)."""
    list_clients = list_clients_handler(host)

    async def route(request: web.BaseRequest) -> web.StreamResponse:
        path, method = request.rel_url.path_safe, request.method
        if path == "/health" and method in _GET:
            return health(host)
        # X-Road message protocol 4.0 (SOAP) shares the port: POST / (docs/design.md §4)
        if path == "/" and method == hdrs.METH_POST:
            return await handle_soap(host, request)
        if path == "/listClients" and method in _GET:
            return await list_clients(request)
        return await handle(host, request)

    async def consumer_port(request: web.BaseRequest) -> web.StreamResponse:
        # one task answers the requests of a keep-alive connection: no id outlives its request
        token = exchange_started(None)
        try:
            # (a coroutine per request only when there is an Expect header to answer)
            refused = await _expect(request) if hdrs.EXPECT in request.headers else None
            response = refused if refused is not None else await route(request)
        except Exception as exc:
            err = internal_failure(log, ConsumerServerError, "on the consumer port", exc)
            response = error_response(err)
        finally:
            exchange_finished(token)
        # PR-REST §4.3: headers that leak the origin host or software are not passed on.
        response.headers[hdrs.SERVER] = "Exchange"
        return response

    return consumer_port


_GET = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})


class ConsumerHttpServer(web.Server):
    """aiohttp's low-level server for the consumer port, whose answer to a request that is not
    HTTP (a lower-case method, a line or header past its limit, a control character in a
    header, a body framed two ways) is an X-Road error like every other refusal: JSON,
    ``Client.BadRequest`` in ``X-Road-Error`` and ``Server: Exchange``, without echoing what
    was sent, and one line in the log, as loud as a caller's fault, instead of a traceback (any
    client that reaches the port could otherwise fill the operator's log). The connection is
    closed, as aiohttp does: the parser cannot go on after such a request."""

    def __call__(self) -> web.RequestHandler:
        return _ConsumerRequestHandler(self, loop=self._loop, **self._kwargs)


class _ConsumerRequestHandler(web.RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or status >= 500 or status < 400:
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:  # part of an answer went out: nothing more can
            raise ConnectionError("cannot answer a malformed request after an answer began")
        err = BadRequest(f"the request is not valid HTTP ({type(exc).__name__})", status=status)
        log_refusal(log, f"a request from {request.remote}", err)
        response = error_response(err)
        response.headers[hdrs.SERVER] = "Exchange"
        response.force_close()
        return response
