"""``exchange server maintenance`` and ``exchange server opmon``: an operator's day with a running
security server (draining it for maintenance; what went through it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from exchange.cli.common import DURATION_UNITS, console, print_json, reports
from exchange.cli.server import group as server_group
from exchange.utc import iso_seconds

_CONFIG = click.Path(exists=True, dir_okay=False, path_type=Path)
CONFIRM_SECONDS = 5.0


@server_group.command("maintenance")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--config", "config_path", required=True, type=_CONFIG)
@click.option("--reason", help="Why (shown in /health), e.g. 'OS upgrade, back at 14:00'.")
@reports
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
        print_json(outcome)
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


def _when(text: str, now: float) -> float:
    """An ISO 8601 time (UTC when it names no zone) or a duration ago: ``90s``, ``15m``, ``2h``,
    ``7d``; unix seconds."""
    import re

    from exchange.messagelog.query import parse_time

    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text.strip())
    if found:
        return now - float(found.group(1)) * DURATION_UNITS[found.group(2)]
    try:
        return parse_time(text).timestamp()
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO time (2026-12-06T08:00) nor a duration (2h, 7d)"
        ) from None


@server_group.command("opmon")
@click.option("--config", "config_path", required=True, type=_CONFIG)
@click.option("--since", required=True, help="ISO time (UTC if no zone) or a duration ago (2h).")
@click.option("--until", help="ISO time or a duration ago; default now.")
@click.option("--archives", is_flag=True, help="Count archived records too (reads the files).")
@reports
def opmon_cmd(
    config_path: Path, since: str, until: str | None, archives: bool, as_json: bool
) -> None:
    """Operational monitoring: exchanges per client, service and side from the message log
    (count, errors, median and 99th percentile of the total time).

    Read-only: works on a running or a stopped server, and streams large logs.

    \b
    Example:
      exchange server opmon --config ss-moi/server.toml --since 24h
      exchange server opmon --config ss-moi/server.toml --since 2026-12-06T08:00 --json
    """
    from exchange.errors import ConfigurationError
    from exchange.messagelog.opmon import summarise
    from exchange.server.config import load_server_config

    config = load_server_config(config_path)
    if not config.log_path.exists():
        raise ConfigurationError(f"{config.log_path} does not exist: the server has not run yet")
    now = time.time()
    start, end = _when(since, now), _when(until, now) if until else now
    rows = summarise(
        config.log_path,
        int(start * 1000),
        int(end * 1000),
        archive_dir=config.archive_dir if archives else None,
    )
    window = {"since": iso_seconds(start), "until": iso_seconds(end)}
    if as_json:
        print_json({**window, "exchanges": [r.to_dict() for r in rows]})
        return
    _print_opmon(rows, window)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _print_opmon(rows: list[Any], window: dict[str, str]) -> None:
    """One line per client, service and side (identifiers whole, whatever the terminal)."""
    console.print(f"exchanges {window['since']} to {window['until']}:", highlight=False)
    for row in rows:
        p50 = "-" if row.p50_ms is None else f"{row.p50_ms:.1f} ms"
        p99 = "-" if row.p99_ms is None else f"{row.p99_ms:.1f} ms"
        console.print(
            f"  {row.client} -> {row.service} ({row.side}): {_count(row.count, 'exchange')}, "
            f"{_count(row.errors, 'error')}, p50 {p50}, p99 {p99}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if not rows:
        console.print("  none")
