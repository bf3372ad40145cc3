"""The population registry through the exchange layer, with the SDK's test kit: a consumer and a
provider security server (real PKI, mutual TLS, signed global configuration, Interior's grant)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import zeep
import zeep.exceptions

from adapters.population.app import create_adapter
from adapters.population.generator import make_national_id
from adapters.population.store import PopulationStore, build_registry
from adapters.sdk.testkit import Exchange
from exchange.messagelog.query import query_records

pytestmark = pytest.mark.asyncio(loop_scope="module")

POLICY = """
provider = "PS/GOV/MOI"

[[grant]]
id = "window"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/population-registry/persons"
methods = ["GET"]
paths = ["/*", "/*/address"]
fields = ["national_id", "name_en.full", "address.locality"]
purposes = ["citizen-service"]

[[grant]]
id = "window-soap"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/population-registry/getPerson"
fields = ["national_id", "name_en.full", "address.locality"]
purposes = ["citizen-service"]
"""
WINDOW = "PS/GOV/PALPOST/unified-window"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def exchange(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Exchange]:
    root = tmp_path_factory.mktemp("population-exchange")
    build_registry(root / "registry.db", 300, seed=3)
    async with Exchange.running(
        create_adapter(root / "registry.db"),
        root / "exchange",
        policy=POLICY,
        services={"persons": "/persons"},
        provider="PS/GOV/MOI/population-registry",
        client=WINDOW,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def nid(tmp_path_factory: pytest.TempPathFactory, exchange: Exchange) -> str:
    db = exchange.root.parent / "registry.db"
    with PopulationStore(db) as store:
        return str(store.sample(1)[0]["national_id"])


async def test_person_through_two_security_servers_is_minimised(
    exchange: Exchange, nid: str
) -> None:
    status, headers, body = await exchange.rest(
        f"persons/{nid}", purpose="citizen-service", message_id="kit-person-1"
    )
    assert status == 200, body
    person = orjson.loads(body)
    assert set(person) == {"national_id", "name_en", "address"}
    assert set(person["name_en"]) == {"full"} and set(person["address"]) == {"locality"}
    assert headers["X-Road-Request-Hash"]
    [record] = query_records(
        exchange.provider.config.log_path, message_id="kit-person-1", side="provider"
    )
    assert record.entry["client"] == WINDOW


@pytest.mark.parametrize(
    ("path", "purpose", "status", "error"),
    [
        pytest.param(
            "persons/{nid}/family",
            "citizen-service",
            403,
            "Server.ServerProxy.AccessDenied",
            id="path-not-granted",
        ),
        pytest.param(
            "persons/{nid}",
            None,
            403,
            "Server.ServerProxy.AccessDenied.PurposeNotAllowed",
            id="no-purpose",
        ),
    ],
)
async def test_what_the_policy_does_not_grant_is_refused(
    exchange: Exchange, nid: str, path: str, purpose: str | None, status: int, error: str
) -> None:
    got, headers, _ = await exchange.rest(path.format(nid=nid), purpose=purpose)
    assert got == status
    assert headers["X-Road-Error"] == error


async def test_adapter_errors_pass_through_unchanged(exchange: Exchange) -> None:
    unknown = make_national_id(12_345_678)
    status, headers, body = await exchange.rest(f"persons/{unknown}", purpose="citizen-service")
    assert (status, "X-Road-Error" in headers) == (404, False)
    assert orjson.loads(body) == {
        "error": "not_found",
        "message": f"no person with national ID {unknown}",
    }
    status, _, body = await exchange.rest("persons/123456789", purpose="citizen-service")
    assert (status, orjson.loads(body)["error"]) == (400, "invalid_national_id")


# --- SOAP getPerson with a stock client (zeep) through both security servers ---------------------

NS = "http://population.moi.gov.ps/v1"


def soap_headers(purpose: str, message_id: str) -> dict[str, object]:
    return {
        "client": {"objectType": "SUBSYSTEM", "xRoadInstance": "PS", "memberClass": "GOV",
                   "memberCode": "PALPOST", "subsystemCode": "unified-window"},
        "service": {"objectType": "SERVICE", "xRoadInstance": "PS", "memberClass": "GOV",
                    "memberCode": "MOI", "subsystemCode": "population-registry",
                    "serviceCode": "getPerson"},
        "id": message_id,
        "protocolVersion": "4.0",
        "purpose": purpose,
    }  # fmt: skip


async def test_zeep_get_person_through_the_exchange_is_minimised(
    exchange: Exchange, nid: str, tmp_path: Path
) -> None:
    wsdl = tmp_path / "population.wsdl"
    async with exchange.session.get(f"{exchange.adapter_url}/soap?wsdl") as response:
        wsdl.write_bytes(await response.read())

    def call() -> tuple[Any, Exception]:
        client = zeep.Client(str(wsdl))
        registry = client.create_service(
            f"{{{NS}}}PopulationRegistryBinding", exchange.consumer_url + "/"
        )
        found = registry.getPerson(
            nationalId=nid, _soapheaders=soap_headers("citizen-service", "zeep-kit-1")
        )
        with pytest.raises(zeep.exceptions.Fault) as refused:
            registry.getPerson(nationalId=nid, _soapheaders=soap_headers("curiosity", "zeep-kit-2"))
        return found, refused.value

    found, refused = await asyncio.to_thread(call)
    person = found.body
    assert person.national_id == nid and person.name_en.full
    assert person.name_en.first is None and person.address.street is None
    assert person.date_of_birth is None and person.name_ar is None  # not granted: removed
    assert found.header.requestHash
    assert refused.code == "Server.ServerProxy.AccessDenied.PurposeNotAllowed"
    [record] = query_records(
        exchange.provider.config.log_path, message_id="zeep-kit-1", side="provider"
    )
    assert record.entry["client"] == WINDOW
