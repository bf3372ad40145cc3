"""A grant's ``query`` enforced by a running provider: an unlisted query parameter is refused
with ``Server.ServerProxy.AccessDenied`` (403) and logged on both sides; listed ones pass."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio

from exchange.identifiers import parse_security_server, parse_subsystem
from exchange.server.core import SecurityServer
from tests.integration.conftest import MOI, WINDOW, Net
from tests.integration.support import assert_xroad_error, launch, logged, new_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBSYSTEM = parse_subsystem(f"{MOI}/query-scoped")
SEARCH = f"/r1/{SUBSYSTEM}/search"

POLICY = f"""
provider = "PS/GOV/MOI"

[[grant]]
id = "window-search-by-name"
client = "{WINDOW}"
service = "{SUBSYSTEM}/search"
methods = ["GET"]
query = ["name", "date_of_birth"]
"""


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def provider(net: Net) -> AsyncIterator[SecurityServer]:
    yield await launch(
        net,
        "moi-query-scoped",
        parse_security_server(f"{MOI}/ss-query-scoped"),
        clients=[SUBSYSTEM],
        policy=POLICY,
        extra={"services": [{"id": f"{SUBSYSTEM}/search", "url": f"{net.backend_url}/echo"}]},
    )


async def test_listed_query_parameters_reach_the_service(
    net: Net, provider: SecurityServer
) -> None:
    mid = new_id("query-ok")
    status, _, body = await net.call(
        "palpost", f"{SEARCH}?name=Amal&date_of_birth=1984-03-02", headers={"X-Road-Id": mid}
    )
    assert status == 200, body[:500]
    assert orjson.loads(body)["path"] == "/echo?name=Amal&date_of_birth=1984-03-02"
    logged(provider, mid, "provider")


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("national_id=123456782", id="unlisted"),
        pytest.param("name=Amal&limit=100", id="unlisted-beside-listed"),
        pytest.param("na%25me=1", id="still-encoded-name"),
    ],
)
async def test_an_unlisted_query_parameter_is_refused_and_logged(
    net: Net, provider: SecurityServer, query: str
) -> None:
    mid = new_id("query-refused")
    result = await net.call("palpost", f"{SEARCH}?{query}", headers={"X-Road-Id": mid})
    assert_xroad_error(*result, "Server.ServerProxy.AccessDenied", 403)
    record = logged(provider, mid, "provider", "Server.ServerProxy.AccessDenied")
    decision = record.entry["decision"]
    assert not decision["allowed"] and f"?{query}" in decision["reason"], decision
    logged(net.servers["palpost"], mid, "consumer", "Server.ServerProxy.AccessDenied")
    assert (await net.call("palpost", f"{SEARCH}?name=x"))[0] == 200  # still serving
