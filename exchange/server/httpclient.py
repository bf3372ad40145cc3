"""A lean pooled HTTP/1.1 client for calls from the provider security server to backends.

Why not aiohttp's client here: on the provider's hottest path it costs about as much CPU as
signing and verifying together (19-23% of a hop in the reference costs, bench/README.md). Parsing
is httptools' (the
llhttp parser Node.js uses); this module only keeps keep-alive connections, writes requests and
bounds what it reads. Redirects are never followed (PR-REST §4.4). A pooled connection that the
backend closed while idle is retried once on a fresh connection for idempotent methods, and only
if not a byte of a response had arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import httptools

from exchange.errors import ServiceFailed, ServiceTimeout
from exchange.protocol.syntax import is_path, is_query, is_token, match_field_value, match_token

_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_MAX_IDLE_PER_HOST: Final = 128
MAX_HEADER_BYTES: Final = 64 * 1024
# the whole head before its end is seen: names and values, plus status line and separators
_MAX_HEAD_BYTES: Final = MAX_HEADER_BYTES + 8 * 1024


def _is_interim(status: int) -> bool:
    return 100 <= status < 200


class _Stale(Exception):
    """A reused connection was closed before any response byte arrived."""


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(slots=True)
class _Exchange:
    future: asyncio.Future[Response]
    limit: int
    head_request: bool
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    header_bytes: int = 0
    header_count_bytes: int = 0
    headers_done: bool = False
    received: bool = False
    keep_alive: bool = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self, pool: _HostPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.closed = False
        self.reused = False

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            self._close()
            return
        ex.received = True
        if not ex.headers_done:
            # httptools calls on_header only once a line ends: bound what we feed until then.
            # Every byte fed before this chunk was head (the headers are not done), so a head
            # is cut after _MAX_HEAD_BYTES plus one read; this chunk may also carry body bytes.
            if ex.header_bytes > _MAX_HEAD_BYTES:
                self._finish_error(
                    ServiceFailed("the service answered more header data than allowed")
                )
                return
            ex.header_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish_error(ServiceFailed("the service tried to upgrade the connection"))
        except httptools.HttpParserError as exc:
            # a limit raised in one of our callbacks arrives wrapped by the parser
            cause = exc.__context__ if isinstance(exc.__context__, ServiceFailed) else None
            self._finish_error(
                cause or ServiceFailed(f"the service sent a malformed response: {exc}")
            )
        except ServiceFailed as exc:
            self._finish_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.exchange
        if ex is not None and not ex.future.done():
            if not ex.received and self.reused:
                ex.future.set_exception(_Stale())
            else:
                ex.future.set_exception(
                    ServiceFailed("the service closed the connection before answering in full")
                )
        self.exchange = None
        self.pool.forget(self)

    # -- httptools callbacks --------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.exchange is None:
            return
        self.exchange.header_count_bytes += len(name) + len(value)
        if self.exchange.header_count_bytes > MAX_HEADER_BYTES or len(self.exchange.headers) >= 200:
            raise ServiceFailed("the service answered more header data than allowed")
        self.exchange.headers.append(
            (name.decode("latin-1"), value.decode("utf-8", errors="surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            return
        ex.status = self.parser.get_status_code()
        if ex.status == 101:
            raise ServiceFailed("the service tried to switch protocols (101)")
        if _is_interim(ex.status):
            # RFC 9110 §15.2: an interim response (100 Continue, 103 Early Hints) comes before
            # the final one; its head counts against the same limits as the final head
            return
        ex.headers_done = True
        if ex.head_request:
            # a HEAD response has no body whatever its Content-Length says: finish here and do
            # not reuse the connection (the parser cannot be told the request method)
            ex.keep_alive = False
            self._finish()

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is None:
            return
        ex.size += len(body)
        if ex.size > ex.limit:
            raise ServiceFailed("service response exceeds the size limit")
        ex.chunks.append(body)

    def on_message_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            return
        if _is_interim(ex.status):
            ex.headers.clear()
            return
        ex.keep_alive = self.parser.should_keep_alive()
        self._finish()

    # -- completion -----------------------------------------------------------------------------

    def _finish(self) -> None:
        ex = self.exchange
        assert ex is not None
        self.exchange = None
        if not ex.future.done():
            ex.future.set_result(Response(ex.status, ex.headers, b"".join(ex.chunks)))
        if ex.keep_alive and not self.closed:
            self.parser = httptools.HttpResponseParser(self)
            self.reused = True
            self.pool.release(self)
        else:
            self._close()

    def _finish_error(self, err: Exception) -> None:
        ex = self.exchange
        self.exchange = None
        if ex is not None and not ex.future.done():
            ex.future.set_exception(err)
        self._close()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes, ex: _Exchange) -> None:
        assert self.transport is not None
        self.exchange = ex
        self.transport.write(data)

    def abort(self) -> None:
        self.exchange = None
        self._close()


class _HostPool:
    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.idle: deque[_Connection] = deque()
        self.host_header = f"{host}:{port}".encode("latin-1")

    def idle_connection(self) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def connect(self, connect_timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port, ssl=self.ssl_context
                )
        except TimeoutError:
            raise ServiceTimeout(
                f"connecting to the service timed out after {connect_timeout:g} s",
                internal=f"connecting to {self.host}:{self.port} timed out",
            ) from None
        except (OSError, ssl.SSLError) as exc:
            # the consumer learns that it failed; where the service lives stays with the operator
            raise ServiceFailed(
                "cannot reach the service",
                internal=f"cannot reach the service at {self.host}:{self.port}: {exc}",
            ) from None
        return conn

    def release(self, conn: _Connection) -> None:
        if len(self.idle) < _MAX_IDLE_PER_HOST:
            self.idle.append(conn)
        else:
            conn.abort()

    def forget(self, conn: _Connection) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def close(self) -> None:
        while self.idle:
            self.idle.pop().abort()


def _request_bytes(
    method: str, target: str, host: bytes, headers: list[tuple[str, str]], body: bytes
) -> bytes:
    path, _, query = target.partition("?")
    # defence in depth: callers validated these already (exchange.protocol.syntax)
    if not is_token(method) or not is_path(path) or not is_query(query):
        raise ServiceFailed("refusing to send a request line that is not valid HTTP")
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1"), b"Host: " + host]
    for name, value in headers:
        if match_token(name) is None or match_field_value(value) is None:
            raise ServiceFailed("refusing to send a header that is not valid HTTP")
        lines.append(f"{name}: {value}".encode("utf-8", errors="surrogateescape"))
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"")
    lines.append(body)
    return b"\r\n".join(lines)


def _expire(future: asyncio.Future[Response]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class HttpClient:
    """Pooled HTTP/1.1 client: ``await client.request(method, url, headers, body, timeout)``."""

    def __init__(self, *, max_response_bytes: int, connect_timeout: float) -> None:
        self.max_response_bytes = max_response_bytes
        self.connect_timeout = connect_timeout
        self._pools: dict[tuple[str, str, int], _HostPool] = {}
        self._tls = ssl.create_default_context()

    def _pool(self, scheme: str, host: str, port: int) -> _HostPool:
        key = (scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = _HostPool(host, port, self._tls if scheme == "https" else None)
            self._pools[key] = pool
        return pool

    async def request(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> Response:
        """``url`` is sent as given (already percent-encoded)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or "#" in url:
            raise ServiceFailed(
                "the service's URL is not usable", internal=f"not an http(s) URL: {url!r}"
            )
        port = parts.port or (443 if parts.scheme == "https" else 80)
        pool = self._pool(parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        data = _request_bytes(method, target, pool.host_header, headers, body)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            try:
                return await self._once(pool, method, data, deadline)
            except _Stale:
                if method not in _IDEMPOTENT:
                    raise ServiceFailed("the service closed an idle connection") from None
                return await self._once(pool, method, data, deadline)
        except TimeoutError:
            raise ServiceTimeout(f"the service did not answer within {timeout:g} s") from None

    async def _once(self, pool: _HostPool, method: str, data: bytes, deadline: float) -> Response:
        loop = asyncio.get_running_loop()
        conn = pool.idle_connection()
        if conn is None:
            async with asyncio.timeout_at(deadline):
                conn = await pool.connect(self.connect_timeout)
        future: asyncio.Future[Response] = loop.create_future()
        exchange = _Exchange(future, self.max_response_bytes, method == "HEAD")
        # a timer on the answer's future: cheaper than an asyncio.timeout context per request
        timer = loop.call_at(deadline, _expire, future)
        conn.send(data, exchange)
        try:
            return await future
        except BaseException:
            if conn.exchange is exchange:  # timed out or cancelled while the service was busy
                conn.abort()
            raise
        finally:
            timer.cancel()

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
