"""A running provider's policy reloads never stop (issue 13, finding 6).

Before, a policy file of 5,000 nested ``[`` raised RecursionError in the server's policy watcher;
the task died, and a later valid edit (a grant withdrawn after an incident) was never applied:
the server went on granting, silently. Now the server keeps serving under the policy in force,
``/health`` shows the failed reload and when, and the next valid edit is applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from exchange.identifiers import SecurityServerId, parse_subsystem
from exchange.server.core import SecurityServer
from tests.integration.conftest import MOI, WINDOW, Net
from tests.integration.support import launch

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBSYSTEM = parse_subsystem(f"{MOI}/reload-registry")
SERVER = SecurityServerId(*MOI.parts, "ss-reload")
PATH = f"/r1/{SUBSYSTEM}/echo/incident"
GRANT = f"""
[[grant]]
id = "window-echo"
client = "{WINDOW}"
service = "{SUBSYSTEM}/echo"
methods = ["GET"]
paths = ["/**"]
"""
POLICY = f'provider = "{MOI}"\n' + GRANT
WITHDRAWN = f'provider = "{MOI}"\n# window-echo withdrawn after an incident\n'
DEEP = f'provider = "{MOI}"\nx = ' + "[" * 5000 + "\n"


async def _health(net: Net, server: SecurityServer) -> dict[str, Any]:
    assert net.session is not None
    async with net.session.get(f"http://127.0.0.1:{server.status_port}/health") as r:
        assert r.status == 200
        health: dict[str, Any] = (await r.json())["policy"]
        return health


async def _until_health(
    net: Net, server: SecurityServer, what: str, check: Callable[[dict[str, Any]], object]
) -> dict[str, Any]:
    """Poll ``/health`` until its policy part passes ``check`` (bounded: the watcher looks once a
    second; a wait for the server's state to change, not a timing assertion)."""
    health: dict[str, Any] = {}
    for _ in range(600):
        health = await _health(net, server)
        if check(health):
            return health
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what} (last /health policy: {health})")


async def test_a_failed_reload_keeps_serving_and_a_later_edit_is_applied(net: Net) -> None:
    services = [{"id": f"{SUBSYSTEM}/echo", "url": f"{net.backend_url}/echo"}]
    server = await launch(
        net,
        "moi-reload",
        SERVER,
        clients=[SUBSYSTEM],
        policy=POLICY,
        extra={"services": services},
    )
    assert server.config.policy_dir is not None
    policy_file = server.config.policy_dir / "policy.toml"
    status, _, body = await net.call("palpost", PATH)
    assert status == 200, body
    in_force = (await _health(net, server))["version"]

    # (1) a file that cannot be parsed: the old policy stays in force, and /health says why
    policy_file.write_text(DEEP)
    health = await _until_health(
        net, server, "the failed reload in /health", lambda h: h["last_reload_error"]
    )
    assert health["version"] == in_force
    assert "nested too deeply" in health["last_reload_error"]
    assert health["last_reload_error_at"]
    status, _, body = await net.call("palpost", PATH)
    assert status == 200, body

    # (2) the grant withdrawn: the watcher is still there and applies it
    policy_file.write_text(WITHDRAWN)
    await _until_health(
        net,
        server,
        "the withdrawal in force",
        lambda h: h["version"] != in_force and h["last_reload_error"] is None,
    )
    status, headers, body = await net.call("palpost", PATH)
    assert (status, headers.get("X-Road-Error")) == (403, "Server.ServerProxy.AccessDenied"), body
