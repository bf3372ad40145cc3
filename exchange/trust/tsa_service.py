"""The time-stamping authority over HTTP (RFC 3161 §3.4), and the client that asks it.

:func:`create_tsa_app` answers ``POST /`` with ``Content-Type: application/timestamp-query`` by
``application/timestamp-reply``: a granted reply, or a PKIStatus rejection for a query it refuses
(HTTP 200 either way, as RFC 3161 §3.4 has it). A wrong content type gets 415, a body over
``max_body_bytes`` 413. Serial numbers come from a :class:`SerialStore`: monotonic, persisted in
SQLite together with what was stamped, and committed before the reply leaves.

:class:`TimestampClient` sends a query with a random nonce and verifies the reply with
``exchange.trust.timestamp.verify_timestamp_token``; it refuses a reply whose time differs from
our clock by more than the tolerated skew.

The ASN.1, signing and verification are in ``exchange.trust.timestamp``; this module only moves
bytes and keeps the serial register.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from exchange.trust.timestamp import (
    DEFAULT_POLICY,
    TimestampError,
    TimestampInfo,
    TimestampInvalid,
    TimestampQueryRejected,
    TimestampRequest,
    build_timestamp_request,
    parse_timestamp_request,
    rejection_response,
    timestamp_response,
    token_of_response,
    verify_timestamp_token,
)

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
TsaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

QUERY_TYPE: Final = "application/timestamp-query"
REPLY_TYPE: Final = "application/timestamp-reply"
MAX_QUERY_BYTES: Final = 16 * 1024
"""A TimeStampReq with a SHA-512 imprint, a nonce and a policy is under 200 bytes."""
MAX_REPLY_BYTES: Final = 1 << 20
MAX_CLOCK_SKEW_SECONDS: Final = 60.0
"""docs/design.md §12: the clock skew tolerated between a server and a TSA."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS issued (
    serial INTEGER PRIMARY KEY AUTOINCREMENT,
    gen_time TEXT NOT NULL,
    hash_alg TEXT NOT NULL,
    digest TEXT NOT NULL
)
"""


# --- the serial register -----------------------------------------------------------------------


class SerialStore:
    """Serial numbers of issued time-stamps in SQLite: each one greater than any before, never
    reused (``AUTOINCREMENT``), recorded with the stamped time and digest.

    Not thread-safe: use it from one thread (the service uses a one-worker executor).
    """

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def issue(self, gen_time: dt.datetime, request: TimestampRequest) -> int:
        """Allocate and durably record the serial number of a time-stamp made at ``gen_time``."""
        cursor = self._db.execute(
            "INSERT INTO issued (gen_time, hash_alg, digest) VALUES (?, ?, ?)",
            (gen_time.isoformat(), request.hash_alg, request.digest.hex()),
        )
        serial = cursor.lastrowid
        if serial is None:
            raise sqlite3.DatabaseError("no serial number allocated")
        return serial

    def last_serial(self) -> int:
        row = self._db.execute("SELECT MAX(serial) FROM issued").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        self._db.close()


# --- the service -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TsaSettings:
    """What the TSA signs with and stamps under."""

    tsa_key: TsaKey = field(repr=False)
    tsa_cert: x509.Certificate
    serial_db: Path
    clock: Clock = time.time
    policy_oid: str = DEFAULT_POLICY
    accuracy_ms: int | None = 1000
    max_body_bytes: int = MAX_QUERY_BYTES


@dataclass(frozen=True, slots=True)
class _State:
    store: SerialStore
    executor: ThreadPoolExecutor


SETTINGS_KEY: Final = web.AppKey("tsa_settings", TsaSettings)
STATE_KEY: Final = web.AppKey("tsa_state", _State)


def create_tsa_app(
    tsa_key: TsaKey,
    tsa_cert: x509.Certificate,
    *,
    serial_db: Path,
    clock: Clock = time.time,
    policy_oid: str = DEFAULT_POLICY,
    accuracy_ms: int | None = 1000,
    max_body_bytes: int = MAX_QUERY_BYTES,
) -> web.Application:
    """The TSA as an aiohttp application; the serial database is opened on startup."""
    settings = TsaSettings(
        tsa_key=tsa_key,
        tsa_cert=tsa_cert,
        serial_db=serial_db,
        clock=clock,
        policy_oid=policy_oid,
        accuracy_ms=accuracy_ms,
        max_body_bytes=max_body_bytes,
    )
    app = web.Application(client_max_size=max_body_bytes)
    app[SETTINGS_KEY] = settings
    app.cleanup_ctx.append(_serial_store)
    app.router.add_post("/", _handle_query)
    return app


async def _serial_store(app: web.Application) -> AsyncIterator[None]:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tsa-serials")
    loop = asyncio.get_running_loop()
    path = app[SETTINGS_KEY].serial_db
    store = await loop.run_in_executor(executor, SerialStore, path)
    app[STATE_KEY] = _State(store=store, executor=executor)
    try:
        yield
    finally:
        await loop.run_in_executor(executor, store.close)
        executor.shutdown(wait=True)


async def _handle_query(request: web.Request) -> web.Response:
    if request.content_type != QUERY_TYPE:
        raise web.HTTPUnsupportedMediaType(text=f"send {QUERY_TYPE} (RFC 3161 §3.4)\n")
    body = await request.read()
    settings = request.app[SETTINGS_KEY]
    try:
        query = parse_timestamp_request(body, policy_oid=settings.policy_oid)
    except TimestampQueryRejected as exc:
        logger.info("time-stamp query from %s rejected: %s", request.remote, exc.message)
        return _reply(rejection_response(exc.failure, exc.message))
    return _reply(await _grant(request.app, query))


async def _grant(app: web.Application, query: TimestampRequest) -> bytes:
    settings, state = app[SETTINGS_KEY], app[STATE_KEY]
    now = dt.datetime.fromtimestamp(settings.clock(), dt.UTC)
    loop = asyncio.get_running_loop()
    try:
        serial = await loop.run_in_executor(state.executor, state.store.issue, now, query)
    except sqlite3.Error:
        logger.exception("cannot record a time-stamp serial number in %s", settings.serial_db)
        return rejection_response("system_failure", "the TSA cannot record time-stamps")
    logger.info("time-stamp %d issued over %s %s", serial, query.hash_alg, query.digest.hex())
    return timestamp_response(
        query,
        tsa_key=settings.tsa_key,
        tsa_cert=settings.tsa_cert,
        serial=serial,
        now=now,
        policy_oid=settings.policy_oid,
        accuracy_ms=settings.accuracy_ms,
    )


def _reply(der: bytes) -> web.Response:
    return web.Response(body=der, content_type=REPLY_TYPE)


async def serve_tsa(
    app: web.Application,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    on_bound: Callable[[int], None] | None = None,
) -> None:
    """Serve ``app`` until cancelled; ``on_bound(port)`` reports the bound port."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = int(runner.addresses[0][1])
        logger.info("TSA listening on %s:%d", host, bound)
        if on_bound is not None:
            on_bound(bound)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


# --- the client --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimestampReply:
    """A verified reply: the whole TimeStampResp (what ``openssl ts -verify -in`` reads), its
    token (what ``-token_in`` reads, and what evidence keeps) and what it proves."""

    response_der: bytes
    token_der: bytes
    info: TimestampInfo


class TimestampClient:
    """Asks a TSA for time-stamps and verifies them.

    Use as ``async with TimestampClient() as client``, or call :meth:`close`. A given
    ``session`` is used and left open; otherwise the client opens and closes its own.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        clock: Clock = time.time,
        max_skew_seconds: float | None = MAX_CLOCK_SKEW_SECONDS,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._max_skew = max_skew_seconds
        self._max_reply_bytes = max_reply_bytes

    async def __aenter__(self) -> TimestampClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        digest: bytes,
        url: str,
        *,
        tsa_certs: Sequence[x509.Certificate],
        ca_certs: Sequence[x509.Certificate],
        hash_alg: str = "sha256",
        timeout: float = 10,
    ) -> tuple[bytes, TimestampInfo]:
        """Time-stamp ``digest`` at the TSA at ``url``: the verified token and what it proves.

        Raises :class:`TimestampError` (TSA unreachable, HTTP error, timeout),
        :class:`TimestampRejected` or :class:`TimestampInvalid`.
        """
        reply = await self.request_reply(
            digest, url, tsa_certs=tsa_certs, ca_certs=ca_certs, hash_alg=hash_alg, timeout=timeout
        )
        return reply.token_der, reply.info

    async def request_reply(
        self,
        digest: bytes,
        url: str,
        *,
        tsa_certs: Sequence[x509.Certificate],
        ca_certs: Sequence[x509.Certificate],
        hash_alg: str = "sha256",
        timeout: float = 10,
    ) -> TimestampReply:
        """As :meth:`request`, keeping the whole reply too."""
        nonce = secrets.randbits(64)
        query = build_timestamp_request(digest, hash_alg=hash_alg, nonce=nonce, cert_req=True)
        response_der = await self.post_query(query, url, timeout=timeout)
        token_der = token_of_response(response_der)
        info = verify_timestamp_token(
            token_der,
            digest=digest,
            tsa_certs=tsa_certs,
            ca_certs=ca_certs,
            nonce=nonce,
            hash_alg=hash_alg,
        )
        self._check_skew(info)
        return TimestampReply(response_der=response_der, token_der=token_der, info=info)

    async def post_query(self, query_der: bytes, url: str, *, timeout: float = 10) -> bytes:
        """POST a DER TimeStampReq to ``url`` and return the reply's bytes, unverified."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                url,
                data=query_der,
                headers={"Content-Type": QUERY_TYPE},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                return await self._read_reply(response, url)
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = (
                "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            )
            raise TimestampError(f"TSA {url} unreachable: {reason}") from None

    async def _read_reply(self, response: aiohttp.ClientResponse, url: str) -> bytes:
        if response.status != 200:
            raise TimestampError(f"TSA {url} answered HTTP {response.status}")
        if response.content_type != REPLY_TYPE:
            raise TimestampError(f"TSA {url} answered {response.content_type}, not {REPLY_TYPE}")
        body = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > self._max_reply_bytes:
                raise TimestampError(f"TSA {url} reply exceeds {self._max_reply_bytes} bytes")
        return bytes(body)

    def _check_skew(self, info: TimestampInfo) -> None:
        if self._max_skew is None:
            return
        skew = info.gen_time.timestamp() - self._clock()
        if abs(skew) > self._max_skew:
            raise TimestampInvalid(
                f"TSA time differs from ours by {skew:+.0f} s (tolerated: {self._max_skew:.0f} s)",
                code=f"{TimestampInvalid.code}.Time",
            )
