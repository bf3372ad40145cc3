"""Data minimisation on real population registry answers (issue 6 item 3): nested fields and
lists filtered by the provider security server, never leaving it, and logged as released."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from adapters.population.app import create_app as create_registry_app
from adapters.population.store import PopulationStore, build_registry
from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.messagelog.query import query_records
from exchange.server.core import SecurityServer
from tests.integration.conftest import Net

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROVIDER = parse_member("PS/GOV/POPR")
CONSUMER = parse_member("PS/GOV/POPC")
CLERK = parse_subsystem("PS/GOV/POPC/clerk")
REGISTRY = parse_subsystem("PS/GOV/POPR/registry")
POLICY = """
provider = "PS/GOV/POPR"
[[grant]]
id = "clerk-family"
client = "PS/GOV/POPC/clerk"
service = "PS/GOV/POPR/registry/persons"
methods = ["GET"]
paths = ["/*", "/*/family", "/*/address"]
fields = ["national_id", "address.locality", "father.name_en.full",
          "children[].national_id", "spouse.national_id"]
"""


@dataclass
class Registry:
    provider: SecurityServer
    nid: str


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def registry(net: Net) -> AsyncIterator[Registry]:
    db = net.root / "population" / "registry.sqlite"
    build_registry(db, 400, seed=7)
    with PopulationStore(db) as store:
        nid = store.sample(1)[0]["national_id"]
    runner = web.AppRunner(create_registry_app(db))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/persons"
    with net.registry() as reg:
        reg.add_member(PROVIDER, "Registry provider")
        reg.add_member(CONSUMER, "Registry consumer")
    provider = await net.add_server(
        "popr",
        SecurityServerId(*PROVIDER.parts, "ss1"),
        clients=[REGISTRY],
        services=[(REGISTRY.service("persons"), url)],
        policy=POLICY,
    )
    await net.add_server("popc", SecurityServerId(*CONSUMER.parts, "ss1"), clients=[CLERK])
    try:
        yield Registry(provider, nid)
    finally:
        await runner.cleanup()


async def _get(net: Net, path: str, message_id: str) -> object:
    status, _, body = await net.call(
        "popc",
        f"/r1/PS/GOV/POPR/registry/persons{path}",
        client=str(CLERK),
        headers={"X-Road-Id": message_id},
    )
    assert status == 200, body
    return orjson.loads(body)


async def test_person_is_cut_to_granted_fields(net: Net, registry: Registry) -> None:
    person = await _get(net, f"/{registry.nid}", "fields-person")
    assert person == {
        "national_id": registry.nid,
        "address": {"locality": person["address"]["locality"]},  # type: ignore[index]
    }


async def test_family_keeps_only_granted_nested_fields_and_list_items(
    net: Net, registry: Registry
) -> None:
    family = await _get(net, f"/{registry.nid}/family", "fields-family")
    assert isinstance(family, dict)
    assert set(family) <= {"national_id", "father", "children", "spouse"}  # no mother: not granted
    assert family["father"] == {"name_en": {"full": family["father"]["name_en"]["full"]}}
    assert family["children"] and all(set(c) == {"national_id"} for c in family["children"])
    assert set(family.get("spouse") or {"national_id": 0}) == {"national_id"}
    text = orjson.dumps(family).decode()
    for leaked in ("date_of_birth", "name_ar", "mother_id", "father_id", "marital_status"):
        assert leaked not in text
    [record] = query_records(
        registry.provider.config.log_path, message_id="fields-family", side="provider"
    )
    released = record.entry["released_fields"]
    assert "children[].national_id" in released and "father.name_en.full" in released
