"""The central server (docs/design.md §2, §6): publishes the signed global configuration.

Routes:

- ``GET /globalconf``: the latest signed configuration (``application/jose``) with ``ETag`` and
  ``X-Exchange-GlobalConf-Version``; ``If-None-Match`` gives ``304``.
- ``GET /anchor``: the anchor file security servers install (its integrity is checked out of band).
- ``GET /health``: ``{"status": "ok" | "stale", ...}``; ``503`` when regeneration has stalled.
- ``POST /registration``, ``GET /registration/{id}``: registration requests of security servers.
- ``POST /catalogue/declarations``, ``GET /catalogue[/{member or subsystem}]``: the service
  catalogue (:mod:`exchange.central.catalogue_app`).

A :class:`Publisher` re-signs the registry's content every ``regenerate_interval_seconds`` with a
new ``generated_at``/``expires_at``, and at once when the registry's version counter moves (the CLI
writes the database from another process; the counter is read every ``change_check_seconds``).
SQLite reads and signing run in a worker thread. Security servers ask to be registered with
``POST /registration`` (:mod:`exchange.central.registration_app`); the operator approves or
rejects with ``exchange central registration ...``, and the registry changes with
``exchange central ...`` commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

from aiohttp import web
from cryptography import x509
from pydantic import AfterValidator

from exchange.central.catalogue_app import add_catalogue_routes
from exchange.central.registration_app import add_registration_routes
from exchange.central.registry import Registry
from exchange.configfile import (
    Port,
    Schema,
    Text,
    at_least,
    check_document,
    parsed_by,
    problem_at,
    read_toml,
    seconds,
)
from exchange.errors import ConfigurationError
from exchange.globalconf.anchor import Anchor
from exchange.globalconf.document import GlobalConf
from exchange.globalconf.signing import CONTENT_TYPE, VERSION_HEADER, sign_globalconf
from exchange.identifiers import validate_part
from exchange.oplog import LoggingSection, LogSettings
from exchange.protocol.jws import Signer
from exchange.trust.keys import load_certificate, load_private_key

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
T = TypeVar("T")

DEFAULT_PORT: Final = 4000


def _instance(value: str) -> str:
    validate_part(value, "instance")
    return value


class CentralFile(Schema):
    """``central.toml``: every key the central server reads, its type, range and default."""

    instance: Annotated[str, AfterValidator(parsed_by(_instance))]
    database: Text
    signing_key: Text
    signing_cert: Text
    anchor: Text
    host: Text = "127.0.0.1"
    port: Port = DEFAULT_PORT
    regenerate_interval_seconds: Annotated[int, AfterValidator(at_least(1))] = 60
    expiry_seconds: Annotated[int, AfterValidator(at_least(1))] = 600
    change_check_seconds: Annotated[float, AfterValidator(seconds())] = 1.0
    logging: LoggingSection = LoggingSection()


@dataclass(frozen=True, slots=True)
class CentralConfig:
    """The central server's settings (``central.toml``; relative paths are relative to it)."""

    instance: str
    db_path: Path
    signing_key_path: Path
    signing_cert_path: Path
    anchor_path: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    regenerate_interval_seconds: int = 60
    expiry_seconds: int = 600
    change_check_seconds: float = 1.0
    logging: LogSettings = field(default_factory=LogSettings)

    def to_toml_dict(self, base: Path | None = None) -> dict[str, Any]:
        """The ``central.toml`` form; paths relative to ``base`` where they lie under it."""

        def shown(value: Path) -> str:
            return str(value.relative_to(base) if base and value.is_relative_to(base) else value)

        return {
            "instance": self.instance,
            "database": shown(self.db_path),
            "signing_key": shown(self.signing_key_path),
            "signing_cert": shown(self.signing_cert_path),
            "anchor": shown(self.anchor_path),
            "host": self.host,
            "port": self.port,
            "regenerate_interval_seconds": self.regenerate_interval_seconds,
            "expiry_seconds": self.expiry_seconds,
            "change_check_seconds": self.change_check_seconds,
            "logging": {"format": self.logging.format, "level": self.logging.level},
        }


def central_config(doc: dict[str, Any], path: Path, text: str | None = None) -> CentralConfig:
    """``central.toml``'s document checked and turned into a :class:`CentralConfig` (no IO);
    ``text``, when given, is the file's text, for the lines of problems."""
    file = check_document(CentralFile, doc, text, path)
    if file.regenerate_interval_seconds >= file.expiry_seconds:
        raise problem_at(
            path,
            text,
            ("regenerate_interval_seconds",),
            f"must be shorter than expiry_seconds ({file.expiry_seconds}), or configurations "
            "expire before the next one is published",
        )
    if file.change_check_seconds > file.regenerate_interval_seconds:
        raise problem_at(
            path,
            text,
            ("change_check_seconds",),
            f"must be at most regenerate_interval_seconds ({file.regenerate_interval_seconds})",
        )
    base = path.parent
    return CentralConfig(
        instance=file.instance,
        db_path=base / file.database,
        signing_key_path=base / file.signing_key,
        signing_cert_path=base / file.signing_cert,
        anchor_path=base / file.anchor,
        host=file.host,
        port=file.port,
        regenerate_interval_seconds=file.regenerate_interval_seconds,
        expiry_seconds=file.expiry_seconds,
        change_check_seconds=file.change_check_seconds,
        logging=file.logging.settings(),
    )


def load_central_config(path: str | Path) -> CentralConfig:
    """Read and check ``central.toml``; every problem is in one :class:`ConfigFileError`."""
    p = Path(path)
    text, doc = read_toml(p)
    return central_config(doc, p, text)


# --- publishing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    """One signed configuration as served."""

    conf: GlobalConf
    body: bytes
    etag: str


class Publisher:
    """Owns the registry connection and the signing key; keeps :attr:`latest` current.

    All registry work runs on one worker thread, so the connection is never used from two
    threads at once, not even while shutting down.
    """

    def __init__(self, config: CentralConfig, signer: Signer, clock: Clock) -> None:
        self._config = config
        self._signer = signer
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="central-registry")
        self._registry: Registry | None = None
        self._changed = asyncio.Condition()
        self.latest: Published | None = None

    async def open(self) -> Published:
        """Open the registry, align its settings with the config, publish the first version."""
        try:
            self._registry = await self._in_thread(Registry.open, self._config.db_path)
            await self._in_thread(self._check_and_sync)
            return await self.regenerate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._registry is not None:
            await self._in_thread(self._registry.close)
            self._registry = None
        self._executor.shutdown(wait=True)

    async def regenerate(self) -> Published:
        published = await self._in_thread(self._build, int(self._clock()))
        async with self._changed:
            self.latest = published
            self._changed.notify_all()
        logger.info(
            "published global configuration version %d (expires at %d)",
            published.conf.version,
            published.conf.expires_at,
        )
        return published

    async def run(self) -> None:
        """Regenerate on every registry change and every interval, until cancelled."""
        while True:
            await asyncio.sleep(self._config.change_check_seconds)
            try:
                await self._tick()
            except Exception:
                logger.exception("regenerating the global configuration failed; will retry")

    async def wait_for_version(self, version: int) -> Published:
        """Wait until a configuration with at least ``version`` is published."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.latest is not None and self.latest.conf.version >= version
            )
        assert self.latest is not None
        return self.latest

    async def _tick(self) -> None:
        version = await self._in_thread(lambda: self._open_registry().version())
        latest = self.latest
        if (
            latest is None
            or version != latest.conf.version
            or self._clock() - latest.conf.generated_at >= self._config.regenerate_interval_seconds
        ):
            await self.regenerate()

    async def _in_thread(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def _open_registry(self) -> Registry:
        if self._registry is None:
            raise ConfigurationError("the central registry is not open")
        return self._registry

    def _build(self, now: int) -> Published:
        conf = self._open_registry().build_globalconf(now)
        body = sign_globalconf(conf, self._signer)
        return Published(conf=conf, body=body, etag=hashlib.sha256(body).hexdigest()[:32])

    def _check_and_sync(self) -> None:
        registry = self._open_registry()
        if registry.instance != self._config.instance:
            raise ConfigurationError(
                f"registry {self._config.db_path} is for instance {registry.instance}, "
                f"the config for {self._config.instance}"
            )
        settings = dataclasses.replace(
            registry.settings(),
            globalconf_poll_seconds=self._config.regenerate_interval_seconds,
            globalconf_expiry_seconds=self._config.expiry_seconds,
        )
        if registry.set_settings(settings):
            logger.info("registry settings updated from the central server's config")


# --- the aiohttp application -------------------------------------------------------------------

CONFIG_KEY: Final = web.AppKey("config", CentralConfig)
CLOCK_KEY: Final[web.AppKey[Clock]] = web.AppKey("clock")
PUBLISHER_KEY: Final = web.AppKey("publisher", Publisher)
ANCHOR_KEY: Final = web.AppKey("anchor", bytes)


def create_app(config: CentralConfig, *, clock: Clock = time.time) -> web.Application:
    """The central server application; the registry, key and publisher open in ``cleanup_ctx``."""
    app = web.Application()
    app[CONFIG_KEY] = config
    app[CLOCK_KEY] = clock
    app.cleanup_ctx.append(_publisher_ctx)
    app.router.add_get("/globalconf", handle_globalconf)
    app.router.add_get("/anchor", handle_anchor)
    app.router.add_get("/health", handle_health)
    add_registration_routes(app, config.db_path, lambda: _approved_cas(app), clock=clock)
    add_catalogue_routes(app, config.db_path, clock=clock)
    return app


def _approved_cas(app: web.Application) -> list[x509.Certificate]:
    latest = app[PUBLISHER_KEY].latest if PUBLISHER_KEY in app else None
    return latest.conf.ca_certs() if latest is not None else []


async def _publisher_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG_KEY]
    signer = Signer(
        load_private_key(config.signing_key_path), load_certificate(config.signing_cert_path)
    )
    app[ANCHOR_KEY] = _checked_anchor(config, signer).to_json()
    publisher = Publisher(config, signer, app[CLOCK_KEY])
    await publisher.open()
    app[PUBLISHER_KEY] = publisher
    task = asyncio.create_task(publisher.run(), name="globalconf-publisher")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await publisher.close()


def _checked_anchor(config: CentralConfig, signer: Signer) -> Anchor:
    anchor = Anchor.load(config.anchor_path)
    if anchor.instance != config.instance:
        raise ConfigurationError(
            f"anchor {config.anchor_path} is for instance {anchor.instance}, "
            f"the config for {config.instance}"
        )
    if signer.thumbprint not in anchor.thumbprints:
        raise ConfigurationError(
            f"anchor {config.anchor_path} does not hold the signing certificate "
            f"{config.signing_cert_path}; security servers would refuse every configuration"
        )
    return anchor


async def handle_globalconf(request: web.Request) -> web.StreamResponse:
    latest = request.app[PUBLISHER_KEY].latest
    if latest is None:
        raise web.HTTPServiceUnavailable(text="no global configuration published yet")
    headers = {VERSION_HEADER: str(latest.conf.version), "Cache-Control": "no-cache"}
    if any(tag.value == latest.etag for tag in request.if_none_match or ()):
        response = web.Response(status=304, headers=headers)
    else:
        response = web.Response(body=latest.body, content_type=CONTENT_TYPE, headers=headers)
    response.etag = latest.etag
    return response


async def handle_anchor(request: web.Request) -> web.StreamResponse:
    return web.Response(body=request.app[ANCHOR_KEY], content_type="application/json")


async def handle_health(request: web.Request) -> web.StreamResponse:
    app = request.app
    config = app[CONFIG_KEY]
    latest = app[PUBLISHER_KEY].latest
    if latest is None:
        return web.json_response({"status": "starting"}, status=503)
    age = app[CLOCK_KEY]() - latest.conf.generated_at
    stale = age > 2 * config.regenerate_interval_seconds + config.change_check_seconds
    body = {
        "status": "stale" if stale else "ok",
        "instance": config.instance,
        "version": latest.conf.version,
        "generated_at": latest.conf.generated_at,
        "expires_at": latest.conf.expires_at,
    }
    return web.json_response(body, status=503 if stale else 200)


async def run_central(
    config: CentralConfig,
    *,
    on_bound: Callable[[int], None] | None = None,
    clock: Clock = time.time,
) -> None:
    """Serve until cancelled; ``on_bound(port)`` reports the bound port (``port = 0`` allowed)."""
    runner = web.AppRunner(create_app(config, clock=clock))
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        port = int(runner.addresses[0][1])
        logger.info("central server for %s listening on %s:%d", config.instance, config.host, port)
        if on_bound is not None:
            on_bound(port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
