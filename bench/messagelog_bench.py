"""Message log throughput and latency: group commit under concurrent appenders, one appender alone.

Run: ``python bench/messagelog_bench.py [--records 50000] [--appenders 256] [--uvloop]
[--ids uuid7|uuid4] [--prefill N]``.
Prints appends/s and append latency p50/p99 for both cases, and the verifier's records/s.
``--ids`` picks the message ids' kind: ``uuid7`` (time-ordered, what the consumer server makes)
or ``uuid4`` (random, what an information system may send); ``--prefill N`` first logs N records
so the indexes have a production-like size. Numbers, not assertions: the tests never time
anything.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uuid_utils

from exchange.identifiers import SecurityServerId
from exchange.messagelog.store import MessageLog
from exchange.messagelog.verify import verify_log
from exchange.protocol.jws import Signer
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import generate_key

OWNER = SecurityServerId("PS", "GOV", "MOI", "ss1")

MESSAGE_IDS: dict[str, Callable[[], str]] = {
    "uuid7": lambda: str(uuid_utils.uuid7()),
    "uuid4": lambda: str(uuid.uuid4()),
}
new_id = MESSAGE_IDS["uuid7"]


def make_entry(i: int, pad: int) -> dict[str, Any]:
    return {
        "message_id": new_id(),
        "client": "PS/GOV/MOF/tax",
        "service": "PS/GOV/MOI/population-registry/persons",
        "side": "provider",
        "status": "200",
        "user_id": "clerk-7",
        "purpose": "citizen-service",
        "decision": {"effect": "allow", "grant": "tax-persons", "policy_version": 3},
        "released_fields": ["name", "birth_date"],
        "request_jws": "e" * pad,
        "timings_us": {"backend": 800, "total": 1200},
    }


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def concurrent(log: MessageLog, total: int, appenders: int, pad: int) -> list[float]:
    latencies: list[float] = []

    async def appender(first: int, count: int) -> None:
        for i in range(first, first + count):
            started = time.perf_counter()
            await log.append(make_entry(i, pad))
            latencies.append(time.perf_counter() - started)

    per_task = total // appenders
    await asyncio.gather(*(appender(k * per_task, per_task) for k in range(appenders)))
    return latencies


async def sequential(log: MessageLog, count: int, pad: int) -> list[float]:
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        await log.append(make_entry(i, pad))
        latencies.append(time.perf_counter() - started)
    return latencies


async def prefill(log: MessageLog, count: int, pad: int) -> None:
    """Log ``count`` records in batches of 1,000 before measuring, printing progress."""
    done, step = 0, max(1, count // 10)
    while done < count:
        batch = min(1_000, count - done)
        await log.append_many([make_entry(done + i, pad) for i in range(batch)])
        done += batch
        if done % step < batch or done == count:
            print(f"prefill: {done:,}/{count:,} records", flush=True)


def report(label: str, count: int, seconds: float, latencies: list[float]) -> None:
    print(
        f"{label:<28} {count / seconds:>10,.0f} appends/s   "
        f"p50 {percentile(latencies, 0.50) * 1e3:6.3f} ms   "
        f"p99 {percentile(latencies, 0.99) * 1e3:6.3f} ms   "
        f"mean {statistics.fmean(latencies) * 1e3:6.3f} ms"
    )


async def run(args: argparse.Namespace, directory: Path) -> None:
    ca = CertificateAuthority.create(directory / "ca")
    key = generate_key()
    signer = Signer(key, ca.issue_sign_cert(key.public_key(), OWNER.owner))
    path = directory / "bench.db"
    with MessageLog(path, signer, owner=OWNER) as log:
        if args.prefill:
            await prefill(log, args.prefill, args.pad)
        started = time.perf_counter()
        latencies = await concurrent(log, args.records, args.appenders, args.pad)
        elapsed = time.perf_counter() - started
        report(f"{args.appenders} concurrent appenders", len(latencies), elapsed, latencies)

        started = time.perf_counter()
        latencies = await sequential(log, args.sequential, args.pad)
        elapsed = time.perf_counter() - started
        report("1 appender", len(latencies), elapsed, latencies)
        size = log.size
    started = time.perf_counter()
    result = verify_log(path, trusted_cas=[ca.cert], owner=OWNER, check_records=False)
    elapsed = time.perf_counter() - started
    print(
        f"{'verify (tree and heads)':<28} {size / elapsed:>10,.0f} records/s   "
        f"{result.tree_heads} tree heads, {path.stat().st_size / 2**20:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--appenders", type=int, default=256)
    parser.add_argument("--sequential", type=int, default=5_000)
    parser.add_argument("--pad", type=int, default=700, help="bytes of JWS padding per entry")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--ids", choices=sorted(MESSAGE_IDS), default="uuid7")
    parser.add_argument("--prefill", type=int, default=0, help="records logged before measuring")
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite file goes")
    args = parser.parse_args()
    global new_id
    new_id = MESSAGE_IDS[args.ids]
    if args.uvloop:
        import uvloop

        uvloop.install()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        asyncio.run(run(args, Path(directory)))


if __name__ == "__main__":
    main()
