"""Finance's payment services (``PS/GOV/MOF/payments``), on :mod:`adapters.sdk`.

Three services of the subsystem, each a path prefix of this adapter:

- ``schedule``: ``GET /schedule``, the fees Finance collects;
- ``fees``: ``POST /fees`` (a fee for a service and a citizen), ``GET /fees/{fee_id}``,
  ``POST /fees/{fee_id}/payment`` (cash, or card with the terminal's reference): the signed
  receipt;
- ``receipts``: ``GET /receipts/{receipt_number}`` (with its refunds),
  ``POST /receipts/{receipt_number}/refund``: a signed refund.

Creating operations take an ``Idempotency-Key`` (required): the same request again gets the
same answer with status 200 and changes nothing (:mod:`adapters.sdk.idempotency`). Payments and
refunds are recorded under the ``X-Road-UserId`` (the clerk). Receipts and refunds are signed
documents (:mod:`exchange.trust.documents`) with Finance's document key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from aiohttp import web

from adapters.payments.model import Fee, Receipt, ReceiptRecord, Refund, ScheduledFee
from adapters.payments.store import Actor, PaymentStore
from adapters.population.generator import valid_national_id
from adapters.sdk import Adapter, BadRequest, Context, Reply, param
from adapters.sdk.idempotency import idempotent
from exchange.trust.documents import DocumentSigner

_UUID: Final = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_RECEIPT: Final = "^MOF-[0-9]{4}-[0-9]{6}$"
_CARD_REFERENCE: Final = "^[A-Za-z0-9-]{4,64}$"
_REPLAYED: Final = {200: "A retry with the same Idempotency-Key: the answer given the first time."}
_IDEMPOTENCY: Final = {
    400: "Bad input, or no Idempotency-Key (`idempotency_key_required`).",
    404: "No such fee or receipt of this client (`not_found`).",
    422: "The Idempotency-Key was used for another request (`idempotency_key_reused`).",
}


def _national_id() -> str:
    return param(  # type: ignore[no-any-return]
        check=valid_national_id,
        message="a national ID is nine digits whose last is a Luhn check digit",
        error="invalid_national_id",
        pattern="^[0-9]{9}$",
    )


@dataclass(frozen=True, slots=True)
class NewFee:
    service: str = param(pattern="^[a-z0-9-]{1,64}$", description="A service of the schedule.")
    national_id: str = _national_id()


@dataclass(frozen=True, slots=True)
class FeeQuery:
    fee_id: str = param(pattern=_UUID)


@dataclass(frozen=True, slots=True)
class Payment:
    fee_id: str = param(pattern=_UUID)
    method: Literal["cash", "card"] = param(description="How the citizen paid at the counter.")
    card_reference: str | None = param(
        None,
        pattern=_CARD_REFERENCE,
        description="The card terminal's approval reference (never the card number).",
    )

    def __post_init__(self) -> None:
        if self.method == "card" and self.card_reference is None:
            raise ValueError("a card payment needs the terminal's card_reference")
        if self.method == "cash" and self.card_reference is not None:
            raise ValueError("a cash payment has no card_reference")


@dataclass(frozen=True, slots=True)
class ReceiptQuery:
    receipt_number: str = param(pattern=_RECEIPT)


@dataclass(frozen=True, slots=True)
class NewRefund:
    receipt_number: str = param(pattern=_RECEIPT)
    reason: str = param(pattern=r"\S", max_length=500, description="Why the money goes back.")
    amount: decimal.Decimal | None = param(
        None, description='How much (default: all that was not refunded yet), e.g. "10.00".'
    )


def looks_like_card_number(text: str) -> bool:
    """13 to 19 digits (dashes aside) passing the Luhn check: a payment card number (ISO/IEC
    7812), which Finance must never receive or store."""
    digits = text.replace("-", "")
    if not re.fullmatch(r"[0-9]{13,19}", digits):
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _actor(ctx: Context) -> Actor:
    return Actor(ctx.client or "", ctx.user_id, ctx.message_id)


def create_adapter(
    db_path: Path | str,
    signer: DocumentSigner,
    *,
    time_zone: str = "Asia/Hebron",
) -> Adapter:
    """Finance's payment services over the SQLite file ``db_path`` (see
    :mod:`adapters.payments.store`), signing receipts and refunds with ``signer``."""
    adapter = Adapter(
        "Payments",
        description="The Ministry of Finance's fees: created for a service and a citizen, "
        "paid at a counter (cash or card), receipted and refunded, each receipt and refund a "
        "document signed by Finance.",
    )
    store = adapter.resource(lambda: PaymentStore(Path(db_path), time_zone=time_zone),
                             lambda _: None)  # fmt: skip

    def sign(typ: str, claims: dict[str, Any], now: dt.datetime) -> str:
        return signer.sign(typ, claims, now)

    @adapter.operation(rest="GET /schedule")
    def get_schedule() -> list[ScheduledFee]:
        """The services Finance collects a fee for, and the fees."""
        return store.value.schedule()

    @adapter.operation(rest="POST /fees", status=201, success=_REPLAYED, responses=_IDEMPOTENCY)
    def create_fee(new: NewFee, ctx: Context) -> Reply[Fee]:
        """A fee due from a citizen for a service of the schedule."""
        idem = idempotent(ctx, "create_fee", dataclasses.asdict(new), required=True)
        status, fee = store.value.create_fee(_actor(ctx), new.service, new.national_id, idem)
        return Reply(fee, status)

    @adapter.operation(rest="GET /fees/{fee_id}", responses={404: "No such fee (`not_found`)."})
    def get_fee(query: FeeQuery, ctx: Context) -> Fee:
        """A fee this client created, due or paid."""
        return store.value.fee(ctx.client or "", query.fee_id)

    @adapter.operation(
        rest="POST /fees/{fee_id}/payment",
        status=201,
        success=_REPLAYED,
        responses={**_IDEMPOTENCY, 409: "The fee is paid already (`fee_already_paid`)."},
    )
    def pay_fee(payment: Payment, ctx: Context) -> Reply[Receipt]:
        """Record that the citizen paid a due fee at the counter; the signed receipt."""
        if payment.card_reference is not None and looks_like_card_number(payment.card_reference):
            raise BadRequest(
                "that is a card number: give the terminal's approval reference instead",
                code="card_number_refused",
            )
        idem = idempotent(ctx, "pay_fee", dataclasses.asdict(payment), required=True)
        status, receipt = store.value.pay(
            _actor(ctx), payment.fee_id, payment.method, payment.card_reference, idem, sign
        )
        return Reply(receipt, status)  # type: ignore[arg-type]

    @adapter.operation(rest="GET /receipts/{receipt_number}", responses={404: "No such receipt."})
    def get_receipt(query: ReceiptQuery, ctx: Context) -> ReceiptRecord:
        """A receipt this client was given, with the refunds made against it."""
        return store.value.receipt(ctx.client or "", query.receipt_number)

    @adapter.operation(
        rest="POST /receipts/{receipt_number}/refund",
        status=201,
        success=_REPLAYED,
        responses={
            **_IDEMPOTENCY,
            409: "More than remains refundable (`refund_exceeds_paid`), or nothing remains "
            "(`already_refunded`).",
        },
    )
    def refund(new: NewRefund, ctx: Context) -> Reply[Refund]:
        """Give money back against a receipt: its own record and signed document."""
        amount = None if new.amount is None else str(new.amount)
        normalised = None if new.amount is None else str(new.amount.normalize())
        request = {"receipt_number": new.receipt_number, "reason": new.reason, "amount": normalised}
        idem = idempotent(ctx, "refund", request, required=True)
        status, refund = store.value.refund(
            _actor(ctx), new.receipt_number, amount, new.reason, idem, sign
        )
        return Reply(refund, status)  # type: ignore[arg-type]

    return adapter


def create_app(db_path: Path | str, signer: DocumentSigner) -> web.Application:
    return create_adapter(db_path, signer).app()
