"""Throughput and latency of the full exchange path against the adapter alone, in one run.

Starts the example federation (each part its own process), then drives load with
``bench/loadgen.py`` (its own process, keep-alive connections):

1. directly against Interior's population registry adapter: ``GET /persons/{id}``;
2. through the full path: post-office window's consumer security server -> mutual TLS ->
   Interior's provider security server -> adapter, signed both ways, policy-checked, field-
   filtered and durably logged on both sides.

For each it prints requests/s, p50 and p99 latency, at 32 connections and at 1 connection, the
ratio of full-path to direct throughput, and the p50 latency the exchange layer adds.

Usage: python bench/federation_bench.py [--seconds 10] [--connections 32] [--people 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from exchange.demo.federation import MINISTRIES, PERSONS, Federation

HERE = Path(__file__).resolve().parent


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return round(float(text[: -len(unit)]) * factor, 3)
    return float(text)


def wrk(url: str, connections: int, seconds: float, headers: list[str]) -> dict[str, Any]:
    """Run wrk (C, one thread per core is too many here: 1 thread) and parse its summary."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=seconds + 60)
    result: dict[str, Any] = {"tool": "wrk", "statuses": {}}
    for line in out.stdout.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(words[1])
        elif len(words) == 2 and words[0] == "50%":
            result["p50_ms"] = _ms(words[1])
        elif len(words) == 2 and words[0] == "99%":
            result["p99_ms"] = _ms(words[1])
        elif "Non-2xx or 3xx responses" in line:
            result["statuses"]["non-2xx"] = int(words[-1])
        elif "requests in" in line:
            result["requests"] = int(words[0])
    return result


def load(url: str, connections: int, seconds: float, headers: list[str]) -> dict[str, Any]:
    """Drive load with wrk where installed (``apt-get install wrk``), else bench/loadgen.py."""
    if shutil.which("wrk"):
        return wrk(url, connections, seconds, headers)
    args = [sys.executable, str(HERE / "loadgen.py"), url]
    args += ["--connections", str(connections), "--seconds", str(seconds)]
    for h in headers:
        args += ["--header", h]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=seconds + 120)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _line(name: str, conns: int, r: dict[str, Any]) -> str:
    return (
        f"{name:6s} {conns:3d} conn: {r['rps']:>9} req/s  p50 {r['p50_ms']} ms  "
        f"p99 {r['p99_ms']} ms  statuses {r['statuses']}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--people", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="exchange-bench-") as tmp:
        fed = Federation(Path(tmp), people=args.people, progress=False)
        fed.build(print)
        await fed.start(print)
        try:
            nid = fed.sample_ids[0]
            direct = f"http://127.0.0.1:{fed.adapter_port}/persons/{nid}"
            window = MINISTRIES[1]
            full = f"{fed.consumer_url(window.member)}/r1/{PERSONS.encoded()}/{nid}"
            headers = [f"X-Road-Client: {window.subsystem}", "X-Road-Purpose: citizen-service"]
            results = {}
            loop = asyncio.get_running_loop()
            for name, url, hdrs in (("direct", direct, []), ("full", full, headers)):
                await loop.run_in_executor(None, load, url, 4, 2.0, hdrs)  # warm-up
                for conns in (args.connections, 1):
                    r = await loop.run_in_executor(None, load, url, conns, args.seconds, hdrs)
                    results[(name, conns)] = r
                    print(_line(name, conns, r), flush=True)
            d, f = results[("direct", args.connections)], results[("full", args.connections)]
            d1, f1 = results[("direct", 1)], results[("full", 1)]
            print()
            ratio = f["rps"] / d["rps"]
            print(f"full path / direct throughput at {args.connections} connections: {ratio:.3f}")
            added = f1["p50_ms"] - d1["p50_ms"]
            print(f"p50 latency added by the exchange layer at 1 connection: {added:.3f} ms")
        finally:
            await fed.stop()


if __name__ == "__main__":
    asyncio.run(main())
