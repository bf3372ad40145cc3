"""The provider side: peer security servers call it over mutual TLS (docs/design.md §5).

Each connection is checked once (its authentication certificate) and each request on it fully:
signature, client hosted by the connecting server, freshness and replay, body digest, service,
access policy. The backend is called, the response filtered to the granted fields, signed with
the provider member's key, bound to the request hash, logged durably — and only then sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

import orjson
import uuid_utils
from cryptography import x509

from exchange.errors import (
    AccessDenied,
    ExchangeError,
    FrameTimeout,
    InvalidMessage,
    ProviderOutdatedGlobalConf,
    ProviderServerError,
    ServiceFailed,
    ShuttingDown,
    SslAuthenticationFailed,
    TooManyConnections,
    UnknownService,
    log_refusal,
)
from exchange.globalconf.document import GlobalConf
from exchange.identifiers import MemberId, SecurityServerId
from exchange.oplog import exchange_started
from exchange.policy.evaluate import evaluate
from exchange.policy.fields import filter_fields
from exchange.policy.model import Decision, PolicyRequest, PolicySet
from exchange.policy.quota import QuotaExceeded
from exchange.protocol import fields, forwarding
from exchange.protocol.canonical import b64url
from exchange.protocol.fields import FieldError
from exchange.protocol.frames import FrameKind, FrameWriter
from exchange.protocol.hello import Hello
from exchange.protocol.jws import Signer, unverified_payload
from exchange.protocol.messages import (
    SignedDecision,
    SignedRequest,
    SignedResponse,
    request_hash,
)
from exchange.protocol.rest import end_to_end_headers
from exchange.protocol.session import (
    HelloReceived,
    LocalProtocolError,
    RequestReceived,
    Session,
    State,
)
from exchange.server.metadata import MetadataServices, is_rest_metadata
from exchange.server.quota_store import PersistentQuota
from exchange.server.records import ExchangeRecord, guarded, internal_failure
from exchange.server.replay import ReplayCache
from exchange.server.soap_provider import SoapProviderHost, fault_answer
from exchange.server.soap_provider import process as process_soap
from exchange.trustcore.messages import check_request_body, verify_request
from exchange.trustcore.peers import AdmittedPeer, KeysAt, PeerTrust

log = logging.getLogger("exchange.server.provider")

_JSON = "application/json; charset=utf-8"


@dataclass(slots=True)
class PeerLoad:
    """What one peer security server has in flight at this provider port, over all of its
    connections: requests and their bytes, frames begun, and the connections paused until that
    drains."""

    requests: int = 0
    bytes: int = 0
    begun: set[ProviderConnection] = field(default_factory=set)
    """Its connections with a frame part-way received."""
    paused: set[ProviderConnection] = field(default_factory=set)

    @property
    def buffered(self) -> int:
        """Bytes of frames part-way received on its connections."""
        return sum(conn.frame_bytes for conn in self.begun)

    @property
    def idle(self) -> bool:
        return not self.requests and not self.paused and not self.begun


class ProviderHost(SoapProviderHost, Protocol):
    """What the provider port and its pipeline use of the security server."""

    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def peer_trust(self) -> PeerTrust | None: ...
    @property
    def provider_connections(self) -> set[ProviderConnection]: ...
    @property
    def peer_loads(self) -> dict[SecurityServerId, PeerLoad]: ...
    @property
    def replay(self) -> ReplayCache: ...
    @property
    def quota(self) -> PersistentQuota: ...
    @property
    def metadata(self) -> MetadataServices: ...
    def globalconf_or_fail(self, *, provider: bool, now: float | None = None) -> GlobalConf: ...
    def hello_meta(self) -> dict[str, Any]: ...
    def keep_evidence(self, peer: AdmittedPeer) -> None: ...
    def policy_set(self) -> PolicySet: ...
    def signer_for(self, member: MemberId | None, *, consumer: bool = False) -> Signer: ...
    async def log_record(self, rec: ExchangeRecord) -> None: ...


class ProviderConnection(asyncio.Protocol):
    """The provider port's end of one EXM/1 connection: a thin shell around its
    :class:`~exchange.protocol.session.Session` (the protocol's rules) and the peer as the
    server's :class:`~exchange.trustcore.peers.PeerTrust` admitted it (the trust decisions)."""

    def __init__(self, server: ProviderHost) -> None:
        self.server = server
        self.session = Session("provider", server.config.limits.max_body_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer_id: SecurityServerId | None = None
        self.peer_cert: x509.Certificate | None = None
        self.peer: AdmittedPeer | None = None
        """The peer as its HELLO was admitted under the configuration in force."""
        self.hello: Hello | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # the peer does not read our answers as fast as it sends requests (see pause_writing),
        # since when (time.monotonic(); see close_stalled)
        self.write_blocked = False
        self.blocked_since: float | None = None
        # the frame begun and not yet whole: its bytes (counted in the peer's load) and when it
        # began (time.monotonic(); see close_stalled)
        self.frame_bytes = 0
        self.frame_since: float | None = None

    # -- connection checks ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        transport = self.transport
        self.server.provider_connections.add(self)
        self.write = FrameWriter(self._write_now, asyncio.get_running_loop().call_soon)
        try:
            peer = self._authenticate(transport)
            self._admit_another_connection(peer)
            self.peer_id = peer
        except ExchangeError as err:
            log.warning(
                "refused peer %s: %s [%s]",
                transport.get_extra_info("peername"),
                err.internal,
                err.detail,
            )
            self._refuse(err)

    def _authenticate(self, transport: asyncio.Transport) -> SecurityServerId:
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        self.peer_cert = x509.load_der_x509_certificate(der) if der is not None else None
        self.server.globalconf_or_fail(provider=True)
        trust = self.server.peer_trust
        assert trust is not None  # a fresh configuration is in force
        return trust.authenticate(self.peer_cert, self.server.clock(), "provider").id

    def _admit_another_connection(self, peer: SecurityServerId) -> None:
        """A registered peer may hold ``max_peer_connections`` at once, no more: closing ones
        count until they are closed (a refused connection still holds its TLS state while the
        peer leaves its closing handshake unanswered)."""
        limit = self.server.config.limits.max_peer_connections
        held = sum(
            1
            for conn in self.server.provider_connections
            if conn is not self and conn.peer_id == peer
        )
        if held >= limit:
            raise TooManyConnections(
                f"security server {peer} already holds {held} connections to this server "
                f"(at most {limit})"
            )

    def recheck(self, trust: PeerTrust, now: float) -> None:
        """A new global configuration: the peer is judged again by its peer trust, on what it
        presented; the connection is dropped if it no longer qualifies."""
        if self.peer_id is None or not self.open:
            return
        try:
            if self.hello is None:
                still = trust.authenticate(self.peer_cert, now, "provider").id
            else:
                accepted = set(self.peer.signers) if self.peer is not None else set()
                self.peer = trust.admit(self.peer_cert, self.hello, now, "provider")
                still = self.peer.server
                self._note_refusals(self.peer, "no longer accepted", accepted)
        except ExchangeError as err:
            log.warning(
                "dropping peer %s after a configuration change: %s", self.peer_id, err.internal
            )
            self._refuse(err)
            return
        if still != self.peer_id:
            self._refuse(
                SslAuthenticationFailed(
                    "the authentication certificate now belongs to another server"
                )
            )

    def _refuse(self, err: ExchangeError) -> None:
        """Send the peer ``err`` on stream 0 and close the connection. What it had begun of a
        frame no longer counts against the peer (the session dropped it); a close the peer
        does not let finish (it reads neither the refusal nor the answers before it) is cut
        after ``tls_handshake_timeout``."""
        if self.transport is None:
            return
        with contextlib.suppress(LocalProtocolError):  # already refused
            self.transport.write(self.session.send_error(0, error_meta(err)))
        if self.transport.is_closing():
            return
        self.transport.close()
        self._frame_begun(0, time.monotonic())  # the session holds nothing now
        asyncio.get_running_loop().call_later(
            self.server.config.limits.tls_handshake_timeout, _cut, self.transport
        )

    # -- frames ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.peer_id is None:
            return
        whole = 0
        now = time.monotonic()
        try:
            for event in self.session.receive_data(data, now=now):
                whole += 1
                if isinstance(event, HelloReceived):
                    self._on_hello(event)
                else:
                    assert isinstance(event, RequestReceived)  # the session's table
                    self._on_request(event)
        except ExchangeError as err:
            log.warning("protocol error from %s: %s", self.peer_id, err.message)
            self._refuse(err)
        except Exception as exc:
            # a bug of ours while reading the peer's frames (HELLO, say): the connection is
            # refused with a detail id the operator finds next to the reason; the port serves on
            what = f"reading frames of {self.peer_id}"
            self._refuse(internal_failure(log, ProviderServerError, what, exc))
        self._frame_begun(whole, now)

    def _frame_begun(self, whole: int, now: float) -> None:
        """Account for the frame part-way received after ``whole`` frames came in whole: its
        bytes count in the peer's load (reading waits past ``max_peer_request_bytes``, as for
        requests in flight), and it must arrive whole within ``frame_timeout`` of when it began
        (:func:`close_stalled`)."""
        buffered = self.session.buffered
        if not buffered and not self.frame_bytes:
            return  # the frames came in whole, as most do
        if not self.open:
            buffered = 0
        load = self._load()
        fell = buffered < self.frame_bytes
        self.frame_bytes = buffered
        if not buffered:
            load.begun.discard(self)
            self.frame_since = None
        else:
            load.begun.add(self)
            if whole or self.frame_since is None:
                self.frame_since = now  # the bytes held are a new frame's
        if fell:
            self._released(load)  # what the peer holds fell: connections it held back read on
        if not buffered:
            return
        limits = self.server.config.limits
        if (
            load.bytes + load.buffered - buffered > limits.max_peer_request_bytes
            and self.transport is not None
            and any(conn is not self and not conn.paused for conn in load.begun)
        ):
            # what else the peer holds is over the limit: this frame waits, while a frame of the
            # peer's that this server does not hold back goes on, which ends (whole, or at its
            # deadline) and lets this one read on. Never for its own size (a request larger than
            # the limit could not arrive at all), nor with every frame begun held back (none
            # would ever end)
            load.paused.add(self)
            self.transport.pause_reading()

    def frame_too_slow(self, timeout: float) -> None:
        """The frame begun did not arrive whole within ``timeout`` seconds: refuse the
        connection (:func:`close_stalled`)."""
        self.frame_since = None
        err = FrameTimeout(
            f"a frame begun was not sent whole within {timeout:g} s",
            internal=f"{self.frame_bytes} bytes of it received",
        )
        log.warning("closing the connection of %s: %s", self.peer_id, err.internal)
        self._refuse(err)

    def answers_unread(self, timeout: float) -> None:
        """The peer read nothing of its answers for ``timeout`` seconds: the connection is
        aborted, with what it buffered both ways (an ERROR frame would wait behind the answers
        it does not read, and so would a closing handshake)."""
        self.blocked_since = None
        log.warning(
            "aborting the connection of %s: it read none of its answers for %g s",
            self.peer_id,
            timeout,
        )
        self.session.close()
        if self.transport is not None:
            self.transport.abort()

    def drain(self) -> None:
        """The server stops: tell the peer (GOAWAY) to send no new request on this connection;
        the requests in flight are answered, the peer closes the connection once they are."""
        if self.open and self.session.state is State.OPEN:
            self.write(self.session.send_goaway({"reason": "the security server is stopping"}))

    def _on_request(self, event: RequestReceived) -> None:
        if self.session.draining:
            # it crossed our GOAWAY on the wire: refused unprocessed (and not logged: nothing
            # was verified, decided or answered), so that the consumer may send it elsewhere
            err = ShuttingDown("the security server is stopping; the request was not processed")
            self.write(self.session.send_error(event.stream_id, error_meta(err)))
            return
        task = asyncio.ensure_future(self._answer(event))
        self.tasks.add(task)
        token = event.meta.get("jws")  # a string or nothing (the session checked the meta)
        size = len(event.body) + (len(token) if isinstance(token, str) else 0)
        load = self._load()
        load.requests += 1
        load.bytes += size
        task.add_done_callback(lambda done: self._task_done(done, load, size))
        limits = self.server.config.limits
        over = load.requests > limits.max_peer_requests
        if (over or load.bytes > limits.max_peer_request_bytes) and self.transport:
            # the peer sends more than this server takes on at once: read no further on
            # this connection (nor on others of the peer's that go over) until it drains
            load.paused.add(self)
            self.transport.pause_reading()

    @property
    def paused(self) -> bool:
        """Whether this connection is not read until its peer's requests drain."""
        load = self.server.peer_loads.get(self.peer_id) if self.peer_id is not None else None
        return load is not None and self in load.paused

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def _load(self) -> PeerLoad:
        assert self.peer_id is not None
        load = self.server.peer_loads.get(self.peer_id)
        if load is None:
            load = self.server.peer_loads[self.peer_id] = PeerLoad()
        return load

    def _task_done(self, task: asyncio.Task[None], load: PeerLoad, size: int) -> None:
        self.tasks.discard(task)
        load.requests -= 1
        load.bytes -= size
        self._released(load)

    def _released(self, load: PeerLoad) -> None:
        """The peer holds less: read its paused connections again once its requests in flight
        are below half of both limits; forget its load once it holds nothing."""
        limits = self.server.config.limits
        if (
            load.paused
            and load.requests <= limits.max_peer_requests // 2
            and load.bytes <= limits.max_peer_request_bytes // 2
        ):
            paused, load.paused = load.paused, set()
            now = time.monotonic()
            for conn in paused:
                if conn.frame_since is not None:
                    conn.frame_since = now  # held back by us: the time was not the peer's
                conn._read_on()
        if load.idle and self.peer_id is not None:
            self.server.peer_loads.pop(self.peer_id, None)

    def _on_hello(self, event: HelloReceived) -> None:
        trust = self.server.peer_trust
        if trust is None:
            raise ProviderOutdatedGlobalConf("no valid global configuration is in force")
        try:
            admitted = trust.admit(self.peer_cert, event.hello, self.server.clock(), "provider")
        except ExchangeError as err:
            log.warning("refused peer %s: %s [%s]", self.peer_id, err.internal, err.detail)
            self._refuse(err)
            return
        self.peer, self.hello = admitted, event.hello
        self.server.keep_evidence(admitted)
        self._note_refusals(admitted, "refused")
        if event.first:
            assert self.transport is not None
            self.transport.write(self.session.send_hello(self.server.hello_meta()))

    def _note_refusals(
        self, admitted: AdmittedPeer, what: str, among: set[str] | None = None
    ) -> None:
        """Tell the operator of each signing certificate refused (``among`` those given)."""
        for thumb, err in admitted.refused.items():
            if among is None or thumb in among:
                log.warning("peer %s: signing certificate %s: %s", self.peer_id, what, err.internal)

    def send_hello(self, meta: dict[str, Any]) -> None:
        if self.open and self.session.state is State.OPEN:
            self.write(self.session.send_hello(meta))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.session.close()
        self.server.provider_connections.discard(self)
        self.frame_since = None
        load = self.server.peer_loads.get(self.peer_id) if self.peer_id is not None else None
        if load is not None:
            load.paused.discard(self)
            load.begun.discard(self)
            self.frame_bytes = 0
            self._released(load)

    async def _answer(self, event: RequestReceived) -> None:
        try:
            kind, meta, body = await handle_request(self.server, self, event)
        except Exception as exc:
            # a bug of ours after the request's checks (building, signing or logging the
            # answer): nothing can be signed, but the consumer gets an unsigned refusal now
            # rather than waiting for its response timeout
            what = f"answering {self.peer_id} on stream {event.stream_id}"
            err = internal_failure(log, ProviderServerError, what, exc)
            kind, meta, body = FrameKind.ERROR, error_meta(err), b""
        if self.session.state not in (State.OPEN, State.DRAINING):
            return  # the connection is gone or refused: nobody to answer
        if kind is FrameKind.RESPONSE:
            self.write(self.session.send_response(event.stream_id, meta, body))
        else:
            self.write(self.session.send_error(event.stream_id, meta))

    def pause_writing(self) -> None:
        """The answers to this peer fill the transport's buffer past its high-water mark: the
        peer sends requests faster than it reads the answers (or not at all). Read none of its
        requests on this connection until the buffer drains, so that answers nobody reads do
        not pile up in memory."""
        self.write_blocked = True
        self.blocked_since = time.monotonic()
        if self.transport is not None and self.open:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_blocked = False
        self.blocked_since = None
        self._read_on()

    def _read_on(self) -> None:
        """Read the peer's requests again, unless its load (:attr:`paused`) or its unread answers
        (:attr:`write_blocked`) still hold this connection."""
        if self.transport is not None and self.open and not self.paused and not self.write_blocked:
            self.transport.resume_reading()

    def _write_now(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def keys_at(self, now: float) -> KeysAt:
        """The keys the peer may sign with at ``now`` (the
        :class:`~exchange.trustcore.messages.SignerKeys` of this connection for one exchange)."""
        if self.peer is None:
            raise InvalidMessage("REQUEST before HELLO")
        return self.peer.keys_at(now)


def _cut(transport: asyncio.Transport) -> None:
    """Abort a connection whose close has not finished (nothing if it has)."""
    with contextlib.suppress(Exception):
        transport.abort()


def close_stalled(connections: Iterable[ProviderConnection], now: float, timeout: float) -> None:
    """End each connection stalled by its peer for more than ``timeout`` seconds at ``now``
    (``time.monotonic()``): a frame begun and not arrived whole (time this server held the
    connection back for the peer's load is not counted; time the peer left its answers unread
    is), or answers it has not read at all. Run every second by the server, which is cheaper
    than a timer for every frame that comes in more than one read."""
    for conn in list(connections):
        if conn.blocked_since is not None and now - conn.blocked_since > timeout:
            conn.answers_unread(timeout)
        elif conn.frame_since is not None and now - conn.frame_since > timeout and not conn.paused:
            conn.frame_too_slow(timeout)


def error_meta(err: ExchangeError) -> dict[str, Any]:
    """An unsigned refusal's meta: its code, message, detail id and status."""
    return {"type": err.code, "message": err.message, "detail": err.detail, "status": err.status}


# --- one request ---------------------------------------------------------------------------------


async def handle_request(
    server: ProviderHost, conn: ProviderConnection, event: RequestReceived
) -> tuple[FrameKind, dict[str, Any], bytes]:
    """One request on ``conn``: the answer's frame kind, meta and body (a signed RESPONSE once
    the record is logged; an unsigned ERROR when it cannot be logged)."""
    rec = ExchangeRecord(
        side="provider", peer_server=str(conn.peer_id), started_ns=time.perf_counter_ns()
    )
    now = server.clock()  # the one reference time of this exchange
    request: SignedRequest | None = None
    try:
        request, status, headers, body, released, policy_version = await guarded(
            rec, _process(server, conn, event, rec, now), ProviderServerError
        )
    except ExchangeError as err:
        if not isinstance(err, AccessDenied):
            log_refusal(log, f"request {rec.message_id}", err)
        rec.fail(err)
        status, body = err.status, orjson.dumps(err.body())
        headers = [("content-type", _JSON)]
        if rec.protocol == "soap":
            status, headers, body = fault_answer(err)
        if isinstance(err, QuotaExceeded):
            headers.append(("retry-after", str(err.retry_after)))
        released, policy_version = None, (rec.decision or {}).get("policy_version")
    rec.http_status = status
    rec.response_body = body
    response = SignedResponse(
        message_id=rec.message_id or "",
        request_id=str(uuid_utils.uuid4()),
        request_hash=rec.request_hash or "",
        status=status,
        headers=tuple(headers),
        body_sha256=b64url(hashlib.sha256(body).digest()),
        body_length=len(body),
        error_type=None if rec.error is None else rec.error.code,
        error_message=None if rec.error is None else rec.error.message,
        policy_version=policy_version,
        released_fields=released,
        timestamp_ms=int(now * 1000),
        decision=SignedDecision.own(rec.decision),
    )
    rec.released_fields = None if released is None else list(released)
    signer = server.signer_for(request.service.member if request is not None else None)
    rec.response_jws = signer.sign(response.canonical())
    rec.mark("signed")
    rec.mark("total")
    try:
        await server.log_record(rec)
    except ExchangeError as err:
        return FrameKind.ERROR, error_meta(err), b""
    return FrameKind.RESPONSE, {"jws": rec.response_jws}, body


async def _process(
    server: ProviderHost,
    conn: ProviderConnection,
    event: RequestReceived,
    rec: ExchangeRecord,
    now: float,
) -> tuple[SignedRequest, int, list[tuple[str, str]], bytes, tuple[str, ...] | None, str | None]:
    token = event.meta.get("jws")
    if not isinstance(token, str) or not token.isascii():
        raise InvalidMessage("REQUEST frame carries no compact JWS signed request")
    rec.request_jws = token
    rec.request_body = body = event.body
    verified = None
    try:
        # (1) the signature verifies with a signing certificate the peer presented and the peer
        # trust accepted (still valid and fresh now), (2) of the client's own member
        verified = verify_request(token, conn.keys_at(now))
    except ExchangeError:
        # the payload is parsed a second time only for a refusal, to answer under its claimed id
        rec.message_id = _claimed_message_id(token)
        exchange_started(rec.message_id)
        raise
    finally:
        # the answer is bound to the token by its hash, whether it verified or not
        rec.request_hash = request_hash(token) if verified is None else verified.request_hash
    request = verified.request
    rec.mark("verified")
    rec.describe(request)
    exchange_started(rec.message_id)
    # the global configuration is fresh (checked once the refusal can name the request)
    conf = server.globalconf_or_fail(provider=True, now=now)
    peer = conn.peer
    assert peer is not None  # keys_at found the peer admitted
    # (3) addressed to this security server
    if request.security_server != server.config.server_id:
        raise InvalidMessage(f"request is addressed to security server {request.security_server}")
    # (4) the client subsystem is hosted by the connecting security server
    if not peer.hosts(request.client):
        raise SslAuthenticationFailed(
            f"client {request.client} is not hosted by the connecting security server "
            f"{conn.peer_id}"
        )
    # ... and it is the sender the client member named
    if request.client_server != peer.server:
        raise SslAuthenticationFailed(
            f"the request was signed to be sent by security server {request.client_server}, "
            f"not by the connecting {peer.server}"
        )
    # (5) fresh, and not seen before
    server.replay.check_and_add(
        str(request.client), request.message_id, request.timestamp_ms, int(now * 1000)
    )
    # (6) the body is the one that was signed
    check_request_body(request, body)
    if request.protocol == "soap":
        soap = await process_soap(
            server, request, body, conf, rec, lambda r, c, d: _decide(server, r, c, d, now)
        )
        return request, soap.status, soap.headers, soap.body, soap.released, soap.policy_version
    if request.protocol != "rest":
        raise InvalidMessage(f"unknown protocol {request.protocol[:20]!r} in the signed request")
    # (7) a metadata service (PR-MREST) is answered by this server itself
    if is_rest_metadata(request):
        meta = await server.metadata.answer_rest(request, conf, rec)
        return request, meta.status, meta.headers, meta.body, None, meta.policy_version
    # (7) a service this server provides
    service = server.services.get(request.service)
    if service is None:
        raise UnknownService(f"service {request.service} is not provided by this security server")
    if service.type != "rest":
        raise UnknownService(f"service {request.service} is a SOAP service: POST an envelope to /")
    # (8) the access policy grants it
    decision = _decide(server, request, conf, rec, now)
    rec.mark("decided")
    # (9) the backend answers, and only granted fields leave this server
    backend_headers = end_to_end_headers(request.headers)
    if decision.fields is not None:
        backend_headers = [h for h in backend_headers if h[0] not in CONDITIONAL_HEADERS]
    backend_headers += _xroad_backend_headers(request, rec)
    result = await server.backend.call(
        request.method,
        service.url,
        request.path,
        request.query,
        backend_headers,
        body,
        min(service.timeout, server.config.limits.backend_timeout),
    )
    rec.mark("backend")
    try:
        status = forwarding.check_status(result.status)
        headers = forwarding.end_to_end(result.headers)
    except FieldError as exc:
        raise ServiceFailed(f"the service's answer cannot be passed on: {exc}") from None
    body = result.body
    released: tuple[str, ...] | None = None
    if decision.fields is not None:
        headers = [(k, v) for k, v in headers if k not in VALIDATOR_HEADERS]
        if 200 <= result.status < 300:
            body, released = _minimise(body, headers, decision.fields)
        else:
            body, headers, released = _minimise_other(body, headers, decision.fields)
        rec.released_fields = list(released)
    return request, status, headers, body, released, decision.policy_version


def _claimed_message_id(token: str) -> str | None:
    """The message id the request claims, before its signature is checked: a refusal answers
    under it, so an honest consumer can match the refusal to its request (the request hash binds
    them; a forger only gets its own id back)."""
    try:
        claimed = orjson.loads(unverified_payload(token)).get("id")
    except (ExchangeError, orjson.JSONDecodeError, AttributeError):
        return None
    try:
        return fields.message_id(claimed) if isinstance(claimed, str) else None
    except FieldError:
        return None


def _xroad_backend_headers(request: SignedRequest, rec: ExchangeRecord) -> list[tuple[str, str]]:
    out = [
        ("X-Road-Client", str(request.client)),
        ("X-Road-Service", str(request.service)),
        ("X-Road-Id", request.message_id),
    ]
    for name, value in (
        ("X-Road-UserId", request.user_id),
        ("X-Road-Issue", request.issue),
        ("X-Road-Represented-Party", request.represented_party),
        ("X-Road-Purpose", request.purpose),
    ):
        if value is not None:
            out.append((name, value))
    return out


def _decide(
    server: ProviderHost,
    request: SignedRequest,
    conf: GlobalConf,
    rec: ExchangeRecord,
    now: float,
) -> Decision:
    policy = server.policy_set()
    decision = evaluate(
        policy,
        PolicyRequest(
            client=request.client,
            service=request.service,
            method=request.method,
            path=request.path,
            purpose=request.purpose,
            user_id=request.user_id,
            protocol=request.protocol,
            query=request.query,
        ),
        groups=conf.groups_of(request.client),
        now=dt.datetime.fromtimestamp(now, dt.UTC),
    )
    rec.decision = {**decision.log_entry(), "reason": decision.reason}
    if not decision.allowed:
        raise decision.error()
    if decision.fields is not None:
        _refuse_preconditions(request.headers)
    # the client's quota under the allowing grant (docs/design.md §7), counted only when allowed
    if decision.rate is not None and decision.grant_id is not None:
        server.quota.check_or_raise((decision.grant_id, str(request.client)), decision.rate)
    return decision


CONDITIONAL_HEADERS: Final = frozenset({"if-none-match", "if-modified-since", "if-range", "range"})
"""Request headers dropped under a grant with ``fields``: they ask for a 304 or a 206 judged
against the full representation, which the client never receives. Without them the service
answers the whole representation, which the provider filters; a client guessing validators of
fields it was not given learns nothing from 304 against 200."""

PRECONDITION_HEADERS: Final = frozenset({"if-match", "if-unmodified-since"})
"""Request headers refused under a grant with ``fields``: dropping them would turn a conditional
write into an unconditional one, and keeping them lets 412 against 2xx test guesses about the
full representation (RFC 9110 §13.1.1, §13.1.4). Such a grant releases no validator to base them
on."""

VALIDATOR_HEADERS: Final = frozenset(
    {"etag", "last-modified", "content-md5", "digest", "content-digest", "repr-digest"}
)
"""Answer headers dropped under a grant with ``fields``, whatever the status: validators and
digests of the representation the service sent (RFC 9110 §8.8, RFC 9530), which is not the one
the client gets, and which would let it test guesses about the fields it was not given."""


def _refuse_preconditions(headers: Sequence[Sequence[str]]) -> None:
    """AccessDenied if a request under a field-restricted grant carries a precondition."""
    refused = sorted({name.lower() for name, _ in headers} & PRECONDITION_HEADERS)
    if refused:
        raise AccessDenied(
            f"the grant releases only some fields and no validators: {', '.join(refused)} "
            "cannot be used under it"
        )


ERROR_MEMBERS: Final = ("error", "message", "type", "title", "detail", "status", "code")
"""Top-level members of a non-2xx JSON body released to a field-restricted grant besides its
granted fields, when their values are scalars: the adapter SDK's error shape (``error``,
``message``), RFC 9457 problem details and X-Road's error body, so a caller still learns why."""


def _minimise_other(
    body: bytes, headers: list[tuple[str, str]], fields: tuple[str, ...]
) -> tuple[bytes, list[tuple[str, str]], tuple[str, ...]]:
    """A 1xx/3xx/4xx/5xx answer to a field-restricted grant. An error body may hold a record too
    (a 409 with the conflicting one, say), so a JSON body keeps only its granted fields and the
    scalar :data:`ERROR_MEMBERS`; any other body is withheld. Status and headers stay (but for
    :data:`VALIDATOR_HEADERS`, dropped by the caller)."""
    if not body:
        return body, headers, ()
    try:
        value = _json_of(body, headers)
    except ServiceFailed:
        value = None
    if not isinstance(value, dict | list):
        return b"", [(k, v) for k, v in headers if k != "content-type"], ()
    filtered, released = filter_fields(value, fields)
    if isinstance(value, dict):
        for name in ERROR_MEMBERS:
            member = value.get(name)
            if isinstance(member, str | int | float | bool) and name not in filtered:
                filtered[name] = member
                released = (*released, name)
    return orjson.dumps(filtered), headers, tuple(sorted(released))


def _minimise(
    body: bytes, headers: list[tuple[str, str]], fields: tuple[str, ...]
) -> tuple[bytes, tuple[str, ...]]:
    if not body:
        return body, ()
    filtered, released = filter_fields(_json_of(body, headers), fields)
    return orjson.dumps(filtered), tuple(released)


def _json_of(body: bytes, headers: list[tuple[str, str]]) -> Any:
    """The service's JSON answer, for a field filter; ServiceFailed if it is not JSON."""
    ctype = next((v for k, v in headers if k == "content-type"), "")
    if "json" not in ctype.lower():
        raise ServiceFailed(
            "the grant releases only some fields, but the service did not answer JSON"
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ServiceFailed("the service answered malformed JSON") from None
