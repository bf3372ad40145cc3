"""systemd's service notification protocol (sd_notify(3)): tell the service manager that a server
is ready (its ports are bound), reloading or stopping.

Each notification is one datagram of ``KEY=VALUE`` lines to the unix socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace), which systemd sets for a
``Type=notify`` service. Without ``$NOTIFY_SOCKET`` (not under systemd) nothing is sent. A failure
to send is logged, never raised: the service manager's bookkeeping must not stop a server.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

logger = logging.getLogger(__name__)

SOCKET_ENV = "NOTIFY_SOCKET"


def notify(*assignments: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``assignments`` (``"READY=1"``, ...) to the service manager; True if sent."""
    address = (os.environ if environ is None else environ).get(SOCKET_ENV, "")
    if address.startswith("@"):
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:
        if address:
            logger.warning("%s=%r is not a unix socket path; not notifying", SOCKET_ENV, address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall("\n".join(assignments).encode("utf-8"))
    except OSError as exc:
        logger.warning("could not notify the service manager (%s): %s", address, exc)
        return False
    return True


def ready(status: str | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """The server serves: every port it listens on is bound."""
    extra = [f"STATUS={status}"] if status else []
    return notify("READY=1", *extra, f"MAINPID={os.getpid()}", environ=environ)


def reloading(environ: Mapping[str, str] | None = None) -> bool:
    """A reload started; send :func:`ready` once it is done (systemd ≥ 253 waits for it)."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", environ=environ)


def stopping(environ: Mapping[str, str] | None = None) -> bool:
    """The server is shutting down."""
    return notify("STOPPING=1", environ=environ)
