"""The steps the consumer side's pipelines share: REST r1 (:mod:`exchange.server.consumer`) and
SOAP 4.0 (:mod:`exchange.server.soap_consumer`) take the same steps in the same order, each
written once here, with what the caller gave in its own form (``X-Road-*`` headers, or the
envelope's header).

:class:`ConsumerHost` is what these pipelines may use of the security server, and nothing else:
its configuration and clock, the global configuration in force, the client members' signing
keys, the peer pools and the message log.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import orjson
from aiohttp import web
from cryptography import x509

from exchange.errors import (
    ClientAuthenticationFailed,
    ConsumerServerError,
    ExchangeError,
    ShuttingDown,
    UnknownClient,
    UnknownMember,
    log_refusal,
)
from exchange.globalconf.document import GlobalConf, SecurityServerInfo
from exchange.identifiers import ClientId, MemberId, SecurityServerId, ServiceId, SubsystemId
from exchange.protocol.canonical import b64url
from exchange.protocol.jws import Signer
from exchange.protocol.messages import SignedRequest, SignedResponse
from exchange.protocol.session import RequestRefused
from exchange.server.config import ClientConfig, ServerConfig
from exchange.server.peer import NotDelivered, PeerPool, unsigned_refusal
from exchange.server.records import ExchangeRecord, guarded
from exchange.trust.keys import fingerprint
from exchange.trustcore.messages import OwnRequest, verify_response

log = logging.getLogger("exchange.server.consumer")

_JSON = "application/json; charset=utf-8"


class ConsumerHost(Protocol):
    """What the consumer side's pipelines use of the security server."""

    @property
    def config(self) -> ServerConfig: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def clients(self) -> Mapping[SubsystemId, ClientConfig]: ...
    @property
    def response_timeout(self) -> float: ...
    def globalconf_or_fail(self, *, provider: bool, now: float | None = None) -> GlobalConf: ...
    def is_cert_fps(self, client: SubsystemId) -> frozenset[str]: ...
    def signer_for(self, member: MemberId | None, *, consumer: bool = False) -> Signer: ...
    def pool_for(self, info: SecurityServerInfo) -> PeerPool: ...
    def next_index(self, n: int) -> int: ...
    async def log_record(self, rec: ExchangeRecord) -> None: ...


Refusal = Callable[[ExchangeError, ExchangeRecord | None], web.Response]
"""How a pipeline answers a refusal (a JSON error, a SOAP Fault); with the record, it also
notes in it what the caller got."""


async def run_exchange(
    host: ConsumerHost,
    rec: ExchangeRecord,
    exchange: Awaitable[web.StreamResponse],
    refusal: Refusal,
) -> web.StreamResponse:
    """Run one exchange's pipeline: an :class:`ExchangeError` is logged for the operator (as
    loud as its fault), recorded in the message log and answered with ``refusal``; a bug of
    ours becomes ``Server.ClientProxy.InternalError`` first (:func:`records.guarded`). Nothing
    is answered before its record is written."""
    try:
        return await guarded(rec, exchange, ConsumerServerError)
    except ExchangeError as err:
        log_refusal(log, f"{rec.protocol} exchange {rec.message_id}", err)
        rec.fail(err)
        answer = refusal(err, rec)
        try:
            await host.log_record(rec)
        except ExchangeError as log_err:
            return refusal(log_err, None)
        return answer


def error_response(err: ExchangeError, extra: dict[str, str] | None = None) -> web.Response:
    headers = {"X-Road-Error": err.code, "Content-Type": _JSON}
    if extra:
        headers.update(extra)
    return web.Response(status=err.status, body=orjson.dumps(err.body()), headers=headers)


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


def request_document(
    now: float,
    provider: SecurityServerInfo,
    caller: CallerFields,
    client: SubsystemId,
    service: ServiceId,
    *,
    sender: SecurityServerId,
    method: str,
    path: str,
    query: str,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    protocol: str = "rest",
) -> SignedRequest:
    """The document the client member signs for one call, REST or SOAP: the call, ``body`` by
    its SHA-256 and length, the caller's X-Road fields, the chosen provider, this server as the
    ``sender`` and ``now`` (the exchange's one reference time)."""
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
        client_server=sender,
        timestamp_ms=int(now * 1000),
        protocol=protocol,
    )


def hosted_client(
    host: ConsumerHost, request: web.BaseRequest, conf: GlobalConf, client: ClientId
) -> SubsystemId:
    """The client is a subsystem hosted here, registered for this server in the global
    configuration, and the information system on ``request`` may act for it."""
    if not isinstance(client, SubsystemId):
        raise UnknownClient(f"client {client} is a member; clients are subsystems here")
    _authorise_information_system(host, request, client)
    me = conf.server(host.config.server_id)
    if me is None or client not in me.clients:
        raise UnknownClient(
            f"client {client} is not registered for this security server "
            "in the global configuration"
        )
    return client


def providers_in_turn(
    host: ConsumerHost,
    conf: GlobalConf,
    subsystem: SubsystemId,
    pinned: SecurityServerId | None,
) -> tuple[SecurityServerInfo, ...]:
    """The security servers of the global configuration that host ``subsystem`` (only the
    ``pinned`` one if the caller named it), starting with the next in turn."""
    providers = conf.servers_hosting(subsystem)
    if pinned is not None:
        providers = tuple(p for p in providers if p.id == pinned)
    if not providers:
        raise UnknownMember(f"no security server in the global configuration provides {subsystem}")
    first = host.next_index(len(providers))
    return providers[first:] + providers[:first]


async def exchange_with_a_provider(
    host: ConsumerHost,
    providers: tuple[SecurityServerInfo, ...],
    document: Callable[[SecurityServerInfo], SignedRequest],
    body: bytes,
    rec: ExchangeRecord,
) -> tuple[SignedRequest, SignedResponse, bytes]:
    """The request (``document`` for the provider chosen) sent to the first of ``providers``
    and, when it did not reach one that processed it (it could not be connected to, or it is
    stopping and refused the request unprocessed), to the next: what :func:`exchange_signed`
    returns for the one that answered, with the document it was sent."""
    for index, provider in enumerate(providers):
        rec.peer_server = str(provider.id)
        signed = document(provider)
        try:
            response, response_body = await exchange_signed(host, provider, signed, body, rec)
        except NotDelivered as missed:
            if index + 1 == len(providers):
                raise missed.error from None
            log.warning(
                "exchange %s not taken by security server %s (%s); sending it to %s",
                signed.message_id,
                provider.id,
                missed.error.message,
                providers[index + 1].id,
            )
            continue
        return signed, response, response_body
    raise AssertionError("providers_in_turn gives at least one provider")


async def exchange_signed(
    host: ConsumerHost,
    provider: SecurityServerInfo,
    signed: SignedRequest,
    body: bytes,
    rec: ExchangeRecord,
) -> tuple[SignedResponse, bytes]:
    """Sign ``signed`` with the client member's key, send it with ``body`` to ``provider``, and
    return the signed response once it verifies and is bound to this request, with its body.
    The record gets both signatures, the response body, the released fields, the provider's
    error if it refused, and the timings."""
    signer = host.signer_for(signed.client.member, consumer=True)
    sent = OwnRequest.of(signer.sign(signed.canonical()), signed)
    rec.describe(signed)
    rec.request_jws, rec.request_hash = sent.token, sent.request_hash
    rec.mark("signed")
    pool = host.pool_for(provider)
    try:
        conn = await pool.connection()
    except ExchangeError as err:
        raise NotDelivered(err) from None  # nothing was sent
    answer, conn = await pool.answer(conn, {"jws": sent.token}, body, host.response_timeout)
    rec.mark("answered")
    if isinstance(answer, RequestRefused):
        refusal = unsigned_refusal(answer.meta)
        if refusal.code == ShuttingDown.code:
            raise NotDelivered(refusal)
        raise refusal
    token = answer.meta.get("jws")
    rec.response_jws = token if isinstance(token, str) else None
    # the signed response verifies with a key the provider presented, still acceptable at the
    # exchange's one reference time; it comes from the service's member and is bound to our
    # request
    keys = conn.keys_at(signed.timestamp_ms / 1000)
    response = verify_response(token, sent, keys, body=answer.body).response
    rec.response_body = answer.body
    rec.released_fields = (
        None if response.released_fields is None else list(response.released_fields)
    )
    if response.error_type is not None:
        rec.error = ExchangeError(
            response.error_message or "", code=response.error_type, status=response.status
        )
    rec.mark("total")
    return response, answer.body


def _authorise_information_system(
    host: ConsumerHost, request: web.BaseRequest, client: SubsystemId
) -> None:
    hosted = host.clients.get(client)
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
        if der is None or fingerprint(x509.load_der_x509_certificate(der)) not in host.is_cert_fps(
            client
        ):
            raise ClientAuthenticationFailed(
                f"the information system's TLS certificate is not registered for client {client}"
            )
