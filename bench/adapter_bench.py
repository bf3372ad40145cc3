"""Population registry adapter: generation rate, store lookups, and HTTP throughput called directly.

Run: ``python bench/adapter_bench.py [--count 200000] [--db FILE] [--requests 20000]
[--connections 32]``. With ``--db`` an existing registry is reused (or created there); otherwise
one of ``--count`` people is generated in a temporary directory. The server runs in its own process
(``python -m adapters.population serve``, uvloop); the load comes from an aiohttp client on uvloop
with keep-alive connections, so on a 2-core machine client and server share the CPU and the figure
is a floor. This is the "direct" side of the exchange-vs-direct comparison.
Numbers, not assertions: the tests never time anything.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from adapters.population.store import PopulationStore, build_registry

REPO = Path(__file__).resolve().parents[1]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sample_ids(db: Path, count: int) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT national_id FROM persons ORDER BY random() LIMIT ?", (count,)
        ).fetchall()
    finally:
        conn.close()
    return [f"{row[0]:09d}" for row in rows]


def time_calls(label: str, call: Callable[[str], Any], arguments: list[str]) -> None:
    started = time.perf_counter()
    for argument in arguments:
        call(argument)
    micros = (time.perf_counter() - started) / len(arguments) * 1e6
    print(f"  store {label:<28} {micros:8.1f} µs/call")


def bench_store(db: Path, ids: list[str]) -> None:
    with PopulationStore(db) as store:
        families = [p["name_en"]["family"] for p in map(store.get_person, ids[:200]) if p]
        time_calls("get_person", store.get_person, ids)
        time_calls("address", store.address, ids)
        time_calls("family", store.family, ids[:2000])
        time_calls("search family name (20)", lambda n: store.search(name=n), families)


async def load(url: str, paths: list[str], connections: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = iter(paths)
    connector = aiohttp.TCPConnector(limit=connections)

    async def worker(session: aiohttp.ClientSession) -> None:
        for path in queue:
            started = time.perf_counter()
            async with session.get(url + path) as response:
                await response.read()
            latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies


def bench_http(db: Path, ids: list[str], requests: int, connections: int) -> None:
    command = [sys.executable, "-m", "adapters.population", "serve", "--db", str(db), "--port", "0"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) as server:
        assert server.stdout is not None
        url = server.stdout.readline().split("url=")[1].split()[0]
        cases = {
            "GET /persons/{id}": [f"/persons/{random.choice(ids)}" for _ in range(requests)],
            "GET /persons/{id}/family": [
                f"/persons/{random.choice(ids)}/family" for _ in range(requests // 4)
            ],
        }
        try:
            for label, paths in cases.items():
                uvloop.run(load(url, paths[:500], connections))
                elapsed, latencies = uvloop.run(load(url, paths, connections))
                print(
                    f"  http  {label:<28} {len(paths) / elapsed:8.0f} req/s  "
                    f"p50 {percentile(latencies, 0.5) * 1e3:.2f} ms  "
                    f"p99 {percentile(latencies, 0.99) * 1e3:.2f} ms  ({connections} connections)"
                )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "registry.db"
        if not db.exists():
            report = build_registry(db, args.count, seed=1)
            rate = report.count / report.seconds
            print(f"  generate {report.count:,} people: {report.seconds:.1f} s ({rate:,.0f}/s)")
        ids = sample_ids(db, 20_000)
        bench_store(db, ids)
        bench_http(db, ids, args.requests, args.connections)


if __name__ == "__main__":
    main()
