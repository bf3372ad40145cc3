"""Instructions per exchange of each security server on the full path, a figure load cannot move.

CPU time per exchange (``cpu_bench.py``) still moves by 10-20% when other programs share the
cores (caches, frequency, preemption). The number of instructions a process executes for a fixed
number of exchanges does not. This script starts the example federation (as ``cpu_bench.py``
does), restarts the consumer's and the provider's security servers under Valgrind's callgrind
with instrumentation off, sends warm-up exchanges, switches instrumentation on in both, sends
``--exchanges`` more over ``--connections`` keep-alive connections, and reads each server's
instruction count (Ir) from callgrind's dump.

Callgrind runs the servers about fifty times slower, so the figures are for comparing code bases
(run this script from each checkout with its own interpreter), not for speed. A server's timers
(the global configuration poll, OCSP refreshes, time-stamping, each about once a minute) also
run while the exchanges do, and one of them costs as much as ten exchanges: so the counts are
read every ``--chunk`` exchanges, and the lowest chunk, one that no timer fell into, is the
figure (the median and the mean, which include the timers, are printed beside it). ``--idle``
seconds of counting with no exchange show what the timers cost.

Usage: python bench/instr_bench.py [--exchanges 300] [--chunk 25] [--connections 1]
                                   [--warmup 30] [--idle 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from exchange.demo.federation import INTERIOR, MINISTRIES, PERSONS, Federation

_SUMMARY = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


async def start_under_callgrind(
    name: str, config: Path, out_dir: Path
) -> tuple[asyncio.subprocess.Process, Path]:
    """Start ``exchange server run`` under callgrind (instrumentation off) and await READY."""
    out = out_dir / f"{name}.callgrind"
    log = (out_dir / f"{name}.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "exchange",
        "server",
        "run",
        "--config",
        str(config),
        "--ready-line",
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 900)
        if not line:
            raise SystemExit(f"{name} exited under callgrind; see {out_dir / (name + '.log')}")
        if line.startswith(b"READY"):
            break
    asyncio.get_running_loop().create_task(_drain(proc.stdout))
    return proc, out


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def drive(url: str, headers: dict[str, str], count: int, connections: int) -> int:
    """Send ``count`` GETs over ``connections`` keep-alive connections; return the 200s."""
    parts = urlsplit(url)
    target = parts.path
    ok = 0
    lock = threading.Lock()
    per = [count // connections + (1 if i < count % connections else 0) for i in range(connections)]

    def worker(n: int) -> None:
        nonlocal ok
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=600)
        try:
            for _ in range(n):
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    with lock:
                        ok += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in per]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ok


def instructions(dump: Path) -> list[int]:
    """The Ir of each dump callgrind wrote for ``dump`` (``NAME.1``, ``NAME.2``, ...), in order."""
    counts = []
    number = 1
    while (path := dump.with_name(f"{dump.name}.{number}")).exists():
        match = _SUMMARY.search(path.read_bytes())
        counts.append(int(match.group(1)) if match else 0)
        number += 1
    return counts


def remove_dumps(dump: Path) -> None:
    for path in dump.parent.glob(dump.name + ".*"):
        path.unlink()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--exchanges", type=int, default=300)
    parser.add_argument("--chunk", type=int, default=25)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--idle", type=float, default=0.0)
    parser.add_argument("--people", type=int, default=2_000)
    parser.add_argument("--keep", type=Path, default=None, help="keep the callgrind files here")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("instr_bench.py needs valgrind (apt-get install valgrind)")
    window = MINISTRIES[1]
    with tempfile.TemporaryDirectory(prefix="exchange-instr-") as tmp:
        out_dir = args.keep or Path(tmp) / "callgrind"
        out_dir.mkdir(parents=True, exist_ok=True)
        fed = Federation(Path(tmp) / "fed", people=args.people, progress=False)
        fed.build()
        await fed.start()
        procs: dict[str, asyncio.subprocess.Process] = {}
        try:
            sides = {"consumer": window.member, "provider": INTERIOR.member}
            dumps: dict[str, Path] = {}
            for side, member in sides.items():
                child = next(c for c in fed.children if c.name == f"ss-{member.member_code}")
                await child.stop()
                fed.children.remove(child)
                procs[side], dumps[side] = await start_under_callgrind(
                    side, fed.sites[member].config, out_dir
                )
            url = f"{fed.consumer_url(window.member)}/r1/{PERSONS.encoded()}/{fed.sample_ids[0]}"
            headers = {"X-Road-Client": str(window.subsystem), "X-Road-Purpose": "citizen-service"}
            loop = asyncio.get_running_loop()
            warm = await loop.run_in_executor(
                None, drive, url, headers, args.warmup, args.connections
            )
            if warm != args.warmup:
                raise SystemExit(f"warm-up: {warm} of {args.warmup} exchanges answered 200")
            if args.idle > 0:
                for proc in procs.values():
                    control(proc.pid, "-i", "on")
                await asyncio.sleep(args.idle)
                for proc in procs.values():
                    control(proc.pid, "-d")
                    control(proc.pid, "-i", "off")
                for side, dump in dumps.items():
                    idle = sum(instructions(dump))
                    remove_dumps(dump)
                    print(f"idle {args.idle:.0f} s  {side:8} {idle / 1e6:10.2f} M instructions")
            for proc in procs.values():
                control(proc.pid, "-i", "on")
            started = time.monotonic()
            ok = 0
            chunks = [args.chunk] * (args.exchanges // args.chunk)
            for size in chunks:
                ok += await loop.run_in_executor(None, drive, url, headers, size, args.connections)
                for proc in procs.values():
                    control(proc.pid, "-d")
            elapsed = time.monotonic() - started
            if ok != sum(chunks):
                raise SystemExit(f"{ok} of {sum(chunks)} exchanges answered 200")
            print(
                f"{sum(chunks)} exchanges over {args.connections} connection(s) "
                f"in {elapsed:.1f} s under callgrind, counted every {args.chunk}"
            )
            for side, dump in dumps.items():
                counts = instructions(dump)
                per = sorted(count / args.chunk / 1e6 for count in counts)
                print(
                    f"{side:8} {per[0]:8.3f} M instructions per exchange (lowest of "
                    f"{len(per)} chunks; median {statistics.median(per):.3f}, "
                    f"mean {statistics.mean(per):.3f})"
                )
        finally:
            for proc in procs.values():
                if proc.returncode is None:
                    proc.terminate()
                    try:
                        await asyncio.wait_for(proc.wait(), 120)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
            await fed.stop()


if __name__ == "__main__":
    asyncio.run(main())
