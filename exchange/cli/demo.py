"""``exchange demo``: the example federation, end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from exchange.cli.common import (
    EXIT_CHECK_FAILED,
    ExchangeCommand,
    Failure,
    console,
    err_console,
    print_json,
    reports,
)

EXIT_INTERRUPTED = 130
"""Stopped by SIGINT or SIGTERM before serving (128 + SIGINT, as shells report an interrupt)."""


@click.command("demo", cls=ExchangeCommand)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the federation's files here (default: a temporary directory, removed afterwards).",
)
@click.option(
    "--serve",
    is_flag=True,
    help="Keep running until SIGINT/SIGTERM; write STATE_DIR/endpoints.json.",
)
@click.option(
    "--people", default=20_000, show_default=True, help="Size of the synthetic population registry."
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@reports
def command(
    state_dir: Path | None, serve: bool, people: int, no_progress: bool, as_json: bool
) -> None:
    """Run the example federation on 127.0.0.1: a CA, the central server, Interior's population
    registry and five ministries' security servers; do real exchanges (allowed with different
    fields per ministry, denied, unknown service, not found), verify every message log, stop.

    Exit status 0 when every exchange went as expected and every log verified. With --json
    the narration goes to stderr and stdout gets one JSON document when the demo ends (with
    --serve: once stopped; wait for STATE_DIR/endpoints.json to know it serves).

    \b
    Example:
      exchange demo
      exchange demo --serve --state-dir /tmp/ps     # keep it running; see /tmp/ps/endpoints.json
    """
    from exchange.demo.runner import run_demo

    if serve and state_dir is None:
        raise click.UsageError("--serve needs --state-dir (where endpoints.json is written)")
    if state_dir is not None and (state_dir / "ca").exists():
        raise click.UsageError(f"{state_dir} already holds a federation; give an empty directory")
    try:
        result = asyncio.run(
            run_demo(
                err_console if as_json else console,
                state_dir=state_dir,
                serve=serve,
                people=people,
                progress=not (no_progress or as_json),
            )
        )
    except asyncio.CancelledError:
        stopped = "stopped by a signal; every process the demo started is stopped"
        if as_json:
            print_json(Failure("Interrupted", stopped, EXIT_INTERRUPTED).to_dict())
        else:
            console.print(stopped)
        raise SystemExit(EXIT_INTERRUPTED) from None
    if as_json:
        print_json({**result.to_dict(), "state_dir": state_dir})
    if not result.ok:
        raise SystemExit(EXIT_CHECK_FAILED)
