"""The consumer side's connections to provider security servers (EXM/1 over mutual TLS).

A :class:`PeerPool` keeps a few persistent TLS connections to one provider security server and
spreads requests over them; each connection multiplexes many requests by stream id. The
provider is judged by the same :class:`~exchange.trustcore.peers.PeerTrust` rules a provider
applies to its peers: on connect its authentication certificate must chain to an approved CA,
have the authentication profile and be registered for the server we meant to reach (else the
request fails with ``Server.ClientProxy.SslAuthenticationFailed``); its HELLO must staple a
fresh OCSP response for it; a signing certificate it presents that is not acceptable is skipped
(a response signed with it is refused), not the whole connection. The protocol's rules are the
:class:`~exchange.protocol.session.Session`'s; this module only moves bytes and futures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

from cryptography import x509

from exchange.errors import (
    ConsumerSslAuthenticationFailed,
    ConsumerTimeout,
    ExchangeError,
    InconsistentResponse,
    NetworkError,
    OutdatedGlobalConf,
    PeerRefusal,
)
from exchange.identifiers import SecurityServerId
from exchange.protocol.frames import FrameError, FrameWriter
from exchange.protocol.hello import Hello
from exchange.protocol.session import (
    ConnectionRefused,
    Event,
    GoAwayReceived,
    HelloReceived,
    LocalProtocolError,
    RequestRefused,
    ResponseReceived,
    Session,
    State,
)
from exchange.protocol.syntax import is_token
from exchange.trustcore.peers import AdmittedPeer, KeysAt, PeerTrust

log = logging.getLogger("exchange.server.peer")


def unsigned_refusal(meta: dict[str, object]) -> ExchangeError:
    """An ERROR frame is not signed: pass on only a provider-side code and an error status.

    The provider's detail id stays with the operator (in the error's ``internal`` text, so in
    the consumer's log and message log): it finds the provider's own log line about the refusal.
    """
    code = str(meta.get("type", ""))
    status = meta.get("status")
    if (
        not code.startswith("Server.ServerProxy.")
        or not is_token(code)
        or not isinstance(status, int)
        or isinstance(status, bool)
    ):
        return InconsistentResponse("the provider answered with a malformed refusal")
    message = str(meta.get("message", "the provider refused the request"))[:500]
    detail = meta.get("detail")
    internal = (
        f"{message} (the provider's detail id {detail})"
        if isinstance(detail, str) and len(detail) <= 64 and is_token(detail)
        else None
    )
    return PeerRefusal(
        message, code=code, status=status if 400 <= status <= 599 else 502, internal=internal
    )


Answer = ResponseReceived | RequestRefused
"""What comes back on a stream: the provider's (signed) response, or its unsigned refusal."""


class NotDelivered(Exception):
    """The request reached no provider that processed it: no connection could be made or used,
    or the provider refused it unprocessed while stopping (``ShuttingDown``). It may go to
    another provider of the service; ``error`` is what the caller gets if none takes it."""

    def __init__(self, error: ExchangeError) -> None:
        super().__init__(error.message)
        self.error = error


class PeerConnection(asyncio.Protocol):
    """The consumer's end of one EXM/1 connection to a provider: a thin shell around its
    :class:`~exchange.protocol.session.Session`; the provider is judged by the
    :class:`~exchange.trustcore.peers.PeerTrust` in force, as a provider judges its peers.
    Requests are answered in any order."""

    def __init__(
        self,
        target: SecurityServerId,
        hello: Callable[[], dict[str, Any]],
        trust: Callable[[], PeerTrust | None],
        max_frame: int,
        clock: Callable[[], float],
        keep: Callable[[AdmittedPeer], None] = lambda peer: None,
    ) -> None:
        self.target = target
        self.hello = hello
        self.trust = trust
        self.keep = keep
        self.clock = clock
        self.session = Session("consumer", max_frame)
        self.peer_cert: x509.Certificate | None = None
        self.peer: AdmittedPeer | None = None
        """The provider as its HELLO was admitted under the configuration in force."""
        self.presented: Hello | None = None
        self.pending: dict[int, asyncio.Future[Answer]] = {}
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.failure: ExchangeError | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        transport = self.transport
        self.write = FrameWriter(self._write_now, asyncio.get_running_loop().call_soon)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        self.peer_cert = x509.load_der_x509_certificate(der) if der is not None else None
        # (1) the provider's authentication certificate is acceptable and registered for the
        # server we meant to reach (before anything is sent to it)
        try:
            self._trust().authenticate(
                self.peer_cert, self.clock(), "consumer", expected=self.target
            )
        except ExchangeError as err:
            self._fail(err)
            return
        transport.write(self.session.send_hello(self.hello()))

    @property
    def usable(self) -> bool:
        """Open for new requests: not closed or closing, not refused, not draining."""
        transport = self.transport
        return (
            not self.closed
            and transport is not None
            and not transport.is_closing()
            and self.session.state is State.OPEN
        )

    def _trust(self) -> PeerTrust:
        trust = self.trust()
        if trust is None:
            raise OutdatedGlobalConf("no global configuration is in force")
        return trust

    def data_received(self, data: bytes) -> None:
        try:
            for event in self.session.receive_data(data, now=time.monotonic()):
                self._on_event(event)
        except FrameError as exc:
            self._fail(NetworkError(f"protocol error from {self.target}: {exc.message}"))
        except ExchangeError as err:
            self._fail(err)
        if self.session.state is State.CLOSED:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.session.close()
        err = self.failure or self._lost_error()
        if not self.ready.done():
            self.ready.set_exception(err)
            self.ready.exception()
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(err)
        self.pending.clear()

    def _lost_error(self) -> ExchangeError:
        if self.ready.done():
            return NetworkError(f"connection to security server {self.target} was lost")
        # With TLS 1.3 our handshake completes before the provider has checked our certificate;
        # a provider that refuses it closes the connection before its HELLO.
        return ConsumerSslAuthenticationFailed(
            f"security server {self.target} closed the connection before its HELLO: "
            "it refused this server's authentication certificate or the TLS handshake"
        )

    # -- frames ---------------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        # an answer first: every exchange has one
        if isinstance(event, (ResponseReceived, RequestRefused)):
            fut = self.pending.pop(event.stream_id, None)
            if fut is not None and not fut.done():
                fut.set_result(event)
        elif isinstance(event, HelloReceived):
            self._on_hello(event.hello)
        elif isinstance(event, ConnectionRefused):
            self._fail(unsigned_refusal(event.meta))
        elif isinstance(event, GoAwayReceived):
            log.info(
                "security server %s is stopping: no new requests on this connection (%d in flight)",
                self.target,
                len(self.pending),
            )

    def _on_hello(self, hello: Hello) -> None:
        # (2)-(6) the provider's HELLO: its authentication certificate is not revoked, and
        # each signing certificate it presents is accepted or skipped (PeerTrust.admit)
        self.peer = self._trust().admit(
            self.peer_cert, hello, self.clock(), "consumer", expected=self.target
        )
        self.presented = hello
        self.keep(self.peer)
        for err in self.peer.refused.values():
            log.warning("provider %s: signing certificate refused: %s", self.target, err.internal)
        if not self.ready.done():
            self.ready.set_result(None)

    def recheck(self, trust: PeerTrust, now: float) -> bool:
        """A new global configuration: the provider is judged again on what it presented; the
        connection is closed (and False returned) if it no longer qualifies."""
        if self.closed or self.presented is None:
            return True
        try:
            self.peer = trust.admit(
                self.peer_cert, self.presented, now, "consumer", expected=self.target
            )
        except ExchangeError as err:
            log.warning(
                "closing the connection to %s after a configuration change: %s",
                self.target,
                err.internal,
            )
            self._fail(err)
            return False
        return True

    def keys_at(self, now: float) -> KeysAt:
        """The keys the provider may sign with at ``now`` (the
        :class:`~exchange.trustcore.messages.SignerKeys` of this connection for one exchange)."""
        if self.peer is None:
            raise NetworkError(f"security server {self.target} has not presented its HELLO")
        return self.peer.keys_at(now)

    def send_hello(self, meta: dict[str, Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(LocalProtocolError):  # not yet, or no longer, open
                self.write(self.session.send_hello(meta))

    def close_when_idle(self) -> None:
        self.session.start_draining()
        if self.session.state is State.CLOSED:
            self.close()

    def _fail(self, err: ExchangeError) -> None:
        self.failure = err
        if not self.ready.done():
            self.ready.set_exception(err)
            self.ready.exception()
        self.close()

    # -- requests -------------------------------------------------------------------------------

    def send(self, meta: dict[str, Any], body: bytes) -> asyncio.Future[Answer]:
        if self.closed or self.transport is None or self.transport.is_closing():
            why = f": {self.failure.message}" if self.failure is not None else ""
            raise NetworkError(f"connection to security server {self.target} is closed{why}")
        try:
            stream_id, data = self.session.send_request(meta, body)
        except LocalProtocolError:
            raise NetworkError(
                f"connection to security server {self.target} takes no new requests"
            ) from None
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.pending[stream_id] = fut
        self.write(data)
        return fut

    def _write_now(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def forget(self, fut: asyncio.Future[Answer]) -> None:
        for key, value in list(self.pending.items()):
            if value is fut:
                del self.pending[key]
                self.session.forget(key)
        if self.session.state is State.CLOSED:
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Expired(Exception):
    """The answer did not arrive in time."""


def _expire(fut: asyncio.Future[Answer]) -> None:
    if not fut.done():
        fut.set_exception(_Expired())


class PeerPool:
    """A few persistent connections to one provider security server."""

    def __init__(
        self,
        target: SecurityServerId,
        address: str,
        *,
        ssl_context: ssl.SSLContext,
        hello: Callable[[], dict[str, Any]],
        trust: Callable[[], PeerTrust | None],
        size: int,
        connect_timeout: float,
        max_frame: int,
        clock: Callable[[], float] = time.time,
        keep: Callable[[AdmittedPeer], None] = lambda peer: None,
    ) -> None:
        self.target = target
        self.address = address
        self.keep = keep
        self.ssl_context = ssl_context
        self.hello = hello
        self.trust = trust
        self.size = max(1, size)
        self.connect_timeout = connect_timeout
        self.max_frame = max_frame
        self.clock = clock
        self.connections: list[PeerConnection | None] = [None] * self.size
        self.connecting: list[asyncio.Task[PeerConnection] | None] = [None] * self.size
        self.turn = 0

    async def _connect(self) -> PeerConnection:
        host, _, port = self.address.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: PeerConnection(
                        self.target, self.hello, self.trust, self.max_frame, self.clock, self.keep
                    ),
                    host.strip("[]"),
                    int(port),
                    ssl=self.ssl_context,
                    server_hostname=None,
                )
                await proto.ready
        except TimeoutError:
            raise ConsumerTimeout(
                f"connecting to security server {self.target} at {self.address} timed out"
            ) from None
        except ssl.SSLError as exc:
            raise ConsumerSslAuthenticationFailed(
                f"TLS handshake with security server {self.target} failed: {exc.reason or exc}"
            ) from None
        except OSError as exc:
            raise NetworkError(
                f"cannot connect to security server {self.target} at {self.address}: "
                f"{exc.strerror or exc}"
            ) from None
        return proto

    async def connection(self) -> PeerConnection:
        index = self.turn
        self.turn = (index + 1) % self.size
        conn = self.connections[index]
        if conn is not None and conn.usable:
            return conn
        task = self.connecting[index]
        if task is None or task.done():
            task = asyncio.ensure_future(self._connect())
            self.connecting[index] = task
        try:
            conn = await asyncio.shield(task)
        finally:
            if task.done():
                self.connecting[index] = None
        self.connections[index] = conn
        return conn

    async def request(
        self, meta: dict[str, Any], body: bytes, timeout: float
    ) -> tuple[Answer, PeerConnection]:
        return await self.answer(await self.connection(), meta, body, timeout)

    async def answer(
        self, conn: PeerConnection, meta: dict[str, Any], body: bytes, timeout: float
    ) -> tuple[Answer, PeerConnection]:
        """Send a request on ``conn`` (one of :meth:`connection`'s) and wait for its answer;
        :class:`NotDelivered` if it could not be sent (the connection was closed, or takes no
        new requests since the provider's GOAWAY, by the time it was handed over)."""
        try:
            fut = conn.send(meta, body)
        except ExchangeError as err:
            raise NotDelivered(err) from None  # nothing was sent
        # a timer on the answer's future: cheaper than asyncio.timeout's per-request context
        timer = asyncio.get_running_loop().call_later(timeout, _expire, fut)
        try:
            answer = await fut
        except _Expired:
            conn.forget(fut)
            raise ConsumerTimeout(
                f"security server {self.target} did not answer within {timeout:g} s"
            ) from None
        finally:
            timer.cancel()
        return answer, conn

    def drain(self) -> None:
        """Take no new requests; close each connection once its pending requests are answered."""
        for conn in self.connections:
            if conn is not None:
                conn.close_when_idle()

    def send_hello(self, meta: dict[str, Any]) -> None:
        for conn in self.connections:
            if conn is not None and not conn.closed:
                conn.send_hello(meta)

    def recheck(self, trust: PeerTrust, now: float) -> bool:
        """Judge every open connection again under a new configuration's peer trust; False if
        one of them no longer qualifies (it is closed)."""
        kept = True
        for conn in self.connections:
            if conn is not None and not conn.closed:
                kept = conn.recheck(trust, now) and kept
        return kept

    def close(self) -> None:
        for conn in self.connections:
            if conn is not None:
                conn.close()
        for task in self.connecting:
            if task is not None:
                task.cancel()
