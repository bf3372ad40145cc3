"""The consumer side's connections to provider security servers (EXM/1 over mutual TLS).

A :class:`PeerPool` keeps a few persistent TLS connections to one provider security server and
spreads requests over them; each connection multiplexes many requests by stream id. On connect
the provider's authentication certificate fingerprint must be one the global configuration
registers for the server we meant to reach, and its HELLO must present valid signing
certificates; otherwise the connection is dropped and the request fails with
``Server.ClientProxy.SslAuthenticationFailed``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

from cryptography import x509

from exchange.errors import (
    ConsumerInvalidSignature,
    ConsumerSslAuthenticationFailed,
    ConsumerTimeout,
    ExchangeError,
    InconsistentResponse,
    NetworkError,
)
from exchange.globalconf.document import GlobalConf
from exchange.identifiers import SecurityServerId
from exchange.protocol.canonical import b64url_decode
from exchange.protocol.frames import (
    Frame,
    FrameDecoder,
    FrameError,
    FrameKind,
    FrameWriter,
    encode_frame,
)
from exchange.protocol.syntax import is_token
from exchange.server.certs import SignerCert, SignerCertRegistry
from exchange.server.revocation import RevocationChecks, staples_of
from exchange.trust.keys import fingerprint
from exchange.trust.ocsp import OcspError

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
    return ExchangeError(
        message, code=code, status=status if 400 <= status <= 599 else 502, internal=internal
    )


def parse_hello_certs(meta: dict[str, Any]) -> list[x509.Certificate]:
    raw = meta.get("certs", [])
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw) or len(raw) > 32:
        raise FrameError("HELLO certs must be a list of base64url DER certificates")
    try:
        return [x509.load_der_x509_certificate(b64url_decode(c)) for c in raw]
    except ValueError:
        raise FrameError("HELLO carries a malformed certificate") from None


class PeerConnection(asyncio.Protocol):
    """One TLS connection to a provider; requests are answered in any order."""

    def __init__(
        self,
        target: SecurityServerId,
        expected_fingerprints: frozenset[str],
        hello: bytes | Callable[[], bytes],
        registry: SignerCertRegistry,
        max_frame: int,
        clock: Callable[[], float],
        revocation: RevocationChecks | None = None,
        conf: Callable[[], GlobalConf | None] = lambda: None,
    ) -> None:
        self.target = target
        self.expected = expected_fingerprints
        self.hello = hello if callable(hello) else (lambda: hello)
        self.revocation = revocation
        self.conf = conf
        self.peer_cert: x509.Certificate | None = None
        self.refused: dict[str, ExchangeError] = {}
        self.registry = registry
        self.decoder = FrameDecoder(max_frame)
        self.clock = clock
        self.pending: dict[int, asyncio.Future[Frame]] = {}
        self.next_id = 1
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.signer_certs: dict[str, SignerCert] = {}
        self.failure: ExchangeError | None = None
        self.draining = False

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        transport = self.transport
        self.write = FrameWriter(self._write_now, asyncio.get_running_loop().call_soon)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        self.peer_cert = x509.load_der_x509_certificate(der) if der is not None else None
        # (1) the provider's auth certificate is one registered for the server we meant to reach
        if self.peer_cert is None or fingerprint(self.peer_cert) not in self.expected:
            self._fail(
                ConsumerSslAuthenticationFailed(
                    f"security server {self.target} presented an authentication certificate "
                    "that the global configuration does not register for it"
                )
            )
            return
        transport.write(self.hello())

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
            for frame in frames:
                self._on_frame(frame)
        except ExchangeError as exc:
            self._fail(NetworkError(f"protocol error from {self.target}: {exc.message}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
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

    def _on_frame(self, frame: Frame) -> None:
        if frame.kind is FrameKind.HELLO:
            self._on_hello(frame)
            return
        if frame.kind is FrameKind.ERROR and frame.stream_id == 0:
            self._fail(unsigned_refusal(frame.meta))
            return
        fut = self.pending.pop(frame.stream_id, None)
        if fut is not None and not fut.done():
            fut.set_result(frame)
        if self.draining and not self.pending:
            self.close()

    def _on_hello(self, frame: Frame) -> None:
        conf = self.conf()
        staples = staples_of(frame.meta)
        # (2) the provider's authentication certificate is not revoked (fresh OCSP "good")
        revocation = self.revocation
        if conf is not None and revocation is not None and self.peer_cert is not None:
            try:
                revocation.admit_peer(self.peer_cert, staples, conf)
            except OcspError as err:
                self._fail(err.for_consumer())
                return
        # (3) every signing certificate the provider presents is valid, approved, not revoked
        now = self.clock()
        for cert in parse_hello_certs(frame.meta):
            info = self.registry.admit(cert, now)
            try:
                if conf is not None and revocation is not None:
                    revocation.admit_peer(cert, staples, conf)
            except OcspError as err:
                self.refused[info.thumbprint] = err.for_consumer()
                self.signer_certs.pop(info.thumbprint, None)
                continue
            self.refused.pop(info.thumbprint, None)
            self.signer_certs[info.thumbprint] = info
        if not self.ready.done():
            self.ready.set_result(None)

    def signer_key(self, thumbprint: str) -> SignerCert:
        """The provider's signing certificate behind a response's ``x5t#S256`` (the
        :class:`~exchange.trustcore.messages.SignerKeys` of this connection): one it presented
        here, valid now, its OCSP status still fresh."""
        refused = self.refused.get(thumbprint)
        if refused is not None:
            raise refused
        info = self.signer_certs.get(thumbprint)
        if info is None:
            raise ConsumerInvalidSignature(
                "response signed with a certificate the provider did not present"
            )
        self.registry.check_time(info, self.clock())
        self.check_revocation(info)
        return info

    def check_revocation(self, info: SignerCert) -> None:
        """At each response: the provider's certificates' OCSP responses are still fresh."""
        conf = self.conf()
        revocation = self.revocation
        if conf is None or revocation is None:
            return
        try:
            if self.peer_cert is not None:
                revocation.check_peer(self.peer_cert, conf)
            revocation.check_peer(info.cert, conf)
        except OcspError as err:
            raise err.for_consumer() from None

    def send_hello(self, hello: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.write(hello)

    def close_when_idle(self) -> None:
        self.draining = True
        if not self.pending:
            self.close()

    def _fail(self, err: ExchangeError) -> None:
        self.failure = err
        if not self.ready.done():
            self.ready.set_exception(err)
            self.ready.exception()
        if self.transport is not None:
            self.transport.close()

    # -- requests -------------------------------------------------------------------------------

    def send(self, meta: dict[str, Any], body: bytes) -> asyncio.Future[Frame]:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise NetworkError(f"connection to security server {self.target} is closed")
        stream_id = self.next_id
        self.next_id = (stream_id + 1) & 0x7FFFFFFF or 1
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.pending[stream_id] = fut
        self.write(encode_frame(stream_id, FrameKind.REQUEST, meta, body))
        return fut

    def _write_now(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def forget(self, fut: asyncio.Future[Frame]) -> None:
        for key, value in list(self.pending.items()):
            if value is fut:
                del self.pending[key]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Expired(Exception):
    """The answer did not arrive in time."""


def _expire(fut: asyncio.Future[Frame]) -> None:
    if not fut.done():
        fut.set_exception(_Expired())


class PeerPool:
    """A few persistent connections to one provider security server."""

    def __init__(
        self,
        target: SecurityServerId,
        address: str,
        expected_fingerprints: frozenset[str],
        *,
        ssl_context: ssl.SSLContext,
        hello: bytes | Callable[[], bytes],
        revocation: RevocationChecks | None = None,
        conf: Callable[[], GlobalConf | None] = lambda: None,
        registry: SignerCertRegistry,
        size: int,
        connect_timeout: float,
        max_frame: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target = target
        self.address = address
        self.expected = expected_fingerprints
        self.ssl_context = ssl_context
        self.hello = hello
        self.revocation = revocation
        self.conf = conf
        self.registry = registry
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
                        self.target,
                        self.expected,
                        self.hello,
                        self.registry,
                        self.max_frame,
                        self.clock,
                        self.revocation,
                        self.conf,
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
        if conn is not None and not conn.closed:
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
    ) -> tuple[Frame, PeerConnection]:
        conn = await self.connection()
        fut = conn.send(meta, body)
        # a timer on the answer's future: cheaper than asyncio.timeout's per-request context
        timer = asyncio.get_running_loop().call_later(timeout, _expire, fut)
        try:
            frame = await fut
        except _Expired:
            conn.forget(fut)
            raise ConsumerTimeout(
                f"security server {self.target} did not answer within {timeout:g} s"
            ) from None
        finally:
            timer.cancel()
        return frame, conn

    def drain(self) -> None:
        """Take no new requests; close each connection once its pending requests are answered."""
        for conn in self.connections:
            if conn is not None:
                conn.close_when_idle()

    def send_hello(self, hello: bytes) -> None:
        for conn in self.connections:
            if conn is not None and not conn.closed:
                conn.send_hello(hello)

    def close(self) -> None:
        for conn in self.connections:
            if conn is not None:
                conn.close()
        for task in self.connecting:
            if task is not None:
                task.cancel()
