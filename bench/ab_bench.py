"""CPU per exchange of two code bases, side by side in one run: which one costs less, and how sure.

``cpu_bench.py`` run in one checkout and then in another compares two moments as well as two
code bases: this machine's speed drifts by 10-20 % within minutes. This script starts the example
federation twice, once from this checkout and once from ``--other`` (each with its own
interpreter, so each runs its own code), both at once but loaded one at a time: short wrk slices
(``--seconds``, ``--connections``) alternate between them in the order A B B A, so drift falls
on both alike. Each slice reads the CPU time (user + system, ``/proc``) of the consumer's and the
provider's security servers and of the adapter behind them over the requests it answered.

It prints, per process, each code base's CPU per exchange over all its slices, and the second's
ratio to the first with a 95 % interval from the slices paired in time (the mean of the paired
log-ratios, ± 1.96 standard errors). All the processes of one federation can come out a few
per cent dearer in a given run (where the scheduler put them), so it also prints each server
over the adapter of its own federation, paired the same way: the adapter's GET path is nearly
the same program in both checkouts, which makes it a control for that, though not an exact one
(``adapters/`` may differ between them too).

Usage: python bench/ab_bench.py --other DIR [--other-python PY] [--slices 24] [--seconds 3]
                                [--connections 32] [--people 20000]

``DIR`` is another checkout (``git worktree add ../base COMMIT``) with its own ``.venv``; this
checkout's figures are printed as ``this``, the other's as ``other``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PROCESSES = ("consumer", "provider", "adapter")
_PARTS = ("", " user", " system", " loop")
"""Per process: its CPU time, the user and the system part of it, and its main thread's (the
event loop's; the rest is mostly the message log's writer thread)."""
_TICK = os.sysconf("SC_CLK_TCK")


def _ticks(stat: Path) -> tuple[int, int]:
    fields = stat.read_text().rpartition(")")[2].split()
    return int(fields[11]), int(fields[12])  # utime and stime, stat fields 14 and 15


def _times(pid: int) -> tuple[float, float, float, float]:
    """CPU, user and system seconds of process ``pid``, and CPU seconds of its main thread."""
    user, system = _ticks(Path(f"/proc/{pid}/stat"))
    loop = sum(_ticks(Path(f"/proc/{pid}/task/{pid}/stat")))
    return (user + system) / _TICK, user / _TICK, system / _TICK, loop / _TICK


def worker(people: int) -> None:
    """Start the federation of the checkout this interpreter imports ``exchange`` from, print
    ``READY``, then answer each ``run SECONDS CONNECTIONS`` line on stdin with one JSON line."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cpu_bench import full_path, run_wrk

    from exchange.demo.federation import Federation

    async def serve() -> None:
        with tempfile.TemporaryDirectory(prefix="exchange-ab-") as tmp:
            fed = Federation(Path(tmp), people=people, progress=False)
            fed.build()
            await fed.start()
            try:
                pids, url, headers = full_path(fed)
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, run_wrk, url, 8, 2, headers)  # warm-up
                print("READY", flush=True)
                while line := await loop.run_in_executor(None, sys.stdin.readline):
                    command = line.split()
                    if command[0] != "run":
                        break
                    seconds, connections = int(command[1]), int(command[2])
                    before = {name: _times(pid) for name, pid in pids.items()}
                    result = await loop.run_in_executor(
                        None, run_wrk, url, connections, seconds, headers
                    )
                    after = {name: _times(pid) for name, pid in pids.items()}
                    cpu = {
                        f"{name}{part}": a - b
                        for name in pids
                        for part, a, b in zip(_PARTS, after[name], before[name], strict=True)
                    }
                    print(json.dumps({**result, "cpu": cpu}), flush=True)
            finally:
                await fed.stop()

    asyncio.run(serve())


class _Side:
    """One code base's worker process."""

    def __init__(self, name: str, python: str, cwd: Path, people: int) -> None:
        self.name = name
        self.slices: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "--worker", "--people", str(people)],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _line(self) -> str:
        out = self.proc.stdout
        assert out is not None
        line = out.readline()
        if not line:
            raise SystemExit(f"the {self.name} worker ended (exit {self.proc.wait()})")
        return line

    def wait_ready(self) -> None:
        while not self._line().startswith("READY"):
            pass

    def run(self, seconds: int, connections: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {seconds} {connections}\n")
        self.proc.stdin.flush()
        self.slices.append(json.loads(self._line()))

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def per_exchange(self, process: str) -> float:
        """µs of ``process`` CPU per answered request, over all slices."""
        requests: int = sum(s["requests"] for s in self.slices)
        seconds: float = sum(s["cpu"][process] for s in self.slices)
        return seconds / max(1, requests) * 1e6


def _interval(
    this: _Side, other: _Side, process: str, control: str | None = None
) -> tuple[float, float, float]:
    """other/this and its 95 % interval, from the log-ratios of slices paired in time; with
    ``control``, of ``process`` over ``control`` (each run's own CPU per exchange of the
    adapter, say, which takes out what favours one federation's processes in a given run)."""

    def per(side: dict[str, Any], name: str) -> float:
        return float(side["cpu"][name]) / int(side["requests"])

    names = (process,) if control is None else (process, control)
    logs = []
    for t, o in zip(this.slices, other.slices, strict=True):
        if not (
            t["requests"] and o["requests"] and all(t["cpu"][n] and o["cpu"][n] for n in names)
        ):
            continue
        log = math.log(per(o, process) / per(t, process))
        if control is not None:
            log -= math.log(per(o, control) / per(t, control))
        logs.append(log)
    if len(logs) < 2:
        return math.nan, math.nan, math.nan
    half = 1.96 * statistics.stdev(logs) / math.sqrt(len(logs))
    mean = statistics.fmean(logs)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--other", type=Path, help="the other checkout")
    parser.add_argument("--other-python", help="its interpreter (default: DIR/.venv/bin/python)")
    parser.add_argument("--slices", type=int, default=24, help="slices per code base")
    parser.add_argument("--seconds", type=int, default=3, help="seconds per slice")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.people)
        return
    if args.other is None:
        parser.error("--other DIR is required")
    if not shutil.which("wrk"):
        raise SystemExit("ab_bench.py needs wrk (apt-get install wrk)")
    other_python = args.other_python or str(args.other / ".venv" / "bin" / "python")
    this_dir = Path(__file__).resolve().parent.parent
    # one after the other: each federation takes free ports as it starts
    this = _Side("this", sys.executable, this_dir, args.people)
    this.wait_ready()
    other = _Side("other", other_python, args.other, args.people)
    try:
        other.wait_ready()
        for i in range(args.slices):
            first, second = (this, other) if i % 2 == 0 else (other, this)  # A B, B A, ...
            first.run(args.seconds, args.connections)
            second.run(args.seconds, args.connections)
    finally:
        this.stop()
        other.stop()
    for side in (this, other):
        requests = sum(s["requests"] for s in side.slices)
        non2xx = sum(s["non2xx"] for s in side.slices)
        print(f"{side.name:5}  {requests} requests ({non2xx} non-2xx) in {len(side.slices)} slices")
    print(f"CPU per exchange, {args.connections} connections:")
    for process in PROCESSES:
        for part in _PARTS if process != "adapter" else _PARTS[:1]:
            name = process + part
            a, b = this.per_exchange(name), other.per_exchange(name)
            _, low, high = _interval(this, other, name)
            print(
                f"  {name:16} this {a:6.1f} µs  other {b:6.1f} µs  "
                f"other/this {b / a:.3f} (95 % interval {low:.3f}-{high:.3f})"
            )
    print("Each server over the adapter of its own federation (other/this, paired slices):")
    for process in PROCESSES[:2]:
        ratio, low, high = _interval(this, other, process, control="adapter")
        print(f"  {process:16} {ratio:.3f} (95 % interval {low:.3f}-{high:.3f})")


if __name__ == "__main__":
    main()
