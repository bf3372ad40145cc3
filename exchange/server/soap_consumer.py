"""The consumer side of X-Road message protocol 4.0: ``POST /`` with a SOAP 1.1 envelope.

The same steps as REST (:mod:`exchange.server.consumer`), in the same order once the envelope is
read, each written once in :mod:`exchange.server.consumer_steps`: body within its limit;
envelope parsed (hardened, :mod:`exchange.protocol.soap`); global configuration fresh; client
hosted here and the information system registered for it; a provider security server chosen;
the request signed with the client member's key; the signed response verified and bound to the
request; logged durably; answered.

The signed request says ``protocol = "soap"``, method ``POST``, empty path, and binds the whole
HTTP body (the envelope, or the ``multipart/related`` message with its attachments, unchanged)
by its digest, together with the ``Content-Type`` and ``SOAPAction`` headers, the two HTTP
headers X-Road forwards (PR-MESS §2.2). The X-Road header fields travel inside the envelope and,
for the provider's checks and the log, in the signed request too.

A successful response must carry ``requestHash`` (SHA-512 of the envelope we sent, with its
``algorithmId``) and echo the request's client, service and id; otherwise it is refused with
``Server.ClientProxy.InconsistentResponse``. Every error raised by the exchange layer on this
path is answered as a SOAP Fault (HTTP 500, SOAP 1.1 §6.2) with the X-Road dotted code, the
message and the detail id that is also in the server's log: never JSON.
"""

from __future__ import annotations

import logging
import time

import orjson
from aiohttp import web

from exchange.bodies import read_body
from exchange.errors import ClientError, ExchangeError, InconsistentResponse
from exchange.globalconf.document import SecurityServerInfo
from exchange.oplog import exchange_started
from exchange.protocol import forwarding, soap
from exchange.protocol.fields import FieldError
from exchange.protocol.messages import SignedRequest, SignedResponse
from exchange.server.consumer_steps import (
    ConsumerHost,
    exchange_with_a_provider,
    hosted_client,
    providers_in_turn,
    request_document,
    run_exchange,
)
from exchange.server.records import ExchangeRecord
from exchange.server.soap_provider import off_loop

log = logging.getLogger("exchange.server.consumer")


def fault_response(err: ExchangeError) -> web.Response:
    return _fault(err.code, err.message, err.detail)


def _fault(code: str, message: str, detail: str | None) -> web.Response:
    """The one place a consumer-side SOAP Fault is built: HTTP 500 with ``X-Road-Error``."""
    status, content_type, body = soap.fault_message(code, message, detail)
    return web.Response(
        status=status, body=body, headers={"Content-Type": content_type, "X-Road-Error": code}
    )


async def handle_soap(host: ConsumerHost, request: web.BaseRequest) -> web.StreamResponse:
    """One SOAP 4.0 exchange of an information system."""
    rec = ExchangeRecord(side="consumer", protocol="soap", started_ns=time.perf_counter_ns())
    rec.method, rec.path = "POST", "/"
    return await run_exchange(host, rec, _consume(host, request, rec), _refusal)


def _refusal(err: ExchangeError, rec: ExchangeRecord | None) -> web.Response:
    answer = fault_response(err)
    if rec is not None:
        rec.http_status = answer.status
        rec.response_body = answer.body if isinstance(answer.body, bytes) else None
    return answer


def _parse_request(content_type: str, body: bytes, limit: int) -> soap.SoapRequest:
    return soap.parse_request(soap.soap_part(content_type, body).envelope, max_bytes=limit)


def _signed_headers(request: web.BaseRequest, content_type: str) -> tuple[tuple[str, str], ...]:
    """PR-MESS §2.2: Content-Type and SOAPAction are forwarded to the service, nothing else."""
    headers = [("content-type", content_type)]
    action = request.headers.get("SOAPAction")
    if action is not None:
        if len(action) > soap.MAX_TEXT or not action.isprintable():
            raise ClientError("invalid SOAPAction header", code="Client.InvalidHeader")
        headers.append(("soapaction", action))
    try:
        # nothing the provider would refuse in the signed request (one rule for both sides)
        forwarding.check_signed_headers(headers)
    except FieldError as exc:
        raise ClientError(f"invalid header: {exc}", code="Client.InvalidHeader") from None
    return tuple(headers)


async def _consume(
    host: ConsumerHost, request: web.BaseRequest, rec: ExchangeRecord
) -> web.StreamResponse:
    now = host.clock()  # the one reference time of this exchange
    # (1) the body is within its limit, and holds a SOAP 1.1 envelope (first, so that every
    # refusal below is logged with the request's identifiers)
    body = await read_body(request, host.config.limits.max_body_bytes)
    rec.request_body = body
    content_type = request.headers.get("Content-Type", "")
    parsed = await off_loop(len(body), _parse_request, content_type, body, len(body))
    header = parsed.header
    rec.message_id = header.message_id
    exchange_started(rec.message_id)
    rec.client, rec.service = str(header.client), str(header.service)
    rec.user_id, rec.purpose, rec.issue = header.user_id, header.purpose, header.issue
    # (2) the global configuration is fresh
    conf = host.globalconf_or_fail(provider=False, now=now)
    # (3) the client is hosted here and the information system may act for it
    client = hosted_client(host, request, conf, header.client)
    # (4) security servers provide the service (PR-TARGETSS: securityServer pins one)
    providers = providers_in_turn(host, conf, header.service.subsystem, header.security_server)
    signed_headers = _signed_headers(request, content_type)

    def document(provider: SecurityServerInfo) -> SignedRequest:
        return request_document(
            now,
            provider,
            header,
            client,
            header.service,
            sender=host.config.server_id,
            method="POST",
            path="",
            query="",
            headers=signed_headers,
            body=body,
            protocol="soap",
        )

    # (5) sign with the client member's key: the whole body, and that it is SOAP; send (to
    # the next provider if one stopping refused it unprocessed), and check what comes back
    _, response, response_body = await exchange_with_a_provider(
        host, providers, document, body, rec
    )
    answer = await off_loop(len(response_body), _answer, response, response_body, parsed)
    # the record keeps the signed status (an auditor checks it against the signature); the
    # information system got the SOAP status (500 for every fault)
    rec.http_status = response.status
    rec.mark("total")
    # (6) logged durably before the answer
    await host.log_record(rec)
    return answer


def _answer(response: SignedResponse, body: bytes, request: soap.SoapRequest) -> web.Response:
    """The information system's answer: the provider's signed bytes, once they are checked."""
    content_type = next((v for k, v in response.headers if k == "content-type"), "")
    try:
        part = soap.soap_part(content_type, body)
        parsed = soap.parse_response(part.envelope)
    except ClientError as exc:
        if response.error_type is not None:
            return _refusal_as_fault(response, body)
        raise InconsistentResponse(
            f"the provider's answer is not a SOAP message: {exc.message}"
        ) from None
    if parsed.fault is None:
        # PR-MESS §2.2: requestHash is verified by the client's security server
        value, algorithm = soap.response_request_hash(parsed)
        if algorithm != soap.REQUEST_HASH_ALGORITHM_ID or value != soap.request_hash(
            request.envelope
        ):
            raise InconsistentResponse(
                "the response's requestHash does not bind it to this request"
            )
        try:
            soap.check_echo(parsed, request)
        except ClientError as exc:
            raise InconsistentResponse(exc.message) from None
    status = soap.FAULT_STATUS if parsed.fault is not None else 200
    headers = {"Content-Type": content_type}
    if response.error_type is not None:
        headers["X-Road-Error"] = response.error_type
    return web.Response(status=status, body=body, headers=headers)


def _refusal_as_fault(response: SignedResponse, body: bytes) -> web.Response:
    """A signed refusal the provider made before it could tell the request was SOAP (a bad
    signature, say) carries the REST error body: the same code, message and detail, as a
    fault."""
    assert response.error_type is not None
    try:
        detail = orjson.loads(body).get("detail")
    except (orjson.JSONDecodeError, AttributeError):
        detail = None
    return _fault(
        response.error_type,
        response.error_message or "",
        detail if isinstance(detail, str) else None,
    )
