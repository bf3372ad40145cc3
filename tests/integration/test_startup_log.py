"""What a security server tells its operator at start: the configuration in force, once.

Before, a server that fetched a new configuration at start logged "global configuration
version N in force" twice (once from the poller's change callback, once more after the fetch).
"""

from __future__ import annotations

import logging

import pytest

from exchange.identifiers import parse_security_server
from exchange.server.core import SecurityServer
from tests.integration.conftest import MOF, Net
from tests.integration.support import publish

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _in_force(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "exchange.server" and "in force" in r.getMessage()
    ]


async def test_the_configuration_in_force_is_logged_once_at_start_and_restart(
    net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    server_id = parse_security_server(f"{MOF}/ss-startup-log")
    server = await net.add_server("startup-log", server_id, clients=[], start=False)
    try:
        await publish(net)  # every running server takes the new version; then only this one starts
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="exchange.server"):
            await server.start()
        version = server.trusted.current.version if server.trusted.current else None
        assert _in_force(caplog) == [f"global configuration version {version} in force"]
    finally:
        await net.servers.pop("startup-log").stop()
    # a restart holds the persisted configuration and fetches the same version: once again
    caplog.clear()
    again = SecurityServer(server.config)
    with caplog.at_level(logging.INFO, logger="exchange.server"):
        await again.start()
    try:
        assert _in_force(caplog) == [f"global configuration version {version} in force"]
    finally:
        await again.stop()
