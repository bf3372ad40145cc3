"""One rule for "is the server whose pid file this is running" (``exchange.pidfile``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from exchange.pidfile import live_pid


def test_a_live_process_is_found(tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    assert live_pid(pid_file) == os.getpid()


def test_a_process_that_ended_no_file_or_no_pid_is_none(tmp_path: Path) -> None:
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid_file = tmp_path / "server.pid"
    pid_file.write_text(ended.stdout)
    assert live_pid(pid_file) is None
    assert live_pid(tmp_path / "absent.pid") is None
    pid_file.write_text("not a pid\n")
    assert live_pid(pid_file) is None
