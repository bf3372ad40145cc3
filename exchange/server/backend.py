"""Calls from the provider security server to the service's backend (the adapter).

Plain HTTP(S) with a pooled keep-alive session, per-service timeouts, bounded response bodies,
and redirects returned rather than followed (PR-REST §4.4). Failures become
``Server.ServerProxy.ServiceFailed`` (502) or ``...ServiceTimeout`` (504).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from yarl import URL

from exchange.errors import RequestTooLarge, ServiceFailed, ServiceTimeout


@dataclass(frozen=True, slots=True)
class BackendResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


async def read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Read a whole body, refusing it as soon as it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in stream.iter_any():
        total += len(chunk)
        if total > limit:
            raise RequestTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class Backend:
    def __init__(self, *, max_response_bytes: int, connect_timeout: float) -> None:
        self.max_response_bytes = max_response_bytes
        self.connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=256, limit_per_host=128, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        method: str,
        base_url: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> BackendResponse:
        url = URL(base_url + path + ("?" + query if query else ""), encoded=True)
        client_timeout = aiohttp.ClientTimeout(total=timeout, connect=self.connect_timeout)
        try:
            async with self.session().request(
                method,
                url,
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
                timeout=client_timeout,
            ) as resp:
                length = resp.content_length
                if length is not None and length > self.max_response_bytes:
                    raise RequestTooLarge("service response exceeds the size limit")
                data = await read_bounded(resp.content, self.max_response_bytes)
                return BackendResponse(resp.status, list(resp.headers.items()), data)
        except RequestTooLarge as exc:
            raise ServiceFailed(exc.message) from None
        except TimeoutError:
            raise ServiceTimeout(f"the service did not answer within {timeout:g} s") from None
        except aiohttp.ClientResponseError as exc:
            raise ServiceFailed(f"the service sent a malformed response: {exc.message}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ServiceFailed(f"cannot reach the service: {exc}") from None
        except asyncio.IncompleteReadError:
            raise ServiceFailed("the service closed the connection mid-response") from None
