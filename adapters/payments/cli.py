"""The ``python -m adapters.payments`` commands (:func:`main`): create the file, serve it.

Examples::

    python -m adapters.payments init --db payments.sqlite
    python -m adapters.payments serve --db payments.sqlite --signing-key finance-docs.key.pem \\
        --signing-chain finance-docs.chain.pem --port 8083
"""

from __future__ import annotations

from pathlib import Path

import click

from adapters.payments.store import FINANCE_TIME_ZONE, create_store
from exchange.cli.common import handle_errors

_DB = click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path),
                   required=True, help="Finance's payments file (SQLite).")  # fmt: skip


@click.group()
def main() -> None:
    """Finance's payment services adapter (fees, receipts, refunds)."""


@main.command()
@_DB
@handle_errors
def init(db_path: Path) -> None:
    """Create the payments file with the example fee schedule (kept if it has one).

    \b
    Example:
      python -m adapters.payments init --db payments.sqlite
    """
    click.echo(f"payments file ready: {create_store(db_path)}")


@main.command()
@_DB
@click.option(
    "--signing-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Finance's document-signing key (PEM, mode 0600).",
)
@click.option(
    "--signing-chain",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Its member signing certificate, then the CA's (PEM).",
)
@click.option(
    "--time-zone",
    default=FINANCE_TIME_ZONE,
    show_default=True,
    help="Whose calendar year numbers receipts.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8083, show_default=True,
              help="0 picks a free port.")  # fmt: skip
@handle_errors
def serve(
    db_path: Path, signing_key: Path, signing_chain: Path, time_zone: str, host: str, port: int
) -> None:
    """Serve the payment services until interrupted; prints a READY line once listening.

    \b
    Example:
      python -m adapters.payments serve --db payments.sqlite --signing-key docs.key.pem \\
          --signing-chain docs.chain.pem --port 8083
      # READY url=http://127.0.0.1:8083 port=8083
    """
    from adapters.payments.app import create_adapter
    from adapters.payments.store import PaymentStore
    from adapters.sdk.serving import run
    from adapters.sdk.signing import load_document_signer

    signer = load_document_signer(signing_key, signing_chain)
    PaymentStore(db_path, time_zone=time_zone)  # a missing or foreign file fails here, clearly
    run(create_adapter(db_path, signer, time_zone=time_zone), host=host, port=port,
        on_ready=lambda url, bound: click.echo(f"READY url={url} port={bound}"))  # fmt: skip
