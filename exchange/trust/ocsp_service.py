"""OCSP over HTTP (RFC 6960 Appendix A): the responder application and the fetching client.

- :func:`create_ocsp_app`: an aiohttp application answering ``POST /`` with an
  ``application/ocsp-request`` body and ``GET /{url-encoded base64 request}``, always with an
  ``application/ocsp-response`` (unparseable requests get a ``malformedRequest`` response, a
  failing register ``internalError``). Register lookups and signing run on one worker thread.
- :func:`serve_ocsp`: run such an application on a host and port (``0`` picks a free one).
- :class:`OcspFetcher`: fetches a response for a certificate by POST, with a timeout and a size
  limit, and with :meth:`OcspFetcher.refresh` puts the verified result into an
  :class:`~exchange.trust.ocsp.OcspStapleCache` (re-exported here).

The OCSP logic itself (building, verifying, freshness) is sans-IO in ``exchange.trust.ocsp``;
the register is ``exchange.trust.revocation``. This module decides nothing about trust.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from exchange.errors import ExchangeError
from exchange.trust.ocsp import (
    MAX_RESPONSE_BYTES,
    CertificateRevoked,
    CertificateStatusUnknown,
    OcspError,
    OcspStapleCache,
    OcspStatus,
    build_ocsp_request,
    build_ocsp_response,
    check_responder,
)
from exchange.trust.revocation import RevocationStore
from exchange.trust.validation import describe
from exchange.utc import utc

__all__ = [
    "REQUEST_TYPE",
    "RESPONSE_TYPE",
    "OcspFetcher",
    "OcspStapleCache",
    "OcspUnavailable",
    "create_ocsp_app",
    "serve_ocsp",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

REQUEST_TYPE: Final = "application/ocsp-request"
RESPONSE_TYPE: Final = "application/ocsp-response"
MAX_REQUEST_BYTES: Final = 16 * 1024
"""A one-certificate request is about 100 bytes; with a signature and chain a few KiB."""


class OcspUnavailable(ExchangeError):
    """No OCSP response could be fetched: responder unreachable, slow, or not answering OCSP."""

    code = "Server.OcspUnavailable"
    status = 502


# --- the responder ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Responder:
    ca: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    cert: x509.Certificate
    store: RevocationStore
    validity_seconds: int
    clock: Clock

    def answer(self, request_der: bytes) -> bytes:
        return build_ocsp_response(
            request_der,
            ca=self.ca,
            responder_key=self.key,
            responder_cert=self.cert,
            store_lookup=self.store.status,
            now=utc(self.clock()),
            validity_seconds=self.validity_seconds,
        )


RESPONDER_KEY: Final = web.AppKey("ocsp_responder", _Responder)
EXECUTOR_KEY: Final = web.AppKey("ocsp_executor", ThreadPoolExecutor)


def create_ocsp_app(
    ca: x509.Certificate,
    responder_key: ec.EllipticCurvePrivateKey,
    responder_cert: x509.Certificate,
    store: RevocationStore,
    *,
    validity_seconds: int = 3600,
    clock: Clock = time.time,
) -> web.Application:
    """The responder for certificates issued by ``ca``, answering from ``store``.

    ``responder_cert`` is ``ca`` or a delegated responder certificate of it; the pair is checked
    here (:class:`~exchange.errors.ConfigurationError`). The caller opens and closes ``store``.
    """
    check_responder(ca, responder_key, responder_cert, utc(clock()))
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[RESPONDER_KEY] = _Responder(
        ca, responder_key, responder_cert, store, validity_seconds, clock
    )
    app.cleanup_ctx.append(_executor_ctx)
    app.router.add_post("/", handle_post)
    app.router.add_get("/{request:.+}", handle_get)
    return app


async def _executor_ctx(app: web.Application) -> AsyncIterator[None]:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocsp-responder")
    app[EXECUTOR_KEY] = executor
    try:
        yield
    finally:
        executor.shutdown(wait=True)


async def handle_post(request: web.Request) -> web.StreamResponse:
    """RFC 6960 A.1: the DER request as the body."""
    if request.content_type != REQUEST_TYPE:
        raise web.HTTPUnsupportedMediaType(text=f"send the OCSP request as {REQUEST_TYPE}\n")
    return await _answer(request.app, await request.read())


async def handle_get(request: web.Request) -> web.StreamResponse:
    """RFC 6960 A.1: the base64 DER request, URL-encoded, as the last path segment(s)."""
    try:
        request_der = base64.b64decode(request.match_info["request"], validate=True)
    except (binascii.Error, ValueError):
        request_der = b""
    return await _answer(request.app, request_der)


async def _answer(app: web.Application, request_der: bytes) -> web.Response:
    responder = app[RESPONDER_KEY]
    loop = asyncio.get_running_loop()
    try:
        body = await loop.run_in_executor(app[EXECUTOR_KEY], responder.answer, request_der)
    except Exception:
        logger.exception("OCSP responder failed; answered internalError")
        unsuccessful = ocsp.OCSPResponseBuilder.build_unsuccessful(
            ocsp.OCSPResponseStatus.INTERNAL_ERROR
        )
        body = unsuccessful.public_bytes(serialization.Encoding.DER)
    return web.Response(body=body, content_type=RESPONSE_TYPE, headers=_NO_STORE)


_NO_STORE: Final = {"Cache-Control": "no-store"}


async def serve_ocsp(
    app: web.Application,
    host: str,
    port: int,
    *,
    on_bound: Callable[[int], None] | None = None,
) -> None:
    """Serve ``app`` until cancelled; ``on_bound(port)`` reports the bound port."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = int(runner.addresses[0][1])
        logger.info("OCSP responder listening on %s:%d", host, bound)
        if on_bound is not None:
            on_bound(bound)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


# --- the client ------------------------------------------------------------------------------


class OcspFetcher:
    """Fetches OCSP responses by POST (RFC 6960 A.1). Use as ``async with OcspFetcher() as f``.

    Every failure to get bytes that look like an OCSP response (connection, timeout, HTTP
    status, content type, size) is :class:`OcspUnavailable`; judging the response is
    :func:`~exchange.trust.ocsp.verify_ocsp_response`'s. A ``session`` given is not closed here.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_seconds: float = 10.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        clock: Clock = time.time,
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_bytes = max_response_bytes
        self._clock = clock

    async def __aenter__(self) -> OcspFetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def fetch(self, cert: x509.Certificate, issuer: x509.Certificate, url: str) -> bytes:
        """The DER response ``url`` gives for ``cert`` (not yet verified)."""
        request_der = build_ocsp_request(cert, issuer)
        headers = {"Content-Type": REQUEST_TYPE, "Accept": RESPONSE_TYPE}
        try:
            async with self._client().post(
                url, data=request_der, headers=headers, timeout=self._timeout
            ) as response:
                return await self._body(response, url)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OcspUnavailable(
                "OCSP responder unavailable",
                internal=f"OCSP request to {url} for {describe(cert)} failed: "
                f"{type(exc).__name__}: {exc}",
            ) from None

    async def _body(self, response: aiohttp.ClientResponse, url: str) -> bytes:
        if response.status != 200 or response.content_type != RESPONSE_TYPE:
            raise OcspUnavailable(
                "OCSP responder gave no OCSP response",
                internal=f"{url} answered HTTP {response.status} {response.content_type}",
            )
        body = bytearray()
        async for chunk in response.content.iter_chunked(8192):
            body += chunk
            if len(body) > self._max_bytes:
                raise OcspUnavailable(
                    "OCSP response too large",
                    internal=f"{url} sent more than {self._max_bytes} bytes",
                )
        return bytes(body)

    async def refresh(
        self,
        cache: OcspStapleCache,
        cert: x509.Certificate,
        issuer: x509.Certificate,
        urls: Sequence[str],
        *,
        max_age_seconds: int,
    ) -> OcspStatus:
        """Fetch from each of ``urls`` in turn until one answers with a response ``cache`` takes.

        Revoked and unknown are final answers and raised at once; an unreachable responder or a
        bad or stale response moves on to the next URL; if none serves, the last error is raised.
        """
        if not urls:
            raise OcspUnavailable(
                "no OCSP responder known", internal=f"no OCSP URL for {describe(cert)}'s CA"
            )
        failure: ExchangeError | None = None
        for url in urls:
            try:
                response_der = await self.fetch(cert, issuer, url)
                return cache.put(
                    response_der,
                    cert=cert,
                    issuer=issuer,
                    now=utc(self._clock()),
                    max_age_seconds=max_age_seconds,
                )
            except (CertificateRevoked, CertificateStatusUnknown):
                raise
            except (OcspUnavailable, OcspError) as exc:
                logger.warning("OCSP refresh from %s failed: %s", url, exc.internal)
                failure = exc
        assert failure is not None
        raise failure
