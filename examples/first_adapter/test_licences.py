import json
from pathlib import Path

from licences import adapter

POLICY = (Path(__file__).parent / "policy.toml").read_text()


async def test_police_checks_a_licence_through_the_exchange(adapter_exchange):
    ex = await adapter_exchange(
        adapter,
        policy=POLICY,
        services={"licences": "/licences"},
        provider="PS/GOV/MOT/licences",
        client="PS/GOV/POLICE/traffic",
    )
    status, headers, body = await ex.rest("licences/401409669", purpose="traffic-control")
    assert status == 200
    assert json.loads(body) == {
        "national_id": "401409669",
        "categories": ["B", "C1"],
        "valid_until": "2029-03-31",
    }  # checked_for: not granted
    status, headers, body = await ex.rest("licences/401409669", purpose="curiosity")
    assert headers["X-Road-Error"] == "Server.ServerProxy.AccessDenied.PurposeNotAllowed"
