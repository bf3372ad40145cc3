"""Interior's population registry adapter: IDs, generator, SQLite store, HTTP service, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import ValidationError
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_openapi

from adapters.population.app import create_app
from adapters.population.generator import (
    REFERENCE_DATE,
    PersonRow,
    generate_people,
    make_national_id,
    valid_national_id,
)
from adapters.population.names import (
    CHRISTIAN_FAMILIES,
    CHRISTIAN_GIVEN_NAMES,
    GOVERNORATES,
    MUSLIM_GIVEN_NAMES,
)
from adapters.population.openapi import openapi_document
from adapters.population.store import PopulationStore, build_registry
from exchange.cli.registry import group as registry_cli

REPO = Path(__file__).resolve().parents[1]
SEED = 11
COUNT = 3000
UNKNOWN_ID = make_national_id(12_345_678)  # generated IDs start at 400000000
LOCALITIES = {(g.name, name) for g in GOVERNORATES for name, _ in g.localities}


def reference_luhn_valid(text: str) -> bool:
    """Textbook Luhn: from the right, double every second digit, sum the digits, mod 10."""
    total = 0
    for index, char in enumerate(reversed(text)):
        digit = int(char) * (2 if index % 2 else 1)
        total += digit // 10 + digit % 10
    return total % 10 == 0


# --- national IDs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        pytest.param("123456782", True, id="brief-example"),
        pytest.param("000000018", True, id="leading-zeros"),
        pytest.param("401409669", True, id="generated"),
        pytest.param("123456789", False, id="wrong-check-digit"),
        pytest.param("213456782", False, id="transposed-digits"),
        pytest.param("12345678", False, id="eight-digits"),
        pytest.param("1234567820", False, id="ten-digits"),
        pytest.param("", False, id="empty"),
        pytest.param("12345678a", False, id="letter"),
        pytest.param(" 23456782", False, id="space"),
        pytest.param("+23456782", False, id="sign"),
        pytest.param("١٢٣٤٥٦٧٨٢", False, id="arabic-indic-digits"),
        pytest.param("１２３４５６７８２", False, id="fullwidth-digits"),
    ],
)
def test_valid_national_id_table(text: str, valid: bool) -> None:
    assert valid_national_id(text) is valid


@given(st.integers(0, 10**8 - 1))
def test_made_ids_validate_and_agree_with_textbook_luhn(n8: int) -> None:
    national_id = make_national_id(n8)
    assert len(national_id) == 9 and national_id[:8] == f"{n8:08d}"
    assert valid_national_id(national_id)
    assert reference_luhn_valid(national_id)


@given(st.integers(0, 10**8 - 1), st.integers(0, 8), st.integers(1, 9))
def test_every_single_digit_change_is_caught(n8: int, position: int, shift: int) -> None:
    national_id = make_national_id(n8)
    changed = str((int(national_id[position]) + shift) % 10)
    assert not valid_national_id(national_id[:position] + changed + national_id[position + 1 :])


@given(st.text(max_size=12))
def test_any_text_is_judged_without_error(text: str) -> None:
    assert valid_national_id(text) is (
        len(text) == 9 and text.isascii() and text.isdigit() and reference_luhn_valid(text)
    )


@pytest.mark.parametrize("n8", [pytest.param(-1, id="negative"), pytest.param(10**8, id="9-digit")])
def test_make_national_id_refuses_out_of_range(n8: int) -> None:
    with pytest.raises(ValueError):
        make_national_id(n8)


# --- generator -----------------------------------------------------------------------------------


def people(count: int, seed: int = SEED) -> list[PersonRow]:
    return [row for block in generate_people(count, seed=seed) for row in block]


def days_between(earlier: str, later: str) -> int:
    return (date.fromisoformat(later) - date.fromisoformat(earlier)).days


def check_parents(row: PersonRow, by_id: dict[int, PersonRow]) -> None:
    assert (row.father_id is None) == (row.mother_id is None)
    if row.father_id is None or row.mother_id is None:
        return
    father, mother = by_id[row.father_id], by_id[row.mother_id]
    assert (father.sex, mother.sex) == ("M", "F")
    assert days_between(father.date_of_birth, row.date_of_birth) >= 18 * 365
    assert days_between(mother.date_of_birth, row.date_of_birth) >= 18 * 365
    assert (row.father_en, row.father_ar) == (father.first_en, father.first_ar)
    assert (row.grandfather_en, row.grandfather_ar) == (father.father_en, father.father_ar)
    assert (row.family_en, row.family_ar) == (father.family_en, father.family_ar)
    assert father.spouse_id in (mother.national_id, None)
    for parent in (father, mother):
        assert parent.date_of_death is None or parent.date_of_death >= row.date_of_birth


def check_spouse(row: PersonRow, by_id: dict[int, PersonRow]) -> None:
    if row.marital_status in ("single", "divorced"):
        assert row.spouse_id is None
        return
    assert row.spouse_id is not None
    spouse = by_id[row.spouse_id]
    assert spouse.spouse_id == row.national_id and spouse.sex != row.sex
    if row.marital_status == "married" and row.date_of_death is None:
        assert spouse.date_of_death is None and spouse.marital_status == "married"
    if row.marital_status == "widowed":
        assert spouse.date_of_death is not None
        assert row.date_of_death is None or row.date_of_death > spouse.date_of_death


def check_integrity(rows: Sequence[PersonRow], reference: date = REFERENCE_DATE) -> None:
    """Every link resolves and links back; names, dates and places are consistent."""
    by_id = {row.national_id: row for row in rows}
    assert len(by_id) == len(rows)
    assert [row.national_id for row in rows] == sorted(by_id)
    for row in rows:
        assert valid_national_id(f"{row.national_id:09d}")
        assert row.full_en == f"{row.first_en} {row.father_en} {row.grandfather_en} {row.family_en}"
        assert row.full_ar == f"{row.first_ar} {row.father_ar} {row.grandfather_ar} {row.family_ar}"
        assert row.date_of_birth <= reference.isoformat()
        if row.date_of_death is not None:
            assert row.date_of_birth < row.date_of_death <= reference.isoformat()
        assert (row.governorate, row.locality) in LOCALITIES
        assert row.street and row.building.isdigit()
        check_parents(row, by_id)
        check_spouse(row, by_id)


def test_generator_is_deterministic_for_a_seed() -> None:
    assert people(2000, seed=5) == people(2000, seed=5)
    assert people(2000, seed=5) != people(2000, seed=6)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 400), st.integers(0, 2**32))
def test_generator_yields_exactly_count_with_intact_families(count: int, seed: int) -> None:
    rows = people(count, seed)
    assert len(rows) == count
    check_integrity(rows)


def test_generated_population_looks_like_a_population() -> None:
    rows = people(20_000)
    check_integrity(rows)
    deceased = sum(row.date_of_death is not None for row in rows)
    assert 0.01 < deceased / len(rows) < 0.06
    statuses = {row.marital_status for row in rows}
    assert statuses == {"single", "married", "divorced", "widowed"}
    assert sum(row.father_id is not None for row in rows) > 0.6 * len(rows)
    assert len({row.full_en for row in rows}) > 0.95 * len(rows)
    assert any(row.locality == "Biddu" for row in rows)
    for row in rows:
        given = {row.first_en, row.father_en, row.grandfather_en}
        christian = row.family_en in CHRISTIAN_FAMILIES
        assert not given & (MUSLIM_GIVEN_NAMES if christian else CHRISTIAN_GIVEN_NAMES)
    assert len({row.governorate for row in rows}) == len(GOVERNORATES)


def test_generate_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError):
        next(generate_people(-1))


# --- the SQLite file and the store ---------------------------------------------------------------


@pytest.fixture(scope="module")
def registry_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry") / "registry.db"
    build_registry(path, COUNT, seed=SEED)
    return path


@pytest.fixture
def store(registry_db: Path) -> Iterator[PopulationStore]:
    with PopulationStore(registry_db) as opened:
        yield opened


def all_rows(store: PopulationStore) -> list[PersonRow]:
    with store._connection() as conn:
        fields = ", ".join(PersonRow._fields)
        return [PersonRow(*row) for row in conn.execute(f"SELECT {fields} FROM persons")]


def test_registry_file_holds_the_generated_people(store: PopulationStore) -> None:
    rows = all_rows(store)
    assert rows == people(COUNT)
    check_integrity(rows)
    assert store.count == COUNT and store.meta["seed"] == str(SEED)


def test_build_report_and_refusal_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    seen: list[tuple[str, int]] = []
    report = build_registry(path, 500, seed=3, on_progress=lambda *p: seen.append(p))
    assert (report.count, report.seed) == (500, 3)
    assert seen == [("people", 500), ("indexes", 500)]
    assert sorted(os.listdir(tmp_path)) == ["r.db"]
    with pytest.raises(Exception, match="already exists"):
        build_registry(path, 10)
    assert build_registry(path, 10, replace=True).count == 10


def test_interrupted_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def interrupt(phase: str, written: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_registry(tmp_path / "r.db", 100, on_progress=interrupt)
    assert os.listdir(tmp_path) == []


def test_twenty_thousand_people_build(tmp_path: Path) -> None:
    report = build_registry(tmp_path / "big.db", 20_000, seed=1)
    with PopulationStore(report.path) as opened:
        assert opened.count == 20_000
        assert 0 < report.deceased < 2000 and report.married > 5000


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(None, "no population registry", id="missing"),
        pytest.param(b"not sqlite at all" * 100, "not a population registry", id="not-sqlite"),
        pytest.param(b"", "not a population registry", id="empty-file"),
    ],
)
def test_store_refuses_what_is_not_a_registry(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    path = tmp_path / "x.db"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(Exception, match=reason):
        PopulationStore(path)


def a_married_parent(store: PopulationStore) -> dict[str, Any]:
    return store.sample(1)[0]


def test_person_shape(store: PopulationStore) -> None:
    person = a_married_parent(store)
    assert list(person) == [
        "national_id", "name_ar", "name_en", "sex", "date_of_birth", "place_of_birth",
        "governorate", "locality", "address", "marital_status", "father_id", "mother_id",
        "spouse_id", "date_of_death", "status",
    ]  # fmt: skip
    for key in ("name_ar", "name_en"):
        assert list(person[key]) == ["first", "father", "grandfather", "family", "full"]
    assert list(person["address"]) == ["governorate", "locality", "street", "building"]
    assert person["status"] == "alive" and person["date_of_death"] is None
    assert store.get_person(person["national_id"]) == person


def test_family_links_back(store: PopulationStore) -> None:
    person = a_married_parent(store)
    family = store.family(person["national_id"])
    assert family is not None and family["person"] == person
    assert [p["national_id"] for p in family["parents"]] == [
        person["father_id"],
        person["mother_id"],
    ]
    assert family["spouse"]["spouse_id"] == person["national_id"]
    parent_key = "father_id" if person["sex"] == "M" else "mother_id"
    assert family["children"]
    assert all(child[parent_key] == person["national_id"] for child in family["children"])
    births = [child["date_of_birth"] for child in family["children"]]
    assert births == sorted(births)


def test_address_and_unknown_ids(store: PopulationStore) -> None:
    person = a_married_parent(store)
    assert store.address(person["national_id"]) == person["address"]
    assert store.get_person(UNKNOWN_ID) is None
    assert store.family(UNKNOWN_ID) is None
    assert store.address(UNKNOWN_ID) is None
    with pytest.raises(ValueError):
        store.get_person("123456789")


def test_search_by_name_and_date(store: PopulationStore) -> None:
    person = a_married_parent(store)
    full_en, full_ar = person["name_en"]["full"], person["name_ar"]["full"]
    ids = {p["national_id"] for p in store.search(name=f"  {full_en.upper()} ")}
    assert person["national_id"] in ids
    assert person["national_id"] in {p["national_id"] for p in store.search(name=full_ar)}
    by_family = store.search(name=person["name_en"]["family"].lower(), limit=100)
    assert by_family and {p["name_en"]["family"] for p in by_family} == {
        person["name_en"]["family"]
    }
    both = store.search(name=person["name_ar"]["family"], date_of_birth=person["date_of_birth"])
    assert person["national_id"] in {p["national_id"] for p in both}
    assert len(store.search(date_of_birth=person["date_of_birth"], limit=1)) == 1
    assert store.search(name="Nobody Of That Name") == []


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({}, id="no-criteria"),
        pytest.param({"name": "   "}, id="blank-name"),
        pytest.param({"name": "x" * 201}, id="long-name"),
        pytest.param({"date_of_birth": "1990-02-30"}, id="no-such-day"),
        pytest.param({"date_of_birth": "19900201"}, id="compact-date"),
        pytest.param({"name": "Ahmad", "limit": 0}, id="limit-zero"),
        pytest.param({"name": "Ahmad", "limit": 101}, id="limit-too-big"),
    ],
)
def test_search_refuses_bad_criteria(store: PopulationStore, arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        store.search(**arguments)


# --- the HTTP service ----------------------------------------------------------------------------


async def start(registry_db: Path, base_path: str = "") -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(registry_db, base_path=base_path))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}{base_path}"


@pytest.fixture
async def service(registry_db: Path) -> AsyncIterator[str]:
    runner, url = await start(registry_db)
    yield url
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with http.get(url) as response:
        assert response.status == status
        assert response.content_type == "application/json"
        return await response.json()


def assert_matches_schema(document: dict[str, Any], schema: str, instance: Any) -> None:
    wrapper = {"$ref": f"#/components/schemas/{schema}", "components": document["components"]}
    OAS30Validator(wrapper).validate(instance)


async def test_http_person_family_address(
    service: str, http: aiohttp.ClientSession, store: PopulationStore
) -> None:
    document = openapi_document()
    person = a_married_parent(store)
    nid = person["national_id"]
    assert await get_json(http, f"{service}/persons/{nid}") == person
    assert_matches_schema(document, "Person", person)
    family = await get_json(http, f"{service}/persons/{nid}/family")
    assert_matches_schema(document, "Family", family)
    assert family["national_id"] == nid
    assert family["father"]["national_id"] == person["father_id"]
    assert family["mother"]["national_id"] == person["mother_id"]
    assert family["spouse"]["national_id"] == person["spouse_id"]
    assert len(family["children"]) >= 1
    address = await get_json(http, f"{service}/persons/{nid}/address")
    assert address == {"national_id": nid, "address": person["address"]}
    assert_matches_schema(document, "AddressResponse", address)


async def test_http_family_of_a_founder_has_null_parents(
    service: str, http: aiohttp.ClientSession, store: PopulationStore
) -> None:
    founder = next(row for row in all_rows(store) if row.father_id is None)
    family = await get_json(http, f"{service}/persons/{founder.national_id:09d}/family")
    assert family["father"] is None and family["mother"] is None


async def test_http_search(
    service: str, http: aiohttp.ClientSession, store: PopulationStore
) -> None:
    person = a_married_parent(store)
    params = {"name": person["name_en"]["full"].lower(), "date_of_birth": person["date_of_birth"]}
    async with http.get(f"{service}/persons", params=params) as response:
        assert response.status == 200
        result = await response.json()
    assert_matches_schema(openapi_document(), "SearchResult", result)
    assert result["count"] == len(result["persons"]) >= 1
    assert person in result["persons"]
    by_family = {"name": person["name_ar"]["family"], "limit": "3"}
    async with http.get(f"{service}/persons", params=by_family) as response:
        assert response.status == 200
        assert 1 <= len((await response.json())["persons"]) <= 3


@pytest.mark.parametrize(
    "national_id",
    [
        pytest.param("123456789", id="bad-check-digit"),
        pytest.param("12345678", id="eight-digits"),
        pytest.param("1234567820", id="ten-digits"),
        pytest.param("12345678a", id="letter"),
        pytest.param("%D9%A1%D9%A2%D9%A3%D9%A4%D9%A5%D9%A6%D9%A7%D9%A8%D9%A2", id="arabic-digits"),
        pytest.param("%20123456782", id="leading-space"),
    ],
)
@pytest.mark.parametrize("view", ["", "/family", "/address"])
async def test_http_bad_national_id_is_400(
    service: str, http: aiohttp.ClientSession, national_id: str, view: str
) -> None:
    body = await get_json(http, f"{service}/persons/{national_id}{view}", status=400)
    assert body["error"] == "invalid_national_id" and body["message"]


@pytest.mark.parametrize("view", ["", "/family", "/address"])
async def test_http_unknown_national_id_is_404(
    service: str, http: aiohttp.ClientSession, view: str
) -> None:
    body = await get_json(http, f"{service}/persons/{UNKNOWN_ID}{view}", status=404)
    assert body == {"error": "not_found", "message": f"no person with national ID {UNKNOWN_ID}"}


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("", id="no-criteria"),
        pytest.param("?limit=5", id="only-limit"),
        pytest.param("?name=", id="empty-name"),
        pytest.param("?date_of_birth=1990-13-01", id="bad-month"),
        pytest.param("?date_of_birth=yesterday", id="not-a-date"),
        pytest.param("?name=Ahmad&limit=0", id="limit-zero"),
        pytest.param("?name=Ahmad&limit=1000", id="limit-too-big"),
        pytest.param("?name=Ahmad&limit=-1", id="limit-negative"),
        pytest.param("?name=Ahmad&limit=ten", id="limit-text"),
        pytest.param("?name=Ahmad&dob=1990-01-01", id="unknown-parameter"),
        pytest.param("?name=Ahmad&name=Omar", id="repeated-parameter"),
    ],
)
async def test_http_bad_search_is_400(
    service: str, http: aiohttp.ClientSession, query: str
) -> None:
    body = await get_json(http, f"{service}/persons{query}", status=400)
    assert body["error"] == "invalid_query" and body["message"]


async def test_http_unknown_route_and_method_are_json(
    service: str, http: aiohttp.ClientSession
) -> None:
    assert (await get_json(http, f"{service}/nothing-here", status=404))["error"] == "not_found"
    async with http.post(f"{service}/persons/{UNKNOWN_ID}") as response:
        assert response.status == 405
        assert (await response.json())["error"] == "method_not_allowed"
        assert response.headers["Allow"] == "GET"


async def test_http_health_and_openapi(service: str, http: aiohttp.ClientSession) -> None:
    health = await get_json(http, f"{service}/health")
    assert health == {"status": "ok", "persons": COUNT, "reference_date": "2024-12-31"}
    assert await get_json(http, f"{service}/openapi.json") == openapi_document()


async def test_http_under_a_base_path(
    registry_db: Path, http: aiohttp.ClientSession, store: PopulationStore
) -> None:
    runner, url = await start(registry_db, base_path="/moi/registry/")
    try:
        assert url.endswith("/moi/registry/")
        person = a_married_parent(store)
        assert await get_json(http, f"{url}persons/{person['national_id']}") == person
        document = await get_json(http, f"{url}openapi.json")
        assert document["servers"] == [{"url": "/moi/registry"}]
    finally:
        await runner.cleanup()


# --- OpenAPI -------------------------------------------------------------------------------------


@pytest.mark.parametrize("base_path", ["", "/moi"])
def test_openapi_document_is_valid_and_covers_every_route(
    registry_db: Path, base_path: str
) -> None:
    document = openapi_document(base_path=base_path)
    validate_openapi(document)
    app = create_app(registry_db, base_path=base_path)
    routes = {resource.canonical.removeprefix(base_path) for resource in app.router.resources()}
    assert routes == {*document["paths"], "/soap"}  # SOAP: POST /soap, WSDL at GET /soap?wsdl


def test_error_bodies_match_the_schema() -> None:
    document = openapi_document()
    assert_matches_schema(document, "Error", {"error": "not_found", "message": "x"})
    with pytest.raises(ValidationError):
        assert_matches_schema(document, "Error", {"error": "not_found"})


# --- command line --------------------------------------------------------------------------------


def test_cli_generate_sample_and_help(tmp_path: Path) -> None:
    runner = CliRunner()
    db = str(tmp_path / "cli.db")
    result = runner.invoke(
        registry_cli, ["generate", "--db", db, "--count", "800", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 800 people" in result.output
    again = runner.invoke(registry_cli, ["generate", "--db", db, "--count", "8", "--no-progress"])
    assert again.exit_code == 2 and "--force" in again.output
    sampled = runner.invoke(registry_cli, ["sample", "--db", db, "-n", "3", "--json"])
    assert sampled.exit_code == 0, sampled.output
    ids = [p["national_id"] for p in json.loads(sampled.output)]
    assert ids and all(valid_national_id(i) for i in ids)
    table = runner.invoke(registry_cli, ["sample", "--db", db])
    assert table.exit_code == 0 and ids[0] in table.output
    for command in ([], ["generate"], ["serve"], ["sample"]):
        help_text = runner.invoke(registry_cli, [*command, "--help"]).output
        assert "Example" in help_text


def test_cli_sample_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(registry_cli, ["sample", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 2 and "exchange registry generate" in result.output


def test_python_m_serve_prints_ready_and_stops_on_sigterm(registry_db: Path) -> None:
    command = [sys.executable, "-m", "adapters.population", "serve", "--db", str(registry_db)]
    with subprocess.Popen(
        [*command, "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith("READY url=http://127.0.0.1:")
        port = int(ready.rsplit("port=", 1)[1])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


# --- SOAP: getPerson -----------------------------------------------------------------------------

NS = "http://population.moi.gov.ps/v1"
SOAP_HEADERS = {
    "client": {"objectType": "SUBSYSTEM", "xRoadInstance": "PS", "memberClass": "GOV",
               "memberCode": "MOH", "subsystemCode": "health-records"},
    "service": {"objectType": "SERVICE", "xRoadInstance": "PS", "memberClass": "GOV",
                "memberCode": "MOI", "subsystemCode": "population-registry",
                "serviceCode": "getPerson"},
    "id": "zeep-population-1",
    "protocolVersion": "4.0",
    "purpose": "patient-care",
}  # fmt: skip


def zeep_registry(wsdl: Path, url: str) -> Any:
    import zeep

    client = zeep.Client(str(wsdl))
    return client.create_service(f"{{{NS}}}PopulationRegistryBinding", f"{url}/soap")


async def test_soap_get_person_with_zeep(
    service: str, http: aiohttp.ClientSession, store: PopulationStore, tmp_path: Path
) -> None:
    async with http.get(f"{service}/soap?wsdl") as response:
        assert response.status == 200
        (tmp_path / "population.wsdl").write_bytes(await response.read())
    person = a_married_parent(store)

    def call() -> Any:
        registry = zeep_registry(tmp_path / "population.wsdl", service)
        found = registry.getPerson(nationalId=person["national_id"], _soapheaders=SOAP_HEADERS)
        with pytest.raises(Exception) as unknown:
            registry.getPerson(nationalId=UNKNOWN_ID, _soapheaders=SOAP_HEADERS)
        with pytest.raises(Exception) as invalid:
            registry.getPerson(nationalId="123456789", _soapheaders=SOAP_HEADERS)
        return found, unknown.value, invalid.value

    found, unknown, invalid = await asyncio.to_thread(call)
    body = found.body
    assert body.national_id == person["national_id"]
    assert body.name_en.full == person["name_en"]["full"]
    assert body.address.locality == person["address"]["locality"]
    assert body.date_of_death is None and body.status == "alive"
    assert found.header.id == "zeep-population-1" and found.header.purpose == "patient-care"
    assert (unknown.code, unknown.message) == ("Client", f"no person with national ID {UNKNOWN_ID}")
    assert unknown.detail[0].text == "not_found"
    assert (invalid.code, invalid.detail[0].text) == ("Client", "invalid_national_id")
