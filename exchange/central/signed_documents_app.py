"""What the central server's routes for signed documents share on the HTTP side.

Registration requests (:mod:`exchange.central.registration_app`) and service declarations
(:mod:`exchange.central.catalogue_app`) answer a refusal the same way (the error's JSON body with
its status) and refuse a body whose ``Content-Length`` is over the kind's limit before reading it,
in the words :meth:`exchange.central.signed_documents.Envelope.tokens` uses for one read whole.
Checking the documents is :mod:`exchange.central.signed_documents`'s, not this module's.
"""

from __future__ import annotations

from aiohttp import web

from exchange.central.signed_documents import Envelope, Refuse
from exchange.errors import ExchangeError


def error_response(exc: ExchangeError) -> web.Response:
    """``exc``'s JSON body (``type``, ``message``, ``detail``) with its HTTP status."""
    return web.json_response(exc.body(), status=exc.status)


def announced_too_large(
    request: web.Request, envelope: Envelope, refuse: Refuse
) -> web.Response | None:
    """The refusal of a body announced as longer than ``envelope.max_bytes``, else ``None``."""
    length = request.content_length
    if length is not None and length > envelope.max_bytes:
        return error_response(refuse(envelope.too_large))
    return None
