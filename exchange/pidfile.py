"""Whether the process a pid file names is alive: one rule for every command that asks a running
server something (``server status``, ``server reload``, ``audit export``'s stamping).

IO only (reads the file, probes the process with signal 0).
"""

from __future__ import annotations

import os
from pathlib import Path


def live_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive, whoever owns it; else None (no file, not
    a pid, no such process)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return pid
