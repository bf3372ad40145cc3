"""A security server declares its services to the central server's catalogue.

On start and after ``exchange server reload``, the server sends the services it provides, grouped
by subsystem (code, type, title, description, whether a description is available), signed with
its authentication key (:mod:`exchange.central.catalogue` describes the document and what the
central server checks). The central server's address comes from the anchor: the download URL
with its last path segment replaced by ``catalogue/declarations``.

Sending runs in the background and retries (2 s, doubling, at most every 60 s) until the central
server accepts — e.g. while the server's registration is still pending approval, or before the
first OCSP response for the authentication certificate has been fetched (the declaration carries
it, so that a revoked server cannot declare); a refusal is logged with the central server's
reason. Nothing here is on the exchange path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol
from urllib.parse import urljoin

import aiohttp
import orjson
from cryptography import x509

from exchange.central.catalogue import DeclaredService, new_declaration, sign_declaration
from exchange.globalconf.anchor import Anchor
from exchange.globalconf.document import GlobalConf
from exchange.identifiers import ServiceId, SubsystemId
from exchange.protocol.jws import Signer
from exchange.server.config import ServerConfig, ServiceConfig
from exchange.server.revocation import RevocationChecks
from exchange.trust.keys import load_private_key

log = logging.getLogger("exchange.server.declare")

_TIMEOUT: Final = aiohttp.ClientTimeout(total=15, connect=10)
_FIRST_RETRY: Final = 2.0
_MAX_RETRY: Final = 60.0


class DeclarationRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


def declaration_url(download_url: str) -> str:
    return urljoin(download_url, "catalogue/declarations")


class DeclarerHost(Protocol):
    """What the declarer uses of the security server."""

    @property
    def anchor(self) -> Anchor: ...
    @property
    def config(self) -> ServerConfig: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def services(self) -> Mapping[ServiceId, ServiceConfig]: ...
    @property
    def auth_cert(self) -> x509.Certificate: ...
    @property
    def passphrase(self) -> bytes | None: ...
    @property
    def in_force(self) -> GlobalConf | None: ...
    @property
    def revocation(self) -> RevocationChecks: ...


class ServiceDeclarer:
    """Keeps the central catalogue told what this server provides."""

    def __init__(self, server: DeclarerHost) -> None:
        self.server = server
        self.url = declaration_url(server.anchor.download_url)
        self.accepted = asyncio.Event()
        self.last_answer: dict[str, Any] | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def subsystems(self) -> list[tuple[SubsystemId, list[DeclaredService]]]:
        grouped: dict[SubsystemId, list[DeclaredService]] = defaultdict(list)
        for service in sorted(self.server.services.values(), key=lambda s: s.id):
            grouped[service.id.subsystem].append(
                DeclaredService(
                    code=service.id.service_code,
                    type=service.type,
                    title=service.title,
                    description=service.description,
                    described=service.description_url is not None,
                )
            )
        return sorted(grouped.items())

    def body(self) -> bytes:
        """A fresh declaration of everything this server provides now, signed."""
        config = self.server.config
        auth = Signer(
            load_private_key(config.auth_key, self.server.passphrase), self.server.auth_cert
        )
        declaration = new_declaration(
            config.server_id,
            self.server.auth_cert,
            self.subsystems(),
            int(self.server.clock() * 1000),
            ocsp=self._own_ocsp(),
        )
        return sign_declaration(declaration, auth)

    def _own_ocsp(self) -> bytes | None:
        """The fresh OCSP response held for the auth certificate (the one stapled to peers):
        the central server refuses a declaration without one when the CA publishes a responder.
        None while there is none yet; the retries pick it up once the refresh has fetched it."""
        conf = self.server.in_force
        if conf is None:
            return None
        return self.server.revocation.own_response(self.server.auth_cert, conf)

    async def declare_once(self) -> dict[str, Any]:
        """Send one declaration; the central server's answer, or :class:`DeclarationRefused`."""
        body = self.body()
        async with (
            aiohttp.ClientSession(timeout=_TIMEOUT) as session,
            session.post(
                self.url, data=body, headers={"Content-Type": "application/json"}
            ) as response,
        ):
            raw = await response.read()
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if response.status != 200 or not isinstance(answer, dict):
            reason = answer.get("message") if isinstance(answer, dict) else None
            raise DeclarationRefused(response.status, str(reason or raw[:200]))
        return answer

    def start(self) -> None:
        """(Re)start declaring in the background: on start and after a reload."""
        if self._task is not None:
            self._task.cancel()
        self.accepted.clear()
        self._task = asyncio.create_task(self._run(), name="service-declaration")

    async def _run(self) -> None:
        delay = _FIRST_RETRY
        while True:
            try:
                self.last_answer = await self.declare_once()
            except (DeclarationRefused, aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.last_error = str(exc)
                log.warning(
                    "service declaration to %s not accepted (%s); retrying in %.0f s",
                    self.url,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY)
                continue
            self.last_error = None
            self.accepted.set()
            log.info("services declared to the central catalogue: %s", self.last_answer)
            return

    def health(self) -> dict[str, Any]:
        """Whether the central catalogue holds this server's latest declaration, and why not."""
        return {"declared": self.accepted.is_set(), "last_error": self.last_error}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
