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

from exchange.central.signed_documents import Envelope, Refuse
from exchange.errors import ExchangeError


def error_response(exc: ExchangeError) -> web.Response:
    """``exc``'s JSON body (``type``, ``message``, ``detail``) with its HTTP status."""
    return web.json_response(exc.body(), status=exc.status)


async def read_bounded(
    request: web.Request, envelope: Envelope, refuse: Refuse
) -> bytes | web.Response:
    """The body, or the refusal of one longer than ``envelope.max_bytes``: announced so by its
    ``Content-Length`` (nothing read), or found so while reading (nothing more read)."""
    length = request.content_length
    if length is not None and length > envelope.max_bytes:
        return error_response(refuse(envelope.too_large))
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > envelope.max_bytes:
            return error_response(refuse(envelope.too_large))
    return bytes(body)
