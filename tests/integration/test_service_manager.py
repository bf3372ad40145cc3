"""A security server under systemd (``Type=notify``): ``exchange server run`` in its own process
tells the service manager READY=1 once its consumer and provider ports are bound, RELOADING=1 and
then READY=1 again around a reload (``exchange server reload``, which is what the unit's
``ExecReload`` SIGHUP does), and STOPPING=1 on SIGTERM, over a real unix datagram socket.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from exchange.cli import main
from exchange.identifiers import SecurityServerId
from tests.integration.conftest import PALPOST, Net

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    directory = tempfile.mkdtemp(prefix="sdn-")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(directory)


async def _next(sock: socket.socket) -> dict[str, str]:
    async with asyncio.timeout(60):
        datagram = await asyncio.get_running_loop().sock_recv(sock, 4096)
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


async def test_the_security_server_notifies_ready_reloading_and_stopping(
    net: Net, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    server = await net.add_server(
        "notified",
        SecurityServerId(*PALPOST.parts, "ss-notify"),
        clients=[PALPOST.subsystem("notify-desk")],
        start=False,
    )
    net.servers.pop("notified")
    await net.refresh_globalconf()
    config = server.config.path
    log = (tmp_path / "server.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exchange",
        "server",
        "run",
        "--config",
        str(config),
        env={**os.environ, "NOTIFY_SOCKET": path},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    try:
        # (1) ready: both ports accept connections when READY=1 arrives
        ready = await _next(sock)
        assert (ready["READY"], ready["MAINPID"]) == ("1", str(proc.pid))
        ports = re.search(
            r"consumer http://127.0.0.1:(\d+), provider 127.0.0.1:(\d+)", ready["STATUS"]
        )
        assert ports is not None, ready
        for port in ports.groups():
            _, writer = await asyncio.open_connection("127.0.0.1", int(port))
            writer.close()
            await writer.wait_closed()
        # (2) a reload, as systemctl reload (SIGHUP) or the operator's command asks for it
        reloaded = CliRunner().invoke(main, ["server", "reload", "--config", str(config)])
        assert reloaded.exit_code == 0, reloaded.output
        reloading = await _next(sock)
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        assert (await _next(sock))["READY"] == "1"
        # (3) stop
        proc.send_signal(signal.SIGTERM)
        assert await _next(sock) == {"STOPPING": "1"}
        async with asyncio.timeout(90):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "reload refused" not in (tmp_path / "server.log").read_text()
