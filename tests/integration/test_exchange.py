"""End-to-end exchanges through real security servers."""

from __future__ import annotations

import orjson
import pytest

from tests.integration.conftest import Net

pytestmark = pytest.mark.asyncio(loop_scope="session")

PERSONS = "/r1/PS/GOV/MOI/population-registry/persons"


async def test_end_to_end_exchange(net: Net) -> None:
    status, headers, body = await net.call("palpost", f"{PERSONS}/123456782")
    assert status == 200, body
    data = orjson.loads(body)
    assert data == {
        "national_id": "123456782",
        "name_en": {"first": "Amal", "family": "Haddad", "full": "Amal Haddad"},
        "address": {"locality": "Biddu"},
        "children": [{"national_id": "200000004"}],
    }
    assert headers["X-Road-Client"] == "PS/GOV/PALPOST/unified-window"
    assert headers["X-Road-Service"] == "PS/GOV/MOI/population-registry/persons"
    assert headers["X-Road-Request-Hash"]
    assert "X-Road-Error" not in headers
    assert headers["X-Backend"] == "yes"
