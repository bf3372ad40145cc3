"""Child processes of the example federation: started, awaited until ready, always stopped.

Each long-running part (central server, adapter, security servers) is its own process, as in a
real deployment and so that the two cores are shared fairly. A child reports readiness by
printing one line ``READY {json}`` on stdout; everything else it prints goes to its log file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from exchange.errors import ConfigurationError


class ChildFailed(ConfigurationError):
    """A child process exited or did not become ready; the message quotes its log."""


_PORT_RANGE: Final = (20000, 32767)
"""Below Linux's default ephemeral range (32768-60999), so that the outgoing connections of other
processes cannot take a port between the moment it is chosen and the moment a child binds it."""
_handed_out: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the child binds it at once), never the
    same one twice in this process: a federation chooses all its ports before any child binds."""
    for _ in range(1000):
        port = random.randint(*_PORT_RANGE)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    low, high = _PORT_RANGE
    raise OSError(f"no free port on 127.0.0.1 between {low} and {high}")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    ready: dict[str, Any] = field(default_factory=dict)
    _drain: asyncio.Task[None] | None = None

    async def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._drain
        return self.proc.returncode


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def spawn(
    name: str,
    args: list[str],
    log_dir: Path,
    *,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> Child:
    """Start ``python -m <args>`` and wait for its READY line."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("ab")
    child_env = dict(os.environ)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    if env:
        child_env.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=log_file,
        stdin=asyncio.subprocess.DEVNULL,
        env=child_env,
        start_new_session=True,
    )
    log_file.close()
    child = Child(name=name, proc=proc, log_path=log_path)
    assert proc.stdout is not None
    try:
        child.ready = await asyncio.wait_for(_await_ready(proc.stdout, log_path), timeout)
    except (TimeoutError, ChildFailed) as exc:
        await child.stop()
        reason = "did not become ready in time" if isinstance(exc, TimeoutError) else "exited early"
        raise ChildFailed(
            f"{name} {reason}; last lines of {log_path}:\n{_tail(log_path)}"
        ) from None
    except BaseException:  # cancelled (a signal) while it starts: it is nobody's to stop yet
        await child.stop()
        raise
    child._drain = asyncio.create_task(_drain(proc.stdout, log_path))
    return child


async def _await_ready(stream: asyncio.StreamReader, log_path: Path) -> dict[str, Any]:
    while True:
        line = await stream.readline()
        if not line:
            raise ChildFailed("exited")
        text = line.decode(errors="replace").strip()
        if text.startswith("READY"):
            return _ready_payload(text[len("READY") :].strip())
        with log_path.open("a") as fh:
            fh.write(text + "\n")


def _ready_payload(payload: str) -> dict[str, Any]:
    """``READY {json}`` or ``READY key=value ...``."""
    if payload.startswith("{"):
        data = json.loads(payload)
        return data if isinstance(data, dict) else {}
    return dict(item.partition("=")[::2] for item in payload.split())


async def _drain(stream: asyncio.StreamReader, log_path: Path) -> None:
    with log_path.open("ab") as fh:
        while True:
            line = await stream.readline()
            if not line:
                return
            fh.write(line)
