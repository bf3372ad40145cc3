"""``exchange server reload`` re-reads services, clients and policy, not only keys (issue 14).

Before, a new ``[[services]]`` entry answered 404 ``UnknownService`` after a reload, with no hint
that services are read at start. Now the reload puts it in force at once; a change to what is
bound at start (a port, say) is refused naming it, and the configuration in force stays.
"""

from __future__ import annotations

import tomllib

import pytest
import tomli_w

from exchange.errors import ConfigurationError
from tests.integration.conftest import Net
from tests.integration.support import ECHO, assert_serving, assert_xroad_error

pytestmark = pytest.mark.asyncio(loop_scope="session")

ADDED = "PS/GOV/MOI/population-registry/added"
GRANT = f"""
provider = "PS/GOV/MOI"
[[grant]]
id = "window-added"
client = "PS/GOV/PALPOST/unified-window"
service = "{ADDED}"
methods = ["GET"]
paths = ["/**"]
"""


async def test_a_new_service_answers_after_a_reload(net: Net) -> None:
    moi = net.servers["moi"]
    path = moi.config.path
    original = path.read_bytes()
    assert moi.config.policy_dir is not None
    grant = moi.config.policy_dir / "added.toml"
    doc = tomllib.loads(original.decode())
    doc["services"].append({"id": ADDED, "url": f"{net.backend_url}/echo"})
    try:
        status, headers, body = await net.call("palpost", f"/r1/{ADDED}/x")
        assert_xroad_error(status, headers, body, "Server.ServerProxy.UnknownService", 404)
        path.write_text(tomli_w.dumps(doc))
        grant.write_text(GRANT)
        changed = await moi.reload()
        assert f"service {ADDED} added" in changed
        status, headers, body = await net.call("palpost", f"/r1/{ADDED}/x")
        assert status == 200, body
        assert "X-Road-Error" not in headers
    finally:
        path.write_bytes(original)
        grant.unlink(missing_ok=True)
        await moi.reload()
    status, headers, body = await net.call("palpost", f"/r1/{ADDED}/x")
    assert_xroad_error(status, headers, body, "Server.ServerProxy.UnknownService", 404)


async def test_a_change_that_needs_a_restart_is_refused_by_name(net: Net) -> None:
    moi = net.servers["moi"]
    path = moi.config.path
    original = path.read_bytes()
    before = moi.config
    doc = tomllib.loads(original.decode())
    doc["consumer"]["port"] = doc["consumer"]["port"] + 1
    doc["services"].append({"id": ADDED, "url": f"{net.backend_url}/echo"})
    path.write_text(tomli_w.dumps(doc))
    try:
        with pytest.raises(ConfigurationError, match=r"consumer \(host, port\) cannot change"):
            await moi.reload()
    finally:
        path.write_bytes(original)
    # nothing of it was taken, the service added beside the port change included
    assert moi.config is before
    status, headers, body = await net.call("palpost", f"/r1/{ADDED}/x")
    assert_xroad_error(status, headers, body, "Server.ServerProxy.UnknownService", 404)
    await assert_serving(net)
    status, _, _ = await net.call("palpost", f"{ECHO}/still")
    assert status == 200
