"""Quotas on real servers (issue 6 item 5): a grant with ``rate = "3/minute"`` answers the fourth
call with 429 ``Server.ServerProxy.RateLimited`` and ``Retry-After``, keeps the quota used up
across a restart of the provider, serves again once the window has passed, and logs every
refusal on the provider.

The provider and the consumer share a movable clock, so the signed request times stay fresh when
the window is skipped.
"""

from __future__ import annotations

import pytest

from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.server.config import load_server_config
from exchange.server.core import SecurityServer
from tests.integration.conftest import Net
from tests.integration.support import Clock, assert_xroad_error, launch, logged, new_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROVIDER = parse_member("PS/GOV/QTAP")
CONSUMER = parse_member("PS/GOV/QTAC")
DESK = parse_subsystem("PS/GOV/QTAC/desk")
REGISTRY = parse_subsystem("PS/GOV/QTAP/registry")
ECHO = "/r1/PS/GOV/QTAP/registry/echo/1"
RATE_LIMITED = "Server.ServerProxy.RateLimited"
POLICY = """
provider = "PS/GOV/QTAP"
[[grant]]
id = "desk-quota"
client = "PS/GOV/QTAC/desk"
service = "PS/GOV/QTAP/registry/echo"
methods = ["GET"]
paths = ["/**"]
rate = "3/minute"
"""


async def _call(net: Net) -> tuple[str, int, dict[str, str], bytes]:
    mid = new_id("quota")
    status, headers, body = await net.call(
        "qtac", ECHO, client=str(DESK), headers={"X-Road-Id": mid}
    )
    return mid, status, dict(headers), body


async def _assert_limited(net: Net, provider: SecurityServer) -> int:
    """The next call is refused for its quota; returns its Retry-After seconds."""
    mid, status, headers, body = await _call(net)
    doc = assert_xroad_error(status, headers, body, RATE_LIMITED, 429)
    assert doc["message"].startswith("quota of 3/minute for grant desk-quota exceeded")
    retry_after = int(headers["Retry-After"])
    view = logged(provider, mid, "provider", RATE_LIMITED)
    assert view.entry["decision"]["grant"] == "desk-quota"
    logged(net.servers["qtac"], mid, "consumer", RATE_LIMITED)
    return retry_after


async def test_quota_refuses_survives_a_restart_and_refills(net: Net) -> None:
    with net.registry() as reg:
        reg.add_member(PROVIDER, "Quota provider")
        reg.add_member(CONSUMER, "Quota consumer")
    clock = Clock()
    old = await launch(
        net,
        "qtap",
        SecurityServerId(*PROVIDER.parts, "ss1"),
        clients=[REGISTRY],
        services=[(REGISTRY.service("echo"), f"{net.backend_url}/echo")],
        policy=POLICY,
        clock=clock,
    )
    await launch(net, "qtac", SecurityServerId(*CONSUMER.parts, "ss1"), clients=[DESK], clock=clock)

    # (1) three calls within the minute pass, the fourth is refused with Retry-After
    for _ in range(3):
        _, status, _, body = await _call(net)
        assert status == 200, body
    assert 1 <= await _assert_limited(net, old) <= 20

    # (2) a restarted provider loads the counts: still refused
    await old.stop()
    provider = SecurityServer(load_server_config(old.config.path), clock=clock)
    net.servers["qtap"] = provider
    await provider.start()
    assert provider.provider_port == old.provider_port
    assert 1 <= await _assert_limited(net, provider) <= 20

    # (3) past the window the full quota is back
    clock.offset += 61
    for _ in range(3):
        mid, status, _, body = await _call(net)
        assert status == 200, body
        logged(provider, mid, "provider")
    await _assert_limited(net, provider)
