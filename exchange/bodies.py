"""Reading an HTTP request's body within a limit, for the aiohttp servers here.

A body whose ``Content-Length`` is over the limit is refused before anything is read; one sent
in chunks is refused as soon as it grows past the limit, so nothing larger is ever buffered
(aiohttp's own ``client_max_size`` would answer with a plain-text 413 of its own instead of the
caller's error). Both refusals raise :class:`~exchange.errors.RequestTooLarge`; callers that
answer with another error catch it. A caller that closes its connection before the body is whole
is :class:`~exchange.errors.CallerDisconnected` (the caller's fault, not a failure of ours), and
a malformed chunked body is :class:`~exchange.errors.BadRequest`. IO only.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from exchange.errors import BadRequest, CallerDisconnected, RequestTooLarge


async def read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Read a whole body, refusing it as soon as it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in stream.iter_any():
            total += len(chunk)
            if total > limit:
                raise RequestTooLarge(f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ConnectionError:
        raise CallerDisconnected(
            f"the caller closed the connection after {total} bytes of its request body"
        ) from None
    except HttpProcessingError as exc:
        raise BadRequest(f"malformed request body: {exc.message}") from None
    return b"".join(chunks)


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """``request``'s body, refused by its ``Content-Length`` or while reading."""
    length = request.content_length
    if length is not None and length > limit:
        raise RequestTooLarge(f"request body of {length} bytes exceeds the limit of {limit} bytes")
    if not request.body_exists:
        return b""
    return await read_bounded(request.content, limit)
