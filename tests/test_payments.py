"""Finance's payments: exact amounts, idempotent creation, gapless numbers, refunds, and what a
clerk retrying, two retries at once, another client or an insider with the file can (not) do.

The store is driven directly (real SQLite files, real threads) and the adapter over HTTP on
127.0.0.1 with the X-Road headers a provider security server forwards; the exchange through real
security servers is tests/test_ministry_services_exchange.py.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from adapters.payments.app import create_adapter, looks_like_card_number
from adapters.payments.money import MINOR_UNITS, Money, MoneyError
from adapters.payments.store import Actor, PaymentStore, create_store
from adapters.sdk import AdapterError
from adapters.sdk.idempotency import Idempotent, request_hash
from exchange.identifiers import parse_member
from exchange.trust.ca import CertificateAuthority
from exchange.trust.documents import RECEIPT, REFUND, DocumentSigner, verify_document
from exchange.trust.keys import generate_key

WINDOW = "PS/GOV/PALPOST/unified-window"
CLERK = Actor(WINDOW, "clerk-biddu-01", "msg-1")
NID = "123456782"


# --- money -------------------------------------------------------------------------------------


@given(st.integers(0, 10**12), st.sampled_from(sorted(MINOR_UNITS)))
def test_an_amount_reads_back_from_its_text_exactly(minor: int, currency: str) -> None:
    money = Money(minor, currency)
    assert Money.parse(money.text(), currency) == money
    assert len(money.text().partition(".")[2]) == MINOR_UNITS[currency]


@pytest.mark.parametrize(
    ("text", "currency", "reason"),
    [
        pytest.param("25.001", "ILS", "ILS amounts have at most 2 decimals", id="third-decimal"),
        pytest.param("1.0001", "JOD", "JOD amounts have at most 3 decimals", id="fourth-decimal"),
        pytest.param("-5.00", "ILS", "is not an amount", id="negative"),
        pytest.param("1e3", "ILS", "is not an amount", id="exponent"),
        pytest.param("NaN", "ILS", "is not an amount", id="nan"),
        pytest.param("", "ILS", "is not an amount", id="empty"),
        pytest.param("١٠", "ILS", "is not an amount", id="arabic-indic-digits"),
        pytest.param("10", "XXX", "unknown currency", id="unknown-currency"),
        pytest.param("99999999999999", "ILS", "is not an amount", id="too-large"),
    ],
)
def test_what_is_not_an_exact_amount_is_refused(text: str, currency: str, reason: str) -> None:
    with pytest.raises(MoneyError, match=reason):
        Money.parse(text, currency)


def test_amounts_never_mix_currencies_or_go_negative() -> None:
    with pytest.raises(MoneyError, match="cannot mix"):
        _ = Money(100, "ILS") + Money(100, "JOD")
    with pytest.raises(MoneyError, match="out of range"):
        _ = Money(100, "ILS") - Money(101, "ILS")


def test_card_numbers_are_recognised() -> None:
    assert looks_like_card_number("4111111111111111")
    assert looks_like_card_number("4111-1111-1111-1111")
    assert not looks_like_card_number("4111111111111112")  # Luhn fails: a reference
    assert not looks_like_card_number("AUTH-93812")


# --- the store ---------------------------------------------------------------------------------


class Clock:
    """A clock the test moves (Finance's year changes at local midnight, not UTC's)."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[DocumentSigner, Any]:
    ca = CertificateAuthority.create(tmp_path_factory.mktemp("ca") / "ca", "PS Test CA",
                                     now=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))  # fmt: skip
    key = generate_key()
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    cert = ca.issue_sign_cert(key.public_key(), parse_member("PS/GOV/MOF"), not_before=start,
                              days=3650)  # fmt: skip
    return DocumentSigner(key, (cert, ca.cert)), ca.cert


@pytest.fixture
def clock() -> Clock:
    return Clock(dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC))


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> PaymentStore:
    return PaymentStore(create_store(tmp_path / "payments.sqlite"), clock=clock)


def _key(key: str, operation: str = "pay", **request: Any) -> Idempotent:
    return Idempotent(WINDOW, key, request_hash(operation, request or {"k": key}))


def _fee(store: PaymentStore, service: str = "residence-certificate") -> str:
    status, fee = store.create_fee(CLERK, service, NID, None)
    assert status == 201 and fee["status"] == "due"
    return str(fee["fee_id"])


def _pay(store: PaymentStore, signer: tuple[DocumentSigner, Any], fee_id: str, key: str) -> Any:
    return store.pay(CLERK, fee_id, "cash", None, _key(key, fee_id=fee_id), signer[0].sign)


def test_a_retry_with_the_key_gets_the_identical_receipt_and_charges_once(
    store: PaymentStore, signer: tuple[DocumentSigner, Any], clock: Clock
) -> None:
    fee_id = _fee(store)
    status, receipt = _pay(store, signer, fee_id, "k-1")
    assert status == 201 and receipt["receipt_number"] == "MOF-2026-000001"
    clock.at += dt.timedelta(minutes=3)  # the retry comes later: still the first answer
    assert _pay(store, signer, fee_id, "k-1") == (200, receipt)
    with pytest.raises(AdapterError) as reused:  # same key, another request
        store.pay(CLERK, fee_id, "card", "AUTH-1", _key("k-1", fee_id=fee_id, card=1),
                  signer[0].sign)  # fmt: skip
    assert (reused.value.status, reused.value.code) == (422, "idempotency_key_reused")
    with pytest.raises(AdapterError) as paid:  # a new key: a second charge, refused
        _pay(store, signer, fee_id, "k-2")
    assert (paid.value.status, paid.value.code) == (409, "fee_already_paid")
    assert _count(store, "receipts") == 1
    assert store.fee(WINDOW, fee_id)["receipt_number"] == receipt["receipt_number"]


def _count(store: PaymentStore, table: str) -> int:
    with sqlite3.connect(store.path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _at_once(count: int, attempt: Callable[[int], Any]) -> list[Any]:
    """``attempt(i)`` in ``count`` threads released together; answers or raised errors."""
    start = threading.Barrier(count)

    def run(index: int) -> Any:
        start.wait()
        try:
            return attempt(index)
        except AdapterError as exc:
            return exc

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


@pytest.mark.parametrize("count", [2, 16], ids=["two-at-once", "sixteen-at-once"])
def test_retries_at_once_charge_once(
    store: PaymentStore, signer: tuple[DocumentSigner, Any], count: int
) -> None:
    fee_id = _fee(store)
    answers = _at_once(count, lambda _: _pay(store, signer, fee_id, "same-key"))
    assert sorted(status for status, _ in answers) == [200] * (count - 1) + [201]
    assert len({receipt["document"] for _, receipt in answers}) == 1
    assert _count(store, "receipts") == 1


def test_payments_of_one_fee_at_once_with_different_keys_charge_once(
    store: PaymentStore, signer: tuple[DocumentSigner, Any]
) -> None:
    fee_id = _fee(store)
    answers = _at_once(8, lambda i: _pay(store, signer, fee_id, f"key-{i}"))
    paid = [a for a in answers if isinstance(a, tuple)]
    refused = [a for a in answers if isinstance(a, AdapterError)]
    assert len(paid) == 1 and paid[0][0] == 201
    assert {(e.status, e.code) for e in refused} == {(409, "fee_already_paid")}
    assert _count(store, "receipts") == 1


def test_receipt_numbers_have_no_gaps_and_restart_each_local_year(
    store: PaymentStore, signer: tuple[DocumentSigner, Any], clock: Clock
) -> None:
    numbers = []
    for index in range(3):
        fee_id = _fee(store)
        numbers.append(_pay(store, signer, fee_id, f"a-{index}")[1]["receipt_number"])
        with pytest.raises(AdapterError):  # a refused payment uses no number
            _pay(store, signer, fee_id, f"b-{index}")
    # 31 December, 23:30 in Hebron is still 2026 there ... and 00:10 on 1 January is 2027,
    # while UTC is still in 2026 (Palestine is UTC+2 in winter)
    clock.at = dt.datetime(2026, 12, 31, 21, 30, tzinfo=dt.UTC)
    numbers.append(_pay(store, signer, _fee(store), "c")[1]["receipt_number"])
    clock.at = dt.datetime(2026, 12, 31, 22, 10, tzinfo=dt.UTC)
    numbers.append(_pay(store, signer, _fee(store), "d")[1]["receipt_number"])
    numbers.append(_pay(store, signer, _fee(store), "e")[1]["receipt_number"])
    assert numbers == ["MOF-2026-000001", "MOF-2026-000002", "MOF-2026-000003",
                       "MOF-2026-000004", "MOF-2027-000001", "MOF-2027-000002"]  # fmt: skip


def _refund(store: PaymentStore, signer: Any, number: str, key: str, amount: str | None) -> Any:
    idem = _key(key, "refund", number=number, amount=amount)
    return store.refund(CLERK, number, amount, "service not given", idem, signer[0].sign)


def test_refunds_never_exceed_what_was_paid(
    store: PaymentStore, signer: tuple[DocumentSigner, Any]
) -> None:
    _, receipt = _pay(store, signer, _fee(store), "k")  # 10.00 ILS
    number = receipt["receipt_number"]
    with pytest.raises(AdapterError) as over:
        _refund(store, signer, number, "r-0", "10.01")
    assert (over.value.status, over.value.code) == (409, "refund_exceeds_paid")
    assert "only 10.00 ILS of this receipt can still be refunded, not 10.01 ILS" in str(over.value)
    first = _refund(store, signer, number, "r-1", "4.50")
    assert first[0] == 201 and first[1]["refund_number"] == "MOF-RF-2026-000001"
    assert _refund(store, signer, number, "r-1", "4.50") == (200, first[1])  # a retry
    rest = _refund(store, signer, number, "r-2", None)  # the remainder
    assert rest[1]["amount"] == "5.50"
    with pytest.raises(AdapterError) as twice:
        _refund(store, signer, number, "r-3", None)
    assert (twice.value.status, twice.value.code) == (409, "already_refunded")
    for bad in ("0.00", "1.005"):
        with pytest.raises(AdapterError) as refused:
            _refund(store, signer, number, f"bad-{bad}", bad)
        assert refused.value.code in ("invalid_amount", "already_refunded")
    record = store.receipt(WINDOW, number)
    assert [r["amount"] for r in record["refunds"]] == ["4.50", "5.50"]


def test_two_full_refunds_at_once_give_the_money_back_once(
    store: PaymentStore, signer: tuple[DocumentSigner, Any]
) -> None:
    number = _pay(store, signer, _fee(store), "k")[1]["receipt_number"]
    answers = _at_once(2, lambda i: _refund(store, signer, number, f"full-{i}", None))
    assert sorted(str(a[0]) if isinstance(a, tuple) else a.code for a in answers) == [
        "201", "already_refunded"]  # fmt: skip
    assert _count(store, "refunds") == 1


def test_another_client_cannot_see_or_pay_or_refund_what_is_not_its(
    store: PaymentStore, signer: tuple[DocumentSigner, Any]
) -> None:
    fee_id = _fee(store)
    number = _pay(store, signer, fee_id, "k")[1]["receipt_number"]
    other = Actor("PS/GOV/PALPOST/other-window", "clerk-x", "msg-x")
    for attempt in (
        lambda: store.fee(other.client, fee_id),
        lambda: store.receipt(other.client, number),
        lambda: store.pay(other, _fee(store), "cash", None, None, signer[0].sign),
        lambda: store.refund(other, number, None, "x", None, signer[0].sign),
    ):
        with pytest.raises(AdapterError) as refused:
            attempt()
        assert (refused.value.status, refused.value.code) == (404, "not_found")


def test_the_file_keeps_its_invariants_against_a_buggy_or_careless_writer(
    store: PaymentStore, signer: tuple[DocumentSigner, Any]
) -> None:
    fee_id = _fee(store)
    number = _pay(store, signer, fee_id, "k")[1]["receipt_number"]
    _refund(store, signer, number, "r", "1.00")
    conn = sqlite3.connect(store.path)
    for sql, reason in (
        ("UPDATE receipts SET amount_minor = 1", "receipts are never changed"),
        ("DELETE FROM receipts", "receipts are never deleted"),
        ("UPDATE refunds SET amount_minor = 1", "refunds are never changed"),
        ("DELETE FROM refunds", "refunds are never deleted"),
        ("UPDATE fees SET status = 'due'", "a fee only changes from due to paid"),
        ("INSERT INTO refunds VALUES ('X', 2026, 99, '" + number + "', 901, 't', 'c', NULL, '{}')",
         "refunds exceed the amount paid"),
    ):  # fmt: skip
        with pytest.raises(sqlite3.DatabaseError, match=reason):
            conn.execute(sql)
    conn.close()


def test_the_signed_receipt_holds_what_was_paid_and_who_took_it(
    store: PaymentStore, signer: tuple[DocumentSigner, Any]
) -> None:
    _, receipt = _pay(store, signer, _fee(store, "health-insurance-card"), "k")
    verified = verify_document(receipt["document"], [signer[1]], typ=RECEIPT,
                               issuer=parse_member("PS/GOV/MOF"))  # fmt: skip
    claims = verified.claims
    assert {k: claims[k] for k in receipt if k != "document"} == {
        k: v for k, v in receipt.items() if k != "document"
    }
    assert (claims["amount"], claims["currency"], claims["collected_by"]) == (
        "25.00", "ILS", "clerk-biddu-01")  # fmt: skip
    assert (claims["client"], claims["exchange_id"]) == (WINDOW, "msg-1")
    refund = _refund(store, signer, receipt["receipt_number"], "r", "5.00")[1]
    assert verify_document(refund["document"], [signer[1]], typ=REFUND).claims["amount"] == "5.00"


def test_a_payment_needs_a_clerk(store: PaymentStore, signer: tuple[DocumentSigner, Any]) -> None:
    anonymous = Actor(WINDOW, None, "m")
    with pytest.raises(AdapterError) as refused:
        anonymous.clerk()
    assert refused.value.code == "user_id_required"


def test_a_foreign_file_or_time_zone_fails_the_start(tmp_path: Path) -> None:
    from exchange.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="no payments file"):
        PaymentStore(tmp_path / "missing.sqlite")
    sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ConfigurationError, match="holds no payments"):
        PaymentStore(tmp_path / "other.sqlite")
    with pytest.raises(ConfigurationError, match="unknown time zone"):
        PaymentStore(create_store(tmp_path / "p.sqlite"), time_zone="Mars/Olympus")


# --- the adapter over HTTP ---------------------------------------------------------------------


@pytest_asyncio.fixture
async def finance(
    tmp_path: Path, signer: tuple[DocumentSigner, Any]
) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    db = create_store(tmp_path / "payments.sqlite")
    runner = web.AppRunner(create_adapter(db, signer[0]).app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    async with aiohttp.ClientSession() as session:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", session
    await runner.cleanup()


def _headers(key: str | None = None, **extra: str) -> dict[str, str]:
    headers = {"X-Road-Client": WINDOW, "X-Road-UserId": "clerk-biddu-01", "X-Road-Id": "m"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return {**headers, **extra}


async def _post(
    finance: tuple[str, aiohttp.ClientSession], path: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any, bytes]:
    url, session = finance
    async with session.post(url + path, json=body, headers=headers) as response:
        raw = await response.read()
        return response.status, await response.json(), raw


async def test_over_http_a_retry_is_200_with_the_same_bytes(
    finance: tuple[str, aiohttp.ClientSession],
) -> None:
    body = {"service": "sim-registration", "national_id": NID}
    status, fee, _ = await _post(finance, "/fees", body, _headers("fee-1"))
    assert status == 201 and (fee["amount"], fee["currency"]) == ("5.00", "ILS")
    path = f"/fees/{fee['fee_id']}/payment"
    card = {"method": "card", "card_reference": "AUTH-7731"}
    first = await _post(finance, path, card, _headers("pay-1"))
    again = await _post(finance, path, card, _headers("pay-1", **{"X-Road-Id": "m2"}))
    assert (first[0], again[0]) == (201, 200) and first[2] == again[2]
    other = await _post(finance, path, {"method": "cash"}, _headers("pay-1"))
    assert (other[0], other[1]["error"]) == (422, "idempotency_key_reused")


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code"),
    [
        pytest.param("/fees", {"service": "residence-certificate", "national_id": NID},
                     _headers(), 400, "idempotency_key_required", id="no-key"),
        pytest.param("/fees", {"service": "residence-certificate", "national_id": NID},
                     _headers("bad key with spaces"), 400, "invalid_idempotency_key",
                     id="bad-key"),
        pytest.param("/fees", {"service": "parking-fine", "national_id": NID},
                     _headers("k"), 400, "unknown_fee", id="not-in-schedule"),
        pytest.param("/fees", {"service": "residence-certificate", "national_id": "123456789"},
                     _headers("k"), 400, "invalid_national_id", id="bad-national-id"),
        pytest.param("/fees/01a24c35-99e5-70f9-ab00-61f94b92d01d/payment", {"method": "cash"},
                     _headers("k"), 404, "not_found", id="no-such-fee"),
        pytest.param("/fees/01a24c35-99e5-70f9-ab00-61f94b92d01d/payment",
                     {"method": "card", "card_reference": "4111-1111-1111-1111"},
                     _headers("k"), 400, "card_number_refused", id="card-number"),
        pytest.param("/fees/01a24c35-99e5-70f9-ab00-61f94b92d01d/payment", {"method": "card"},
                     _headers("k"), 400, "invalid_input", id="card-without-reference"),
        pytest.param("/fees/01a24c35-99e5-70f9-ab00-61f94b92d01d/payment", {"method": "cash"},
                     {"X-Road-Client": WINDOW, "Idempotency-Key": "k"}, 400,
                     "user_id_required", id="no-clerk"),
        pytest.param("/receipts/MOF-2026-000001/refund", {"reason": "x", "amount": 5},
                     _headers("k"), 400, "invalid_input", id="amount-as-json-number"),
    ],
)  # fmt: skip
async def test_over_http_bad_requests_get_their_codes(
    finance: tuple[str, aiohttp.ClientSession],
    path: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    answer = await _post(finance, path, body, headers)
    assert (answer[0], answer[1]["error"]) == (status, code), answer[1]
