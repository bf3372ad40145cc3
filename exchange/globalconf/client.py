"""Downloading the global configuration: the IO shell around :class:`TrustedGlobalConf`.

A :class:`GlobalConfPoller` fetches the signed configuration from the central server every
``interval`` seconds and offers it to the trusted state. At start,
:meth:`GlobalConfPoller.load_persisted` feeds the bytes persisted before a restart back in, so the
version held then keeps protecting against rollback.

At start it also reads the version floor (``<state_path>.floor``, :mod:`exchange.globalconf.floor`):
the highest version this server saved to put in force. A persisted configuration below it looks
rolled back (an older file copied into place) and is refused, loudly, as a file whose signature is
refused is: nothing is in force until the central server serves a version at or above the floor,
and a downloaded one below it is refused too. A missing floor file is no floor; a damaged one
raises :class:`~exchange.globalconf.floor.GlobalConfFloorError` and the server does not start.

A configuration the trusted state accepted is put **in force** (:meth:`GlobalConfPoller.
put_in_force`) only when everything that depends on it has moved to it: its bytes are persisted
atomically to ``state_path`` (and a higher version recorded as the floor, after the configuration
file, so the floor is never above it), then ``on_change`` (the server: TLS contexts, peer trust,
open connections) takes it without raising. If either fails (a full disk, a context that cannot be
built, a bug), the configuration in force stays what it was, :attr:`GlobalConfPoller.pending`
says which version is waiting and why (for ``/health``), and the next poll tries again, whether
or not the central server has anything new. :attr:`GlobalConfPoller.in_force` is the
configuration in force; a refresh of it (the same version re-signed with a later expiry) is put
in force the same way.

A refused configuration (bad signature, rollback, equivocation, expired) is logged with its reason
and the held one stays; download failures are logged and retried on the next interval. The loop
never dies of an error. Whether the configuration in force is fresh enough to serve messages is
the caller's question.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

import aiohttp

from exchange.durable import write_durably
from exchange.errors import ExchangeError, GlobalConfError
from exchange.globalconf.document import GlobalConf
from exchange.globalconf.floor import floor_path, read_floor, write_floor
from exchange.globalconf.signing import CONTENT_TYPE
from exchange.globalconf.verifier import GlobalConfRollback, TrustedGlobalConf

logger = logging.getLogger(__name__)

MAX_CONF_BYTES: Final = 32 * 2**20
_TIMEOUT: Final = aiohttp.ClientTimeout(total=30, connect=10)


class GlobalConfDownloadError(GlobalConfError):
    """The central server could not be reached or answered with an error."""

    code = "Server.ClientProxy.NetworkError"


class GlobalConfNotInForce(GlobalConfError):
    """A verified configuration could not be put in force (persisting it, or a dependent that
    could not move to it, failed); the one in force stays."""

    code = "Server.ClientProxy.GlobalConfNotInForce"


@dataclass(frozen=True, slots=True)
class PendingConf:
    """A verified configuration not yet in force: its version, why not, since when, how often."""

    version: int
    reason: str
    since: float
    failures: int


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
        self.floor_path = floor_path(self.state_path)
        self.interval = interval
        self.on_change = on_change
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._etag: str | None = None
        self._loaded = False
        self._persisted: bytes | None = None
        self._floor: int | None = None  # the version the floor file holds, once read or written
        self.in_force: GlobalConf | None = None
        """The configuration in force: persisted, and taken by ``on_change``."""
        self.last_refusal: str | None = None
        """Why the last configuration downloaded was refused (a bad signature, a rollback below
        the floor, expired...), until one is taken: for ``/health``."""
        self.persisted_refused: str | None = None
        """Why the configuration persisted before a restart was not taken (for ``/health`` while
        nothing is in force); None when it was, or there was none."""
        self.pending: PendingConf | None = None
        """The verified configuration waiting to be put in force after a failure, if any."""
        self._putting = asyncio.Lock()  # the poll loop and a caller's fetch, one at a time
        self.last_fetch: float | None = None
        """When the central server last answered a download (200 or 304)."""
        self.last_fetch_error: str | None = None
        """Why the last download failed, until one succeeds."""

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
        """Give the trusted state the version floor (if recorded), then feed it the persisted
        configuration (if any); True if adopted.

        A missing file is normal on first start; an unreadable or refused one is logged (the
        server then starts with nothing in force, protected against rollback only by the floor)
        and ignored. A damaged floor file raises
        :class:`~exchange.globalconf.floor.GlobalConfFloorError` (the server must not start).
        """
        self._floor = read_floor(self.floor_path)
        if self._floor is not None:
            self.trusted.raise_floor(self._floor)
        self._loaded = True
        try:
            data = self.state_path.read_bytes()
        except FileNotFoundError:
            return False
        except OSError as exc:
            logger.error("cannot read persisted global configuration %s: %s", self.state_path, exc)
            self.persisted_refused = f"{self.state_path} cannot be read ({exc.strerror})"
            return False
        if self._floor is None:
            # expected once, after an upgrade from a version that kept no floor; otherwise the
            # floor file was removed, and the configuration beside it is taken unchecked
            logger.warning(
                "no version floor beside the persisted global configuration (%s is missing): "
                "it is taken without a rollback check; the floor is written when a "
                "configuration next goes in force",
                self.floor_path,
            )
        try:
            self.trusted.load_local(data, int(self._clock()) if now is None else now)
        except GlobalConfRollback as exc:
            logger.error(
                "persisted global configuration %s looks rolled back and is refused: %s "
                "(recorded in %s); nothing is in force until the central server serves "
                "version %d or later",
                self.state_path,
                exc.message,
                self.floor_path,
                self.trusted.floor,
            )
            self.persisted_refused = (
                f"{self.state_path} is older than the floor in {self.floor_path}: {exc.message}"
            )
            return False
        except GlobalConfError as exc:
            logger.error("persisted global configuration %s refused: %s", self.state_path, exc)
            self.persisted_refused = f"{self.state_path} was refused: {exc.message}"
            return False
        self._persisted = self.trusted.current_bytes
        return True

    async def fetch_once(self, now: int | None = None) -> bool:
        """Download once, offer the bytes to the trusted state and put what it holds in force;
        True if a new version went in force. Refusals, download failures and failures to put a
        configuration in force are logged and raised as :class:`GlobalConfError` (the
        configuration in force stays)."""
        downloaded = await self._download()
        if downloaded is not None:
            data, etag = downloaded
            try:
                self.trusted.update(data, int(self._clock()) if now is None else now)
            except GlobalConfError as exc:
                logger.error("global configuration from %s refused: %s", self.url, exc)
                self.last_refusal = exc.message
                raise
            self._etag = etag
        return await self.put_in_force()

    async def put_in_force(self) -> bool:
        """Persist the configuration the trusted state holds and hand it to ``on_change``, unless
        it is already in force; True if it is a new version. On failure the one in force stays,
        :attr:`pending` says why, and :class:`GlobalConfNotInForce` is raised."""
        async with self._putting:
            return await self._put_in_force()

    async def _put_in_force(self) -> bool:
        conf, data = self.trusted.current, self.trusted.current_bytes
        if conf is None or data is None or conf is self.in_force:
            return False
        try:
            # (1) saved, so that a restart comes back to it (and refuses older ones)
            if data is not self._persisted:
                await asyncio.to_thread(write_durably, self.state_path, data)
                self._persisted = data
            # (2) a higher version recorded as the floor, after the file that holds it
            if self._floor is None or conf.version > self._floor:
                await asyncio.to_thread(write_floor, self.floor_path, conf.version)
                self._floor = conf.version
            # (3) everything that depends on it moves to it
            if self.on_change is not None:
                self.on_change(conf)
        except Exception as exc:
            raise self._not_in_force(conf, exc) from exc
        new = self.in_force is None or conf.version != self.in_force.version
        self.in_force, self.pending = conf, None
        if new:
            logger.info("global configuration version %d accepted", conf.version)
        return new

    def _not_in_force(self, conf: GlobalConf, exc: Exception) -> GlobalConfNotInForce:
        held = self.pending
        failures = held.failures + 1 if held and held.version == conf.version else 1
        since = held.since if held and held.version == conf.version else self._clock()
        reason = f"{type(exc).__name__}: {exc}"
        self.pending = PendingConf(conf.version, reason, since, failures)
        in_force = self.in_force.version if self.in_force is not None else None
        logger.error(
            "global configuration version %d could not be put in force (failure %d; version %s "
            "stays in force; retried on the next poll): %s",
            conf.version,
            failures,
            in_force,
            reason,
            exc_info=not isinstance(exc, ExchangeError | OSError),
        )
        return GlobalConfNotInForce(
            f"global configuration version {conf.version} could not be put in force",
            internal=reason,
        )

    async def run(self) -> None:
        """Poll until cancelled; loads the persisted configuration first if not done yet."""
        if not self._loaded:
            self.load_persisted()
        try:
            while True:
                try:
                    await self.fetch_once()
                except GlobalConfNotInForce:
                    pass  # logged by put_in_force; the configuration in force stays
                except ExchangeError:
                    # logged by fetch_once; what was verified before may still wait to go in force
                    with contextlib.suppress(GlobalConfNotInForce):
                        await self.put_in_force()
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
                    self._fetched()
                    return None
                if resp.status != 200:
                    raise self._download_failed(f"HTTP {resp.status}")
                data = await _read_limited(resp)
                if data is None:
                    raise self._download_failed(f"larger than {MAX_CONF_BYTES} bytes")
                self._fetched()
                return data, resp.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._download_failed(str(exc) or type(exc).__name__) from None

    def _fetched(self) -> None:
        self.last_fetch = self._clock()
        self.last_fetch_error = None
        self.last_refusal = None  # a 304: nothing newer; a 200: judged again by fetch_once

    def _download_failed(self, reason: str) -> GlobalConfDownloadError:
        self.last_fetch_error = reason
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
