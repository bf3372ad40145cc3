"""What the central server's routes for signed documents share on the HTTP side.

Registration requests (:mod:`exchange.central.registration_app`) and service declarations
(:mod:`exchange.central.catalogue_app`) answer a refusal the same way (the error's JSON body with
its status) and read a body only up to the kind's limit: one whose ``Content-Length`` is over it
is refused before it is read, one sent in chunks as soon as it passes it, in the words
:meth:`exchange.central.signed_documents.Envelope.tokens` uses for one read whole (never aiohttp's
own plain-text 413 at ``client_max_size``).
Checking the documents is :mod:`exchange.central.signed_documents`'s, not this module's.
"""

from __future__ import annotations

from aiohttp import web

from exchange.bodies import read_body
from exchange.central.signed_documents import Envelope, Refuse
from exchange.errors import ExchangeError, RequestTooLarge


def error_response(exc: ExchangeError) -> web.Response:
    """``exc``'s JSON body (``type``, ``message``, ``detail``) with its HTTP status."""
    return web.json_response(exc.body(), status=exc.status)


async def read_document(
    request: web.Request, envelope: Envelope, refuse: Refuse
) -> bytes | web.Response:
    """The body, or the refusal of one longer than ``envelope.max_bytes``
    (:func:`exchange.bodies.read_body`: by its ``Content-Length``, or while reading)."""
    try:
        return await read_body(request, envelope.max_bytes)
    except RequestTooLarge:
        return error_response(refuse(envelope.too_large))
