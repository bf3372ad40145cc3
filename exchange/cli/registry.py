"""``exchange registry``: Interior's population registry adapter (generate, serve, sample).

Generates a synthetic registry file, serves it as the plain HTTP backend of the ``persons``
service, and prints sample national IDs for demos. It does not register the service with a
security server (see ``exchange server``) and does not grant access (see ``exchange policy``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters.population.generator import MAX_COUNT
from adapters.population.store import BuildReport, PopulationStore, build_registry
from exchange.cli.checkconfig import (
    add_check_config,
    reject_options_beside_config,
    settings_from_command_line,
)
from exchange.cli.common import (
    ExchangeGroup,
    console,
    echo,
    err_console,
    handle_errors,
    print_json,
    reports,
)
from exchange.errors import ConfigurationError
from exchange.oplog import configure_logging

_DB = click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The registry's SQLite file.",
)


@click.group("registry", cls=ExchangeGroup)
def group() -> None:
    """Interior's population registry: synthetic people served over HTTP.

    \b
    Example:
      exchange registry generate --db registry.db --count 100000
      exchange registry serve --db registry.db --port 8081
    """


@group.command()
@_DB
@click.option("--count", type=click.IntRange(1, MAX_COUNT), required=True, help="How many people.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same people.")
@click.option("--force", is_flag=True, help="Replace the file if it exists.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@reports
def generate(
    db_path: Path, count: int, seed: int, force: bool, no_progress: bool, as_json: bool
) -> None:
    """Generate a registry of --count synthetic people, in families, into a new file.

    \b
    Example:
      exchange registry generate --db registry.db --count 1000000 --seed 7
    """
    if db_path.exists() and not force:
        raise ConfigurationError(f"{db_path} already exists; pass --force to replace it")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    hidden = no_progress or as_json
    with Progress(*columns, TimeElapsedColumn(), console=err_console, disable=hidden) as bar:
        task = bar.add_task("people", total=count)

        def on_progress(phase: str, written: int) -> None:
            bar.update(task, completed=written, description=phase)

        report = build_registry(db_path, count, seed=seed, replace=force, on_progress=on_progress)
    if as_json:
        print_json(
            {
                "db": report.path,
                "count": report.count,
                "deceased": report.deceased,
                "married": report.married,
                "seed": report.seed,
                "reference_date": report.reference_date.isoformat(),
                "seconds": round(report.seconds, 3),
            }
        )
    else:
        _print_report(report)


def _print_report(report: BuildReport) -> None:
    console.print(
        f"wrote {report.count:,} people to {report.path} in {report.seconds:.1f} s "
        f"({report.count / max(report.seconds, 1e-9):,.0f}/s): {report.deceased:,} deceased, "
        f"{report.married:,} married; seed {report.seed}, as of {report.reference_date}"
    )


@group.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="registry.toml with the settings below and [logging] (then give no other option).",
)
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The registry's SQLite file.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port (0 picks a free one).",
)
@click.option(
    "--certificates-db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Issue certificates of residence, recorded in this SQLite file.",
)
@click.option(
    "--signing-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Interior's document-signing key (PEM, mode 0600), for the certificates.",
)
@click.option("--signing-chain", type=click.Path(dir_okay=False, path_type=Path),
              help="Its member signing certificate, then the CA's (PEM).")  # fmt: skip
@click.option(
    "--ready-line", is_flag=True, help="Print 'READY {json}' with the bound port instead."
)
@click.pass_context
@handle_errors
def serve(
    ctx: click.Context,
    config_path: Path | None,
    db_path: Path | None,
    host: str,
    port: int,
    certificates_db: Path | None,
    signing_key: Path | None,
    signing_chain: Path | None,
    ready_line: bool,
) -> None:
    """Serve the registry over HTTP until interrupted; prints a READY line once listening.

    Point the provider security server's service "persons" at the printed URL + /persons (and
    "residence-certificates" at URL + /residence-certificates when it issues them).

    \b
    Example:
      exchange registry serve --db registry.db --host 127.0.0.1 --port 8081
      # READY url=http://127.0.0.1:8081 port=8081
      exchange registry serve --config /etc/exchange/registry.toml
      exchange registry serve --db registry.db --port 8081 --certificates-db certs.sqlite \\
          --signing-key interior-docs.key.pem --signing-chain interior-docs.chain.pem
    """
    from adapters.population.app import Certificates, run
    from adapters.population.config import load_registry_config, registry_settings

    if config_path is not None:
        reject_options_beside_config(ctx, keep=("ready_line",))
        settings = load_registry_config(config_path)
    elif db_path is None:
        raise click.UsageError("give --db (or --config)")
    else:
        documents = {"database": certificates_db, "signing_key": signing_key,
                     "signing_chain": signing_chain}  # fmt: skip
        options: dict[str, Any] = {"database": db_path, "host": host, "port": port}
        if any(value is not None for value in documents.values()):
            options["certificates"] = {k: str(v) for k, v in documents.items() if v is not None}
        settings = settings_from_command_line(registry_settings, options, _FLAGS)
    configure_logging(settings.logging)
    certificates = None
    if settings.certificates is not None:
        from adapters.sdk.signing import load_document_signer

        found = settings.certificates
        signer = load_document_signer(found.signing_key, found.signing_chain)
        certificates = Certificates(found.database, signer)

    def on_ready(url: str, bound_port: int) -> None:
        if ready_line:
            echo("READY " + json.dumps({"port": bound_port, "url": url}))
        else:
            echo(f"READY url={url} port={bound_port}")

    run(settings.database, host=settings.host, port=settings.port, on_ready=on_ready,
        certificates=certificates)  # fmt: skip


_FLAGS = {
    "database": "--db",
    "certificates": "--certificates-db, --signing-key and --signing-chain",
    "certificates.database": "--certificates-db",
    "certificates.signing_key": "--signing-key",
    "certificates.signing_chain": "--signing-chain",
}


def _load_registry_config(path: Path) -> Any:
    from adapters.population.config import load_registry_config

    return load_registry_config(path)


add_check_config(
    group,
    _load_registry_config,
    "population registry",
    lambda s: (
        [(("database",), s.database, "file")]
        + (
            []
            if s.certificates is None
            else [
                (("certificates", "signing_key"), s.certificates.signing_key, "file"),
                (("certificates", "signing_chain"), s.certificates.signing_chain, "file"),
            ]
        )
    ),
)


@group.command()
@_DB
@click.option(
    "-n", "count", type=click.IntRange(1, 100), default=5, show_default=True, help="How many."
)
@click.option("--locality", help="Only people living there, e.g. Biddu.")
@reports
def sample(db_path: Path, count: int, locality: str | None, as_json: bool) -> None:
    """Print national IDs of living married adults with parents and children in the registry.

    \b
    Example:
      exchange registry sample --db registry.db -n 3 --locality Biddu
    """
    with PopulationStore(db_path, connections=1) as store:
        people = store.sample(count, locality=locality)
    if as_json:
        print_json(people)
        return
    table = Table("national ID", "name", "الاسم", "born", "locality")
    for person in people:
        table.add_row(
            person["national_id"],
            person["name_en"]["full"],
            person["name_ar"]["full"],
            person["date_of_birth"],
            person["locality"],
        )
    console.print(table)
