"""``python -m adapters.sdk serve MODULE:ATTRIBUTE [--host H] [--port P]``: serve an adapter.

Example: ``python -m adapters.sdk serve receipts:adapter --port 8081`` prints
``READY url=http://127.0.0.1:8081 port=8081`` and serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from adapters.sdk.serving import load_target, run


@click.group()
def main() -> None:
    """The adapter SDK's commands."""


@main.command()
@click.argument("target")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8081, show_default=True, help="0 picks a free port.")
def serve(target: str, host: str, port: int) -> None:
    """Serve the adapter TARGET (MODULE:ATTRIBUTE) until interrupted.

    \b
    Example:
      python -m adapters.sdk serve receipts:adapter --port 8081
      # READY url=http://127.0.0.1:8081 port=8081
    """
    sys.path.insert(0, str(Path.cwd()))
    try:
        app = load_target(target)
    except (ImportError, AttributeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc

    def ready(url: str, bound: int) -> None:
        click.echo(f"READY url={url} port={bound}", nl=True)
        sys.stdout.flush()

    run(app, host=host, port=port, on_ready=ready)


main(prog_name="python -m adapters.sdk")
