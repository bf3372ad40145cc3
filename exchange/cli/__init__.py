"""The ``exchange`` command: one group per role (docs/design.md §11).

The CLI is the one place that prints and exits.
"""

from __future__ import annotations

import os

import click

from exchange import __version__
from exchange.cli.common import ExchangeGroup


@click.group(cls=ExchangeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="exchange")
def main(debug: bool) -> None:
    """Exchange: a secure data exchange layer for governments, in the style of X-Road.

    \b
    Example:
      exchange demo            # run the example federation and verify its logs
    """
    # message logs, registries and databases hold personal data: private to the operator
    os.umask(0o077)


def _register() -> None:
    from exchange.cli import commands

    for group in commands.GROUPS:
        main.add_command(group)


_register()
