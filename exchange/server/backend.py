"""Calls from the provider security server to the service's backend (the adapter).

Plain HTTP(S) over pooled keep-alive connections (:mod:`exchange.server.httpclient`), per-service
timeouts, bounded response bodies, redirects returned rather than followed (PR-REST §4.4).
Failures become ``Server.ServerProxy.ServiceFailed`` (502) or ``...ServiceTimeout`` (504).
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.server.httpclient import HttpClient


@dataclass(frozen=True, slots=True)
class BackendResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class Backend:
    def __init__(self, *, max_response_bytes: int, connect_timeout: float) -> None:
        self.client = HttpClient(
            max_response_bytes=max_response_bytes, connect_timeout=connect_timeout
        )

    async def close(self) -> None:
        await self.client.close()

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
        url = base_url + path + ("?" + query if query else "")
        response = await self.client.request(method, url, headers, body, timeout)
        return BackendResponse(response.status, response.headers, response.body)
