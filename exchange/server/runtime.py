"""What a running security server leaves next to its ``server.toml`` for the operator's commands:
``server.pid`` (its process id) and ``server.ports.json`` (the ports it bound, the status
listener's among them), written once it serves and removed when it stops.

``exchange server status``, ``maintenance``, ``reload`` and ``audit export`` read them to find
the running server and its ``/health``; nothing here is trusted for a security decision.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from exchange.pidfile import live_pid
from exchange.server.config import ServerConfig, pid_file_of

PORTS_FILE: Final = "server.ports.json"


def ports_file_of(config_path: Path) -> Path:
    return config_path.resolve().parent / PORTS_FILE


@dataclass(frozen=True, slots=True)
class RunningServer:
    pid: int
    ports: dict[str, int]


def write_runtime(config: ServerConfig, ports: dict[str, int]) -> None:
    pid_file_of(config.path).write_text(f"{os.getpid()}\n")
    ports_file_of(config.path).write_text(json.dumps(ports) + "\n")


def remove_runtime(config: ServerConfig) -> None:
    pid_file_of(config.path).unlink(missing_ok=True)
    ports_file_of(config.path).unlink(missing_ok=True)


def running_server(config: ServerConfig) -> RunningServer | None:
    """The server process of ``config``, if its pid file names a live process."""
    pid = live_pid(pid_file_of(config.path))
    if pid is None:
        return None
    ports: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError, TypeError):
        ports = {k: int(v) for k, v in json.loads(ports_file_of(config.path).read_text()).items()}
    return RunningServer(pid, ports)


def status_url(config: ServerConfig, running: RunningServer | None) -> str | None:
    """The base URL of the running server's status listener (``/health``, ``/metrics``)."""
    if config.status is None:
        return None
    port = (running.ports.get("status_port") if running else None) or config.status.port
    if not port:
        return None
    host = config.status.host
    host = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def fetch_health(url: str, timeout: float = 3.0) -> dict[str, Any] | None:
    """``GET url/health`` (200 or 503 both carry the report); None when nothing answers."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except (OSError, ValueError):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
