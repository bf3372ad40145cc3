"""The list of command groups; each role's commands live in their own module."""

from __future__ import annotations

import click

GROUPS: list[click.Command] = []

from exchange.cli.ca import group as ca_group  # noqa: E402

GROUPS.append(ca_group)
