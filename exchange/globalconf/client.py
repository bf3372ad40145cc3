"""Downloading the global configuration: the IO shell around :class:`TrustedGlobalConf`.

A :class:`GlobalConfPoller` fetches the signed configuration from the central server every
``interval`` seconds, offers it to the trusted state, calls ``on_change`` when a new version is
accepted and persists each accepted configuration's bytes atomically to ``state_path``. At
start, :meth:`GlobalConfPoller.load_persisted` feeds the persisted bytes back in, so the version
held before a restart keeps protecting against rollback.

A refused configuration (bad signature, rollback, equivocation, expired) is logged with its reason
and the held one stays; download failures are logged and retried on the next interval. The loop
never dies of an error. Whether the held configuration is fresh enough to serve messages is the
caller's question (:meth:`TrustedGlobalConf.check_fresh`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final

import aiohttp

from exchange.durable import write_durably
from exchange.errors import ExchangeError, GlobalConfError
from exchange.globalconf.document import GlobalConf
from exchange.globalconf.signing import CONTENT_TYPE
from exchange.globalconf.verifier import TrustedGlobalConf

logger = logging.getLogger(__name__)

MAX_CONF_BYTES: Final = 32 * 2**20
_TIMEOUT: Final = aiohttp.ClientTimeout(total=30, connect=10)


class GlobalConfDownloadError(GlobalConfError):
    """The central server could not be reached or answered with an error."""

    code = "Server.ClientProxy.NetworkError"


class GlobalConfPoller:
    """Keeps a :class:`TrustedGlobalConf` up to date from the central server."""

    def __init__(
        self,
        trusted: TrustedGlobalConf,
        url: str,
        state_path: Path,
        interval: float = 60.0,
        on_change: Callable[[GlobalConf], None] | None = None,
        session: aiohttp.ClientSession | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.trusted = trusted
        self.url = url
        self.state_path = Path(state_path)
        self.interval = interval
        self.on_change = on_change
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._etag: str | None = None
        self._loaded = False

    async def __aenter__(self) -> GlobalConfPoller:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this poller opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def load_persisted(self, now: int | None = None) -> bool:
        """Feed the persisted configuration (if any) into the trusted state; True if adopted.

        A missing file is normal on first start; an unreadable or refused one is logged (the
        server then starts without rollback protection from it) and ignored.
        """
        self._loaded = True
        try:
            data = self.state_path.read_bytes()
        except FileNotFoundError:
            return False
        except OSError as exc:
            logger.error("cannot read persisted global configuration %s: %s", self.state_path, exc)
            return False
        try:
            self.trusted.load_local(data, int(self._clock()) if now is None else now)
        except GlobalConfError as exc:
            logger.error("persisted global configuration %s refused: %s", self.state_path, exc)
            return False
        return True

    async def fetch_once(self, now: int | None = None) -> bool:
        """Download once and offer the bytes to the trusted state; True if a new version was
        accepted. Refusals and download failures are logged and raised as
        :class:`GlobalConfError` (the held configuration stays)."""
        downloaded = await self._download()
        if downloaded is None:
            return False
        data, etag = downloaded
        before = self.trusted.current_bytes
        try:
            changed = self.trusted.update(data, int(self._clock()) if now is None else now)
        except GlobalConfError as exc:
            logger.error("global configuration from %s refused: %s", self.url, exc)
            raise
        self._etag = etag
        if self.trusted.current_bytes is not before:
            await asyncio.to_thread(write_durably, self.state_path, data)
        conf = self.trusted.current
        if changed and conf is not None:
            logger.info("global configuration version %d accepted", conf.version)
            if self.on_change is not None:
                self.on_change(conf)
        return changed

    async def run(self) -> None:
        """Poll until cancelled; loads the persisted configuration first if not done yet."""
        if not self._loaded:
            self.load_persisted()
        try:
            while True:
                try:
                    await self.fetch_once()
                except ExchangeError:
                    pass  # logged by fetch_once; the held configuration stays
                except Exception:
                    logger.exception("unexpected error while updating the global configuration")
                await asyncio.sleep(self.interval)
        finally:
            await self.close()

    async def _download(self) -> tuple[bytes, str | None] | None:
        """Body and ETag of a 200 response, or None for 304 Not Modified."""
        headers = {"Accept": CONTENT_TYPE}
        if self._etag is not None:
            headers["If-None-Match"] = self._etag
        try:
            async with self._client().get(self.url, headers=headers, timeout=_TIMEOUT) as resp:
                if resp.status == 304:
                    return None
                if resp.status != 200:
                    raise self._download_failed(f"HTTP {resp.status}")
                data = await _read_limited(resp)
                if data is None:
                    raise self._download_failed(f"larger than {MAX_CONF_BYTES} bytes")
                return data, resp.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._download_failed(str(exc) or type(exc).__name__) from None

    def _download_failed(self, reason: str) -> GlobalConfDownloadError:
        logger.warning("cannot download global configuration from %s: %s", self.url, reason)
        return GlobalConfDownloadError(f"cannot download global configuration: {reason}")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes | None:
    """The body, or None when it exceeds :data:`MAX_CONF_BYTES`."""
    if (resp.content_length or 0) > MAX_CONF_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_CONF_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
