"""Health's vaccination records: an adapter written on the SDK, tested directly and through two
real security servers with the test kit (the policy decides who reads which fields)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import zeep
from aiohttp import web
from click.testing import CliRunner
from openapi_spec_validator import validate as validate_openapi

from adapters.health.app import NAMESPACE, create_adapter
from adapters.health.store import FACILITIES, Person, VaccinationStore, generate
from adapters.population.generator import make_national_id
from adapters.sdk.openapi import openapi_document
from adapters.sdk.testkit import StartExchange

CHILD = make_national_id(60_000_001)
ADULT = make_national_id(60_000_002)
NOBODY = make_national_id(60_000_003)

POLICY = """
provider = "PS/GOV/MOH"

[[grant]]
id = "window-vaccination-certificate"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOH/health-records/vaccinations"
methods = ["GET"]
paths = ["/*"]
fields = ["national_id", "count", "vaccinations[].vaccine", "vaccinations[].date"]
purposes = ["citizen-service"]

[[grant]]
id = "window-vaccination-certificate-soap"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOH/health-records/getVaccinations"
fields = ["national_id", "vaccinations.vaccine", "vaccinations.date"]
purposes = ["citizen-service"]
"""


@pytest.fixture
def health_db(tmp_path: Path) -> Path:
    path = tmp_path / "health.db"
    people = [Person(CHILD, dt.date(2022, 1, 10)), Person(ADULT, dt.date(1980, 6, 1))]
    assert generate(path, people, seed=4) > 10
    return path


@pytest.fixture
async def health_url(health_db: Path) -> AsyncIterator[str]:
    runner = web.AppRunner(create_adapter(health_db).app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def test_generated_records_follow_the_schedule(health_db: Path) -> None:
    store = VaccinationStore(health_db)
    child = store.of_person(CHILD)
    assert child and all(v["date"] >= "2022-01-10" for v in child)
    assert [v["date"] for v in child] == sorted(v["date"] for v in child)
    assert {v["vaccine"] for v in child} <= {"BCG", "HepB", "Hexa", "OPV", "MMR", "DTaP"}
    assert store.of_person(NOBODY) == []
    assert all(v["vaccine"] == "MMR" for v in store.of_person(CHILD, "MMR"))


async def test_rest_record_and_new_dose(health_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{health_url}/vaccinations/{ADULT}") as response:
            record = await response.json()
        assert response.status == 200 and record["count"] == len(record["vaccinations"]) > 0
        dose = {"national_id": NOBODY, "vaccine": "Influenza", "dose": 1, "date": "2024-10-01",
                "facility": FACILITIES[0], "lot": "INF-2024-7"}  # fmt: skip
        async with http.post(
            f"{health_url}/vaccinations", json=dose, headers={"X-Road-UserId": "PS-nurse-3"}
        ) as response:
            assert response.status == 200
            assert (await response.json())["recorded_by"] == "PS-nurse-3"
        async with http.get(f"{health_url}/vaccinations/{NOBODY}") as response:
            assert (await response.json())["vaccinations"][0]["lot"] == "INF-2024-7"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        pytest.param({"vaccine": "Elixir"}, "invalid_vaccination", id="unknown-vaccine"),
        pytest.param({"date": "2999-01-01"}, "invalid_vaccination", id="future-date"),
        pytest.param({"national_id": "123456789"}, "invalid_national_id", id="bad-id"),
        pytest.param({"lot": "x y"}, "invalid_vaccination", id="bad-lot"),
        pytest.param({"dose": 0}, "invalid_vaccination", id="dose-zero"),
        pytest.param({"facility": "Nowhere"}, "unknown_facility", id="unknown-facility"),
    ],
)
async def test_bad_doses_are_refused(health_url: str, change: dict[str, Any], code: str) -> None:
    dose = {"national_id": NOBODY, "vaccine": "MMR", "dose": 1, "date": "2024-10-01",
            "facility": FACILITIES[0], "lot": "MMR1", **change}  # fmt: skip
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{health_url}/vaccinations", json=dose) as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"] == code


async def test_descriptions_validate(health_url: str, health_db: Path, tmp_path: Path) -> None:
    validate_openapi(openapi_document(create_adapter(health_db)))
    async with aiohttp.ClientSession() as http, http.get(f"{health_url}/soap?wsdl") as response:
        (tmp_path / "health.wsdl").write_bytes(await response.read())

    def call() -> Any:
        client = zeep.Client(str(tmp_path / "health.wsdl"))
        service = client.create_service(
            f"{{{NAMESPACE}}}HealthRecordsBinding", f"{health_url}/soap"
        )
        return service.getVaccinations(nationalId=CHILD, vaccine="MMR", _soapheaders=HEADERS)

    answer = await asyncio.to_thread(call)
    assert answer.body.national_id == CHILD
    assert answer.body.vaccinations and {v.vaccine for v in answer.body.vaccinations} == {"MMR"}


def test_cli_generate_from_made_up_people(tmp_path: Path) -> None:
    from adapters.health.cli import main

    result = CliRunner().invoke(main, ["generate", "--db", str(tmp_path / "h.db"), "--limit", "50"])
    assert result.exit_code == 0 and "for 50 people" in result.output, result.output


async def test_through_two_security_servers(
    adapter_exchange: StartExchange, health_db: Path
) -> None:
    exchange = await adapter_exchange(
        create_adapter(health_db),
        policy=POLICY,
        services={"vaccinations": "/vaccinations"},
        provider="PS/GOV/MOH/health-records",
        client="PS/GOV/PALPOST/unified-window",
    )
    status, headers, body = await exchange.rest(f"vaccinations/{CHILD}", purpose="citizen-service")
    assert status == 200, body
    record = orjson.loads(body)
    assert set(record) == {"national_id", "count", "vaccinations"}
    assert all(set(v) == {"vaccine", "date"} for v in record["vaccinations"])  # no lot, facility
    status, headers, _ = await exchange.rest(
        "vaccinations", method="POST", purpose="citizen-service", body=b"{}"
    )
    assert (status, headers["X-Road-Error"]) == (403, "Server.ServerProxy.AccessDenied")
    wsdl = exchange.root / "health.wsdl"
    async with exchange.session.get(f"{exchange.adapter_url}/soap?wsdl") as response:
        wsdl.write_bytes(await response.read())

    def call() -> Any:
        client = zeep.Client(str(wsdl))
        binding = f"{{{NAMESPACE}}}HealthRecordsBinding"
        service = client.create_service(binding, exchange.consumer_url + "/")
        return service.getVaccinations(nationalId=CHILD, _soapheaders=HEADERS)

    status, headers, envelope = await exchange.soap(
        "getVaccinations", {"nationalId": "123456789"}, namespace=NAMESPACE,
        purpose="citizen-service",
    )  # fmt: skip
    assert status == 500 and envelope.findtext(".//faultcode") == "Client"
    assert envelope.findtext(".//detail/faultDetail") == "invalid_national_id"
    status, headers, envelope = await exchange.soap(
        "getVaccinations", {"nationalId": CHILD}, namespace=NAMESPACE, purpose="curiosity"
    )
    assert headers["X-Road-Error"] == "Server.ServerProxy.AccessDenied.PurposeNotAllowed"
    answer = await asyncio.to_thread(call)
    assert answer.body.national_id == CHILD and answer.body.count is None  # not granted
    doses = answer.body.vaccinations
    assert doses and all(d.vaccine and d.date and d.lot is None for d in doses)


HEADERS = {
    "client": {"objectType": "SUBSYSTEM", "xRoadInstance": "PS", "memberClass": "GOV",
               "memberCode": "PALPOST", "subsystemCode": "unified-window"},
    "service": {"objectType": "SERVICE", "xRoadInstance": "PS", "memberClass": "GOV",
                "memberCode": "MOH", "subsystemCode": "health-records",
                "serviceCode": "getVaccinations"},
    "id": "zeep-health-1",
    "protocolVersion": "4.0",
    "purpose": "citizen-service",
}  # fmt: skip
