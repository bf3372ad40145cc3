"""Health's insurance status, Telecom's SIM registry and Interior's certificates of residence,
store by store (real SQLite files): the rules each ministry keeps whoever calls."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from adapters.health.insurance_store import InsuranceStore, Resident, generate
from adapters.population.certificates import CertificateIssuer
from adapters.population.store import PopulationStore, build_registry
from adapters.sdk import AdapterError
from adapters.sdk.idempotency import Idempotent, request_hash
from adapters.telecom.app import normalise_msisdn
from adapters.telecom.store import MAX_SIMS_PER_PERSON, SimStore, create_store
from exchange.identifiers import parse_member
from exchange.trust.ca import CertificateAuthority
from exchange.trust.documents import RESIDENCE_CERTIFICATE, DocumentSigner, verify_document
from exchange.trust.keys import generate_key

TODAY = dt.date(2026, 12, 6)


# --- health insurance ----------------------------------------------------------------------------


def _resident(nid: str, born: str, parents: tuple[str, ...] = ()) -> Resident:
    return Resident(nid, dt.date.fromisoformat(born), True, None, parents)


def test_insurance_covers_holders_and_their_children_and_lapses(tmp_path: Path) -> None:
    db = tmp_path / "insurance.db"
    people = [_resident(f"{n:08d}0", "1980-01-01") for n in range(1, 60)]
    children = [_resident(f"9{n:08d}", "2015-05-05", (people[n].national_id,)) for n in range(10)]
    generate(db, people + children, today=TODAY, seed=1)
    store = InsuranceStore(db)
    conn = sqlite3.connect(db)
    schemes = dict(conn.execute("SELECT national_id, scheme FROM policies").fetchall())
    lapsed = conn.execute(
        "SELECT national_id FROM policies WHERE valid_until < ?", (TODAY.isoformat(),)
    ).fetchone()
    conn.close()
    assert {"government", "private", "none"} <= set(schemes.values())
    covered = 0
    for child in children:
        holder = store.status(child.parent_ids[0], TODAY)
        status = store.status(child.national_id, TODAY)
        if holder["scheme"] == "none":
            assert (status["scheme"], status["insured"]) == ("none", False)
            continue
        covered += 1
        assert {"national_id": child.national_id, "relation": "child"} in holder["dependants"]
        assert (status["scheme"], status["valid_until"], status["dependants"]) == (
            holder["scheme"], holder["valid_until"], [])  # fmt: skip
    assert covered
    assert lapsed is not None and store.status(lapsed[0], TODAY)["insured"] is False
    unknown = store.status("123456782", TODAY)
    assert unknown == {"national_id": "123456782", "insured": False, "scheme": "none",
                       "valid_until": None, "dependants": []}  # fmt: skip


# --- SIM registry --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "operator", "result"),
    [
        pytest.param("0599123456", "Jawwal", "+970599123456", id="local-jawwal"),
        pytest.param("+970 56 912 3456", "Ooredoo", "+970569123456", id="e164-ooredoo-spaced"),
        pytest.param("0569123456", "Jawwal", "msisdn_operator_mismatch", id="ooredoo-as-jawwal"),
        pytest.param("0529123456", "Jawwal", "invalid_msisdn", id="israeli-prefix"),
        pytest.param("059912345", "Jawwal", "invalid_msisdn", id="too-short"),
        pytest.param("+972599123456", "Jawwal", "invalid_msisdn", id="other-country"),
    ],
)
def test_mobile_numbers_are_palestinian_and_the_operators(
    text: str, operator: Any, result: str
) -> None:
    if result.startswith("+"):
        assert normalise_msisdn(text, operator) == result
        return
    with pytest.raises(AdapterError) as refused:
        normalise_msisdn(text, operator)
    assert refused.value.code == result


def _register(store: SimStore, nid: str, number: int, key: str | None = None) -> Any:
    msisdn = f"+970599{number:06d}"
    idem = None if key is None else Idempotent("w", key, request_hash("r", {"m": msisdn}))
    return store.register(nid, msisdn, "Jawwal", clerk="clerk", client="w", message_id="m",
                          idem=idem)  # fmt: skip


def test_a_number_is_registered_once_and_a_person_holds_a_few(tmp_path: Path) -> None:
    store = SimStore(create_store(tmp_path / "sims.sqlite"))
    first = _register(store, "123456782", 1, key="k")
    assert first[0] == 201 and _register(store, "123456782", 1, key="k") == (200, first[1])
    start = threading.Barrier(4)

    def attempt(_: int) -> Any:
        start.wait()
        try:
            return _register(store, "200000004", 2)[0]
        except AdapterError as exc:
            return exc.code

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(map(str, pool.map(attempt, range(4))))
    assert outcomes == ["201", "msisdn_taken", "msisdn_taken", "msisdn_taken"]
    for number in range(3, 3 + MAX_SIMS_PER_PERSON - 1):
        _register(store, "123456782", number)
    with pytest.raises(AdapterError) as full:
        _register(store, "123456782", 99)
    assert full.value.code == "too_many_sims"
    assert len(store.of_person("123456782")) == MAX_SIMS_PER_PERSON


# --- certificates of residence -------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> PopulationStore:
    root = tmp_path_factory.mktemp("registry")
    build_registry(root / "registry.db", 300, seed=2)
    return PopulationStore(root / "registry.db")


@pytest.fixture(scope="module")
def interior(tmp_path_factory: pytest.TempPathFactory) -> tuple[DocumentSigner, Any]:
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    ca = CertificateAuthority.create(tmp_path_factory.mktemp("ca") / "ca", "PS CA", now=start)
    key = generate_key()
    cert = ca.issue_sign_cert(key.public_key(), parse_member("PS/GOV/MOI"), not_before=start,
                              days=3000)  # fmt: skip
    return DocumentSigner(key, (cert, ca.cert)), ca.cert


def test_certificates_are_numbered_signed_and_never_for_the_dead(
    tmp_path: Path, registry: PopulationStore, interior: tuple[DocumentSigner, Any]
) -> None:
    clock = [dt.datetime(2026, 12, 31, 21, 59, tzinfo=dt.UTC)]  # 23:59 in Hebron
    issuer = CertificateIssuer(tmp_path / "certificates.sqlite", interior[0],
                               clock=lambda: clock[0])  # fmt: skip
    person = registry.sample(1)[0]
    _, first = issuer.issue(person, clerk="c", client="w", message_id="m", idem=None)
    clock[0] += dt.timedelta(minutes=2)  # 00:01 on 1 January 2027 in Hebron
    _, second = issuer.issue(person, clerk="c", client="w", message_id="m", idem=None)
    assert (first["certificate_number"], second["certificate_number"]) == (
        "MOI-RC-2026-000001", "MOI-RC-2027-000001")  # fmt: skip
    assert (first["valid_until"], second["valid_until"]) == ("2027-03-31", "2027-04-01")
    verified = verify_document(second["document"], [interior[1]], typ=RESIDENCE_CERTIFICATE)
    assert verified.claims["address"] == person["address"]
    with sqlite3.connect(registry.path) as conn:
        (dead,) = conn.execute(
            "SELECT national_id FROM persons WHERE date_of_death IS NOT NULL LIMIT 1"
        ).fetchone()
    deceased = registry.get_person(f"{dead:09d}")
    assert deceased is not None
    with pytest.raises(AdapterError) as refused:
        issuer.issue(deceased, clerk="c", client="w", message_id="m", idem=None)
    assert (refused.value.status, refused.value.code) == (409, "person_deceased")
    assert issuer.count() == 2


# --- the ministries' policies for the window -----------------------------------------------------

POLICIES = Path(__file__).resolve().parents[1] / "exchange" / "demo" / "policies"


@pytest.mark.parametrize("member", ["MOI", "MOH", "MTIT", "MOF"])
def test_each_ministrys_example_policy_checks_and_lints_clean(member: str) -> None:
    from click.testing import CliRunner

    from exchange.cli import main

    checked = CliRunner().invoke(main, ["policy", "check", str(POLICIES / member)])
    assert checked.exit_code == 0, checked.output
    assert f"policy of PS/GOV/{member}" in checked.output
    linted = CliRunner().invoke(main, ["policy", "lint", str(POLICIES / member)])
    assert linted.exit_code == 0 and "no findings" in linted.output, linted.output


@pytest.mark.parametrize(
    ("member", "service", "method", "path", "extra", "verdict"),
    [
        pytest.param("MOF", "PS/GOV/MOF/payments/fees", "POST", "/0190/payment",
                     ["--user-id", "clerk"], "ALLOWED", id="pay-a-fee"),
        pytest.param("MOF", "PS/GOV/MOF/payments/fees", "POST", "/0190/payment", [],
                     "UserIdRequired", id="pay-without-a-clerk"),
        pytest.param("MOF", "PS/GOV/MOF/payments/fees", "DELETE", "/0190", ["--user-id", "c"],
                     "DENIED", id="delete-a-fee"),
        pytest.param("MOH", "PS/GOV/MOH/health-insurance/status", "GET", "/123456782",
                     ["--user-id", "clerk"], "ALLOWED", id="insurance-status"),
        pytest.param("MTIT", "PS/GOV/MTIT/sim-registry/sims", "GET", "/123456782",
                     ["--user-id", "clerk"], "DENIED", id="sims-by-path"),
    ],
)  # fmt: skip
def test_the_window_gets_what_the_contract_says_and_no_more(
    member: str, service: str, method: str, path: str, extra: list[str], verdict: str
) -> None:
    from click.testing import CliRunner

    from exchange.cli import main

    result = CliRunner().invoke(main, [
        "policy", "explain", "--dir", str(POLICIES / member),
        "--client", "PS/GOV/PALPOST/unified-window",
        "--service", service, "--method", method, "--path", path, "--purpose", "citizen-service",
        *extra,
    ])  # fmt: skip
    assert verdict in result.output, result.output


# --- the services' OpenAPI documents -------------------------------------------------------------


def test_each_services_openapi_document_is_valid_and_describes_its_answers(
    tmp_path: Path, interior: tuple[DocumentSigner, Any]
) -> None:
    """What the metadata service getOpenAPI hands a client developer, for the four services."""
    from openapi_spec_validator import validate

    from adapters.health.insurance import create_adapter as insurance
    from adapters.payments.app import create_adapter as payments
    from adapters.population.app import Certificates
    from adapters.population.app import create_adapter as registry
    from adapters.sdk.openapi import openapi_document
    from adapters.telecom.app import create_adapter as sims

    certificates = Certificates(tmp_path / "c", interior[0])
    documents = {
        "registry": openapi_document(registry(tmp_path / "r", certificates)),
        "insurance": openapi_document(insurance(tmp_path / "i")),
        "sims": openapi_document(sims(tmp_path / "s")),
        "payments": openapi_document(payments(tmp_path / "p", interior[0])),
    }
    for document in documents.values():
        validate(document)
    payment = documents["payments"]["paths"]["/fees/{fee_id}/payment"]["post"]
    assert {"200", "201", "400", "404", "409", "422"} <= set(payment["responses"])
    schemas = documents["payments"]["components"]["schemas"]
    assert schemas["Amount"]["type"] == "string" and "Receipt" in schemas
    refund = documents["payments"]["paths"]["/receipts/{receipt_number}/refund"]["post"]
    body = refund["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert body["amount"]["format"] == "decimal"
    certificate = documents["registry"]["paths"]["/residence-certificates"]["post"]
    assert set(certificate["responses"]) >= {"201", "200", "404", "409"}
    assert "/status/{national_id}" in documents["insurance"]["paths"]
    assert {"get", "post"} == set(documents["sims"]["paths"]["/sims"])
