"""The `python -m adapters.health` commands (:func:`main`): vaccination records and insurance.

Examples::

    python -m adapters.health generate --db health.db --registry registry.sqlite
    python -m adapters.health serve --db health.db --port 8082
    python -m adapters.health insurance generate --db insurance.db --registry registry.sqlite
    python -m adapters.health insurance serve --db insurance.db --port 8084
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from adapters.health.app import create_app
from adapters.health.store import Person, generate
from adapters.sdk.serving import run


@click.group()
def main() -> None:
    """Health's vaccination records adapter."""


@main.command("generate")
@click.option("--db", "db_path", type=click.Path(path_type=Path), required=True)
@click.option(
    "--registry",
    type=click.Path(exists=True, path_type=Path),
    help="Population registry file: records for its people (default: 1000 made-up).",
)
@click.option(
    "--limit", type=int, default=5000, show_default=True, help="At most this many people."
)
@click.option("--seed", type=int, default=0, show_default=True)
def generate_command(db_path: Path, registry: Path | None, limit: int, seed: int) -> None:
    """Write synthetic vaccination records into --db.

    \b
    Example:
      python -m adapters.health generate --db health.db --registry registry.sqlite
    """
    people = _people(registry, limit)
    click.echo(
        f"wrote {generate(db_path, people, seed=seed)} vaccinations for {len(people)} people"
    )


def _people(registry: Path | None, limit: int) -> list[Person]:
    if registry is None:
        from adapters.population.generator import make_national_id

        born = dt.date(2000, 1, 1)
        return [
            Person(make_national_id(50_000_000 + n), born + dt.timedelta(days=7 * n))
            for n in range(min(limit, 1000))
        ]
    from adapters.population.store import PopulationStore

    with PopulationStore(registry, connections=1) as store, store._connection() as conn:
        rows = conn.execute(
            "SELECT national_id, date_of_birth FROM persons ORDER BY national_id LIMIT ?", (limit,)
        ).fetchall()
    return [Person(f"{nid:09d}", dt.date.fromisoformat(born)) for nid, born in rows]


@main.command()
@click.option("--db", "db_path", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8082, show_default=True, help="0 picks a free port.")
def serve(db_path: Path, host: str, port: int) -> None:
    """Serve the records until interrupted; prints a READY line once listening.

    \b
    Example:
      python -m adapters.health serve --db health.db --port 8082
      # READY url=http://127.0.0.1:8082 port=8082
    """
    run(create_app(db_path), host=host, port=port,
        on_ready=lambda url, bound: click.echo(f"READY url={url} port={bound}"))  # fmt: skip


@main.group()
def insurance() -> None:
    """Health's insurance status service (PS/GOV/MOH/health-insurance)."""


@insurance.command("generate")
@click.option("--db", "db_path", type=click.Path(path_type=Path), required=True)
@click.option(
    "--registry",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Population registry file: policies for its living adults.",
)
@click.option("--seed", type=int, default=0, show_default=True)
def insurance_generate(db_path: Path, registry: Path, seed: int) -> None:
    """Write synthetic insurance policies into --db, valid around today.

    \b
    Example:
      python -m adapters.health insurance generate --db insurance.db --registry registry.sqlite
    """
    from adapters.health.insurance_store import generate, read_residents

    count = generate(db_path, read_residents(registry), today=dt.date.today(), seed=seed)
    click.echo(f"wrote {count} insurance policies")


@insurance.command("serve")
@click.option("--db", "db_path", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8084, show_default=True, help="0 picks a free port.")
def insurance_serve(db_path: Path, host: str, port: int) -> None:
    """Serve the insurance status until interrupted; prints a READY line once listening.

    \b
    Example:
      python -m adapters.health insurance serve --db insurance.db --port 8084
      # READY url=http://127.0.0.1:8084 port=8084
    """
    from adapters.health.insurance import create_app as create_insurance_app

    run(create_insurance_app(db_path), host=host, port=port,
        on_ready=lambda url, bound: click.echo(f"READY url={url} port={bound}"))  # fmt: skip
