"""The ``python -m adapters.telecom`` commands (:func:`main`): create the file, serve it.

Examples::

    python -m adapters.telecom init --db sims.sqlite
    python -m adapters.telecom serve --db sims.sqlite --port 8085
"""

from __future__ import annotations

from pathlib import Path

import click

from adapters.telecom.store import create_store
from exchange.cli.common import handle_errors


@click.group()
def main() -> None:
    """Telecom's SIM registry adapter."""


@main.command()
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@handle_errors
def init(db_path: Path) -> None:
    """Create the SIM registry file (kept as it is if it exists).

    \b
    Example:
      python -m adapters.telecom init --db sims.sqlite
    """
    click.echo(f"SIM registry ready: {create_store(db_path)}")


@main.command()
@click.option(
    "--db", "db_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8085, show_default=True,
              help="0 picks a free port.")  # fmt: skip
@handle_errors
def serve(db_path: Path, host: str, port: int) -> None:
    """Serve the SIM registry until interrupted; prints a READY line once listening.

    \b
    Example:
      python -m adapters.telecom serve --db sims.sqlite --port 8085
      # READY url=http://127.0.0.1:8085 port=8085
    """
    from adapters.sdk.serving import run
    from adapters.telecom.app import create_app
    from adapters.telecom.store import SimStore

    SimStore(db_path)  # a missing or foreign file fails here, clearly
    run(create_app(db_path), host=host, port=port,
        on_ready=lambda url, bound: click.echo(f"READY url={url} port={bound}"))  # fmt: skip
