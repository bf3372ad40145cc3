"""The four ministries' services for the post office's window, each behind two real security
servers (the SDK's test kit: real PKI, mutual TLS, signed requests and answers, logs) under the
ministry's real policy file from ``policies/``: what the window gets, what it never gets, and
Finance's idempotent payments across retries that are new exchanges."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from adapters.health.insurance import create_adapter as insurance_adapter
from adapters.health.insurance_store import generate, read_residents
from adapters.payments.app import create_adapter as payments_adapter
from adapters.payments.store import create_store
from adapters.population.app import Certificates
from adapters.population.app import create_adapter as registry_adapter
from adapters.population.store import PopulationStore, build_registry
from adapters.sdk.testkit import Exchange
from adapters.telecom.app import create_adapter as sims_adapter
from adapters.telecom.store import create_store as create_sim_store
from exchange.identifiers import parse_member
from exchange.messagelog.query import query_records
from exchange.trust.ca import CertificateAuthority
from exchange.trust.documents import (
    RECEIPT,
    RESIDENCE_CERTIFICATE,
    DocumentSigner,
    verify_document,
)
from exchange.trust.keys import generate_key

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[1]
WINDOW = "PS/GOV/PALPOST/unified-window"
PURPOSE = "citizen-service"
CLERK = "clerk-biddu-01"


def policy(path: str) -> str:
    return (ROOT / "exchange" / "demo" / "policies" / path).read_text()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ministries")
    build_registry(root / "registry.db", 400, seed=5)
    return root


@pytest.fixture(scope="module")
def document_ca(data: Path) -> CertificateAuthority:
    return CertificateAuthority.create(data / "docs-ca", "PS Documents Test CA")


def signer_for(ca: CertificateAuthority, member: str) -> DocumentSigner:
    key = generate_key()
    return DocumentSigner(
        key, (ca.issue_sign_cert(key.public_key(), parse_member(member)), ca.cert)
    )


@pytest.fixture(scope="module")
def people(data: Path) -> list[dict[str, Any]]:
    with PopulationStore(data / "registry.db") as store:
        return list(store.sample(3))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def interior(data: Path, document_ca: CertificateAuthority) -> AsyncIterator[Exchange]:
    certificates = Certificates(data / "certificates.sqlite", signer_for(document_ca, "PS/GOV/MOI"))
    async with Exchange.running(
        registry_adapter(data / "registry.db", certificates),
        data / "moi",
        policy=policy("MOI/population-registry.toml"),
        services={"persons": "/persons", "residence-certificates": "/residence-certificates"},
        provider="PS/GOV/MOI/population-registry",
        client=WINDOW,
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def health(data: Path) -> AsyncIterator[Exchange]:
    generate(data / "insurance.db", read_residents(data / "registry.db"), today=dt.date.today())
    async with Exchange.running(
        insurance_adapter(data / "insurance.db"),
        data / "moh",
        policy=policy("MOH/health-insurance.toml"),
        services={"status": "/status"},
        provider="PS/GOV/MOH/health-insurance",
        client=WINDOW,
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def telecom(data: Path) -> AsyncIterator[Exchange]:
    async with Exchange.running(
        sims_adapter(create_sim_store(data / "sims.sqlite")),
        data / "mtit",
        policy=policy("MTIT/sim-registry.toml"),
        services={"sims": "/sims"},
        provider="PS/GOV/MTIT/sim-registry",
        client=WINDOW,
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def finance(data: Path, document_ca: CertificateAuthority) -> AsyncIterator[Exchange]:
    async with Exchange.running(
        payments_adapter(
            create_store(data / "payments.sqlite"), signer_for(document_ca, "PS/GOV/MOF")
        ),
        data / "mof",
        policy=policy("MOF/payments.toml"),
        services={"schedule": "/schedule", "fees": "/fees", "receipts": "/receipts"},
        provider="PS/GOV/MOF/payments",
        client=WINDOW,
    ) as running:
        yield running


async def window(
    ex: Exchange,
    path: str,
    *,
    method: str = "GET",
    body: Any = None,
    key: str | None = None,
    user_id: str | None = CLERK,
    message_id: str | None = None,
) -> tuple[int, Any, bytes, str | None]:
    """One exchange as the window makes it: its purpose, its clerk, a fresh message id."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key is not None:
        headers["Idempotency-Key"] = key
    status, answer_headers, raw = await ex.rest(
        path, method=method, purpose=PURPOSE, user_id=user_id, headers=headers,
        message_id=message_id or str(uuid.uuid4()),
        body=None if body is None else orjson.dumps(body),
    )  # fmt: skip
    value = orjson.loads(raw) if raw and raw[:1] in (b"{", b"[") else None
    return status, value, raw, answer_headers.get("X-Road-Error")


# --- Interior ------------------------------------------------------------------------------------


async def test_search_by_name_and_birth_date_releases_only_the_granted_fields(
    interior: Exchange, people: list[dict[str, Any]]
) -> None:
    person = people[0]
    name = person["name_en"]["full"].replace(" ", "+")
    query = f"?name={name}&date_of_birth={person['date_of_birth']}"
    status, found, _, error = await window(interior, "persons" + query)
    assert (status, error) == (200, None), found
    assert found["count"] >= 1 and person["national_id"] in {
        p["national_id"] for p in found["persons"]
    }
    for each in found["persons"]:
        assert set(each) == {"national_id", "name_ar", "name_en", "address"}
    # a query parameter the grant does not name (limit) is refused, not passed on
    status, _, _, error = await window(interior, "persons" + query + "&limit=20")
    assert (status, error) == (403, "Server.ServerProxy.AccessDenied")


async def test_a_certificate_of_residence_is_signed_by_interior_and_kept_per_key(
    interior: Exchange, people: list[dict[str, Any]], document_ca: CertificateAuthority
) -> None:
    nid = people[1]["national_id"]
    body = {"national_id": nid}
    first = await window(interior, "residence-certificates", method="POST", body=body, key="rc-1")
    assert (first[0], first[3]) == (201, None), first[1]
    certificate = first[1]
    assert set(certificate) == {"certificate_number", "national_id", "name_ar", "name_en",
                                "address", "issued_at", "valid_until", "document"}  # fmt: skip
    assert certificate["address"] == people[1]["address"]
    interior_member = parse_member("PS/GOV/MOI")
    verified = verify_document(certificate["document"], [document_ca.cert],
                               typ=RESIDENCE_CERTIFICATE, issuer=interior_member)  # fmt: skip
    assert verified.claims["requested_by"] == CLERK and verified.claims["client"] == WINDOW
    again = await window(interior, "residence-certificates", method="POST", body=body, key="rc-1")
    assert (again[0], again[2]) == (200, first[2])  # a new exchange, the same certificate
    anonymous = await window(interior, "residence-certificates", method="POST", body=body,
                             user_id=None)  # fmt: skip
    assert (anonymous[0], anonymous[3]) == (403, "Server.ServerProxy.AccessDenied.UserIdRequired")


# --- Health --------------------------------------------------------------------------------------


async def test_insurance_status_never_releases_dependants(health: Exchange, data: Path) -> None:
    import sqlite3

    with sqlite3.connect(data / "insurance.db") as conn:
        (holder,) = conn.execute("SELECT holder_id FROM dependants LIMIT 1").fetchone()
    status, answer, raw, error = await window(health, f"status/{holder}")
    assert (status, error) == (200, None), answer
    assert set(answer) == {"national_id", "insured", "scheme", "valid_until"}
    assert b"dependants" not in raw
    async with health.session.get(f"{health.adapter_url}/status/{holder}") as direct:
        everything = await direct.json()
    assert everything["dependants"], "the holder has dependants; only the window does not see them"


# --- Telecom -------------------------------------------------------------------------------------


async def test_a_sim_registered_at_the_counter_names_the_clerk(
    telecom: Exchange, people: list[dict[str, Any]]
) -> None:
    nid = people[0]["national_id"]
    body = {"national_id": nid, "msisdn": "0599123456", "operator": "Jawwal"}
    status, registration, _, error = await window(telecom, "sims", method="POST", body=body)
    assert (status, error) == (201, None), registration
    assert (registration["msisdn"], registration["registered_by"]) == ("+970599123456", CLERK)
    status, taken, _, _ = await window(telecom, "sims", method="POST", body=body)
    assert (status, taken["error"]) == (409, "msisdn_taken")
    status, listed, _, _ = await window(telecom, f"sims?national_id={nid}")
    assert status == 200 and [s["msisdn"] for s in listed] == ["+970599123456"]
    status, _, _, error = await window(telecom, f"sims?national_id={nid}&operator=Jawwal")
    assert (status, error) == (403, "Server.ServerProxy.AccessDenied")
    [record] = query_records(telecom.provider.config.log_path, client=WINDOW, side="provider",
                             service="PS/GOV/MTIT/sim-registry/sims", limit=1)  # fmt: skip
    assert record.entry["user_id"] == CLERK


# --- Finance -------------------------------------------------------------------------------------


async def _due_fee(finance: Exchange, nid: str, service: str = "residence-certificate") -> Any:
    body = {"service": service, "national_id": nid}
    status, fee, _, error = await window(finance, "fees", method="POST", body=body,
                                         key=str(uuid.uuid4()))  # fmt: skip
    assert (status, error) == (201, None), fee
    return fee


async def test_a_fee_paid_through_the_exchange_is_receipted_once_across_retries(
    finance: Exchange, people: list[dict[str, Any]], document_ca: CertificateAuthority
) -> None:
    status, schedule, _, _ = await window(finance, "schedule")
    assert status == 200 and {"service", "amount", "currency"} <= set(schedule[0])
    fee = await _due_fee(finance, people[0]["national_id"])
    pay = f"fees/{fee['fee_id']}/payment"
    key = str(uuid.uuid4())
    first = await window(finance, pay, method="POST", body={"method": "cash"}, key=key)
    assert (first[0], first[3]) == (201, None), first[1]
    receipt = first[1]
    # the window lost the answer and retries: a new exchange (new message id), the same key
    retry = await window(finance, pay, method="POST", body={"method": "cash"}, key=key)
    assert (retry[0], retry[2]) == (200, first[2])
    # a second charge with a new key is refused by Finance, and the window is told why
    second = await window(finance, pay, method="POST", body={"method": "cash"}, key="new-key")
    assert (second[0], second[1]["error"]) == (409, "fee_already_paid")
    verified = verify_document(receipt["document"], [document_ca.cert], typ=RECEIPT,
                               issuer=parse_member("PS/GOV/MOF"))  # fmt: skip
    assert verified.claims["collected_by"] == CLERK and verified.claims["amount"] == "10.00"
    # both exchanges that carried the payment are in Finance's log, under the clerk's name
    records = query_records(finance.provider.config.log_path, service="PS/GOV/MOF/payments/fees",
                            side="provider")  # fmt: skip
    assert sum(1 for r in records if r.entry["path"] == "/" + fee["fee_id"] + "/payment") == 3
    assert {r.entry["user_id"] for r in records} == {CLERK}


async def test_two_retries_at_once_through_the_exchange_charge_once(
    finance: Exchange, people: list[dict[str, Any]]
) -> None:
    fee = await _due_fee(finance, people[1]["national_id"], "sim-registration")
    key = str(uuid.uuid4())
    pay = f"fees/{fee['fee_id']}/payment"
    card = {"method": "card", "card_reference": "AUTH-55213"}
    answers = await asyncio.gather(
        window(finance, pay, method="POST", body=card, key=key),
        window(finance, pay, method="POST", body=card, key=key),
    )
    assert sorted(a[0] for a in answers) == [200, 201]
    assert answers[0][2] == answers[1][2]
    status, state, _, _ = await window(finance, f"fees/{fee['fee_id']}")
    assert (status, state["status"], state["receipt_number"]) == (
        200, "paid", answers[0][1]["receipt_number"])  # fmt: skip


async def test_refunds_through_the_exchange_stop_at_what_was_paid(
    finance: Exchange, people: list[dict[str, Any]]
) -> None:
    fee = await _due_fee(finance, people[2]["national_id"], "birth-certificate")  # 15.00
    _, receipt, _, _ = await window(finance, f"fees/{fee['fee_id']}/payment", method="POST",
                                    body={"method": "cash"}, key=str(uuid.uuid4()))  # fmt: skip
    refund = f"receipts/{receipt['receipt_number']}/refund"
    over = await window(finance, refund, method="POST", key=str(uuid.uuid4()),
                        body={"reason": "overcharged", "amount": "15.01"})  # fmt: skip
    assert (over[0], over[1]["error"]) == (409, "refund_exceeds_paid")
    given = await window(finance, refund, method="POST", key=str(uuid.uuid4()),
                         body={"reason": "certificate not needed"})  # fmt: skip
    assert (given[0], given[1]["amount"]) == (201, "15.00")
    twice = await window(finance, refund, method="POST", key=str(uuid.uuid4()),
                         body={"reason": "certificate not needed"})  # fmt: skip
    assert (twice[0], twice[1]["error"]) == (409, "already_refunded")
    status, record, _, _ = await window(finance, f"receipts/{receipt['receipt_number']}")
    assert status == 200 and [r["amount"] for r in record["refunds"]] == ["15.00"]


@pytest.mark.parametrize(
    ("path", "method", "user_id", "error"),
    [
        pytest.param("schedule", "GET", None, "Server.ServerProxy.AccessDenied.UserIdRequired",
                     id="no-clerk"),
        pytest.param("schedule?all=1", "GET", CLERK, "Server.ServerProxy.AccessDenied",
                     id="query-not-granted"),
        pytest.param("fees", "GET", CLERK, "Server.ServerProxy.AccessDenied",
                     id="listing-fees-not-granted"),
        pytest.param("receipts/MOF-2026-000001", "DELETE", CLERK,
                     "Server.ServerProxy.AccessDenied", id="method-not-granted"),
    ],
)  # fmt: skip
async def test_what_finance_does_not_grant_the_window_is_refused(
    finance: Exchange, path: str, method: str, user_id: str | None, error: str
) -> None:
    status, _, _, got = await window(finance, path, method=method, user_id=user_id)
    assert (status, got) == (403, error)
