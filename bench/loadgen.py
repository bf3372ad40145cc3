"""A lean HTTP/1.1 keep-alive load generator for loopback benchmarks (no dependencies).

Each connection sends one pre-encoded GET, reads the full response (Content-Length framed), and
sends the next, for a fixed duration. Runs in its own process under uvloop so that it costs
as little CPU as possible next to the servers it measures. Prints one JSON line of results.

Usage: python bench/loadgen.py URL --connections 32 --seconds 10 [--header 'Name: value' ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit


def _content_length(head: bytes) -> int:
    pos = head.find(b"content-length:")
    if pos < 0:
        return 0
    end = head.find(b"\r\n", pos)
    return int(head[pos + 15 : end if end > 0 else None])


class Conn(asyncio.Protocol):
    def __init__(
        self,
        request: bytes,
        deadline: float,
        latencies: list[float],
        statuses: dict[int, int],
        done: asyncio.Future[None],
    ) -> None:
        self.request = request
        self.deadline = deadline
        self.latencies = latencies
        self.statuses = statuses
        self.done = done
        self.buf = bytearray()
        self.need = -1
        self.header_end = -1
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.header_end < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.header_end = end + 4
                head = bytes(self.buf[:end]).lower()
                status = int(head[9:12])
                self.statuses[status] = self.statuses.get(status, 0) + 1
                pos = head.find(b"content-length:")
                length = (
                    int(
                        head[
                            pos + 15 : head.find(b"\r\n", pos)
                            if head.find(b"\r\n", pos) > 0
                            else None
                        ]
                    )
                    if pos >= 0
                    else 0
                )
                self.need = self.header_end + length
            if len(self.buf) < self.need:
                return
            del self.buf[: self.need]
            self.header_end = -1
            now = time.perf_counter()
            self.latencies.append(now - self.sent_at)
            if now >= self.deadline:
                assert self.transport is not None
                self.transport.close()
                if not self.done.done():
                    self.done.set_result(None)
                return
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def run(url: str, connections: int, seconds: float, headers: list[str]) -> dict[str, object]:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}", *headers, "", ""]
    request = "\r\n".join(lines).encode()
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    deadline = start + seconds
    futures = []
    for _ in range(connections):
        fut: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(
            lambda f=fut: Conn(request, deadline, latencies, statuses, f),
            parts.hostname,
            parts.port,
        )
        futures.append(fut)
    await asyncio.wait_for(asyncio.gather(*futures), seconds + 30)
    elapsed = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "seconds": round(elapsed, 3),
        "rps": round(n / elapsed, 1),
        "p50_ms": round(latencies[n // 2] * 1000, 3) if n else None,
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 3) if n else None,
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(run(args.url, args.connections, args.seconds, args.header))
    except ImportError:
        result = asyncio.run(run(args.url, args.connections, args.seconds, args.header))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
