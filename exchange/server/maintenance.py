"""Maintenance mode: a security server that says 503 on ``/health`` so that a load balancer drains
it, while it goes on serving what still reaches it.

The state is a file in the server's state directory, ``maintenance.json`` (``since``, the reason
given), written by ``exchange server maintenance on`` and removed by ``... off``. A running
server looks at it every second (:class:`MaintenanceWatch`), so no signal, socket or restart is
needed, and a restart keeps the node drained until the operator says otherwise. Only who may
write the state directory (the server's user, root) can drain a node: no port takes the order.
A file that cannot be read or parsed counts as maintenance on (the node is drained rather than
sent traffic on a state nobody meant).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from exchange.durable import write_durably
from exchange.utc import iso_seconds

log = logging.getLogger("exchange.server.maintenance")

MAINTENANCE_FILE: Final = "maintenance.json"
MAX_REASON: Final = 500


@dataclass(frozen=True, slots=True)
class Maintenance:
    """Maintenance mode is on: since when (unix seconds) and why."""

    since: float
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": iso_seconds(self.since),
            "reason": self.reason,
        }


def maintenance_file(state_dir: Path) -> Path:
    return state_dir / MAINTENANCE_FILE


def read_maintenance(state_dir: Path) -> Maintenance | None:
    """The maintenance state in ``state_dir``: None when off."""
    path = maintenance_file(state_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Maintenance(0.0, f"{path} cannot be read ({exc.strerror}): treated as on")
    try:
        doc = json.loads(data)
        since = float(doc["since"])
        reason = doc.get("reason")
        return Maintenance(since, reason if isinstance(reason, str) else None)
    except (ValueError, KeyError, TypeError):
        return Maintenance(0.0, f"{path} is not a maintenance state file: treated as on")


def set_maintenance(state_dir: Path, now: float, reason: str | None = None) -> Maintenance:
    """Turn maintenance mode on (durably); an earlier ``since`` is kept if it is on already."""
    held = read_maintenance(state_dir)
    state = Maintenance(held.since if held and held.since else now, (reason or "")[:MAX_REASON])
    doc = {"since": state.since, "reason": state.reason or None}
    write_durably(maintenance_file(state_dir), json.dumps(doc).encode() + b"\n")
    return Maintenance(state.since, state.reason or None)


def clear_maintenance(state_dir: Path) -> bool:
    """Turn maintenance mode off; False if it was not on."""
    try:
        maintenance_file(state_dir).unlink()
    except FileNotFoundError:
        return False
    return True


class MaintenanceWatch:
    """The maintenance state of one state directory, looked at again by :meth:`check`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.current = read_maintenance(state_dir)
        if self.current is not None:
            log.warning("maintenance mode is on: /health answers 503 (%s)", self.current.reason)

    def check(self) -> Maintenance | None:
        """Read the state again; log a change."""
        state = read_maintenance(self.state_dir)
        if (state is None) != (self.current is None):
            if state is None:
                log.warning("maintenance mode off: /health answers by the server's state again")
            else:
                log.warning(
                    "maintenance mode on: /health answers 503 so that load balancers drain "
                    "this server; exchanges that reach it are still served (%s)",
                    state.reason,
                )
        self.current = state
        return state
