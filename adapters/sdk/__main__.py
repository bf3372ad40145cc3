"""The SDK's commands: ``serve`` an adapter, or ``try`` it behind two real security servers.

``python -m adapters.sdk serve licences:adapter --port 8081`` prints
``READY url=http://127.0.0.1:8081 port=8081`` and serves until Ctrl-C or SIGTERM.
``python -m adapters.sdk try licences:adapter --policy policy.toml --service licences=/licences``
starts the test kit's federation (CA, central server, provider and consumer security servers)
around it and prints the consumer server's URL to send requests to.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import click
from aiohttp import web

from adapters.sdk.adapter import Adapter
from adapters.sdk.serving import load_target, run, until_signalled


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


@main.command("try")
@click.argument("target")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), required=True, help="The provider's policy (TOML).")  # fmt: skip
@click.option("--service", "services", multiple=True, metavar="CODE=/PATH",
              help="A REST service: its code and the adapter path (repeatable).")  # fmt: skip
@click.option("--provider", default="PS/GOV/PROVIDER/adapter", show_default=True,
              help="The adapter's subsystem (hosted by the provider security server).")  # fmt: skip
@click.option("--client", default="PS/GOV/CONSUMER/client", show_default=True,
              help="The calling subsystem (hosted by the consumer security server).")  # fmt: skip
def try_(target: str, policy_file: Path, services: tuple[str, ...], provider: str,
         client: str) -> None:  # fmt: skip
    """Run TARGET behind a provider and a consumer security server until interrupted.

    Everything is made fresh in a temporary directory (keys, certificates, global
    configuration) and removed at the end. Prints READY with the consumer server's URL.

    \b
    Example:
      python -m adapters.sdk try licences:adapter --policy policy.toml \\
          --service licences=/licences --provider PS/GOV/MOT/licences \\
          --client PS/GOV/POLICE/traffic
    """
    sys.path.insert(0, str(Path.cwd()))
    try:
        app = load_target(target)
        mapped = dict(_service_option(s) for s in services)
    except (ImportError, AttributeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    asyncio.run(_try(app, policy_file.read_text(), mapped, provider, client))


def _service_option(text: str) -> tuple[str, str]:
    code, sep, path = text.partition("=")
    if not sep or not path.startswith("/"):
        raise ValueError(f"--service takes CODE=/PATH, e.g. licences=/licences, not {text!r}")
    return code, path


async def _try(app: Adapter | web.Application, policy: str, services: dict[str, str], provider: str,
               client: str) -> None:  # fmt: skip
    from adapters.sdk.testkit import Exchange

    with tempfile.TemporaryDirectory(prefix="adapter-try-") as root:
        async with Exchange.running(
            app,
            Path(root),
            policy=policy,
            services=services,
            provider=provider,
            client=client,  # type: ignore[arg-type]
        ) as exchange:
            click.echo(f"adapter on {exchange.adapter_url}")
            click.echo(f"provider security server hosts {provider}; consumer hosts {client}")
            click.echo(f"READY consumer={exchange.consumer_url}")
            sys.stdout.flush()
            await until_signalled()


main(prog_name="python -m adapters.sdk")
