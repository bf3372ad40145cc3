"""The central server's registration routes (docs/design.md §2): security servers ask to be
registered.

- ``POST /registration``: a signed registration request
  (:func:`exchange.central.registration.sign_registration`); on success ``202``
  ``{"id": ..., "status": "pending"}``, else ``400`` ``{"type":
  "Client.InvalidRegistrationRequest", "message": <the exact reason>, "detail": ...}``.
- ``GET /registration/{id}``: ``{"id", "status", "reason"}`` of one request, so the security
  server's operator can follow it.

Nothing is registered here: the central server's operator approves or rejects with
``exchange central registration ...``. SQLite work runs in a worker thread on a connection opened
for that call (registration is rare).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from aiohttp import web
from cryptography import x509

from exchange.central.registration import (
    ENVELOPE,
    InvalidRegistrationRequest,
    RegistrationStore,
    StoredRequest,
    verify_registration,
)
from exchange.central.registry import Registry
from exchange.central.signed_documents_app import error_response, read_document
from exchange.errors import ConfigurationError
from exchange.globalconf.document import GlobalConf

logger = logging.getLogger(__name__)

CaCertsProvider = Callable[[], Sequence[x509.Certificate]]
Clock = Callable[[], float]


class _Registration:
    def __init__(self, db_path: Path, ca_certs: CaCertsProvider | None, clock: Clock) -> None:
        self.db_path = db_path
        self.ca_certs = ca_certs
        self.clock = clock

    def receive(self, body: bytes) -> StoredRequest:
        """Verify and store one request (blocking)."""
        now = int(self.clock())
        conf = self._conf(now)
        trusted = list(self.ca_certs()) if self.ca_certs is not None else conf.ca_certs()
        members = {m.id for m in conf.members}
        request = verify_registration(body, trusted_cas=trusted, members=members, now=now)
        with RegistrationStore.open(self.db_path) as store:
            return store.add(request, body, now)

    def status(self, request_id: str) -> StoredRequest:
        with RegistrationStore.open(self.db_path) as store:
            return store.get(request_id)

    def _conf(self, now: int) -> GlobalConf:
        with Registry.open(self.db_path) as registry:
            return registry.build_globalconf(now)


REGISTRATION_KEY: Final = web.AppKey("registration", _Registration)


def add_registration_routes(
    app: web.Application,
    db_path: Path,
    ca_certs_provider: CaCertsProvider | None = None,
    *,
    clock: Clock = time.time,
) -> None:
    """Add ``POST /registration`` and ``GET /registration/{id}`` to the central server's app.

    ``ca_certs_provider()`` returns the approved CAs of the current global configuration (e.g.
    ``lambda: app[PUBLISHER_KEY].latest.conf.ca_certs()``); without it they are read from the
    registry at ``db_path`` with each request.
    """
    app[REGISTRATION_KEY] = _Registration(db_path, ca_certs_provider, clock)
    app.router.add_post("/registration", handle_registration)
    app.router.add_get("/registration/{id}", handle_registration_status)


async def handle_registration(request: web.Request) -> web.StreamResponse:
    body = await read_document(request, ENVELOPE, InvalidRegistrationRequest)
    if isinstance(body, web.Response):
        return body
    try:
        stored = await asyncio.to_thread(request.app[REGISTRATION_KEY].receive, body)
    except InvalidRegistrationRequest as exc:
        logger.warning("registration request refused (%s): %s", exc.detail, exc.internal)
        return error_response(exc)
    logger.info(
        "registration request %s from %s (%s) is pending approval",
        stored.id,
        stored.server,
        stored.address,
    )
    return web.json_response({"id": stored.id, "status": stored.status}, status=202)


async def handle_registration_status(request: web.Request) -> web.StreamResponse:
    request_id = request.match_info["id"]
    try:
        stored = await asyncio.to_thread(request.app[REGISTRATION_KEY].status, request_id)
    except ConfigurationError:
        return web.json_response(
            {"type": "Client.UnknownRegistrationRequest", "message": "no such request"},
            status=404,
        )
    body = {"id": stored.id, "status": stored.status, "reason": stored.reason}
    return web.json_response(body)
