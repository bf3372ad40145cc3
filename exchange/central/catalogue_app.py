"""The central server's catalogue routes: security servers declare, anyone browses.

- ``POST /catalogue/declarations``: a signed service declaration
  (:func:`exchange.central.catalogue.sign_declaration`); ``200`` ``{"server", "subsystems",
  "services"}`` when stored, else ``400 Client.InvalidServiceDeclaration`` or ``403
  Client.ServiceDeclarationForbidden`` with the exact reason.
- ``GET /catalogue``: every declared subsystem with its services (JSON);
  ``GET /catalogue/{INSTANCE}/{CLASS}/{CODE}`` one member's, and
  ``GET /catalogue/{INSTANCE}/{CLASS}/{CODE}/{SUBSYSTEM}`` one subsystem's (parts percent-encoded
  as in r1 paths). A member or subsystem the registry does not know is ``404``.

The catalogue lists what providers offer; it grants nothing (access is each provider's policy).
SQLite work runs in a worker thread on connections opened for the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from exchange.central.catalogue import (
    ENVELOPE,
    Declaration,
    DeclarationStore,
    InvalidServiceDeclaration,
    build_catalogue,
    verify_declaration,
)
from exchange.central.registry import Registry
from exchange.central.signed_documents_app import error_response, read_document
from exchange.errors import ClientError, InvalidIdentifier
from exchange.identifiers import MemberId, SubsystemId, parse_member, parse_subsystem

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class _Catalogue:
    def __init__(self, db_path: Path, clock: Clock) -> None:
        self.db_path = db_path
        self.clock = clock

    def declare(self, body: bytes) -> Declaration:
        now = int(self.clock())
        with Registry.open(self.db_path) as registry:
            conf = registry.build_globalconf(now)
        declaration = verify_declaration(body, registry=conf, now=now)
        with DeclarationStore.open(self.db_path) as store:
            store.put(declaration, body, now, registry=conf)
        return declaration

    def browse(self, member: MemberId | None, subsystem: SubsystemId | None) -> dict[str, Any]:
        with Registry.open(self.db_path) as registry:
            conf = registry.build_globalconf(int(self.clock()))
        if member is not None and conf.member(member) is None:
            raise ClientError(
                f"member {member} is not registered", code="Client.UnknownMember", status=404
            )
        if subsystem is not None and not conf.has_subsystem(subsystem):
            raise ClientError(
                f"subsystem {subsystem} is not registered",
                code="Client.UnknownSubsystem",
                status=404,
            )
        with DeclarationStore.open(self.db_path) as store:
            declarations = store.declarations()
        return build_catalogue(conf, declarations, member=member, subsystem=subsystem)


CATALOGUE_KEY: Final = web.AppKey("catalogue", _Catalogue)


def add_catalogue_routes(app: web.Application, db_path: Path, *, clock: Clock = time.time) -> None:
    app[CATALOGUE_KEY] = _Catalogue(db_path, clock)
    app.router.add_post("/catalogue/declarations", handle_declaration)
    app.router.add_get("/catalogue", handle_catalogue)
    app.router.add_get("/catalogue/{id:.+}", handle_catalogue)


async def handle_declaration(request: web.Request) -> web.StreamResponse:
    body = await read_document(request, ENVELOPE, InvalidServiceDeclaration)
    if isinstance(body, web.Response):
        return body
    try:
        declaration = await asyncio.to_thread(request.app[CATALOGUE_KEY].declare, body)
    except ClientError as exc:
        logger.warning("service declaration refused (%s): %s", exc.detail, exc.internal)
        return error_response(exc)
    services = sum(len(s) for _, s in declaration.subsystems)
    logger.info(
        "service declaration of %s: %d subsystem(s), %d service(s)",
        declaration.server,
        len(declaration.subsystems),
        services,
    )
    return web.json_response(
        {
            "server": str(declaration.server),
            "subsystems": len(declaration.subsystems),
            "services": services,
        }
    )


async def handle_catalogue(request: web.Request) -> web.StreamResponse:
    raw = request.match_info.get("id")
    member: MemberId | None = None
    subsystem: SubsystemId | None = None
    try:
        if raw is not None:
            parts = raw.rstrip("/").split("/")
            if len(parts) == 3:
                member = parse_member(raw.rstrip("/"), encoded=True)
            else:
                subsystem = parse_subsystem(raw.rstrip("/"), encoded=True)
        catalogue = await asyncio.to_thread(request.app[CATALOGUE_KEY].browse, member, subsystem)
    except (ClientError, InvalidIdentifier) as exc:
        return error_response(exc)
    return web.json_response(catalogue)
