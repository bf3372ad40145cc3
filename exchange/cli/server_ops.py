"""``exchange server maintenance`` and ``exchange server opmon``: an operator's day with a running
security server (draining it for maintenance; what went through it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from exchange.cli.common import console, handle_errors_json, print_json
from exchange.cli.server import group as server_group

_CONFIG = click.Path(exists=True, dir_okay=False, path_type=Path)
CONFIRM_SECONDS = 5.0


@server_group.command("maintenance")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--config", "config_path", required=True, type=_CONFIG)
@click.option("--reason", help="Why (shown in /health), e.g. 'OS upgrade, back at 14:00'.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@handle_errors_json
def maintenance_cmd(state: str, config_path: Path, reason: str | None, as_json: bool) -> None:
    """Drain this server from its load balancer (on) or take it back (off).

    While on, /health answers 503 so that load balancers send exchanges elsewhere; what still
    reaches the server is served. A running server takes the change within a second, without
    a restart; the state survives restarts.

    \b
    Example:
      exchange server maintenance on --config ss-moi/server.toml --reason "OS upgrade"
      exchange server maintenance off --config ss-moi/server.toml
    """
    from exchange.server.config import load_server_config
    from exchange.server.maintenance import clear_maintenance, set_maintenance

    config = load_server_config(config_path)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    if state == "on":
        held = set_maintenance(config.state_dir, time.time(), reason)
        outcome: dict[str, Any] = {"maintenance": held.to_dict()}
    else:
        clear_maintenance(config.state_dir)
        outcome = {"maintenance": None}
    outcome["running_server"] = _confirmed(config, state == "on")
    if as_json:
        print_json({"ok": True, **outcome})
        return
    console.print(f"maintenance mode {state}", highlight=False)
    seen = outcome["running_server"]
    if seen is None:
        console.print("no running server found: it takes the state when it starts")
    elif seen["confirmed"]:
        console.print(f"the running server answers /health {seen['health_status']}")
    else:
        console.print(
            f"the running server (pid {seen['pid']}) did not confirm it yet; see "
            f"{seen['status_url'] or 'its log'}"
        )


def _confirmed(config: Any, on: bool) -> dict[str, Any] | None:
    """Wait (briefly) until the running server's /health shows the state."""
    from exchange.server.runtime import fetch_health, running_server, status_url

    running = running_server(config)
    if running is None:
        return None
    url = status_url(config, running)
    health = None
    deadline = time.monotonic() + CONFIRM_SECONDS
    while url is not None and time.monotonic() < deadline:
        health = fetch_health(url)
        if health is not None and (health.get("maintenance") is not None) == on:
            return {
                "pid": running.pid,
                "status_url": url,
                "confirmed": True,
                "health_status": 503 if health.get("reasons") else 200,
            }
        time.sleep(0.2)
    return {"pid": running.pid, "status_url": url, "confirmed": False, "health_status": None}
