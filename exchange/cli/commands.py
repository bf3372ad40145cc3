"""The list of command groups; each role's commands live in their own module."""

from __future__ import annotations

import click

# modules that add commands to the ca, central and server groups
import exchange.cli.backup
import exchange.cli.ca_service
import exchange.cli.enrolment
import exchange.cli.registration
import exchange.cli.server_keys
import exchange.cli.server_ops  # noqa: F401
from exchange.cli.audit import group as audit_group
from exchange.cli.ca import group as ca_group
from exchange.cli.central import group as central_group
from exchange.cli.demo import command as demo_command
from exchange.cli.log import group as log_group
from exchange.cli.ocsp import group as ocsp_group
from exchange.cli.policy import group as policy_group
from exchange.cli.registry import group as registry_group
from exchange.cli.server import group as server_group
from exchange.cli.tsa import group as tsa_group

GROUPS: list[click.Command] = [
    demo_command,
    central_group,
    ca_group,
    server_group,
    policy_group,
    log_group,
    registry_group,
    ocsp_group,
    tsa_group,
    audit_group,
]
