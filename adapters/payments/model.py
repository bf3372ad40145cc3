"""What Finance's payment services answer (their OpenAPI schemas).

Amounts are text with exactly the currency's decimals (``"25.00"``), never JSON numbers; times
are UTC ``YYYY-MM-DDTHH:MM:SSZ``. Field names are what access policies' ``fields`` name.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

from adapters.sdk import Schema

Amount = Annotated[
    str,
    Schema(
        name="Amount",
        pattern=r"^[0-9]{1,13}\.[0-9]{2,3}$",
        description="An exact amount with the currency's decimals, as text (never a float).",
        example="25.00",
    ),
]
Currency = Annotated[str, Schema(name="Currency", pattern="^[A-Z]{3}$", example="ILS")]
Timestamp = Annotated[str, Schema(format="date-time", example="2026-12-06T09:30:00Z")]
Jws = Annotated[
    str,
    Schema(
        name="SignedDocument",
        description="Compact JWS (ES256) signed by the Ministry of Finance; x5c holds the "
        "signer's certificate chain. Verify with `exchange audit document verify`.",
    ),
]


class ScheduledFee(TypedDict):
    """A service whose fee Finance collects, and the fee."""

    service: str
    name_en: str
    name_ar: str
    amount: Amount
    currency: Currency


class Fee(TypedDict):
    """A fee owed by a citizen for a service; ``receipt_number`` once it is paid."""

    fee_id: str
    service: str
    national_id: str
    amount: Amount
    currency: Currency
    status: Literal["due", "paid"]
    created_at: Timestamp
    receipt_number: str | None


class Receipt(TypedDict):
    """The payment of a fee, as signed by Finance in ``document``."""

    receipt_number: str
    fee_id: str
    service: str
    national_id: str
    amount: Amount
    currency: Currency
    method: Literal["cash", "card"]
    card_reference: str | None
    paid_at: Timestamp
    collected_by: str
    document: Jws


class Refund(TypedDict):
    """Money given back against a receipt, as signed by Finance in ``document``."""

    refund_number: str
    receipt_number: str
    amount: Amount
    currency: Currency
    refunded_at: Timestamp
    refunded_by: str
    reason: str
    document: Jws


class ReceiptRecord(TypedDict):
    """A receipt as Finance keeps it: the receipt and the refunds made against it."""

    receipt_number: str
    fee_id: str
    service: str
    national_id: str
    amount: Amount
    currency: Currency
    method: Literal["cash", "card"]
    card_reference: str | None
    paid_at: Timestamp
    collected_by: str
    document: Jws
    refunds: list[Refund]
