"""CPU time per exchange of each process on the full path, the figure that survives a busy machine.

Starts the example federation (as ``federation_bench.py`` does), drives the full path with wrk at
32 connections, and reads each process's user+system CPU time from ``/proc/<pid>/stat`` before
and after the run. CPU per exchange is that difference over the number of answered requests:
unlike requests/s it barely moves when other programs share the cores.

For each security server it also prints the part of that CPU spent by the event loop's thread
(the main one; the rest is mostly the message log's writer thread) and the records per group
commit of its message log (from ``/metrics``). It also prints the share of the machine's CPU
time that was idle during the run (``/proc/stat``: idle + iowait) and each process's context
switches per exchange, summed over its threads (``voluntary``: it waited, for IO or a lock;
``forced``: preempted). Idle cores at 32 connections
with every request in flight say the path waits on hand-overs, not on CPU.

With ``--py-spy DIR`` it also records a sampled profile (py-spy, ``--gil``: only samples that
hold the GIL, i.e. Python work) of each security server on the path during a second run, as
speedscope and flame-graph files in DIR.

Usage: python bench/cpu_bench.py [--seconds 8] [--connections 32] [--runs 2] [--py-spy DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from exchange.demo.federation import INTERIOR, MINISTRIES, PERSONS, Federation

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, task: int | None = None) -> float:
    """User + system CPU time of a process and all its threads, in seconds (of its thread
    ``task`` alone if given: the main thread, which runs the event loop, is ``task=pid``)."""
    stat = Path(f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat")
    fields = stat.read_text().rpartition(")")[2].split()
    # fields after the command: state is [0]; utime and stime are stat fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / _TICK


def context_switches(pid: int) -> tuple[int, int]:
    """Voluntary and forced context switches of a process, summed over its threads."""
    voluntary = forced = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread may end while we read
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    forced += int(line.split()[1])
    return voluntary, forced


def idle_ticks() -> tuple[int, int]:
    """(idle + iowait, total) CPU ticks of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[3] + values[4], sum(values)


def full_path(fed: Federation) -> tuple[dict[str, int], str, list[str]]:
    """The processes on the full path by pid (the post-office window's consumer security
    server, Interior's provider one, the population registry adapter), and the URL and the
    headers of the window's information system's call."""
    window = MINISTRIES[1]
    by_name = {child.name: child.proc.pid for child in fed.children}
    pids = {
        "consumer": by_name[f"ss-{window.member.member_code}"],
        "provider": by_name[f"ss-{INTERIOR.member.member_code}"],
        "adapter": by_name["population-registry"],
    }
    url = f"{fed.consumer_url(window.member)}/r1/{PERSONS.encoded()}/{fed.sample_ids[0]}"
    headers = [f"X-Road-Client: {window.subsystem}", "X-Road-Purpose: citizen-service"]
    return pids, url, headers


def run_wrk(url: str, connections: int, seconds: int, headers: list[str]) -> dict[str, Any]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=seconds + 60)
    result: dict[str, Any] = {"non2xx": 0}
    for line in out.stdout.splitlines():
        words = line.split()
        if "requests in" in line:
            result["requests"] = int(words[0])
        elif line.startswith("Requests/sec:"):
            result["rps"] = float(words[1])
        elif "Non-2xx or 3xx responses" in line:
            result["non2xx"] = int(words[-1])
    return result


def commits(metrics_url: str) -> tuple[float, float]:
    """(group commits, records committed) of a security server's message log so far."""
    with urllib.request.urlopen(metrics_url, timeout=10) as answer:
        text = answer.read().decode()
    found = dict(re.findall(r"^exchange_messagelog_batch_records_(count|sum) (\S+)$", text, re.M))
    return float(found.get("count", 0)), float(found.get("sum", 0))


def measure(
    pids: dict[str, int],
    url: str,
    connections: int,
    seconds: int,
    headers: list[str],
    metrics: dict[str, str],
) -> tuple[dict[str, Any], dict[str, float]]:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    loop_before = {name: cpu_seconds(pid, pid) for name, pid in pids.items()}
    commits_before = {name: commits(u) for name, u in metrics.items()}
    switches_before = {name: context_switches(pid) for name, pid in pids.items()}
    idle_before = idle_ticks()
    result = run_wrk(url, connections, seconds, headers)
    idle_after = idle_ticks()
    switches_after = {name: context_switches(pid) for name, pid in pids.items()}
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    loop_after = {name: cpu_seconds(pid, pid) for name, pid in pids.items()}
    commits_after = {name: commits(u) for name, u in metrics.items()}
    n = max(1, result["requests"])
    result["loop"] = {name: (loop_after[name] - loop_before[name]) / n * 1e6 for name in pids}
    result["batch"] = {
        name: (commits_after[name][1] - commits_before[name][1])
        / max(1.0, commits_after[name][0] - commits_before[name][0])
        for name in metrics
    }
    result["idle"] = (idle_after[0] - idle_before[0]) / max(1, idle_after[1] - idle_before[1])
    result["switches"] = {
        name: tuple(
            (a - b) / n for a, b in zip(switches_after[name], switches_before[name], strict=True)
        )
        for name in pids
    }
    return result, {name: (after[name] - before[name]) / n * 1e6 for name in pids}


def py_spy(pid: int, out: Path, seconds: int) -> subprocess.Popen[bytes]:
    args = ["py-spy", "record", "--gil", "--nonblocking", "-r", "250", "-d", str(seconds)]
    return subprocess.Popen(
        [*args, "-f", "speedscope", "-o", str(out), "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--py-spy", type=Path, default=None, dest="pyspy")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("cpu_bench.py needs wrk (apt-get install wrk)")
    if args.pyspy is not None and not shutil.which("py-spy"):
        raise SystemExit("--py-spy needs py-spy on PATH (pip install py-spy)")
    window = MINISTRIES[1]
    with tempfile.TemporaryDirectory(prefix="exchange-cpu-") as tmp:
        fed = Federation(Path(tmp), people=args.people, progress=False)
        fed.build()
        await fed.start()
        try:
            pids, url, headers = full_path(fed)
            metrics = {
                side: f"{fed.status_url(member)}/metrics"
                for side, member in (("consumer", window.member), ("provider", INTERIOR.member))
            }
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, run_wrk, url, 4, 2, headers)  # warm-up
            print(f"load average before: {os.getloadavg()[0]:.2f}")
            for _ in range(args.runs):
                result, cpu = await loop.run_in_executor(
                    None, measure, pids, url, args.connections, args.seconds, headers, metrics
                )
                per = "  ".join(f"{name} {us:6.0f} µs" for name, us in cpu.items())
                switches = "  ".join(
                    f"{name} {voluntary:.2f} voluntary {forced:.2f} forced"
                    for name, (voluntary, forced) in result["switches"].items()
                )
                threads = "  ".join(
                    f"{side} {result['loop'][side]:.0f} µs on the event loop, "
                    f"{result['batch'][side]:.1f} records per log commit"
                    for side in metrics
                )
                print(
                    f"{result['rps']:8.1f} req/s ({result['requests']} requests, "
                    f"{result['non2xx']} non-2xx)  CPU per exchange: {per}\n"
                    f"          cores idle {result['idle']:.0%}  "
                    f"context switches per exchange: {switches}\n"
                    f"          {threads}",
                    flush=True,
                )
            print(f"load average after: {os.getloadavg()[0]:.2f}")
            if args.pyspy is not None:
                args.pyspy.mkdir(parents=True, exist_ok=True)
                spies = [
                    py_spy(pids[side], args.pyspy / f"{side}.speedscope.json", args.seconds)
                    for side in ("consumer", "provider")
                ]
                await loop.run_in_executor(
                    None, run_wrk, url, args.connections, args.seconds + 1, headers
                )
                for spy in spies:
                    spy.wait(timeout=60)
                print(f"py-spy profiles in {args.pyspy}")
        finally:
            await fed.stop()


if __name__ == "__main__":
    asyncio.run(main())
