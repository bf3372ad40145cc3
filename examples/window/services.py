"""The four ministries' services as the window calls them, and what it keeps of each answer.

Requests follow the issue 15 contract between the window and the services (the identifiers
below). Answers are reduced to the fields the window shows (:func:`pick`): what a ministry's
policy withholds never arrives, and whatever else might arrive is dropped here, before any
template sees it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from examples.window.xroad import Request

PERSONS: Final = "PS/GOV/MOI/population-registry/persons"
RESIDENCE: Final = "PS/GOV/MOI/population-registry/residence-certificates"
INSURANCE: Final = "PS/GOV/MOH/health-insurance/status"
SIMS: Final = "PS/GOV/MTIT/sim-registry/sims"
SCHEDULE: Final = "PS/GOV/MOF/payments/schedule"
FEES: Final = "PS/GOV/MOF/payments/fees"
RECEIPTS: Final = "PS/GOV/MOF/payments/receipts"

NAME_PARTS: Final = ("first", "father", "grandfather", "family", "full")
ADDRESS_PARTS: Final = ("governorate", "locality", "street", "building")
CERTIFICATE: Final = (
    "certificate_number", "national_id", "issued_at", "valid_until", "document",
)  # fmt: skip
INSURED: Final = ("national_id", "insured", "scheme", "valid_until")
SIM: Final = ("registration_id", "national_id", "msisdn", "operator", "registered_at",
              "registered_by")  # fmt: skip
SCHEDULE_ITEM: Final = ("service", "name_en", "name_ar", "amount", "currency")
FEE: Final = ("fee_id", "service", "national_id", "amount", "currency", "status", "created_at")
RECEIPT: Final = ("receipt_number", "fee_id", "service", "national_id", "amount", "currency",
                  "method", "paid_at", "collected_by", "document")  # fmt: skip
REFUND: Final = ("refund_number", "receipt_number", "amount", "currency", "refunded_at",
                 "refunded_by", "reason")  # fmt: skip
OPERATORS: Final = ("Jawwal", "Ooredoo")


def pick(body: Any, fields: Iterable[str]) -> dict[str, Any]:
    """Only ``fields`` of a JSON object, each a scalar (nested values are not shown as such)."""
    if not isinstance(body, dict):
        return {}
    return {f: body[f] for f in fields if f in body and _scalar(body[f])}


def person(body: Any) -> dict[str, Any]:
    """A person as the window shows it: national ID, the two names, the address."""
    if not isinstance(body, dict) or not isinstance(body.get("national_id"), str):
        return {}
    shown: dict[str, Any] = {"national_id": body["national_id"]}
    for key, parts in (("name_ar", NAME_PARTS), ("name_en", NAME_PARTS),
                       ("address", ADDRESS_PARTS)):  # fmt: skip
        value = pick(body.get(key), parts)
        if value:
            shown[key] = value
    return shown


def persons(body: Any) -> list[dict[str, Any]]:
    """A search result: a list of persons, or ``{"persons": [...]}``."""
    items = body.get("persons") if isinstance(body, dict) else body
    if not isinstance(items, list):
        return []
    return [p for p in (person(item) for item in items) if p]


def listing(body: Any, fields: Iterable[str]) -> list[dict[str, Any]]:
    """A list of objects (or ``{"items": [...]}``-like: the first list member of an object)."""
    if isinstance(body, dict):
        body = next((v for v in body.values() if isinstance(v, list)), [])
    if not isinstance(body, list):
        return []
    fields = tuple(fields)
    return [pick(item, fields) for item in body if isinstance(item, dict)]


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def lookup(national_id: str) -> Request:
    return Request(PERSONS, path=(national_id,), national_id=national_id)


def search(name: str, date_of_birth: str) -> Request:
    return Request(PERSONS, query={"name": name, "date_of_birth": date_of_birth})


def residence_certificate(national_id: str, key: str) -> Request:
    return Request(RESIDENCE, "POST", body={"national_id": national_id}, idempotency_key=key,
                   national_id=national_id)  # fmt: skip


def insurance(national_id: str) -> Request:
    return Request(INSURANCE, path=(national_id,), national_id=national_id)


def register_sim(body: dict[str, Any], key: str) -> Request:
    return Request(SIMS, "POST", body=body, idempotency_key=key,
                   national_id=str(body["national_id"]))  # fmt: skip


def sims_of(national_id: str) -> Request:
    return Request(SIMS, query={"national_id": national_id}, national_id=national_id)


def schedule() -> Request:
    return Request(SCHEDULE)


def create_fee(body: dict[str, Any], key: str) -> Request:
    return Request(FEES, "POST", body=body, idempotency_key=key,
                   national_id=str(body["national_id"]))  # fmt: skip


def pay(fee_id: str, body: dict[str, Any], key: str, national_id: str) -> Request:
    return Request(FEES, "POST", path=(fee_id, "payment"), body=body, idempotency_key=key,
                   national_id=national_id)  # fmt: skip


def receipt(receipt_number: str) -> Request:
    return Request(RECEIPTS, path=(receipt_number,))


def refund(receipt_number: str, reason: str, key: str, national_id: str | None) -> Request:
    return Request(RECEIPTS, "POST", path=(receipt_number, "refund"),
                   body={"reason": reason}, idempotency_key=key,
                   national_id=national_id)  # fmt: skip


def certificate(body: Any) -> dict[str, Any]:
    """A certificate of residence: its number, dates, signed document, and the person."""
    shown = pick(body, CERTIFICATE)
    return {**shown, **person(body)} if shown else {}
