"""Finance's fees, payments and refunds in one SQLite file, each a durable, numbered record.

- Amounts are integer minor units with their currency (:mod:`adapters.payments.money`).
- Every write is one ``BEGIN IMMEDIATE`` transaction with ``synchronous = FULL`` (WAL): the
  idempotency key's record (:mod:`adapters.sdk.idempotency`), the receipt and its number commit
  together or not at all, and SQLite's write lock serialises concurrent payments, also between
  processes.
- Receipt and refund numbers run without gaps per year (``MOF-2026-000001``,
  ``MOF-RF-2026-000001``), the year being Finance's local one: a counter row advanced in the
  transaction that writes the record, so a failed payment uses no number.
- The schema holds its own invariants as a last line of defence: a fee is paid once (``UNIQUE``),
  receipts and refunds are never updated or deleted, refunds never exceed what was paid, and a
  paid fee is never due again (triggers).
- Fees and receipts belong to the client subsystem that created them: another client asking for
  one is told it does not exist (receipt numbers are sequential, hence guessable).

Each call opens its own connection; the adapter runs these methods in its thread pool.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import orjson
import uuid_utils

from adapters.payments.model import Fee, ReceiptRecord, ScheduledFee
from adapters.payments.money import Money, MoneyError
from adapters.sdk import BadRequest, Conflict, NotFound
from adapters.sdk.idempotency import SCHEMA as IDEMPOTENCY_SCHEMA
from adapters.sdk.idempotency import Idempotent, once
from adapters.sdk.numbers import COUNTERS_SCHEMA, next_number
from exchange.errors import ConfigurationError

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS schedule (
    service TEXT PRIMARY KEY,
    name_en TEXT NOT NULL,
    name_ar TEXT NOT NULL,
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    currency TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fees (
    fee_id TEXT PRIMARY KEY,
    client TEXT NOT NULL,
    service TEXT NOT NULL REFERENCES schedule (service),
    national_id TEXT NOT NULL,
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    currency TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('due', 'paid')),
    created_at TEXT NOT NULL,
    created_by TEXT
);
CREATE TABLE IF NOT EXISTS receipts (
    receipt_number TEXT PRIMARY KEY,
    year INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    fee_id TEXT NOT NULL UNIQUE REFERENCES fees (fee_id),
    client TEXT NOT NULL,
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    currency TEXT NOT NULL,
    method TEXT NOT NULL CHECK (method IN ('cash', 'card')),
    paid_at TEXT NOT NULL,
    collected_by TEXT NOT NULL,
    message_id TEXT,
    answer TEXT NOT NULL,
    UNIQUE (year, seq)
);
CREATE TABLE IF NOT EXISTS refunds (
    refund_number TEXT PRIMARY KEY,
    year INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    receipt_number TEXT NOT NULL REFERENCES receipts (receipt_number),
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    refunded_at TEXT NOT NULL,
    refunded_by TEXT NOT NULL,
    message_id TEXT,
    answer TEXT NOT NULL,
    UNIQUE (year, seq)
);
CREATE INDEX IF NOT EXISTS refunds_of_receipt ON refunds (receipt_number);
CREATE TRIGGER IF NOT EXISTS receipts_are_kept BEFORE UPDATE ON receipts
BEGIN SELECT RAISE(ABORT, 'receipts are never changed'); END;
CREATE TRIGGER IF NOT EXISTS receipts_are_not_deleted BEFORE DELETE ON receipts
BEGIN SELECT RAISE(ABORT, 'receipts are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS refunds_are_kept BEFORE UPDATE ON refunds
BEGIN SELECT RAISE(ABORT, 'refunds are never changed'); END;
CREATE TRIGGER IF NOT EXISTS refunds_are_not_deleted BEFORE DELETE ON refunds
BEGIN SELECT RAISE(ABORT, 'refunds are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS fees_only_get_paid BEFORE UPDATE ON fees
WHEN NOT (OLD.status = 'due' AND NEW.status = 'paid' AND NEW.fee_id = OLD.fee_id
          AND NEW.amount_minor = OLD.amount_minor AND NEW.currency = OLD.currency
          AND NEW.client = OLD.client AND NEW.national_id = OLD.national_id)
BEGIN SELECT RAISE(ABORT, 'a fee only changes from due to paid'); END;
CREATE TRIGGER IF NOT EXISTS refunds_within_paid BEFORE INSERT ON refunds
WHEN NEW.amount_minor + (SELECT coalesce(sum(amount_minor), 0) FROM refunds
                         WHERE receipt_number = NEW.receipt_number)
     > (SELECT amount_minor FROM receipts WHERE receipt_number = NEW.receipt_number)
BEGIN SELECT RAISE(ABORT, 'refunds exceed the amount paid'); END;
"""

DEFAULT_SCHEDULE: Final = (
    ("residence-certificate", "Certificate of residence", "شهادة إقامة", "10.00", "ILS"),
    ("sim-registration", "SIM card registration", "تسجيل شريحة اتصال", "5.00", "ILS"),
    ("health-insurance-card", "Health insurance card", "بطاقة التأمين الصحي", "25.00", "ILS"),
    ("birth-certificate", "Copy of a birth certificate", "صورة عن شهادة ميلاد", "15.00", "ILS"),
    ("id-card-replacement", "Replacement identity card", "بدل فاقد بطاقة هوية", "50.00", "ILS"),
)
"""(service, English name, Arabic name, amount, currency) of the example federation's fees."""

FINANCE_TIME_ZONE: Final = "Asia/Hebron"
RECEIPT_SERIES: Final = "MOF"
REFUND_SERIES: Final = "MOF-RF"

Sign = Callable[[str, dict[str, Any], dt.datetime], str]
"""``sign(document type, claims, now)``: the compact JWS of a document (see
:class:`exchange.trust.documents.DocumentSigner`)."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, as the provider security server forwarded it."""

    client: str
    user_id: str | None
    message_id: str | None

    def clerk(self) -> str:
        """The user id a payment or refund is recorded under (the grant requires one)."""
        if not self.user_id:
            raise BadRequest(
                "payments and refunds are recorded under the person who handled them: send "
                "X-Road-UserId",
                code="user_id_required",
            )
        return self.user_id


def utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def create_store(
    path: Path, schedule: Sequence[tuple[str, str, str, str, str]] = DEFAULT_SCHEDULE
) -> Path:
    """Create Finance's payments file at ``path`` with a fee ``schedule`` (if it has none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path)
    try:
        conn.executescript(SCHEMA + COUNTERS_SCHEMA + IDEMPOTENCY_SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        if conn.execute("SELECT count(*) FROM schedule").fetchone()[0] == 0:
            for service, name_en, name_ar, amount, currency in schedule:
                minor = Money.parse(amount, currency).minor
                conn.execute(
                    "INSERT INTO schedule VALUES (?, ?, ?, ?, ?)",
                    (service, name_en, name_ar, minor, currency),
                )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return path


class PaymentStore:
    """Fees, receipts and refunds; every method is one transaction on its own connection."""

    def __init__(
        self,
        path: Path,
        *,
        time_zone: str = FINANCE_TIME_ZONE,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        try:
            self.zone = ZoneInfo(time_zone)
        except (ValueError, LookupError) as exc:
            raise ConfigurationError(f"unknown time zone {time_zone!r} ({exc})") from None
        if not self.path.is_file():
            raise ConfigurationError(
                f"no payments file at {self.path} "
                "(create it with: python -m adapters.payments init --db FILE)"
            )
        with self._read() as conn:
            try:
                conn.execute("SELECT count(*) FROM schedule").fetchone()
                conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()
            except sqlite3.DatabaseError as exc:
                raise ConfigurationError(f"{self.path} holds no payments ({exc})") from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = _connect(self.path)
        try:
            yield conn
        finally:
            conn.close()

    def _once(
        self, idem: Idempotent | None, work: Callable[[sqlite3.Connection, dt.datetime], Any]
    ) -> tuple[int, Any]:
        with self._read() as conn:
            return once(conn, idem, self.clock, work)

    # --- fees ---------------------------------------------------------------------------------

    def schedule(self) -> list[ScheduledFee]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT service, name_en, name_ar, amount_minor, currency FROM schedule"
                " ORDER BY service"
            ).fetchall()
        return [
            {"service": s, "name_en": en, "name_ar": ar,
             "amount": Money(minor, cur).text(), "currency": cur}
            for s, en, ar, minor, cur in rows
        ]  # fmt: skip

    def create_fee(
        self, actor: Actor, service: str, national_id: str, idem: Idempotent | None
    ) -> tuple[int, Fee]:
        """A new fee of ``service`` (from the schedule) for ``national_id``."""

        def work(conn: sqlite3.Connection, now: dt.datetime) -> Fee:
            row = conn.execute(
                "SELECT amount_minor, currency FROM schedule WHERE service = ?", (service,)
            ).fetchone()
            if row is None:
                raise BadRequest(f"Finance collects no fee for {service!r}", code="unknown_fee")
            fee: Fee = {
                "fee_id": str(uuid_utils.uuid7()),
                "service": service,
                "national_id": national_id,
                "amount": Money(row[0], row[1]).text(),
                "currency": row[1],
                "status": "due",
                "created_at": utc_text(now),
                "receipt_number": None,
            }
            conn.execute(
                "INSERT INTO fees VALUES (?, ?, ?, ?, ?, ?, 'due', ?, ?)",
                (fee["fee_id"], actor.client, service, national_id, row[0], row[1],
                 fee["created_at"], actor.user_id),
            )  # fmt: skip
            return fee

        return self._once(idem, work)  # type: ignore[return-value]

    def fee(self, client: str, fee_id: str) -> Fee:
        with self._read() as conn:
            row = conn.execute(
                "SELECT f.service, f.national_id, f.amount_minor, f.currency, f.status,"
                " f.created_at, r.receipt_number FROM fees AS f"
                " LEFT JOIN receipts AS r ON r.fee_id = f.fee_id"
                " WHERE f.fee_id = ? AND f.client = ?",
                (fee_id, client),
            ).fetchone()
        if row is None:
            raise NotFound(f"no fee {fee_id}")
        service, national_id, minor, currency, status, created_at, receipt = row
        return {"fee_id": fee_id, "service": service, "national_id": national_id,
                "amount": Money(minor, currency).text(), "currency": currency,
                "status": status, "created_at": created_at, "receipt_number": receipt}  # fmt: skip

    # --- payments -----------------------------------------------------------------------------

    def pay(
        self,
        actor: Actor,
        fee_id: str,
        method: Literal["cash", "card"],
        card_reference: str | None,
        idem: Idempotent | None,
        sign: Sign,
    ) -> tuple[int, dict[str, Any]]:
        """Record the payment of a due fee: (201, the signed receipt), or (200, the receipt this
        key already paid for). A paid fee is 409 ``fee_already_paid``."""
        clerk = actor.clerk()

        def work(conn: sqlite3.Connection, now: dt.datetime) -> dict[str, Any]:
            row = conn.execute(
                "SELECT service, national_id, amount_minor, currency, status FROM fees"
                " WHERE fee_id = ? AND client = ?",
                (fee_id, actor.client),
            ).fetchone()
            if row is None:
                raise NotFound(f"no fee {fee_id}")
            service, national_id, minor, currency, status = row
            if status != "due":
                raise Conflict(f"fee {fee_id} is paid already", code="fee_already_paid")
            year = now.astimezone(self.zone).year
            seq = next_number(conn, RECEIPT_SERIES, year)
            receipt: dict[str, Any] = {
                "receipt_number": f"{RECEIPT_SERIES}-{year}-{seq:06d}",
                "fee_id": fee_id,
                "service": service,
                "national_id": national_id,
                "amount": Money(minor, currency).text(),
                "currency": currency,
                "method": method,
                "card_reference": card_reference,
                "paid_at": utc_text(now),
                "collected_by": clerk,
            }
            claims = {**receipt, "client": actor.client, "exchange_id": actor.message_id}
            receipt["document"] = sign("exchange-receipt+jwt", claims, now)
            answer = orjson.dumps(receipt).decode()
            conn.execute(
                "INSERT INTO receipts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (receipt["receipt_number"], year, seq, fee_id, actor.client, minor, currency,
                 method, receipt["paid_at"], clerk, actor.message_id, answer),
            )  # fmt: skip
            conn.execute("UPDATE fees SET status = 'paid' WHERE fee_id = ?", (fee_id,))
            return receipt

        return self._once(idem, work)

    def receipt(self, client: str, receipt_number: str) -> ReceiptRecord:
        """A receipt of this client with its refunds, oldest first."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT answer FROM receipts WHERE receipt_number = ? AND client = ?",
                (receipt_number, client),
            ).fetchone()
            if row is None:
                raise NotFound(f"no receipt {receipt_number}")
            refunds = conn.execute(
                "SELECT answer FROM refunds WHERE receipt_number = ? ORDER BY year, seq",
                (receipt_number,),
            ).fetchall()
        record = orjson.loads(row[0])
        record["refunds"] = [orjson.loads(answer) for (answer,) in refunds]
        return record  # type: ignore[no-any-return]

    # --- refunds ------------------------------------------------------------------------------

    def refund(
        self,
        actor: Actor,
        receipt_number: str,
        amount: str | None,
        reason: str,
        idem: Idempotent | None,
        sign: Sign,
    ) -> tuple[int, dict[str, Any]]:
        """Give back ``amount`` (default: all that was not refunded yet) of a receipt."""
        clerk = actor.clerk()

        def work(conn: sqlite3.Connection, now: dt.datetime) -> dict[str, Any]:
            row = conn.execute(
                "SELECT amount_minor, currency FROM receipts"
                " WHERE receipt_number = ? AND client = ?",
                (receipt_number, actor.client),
            ).fetchone()
            if row is None:
                raise NotFound(f"no receipt {receipt_number}")
            paid = Money(row[0], row[1])
            (refunded,) = conn.execute(
                "SELECT coalesce(sum(amount_minor), 0) FROM refunds WHERE receipt_number = ?",
                (receipt_number,),
            ).fetchone()
            remaining = paid - Money(refunded, paid.currency)
            given = _refund_amount(amount, remaining)
            year = now.astimezone(self.zone).year
            seq = next_number(conn, REFUND_SERIES, year)
            refund: dict[str, Any] = {
                "refund_number": f"{REFUND_SERIES}-{year}-{seq:06d}",
                "receipt_number": receipt_number,
                "amount": given.text(),
                "currency": given.currency,
                "refunded_at": utc_text(now),
                "refunded_by": clerk,
                "reason": reason,
            }
            claims = {**refund, "client": actor.client, "exchange_id": actor.message_id}
            refund["document"] = sign("exchange-refund+jwt", claims, now)
            answer = orjson.dumps(refund).decode()
            conn.execute(
                "INSERT INTO refunds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (refund["refund_number"], year, seq, receipt_number, given.minor,
                 refund["refunded_at"], clerk, actor.message_id, answer),
            )  # fmt: skip
            return refund

        return self._once(idem, work)


def _refund_amount(amount: str | None, remaining: Money) -> Money:
    if remaining.minor == 0:
        raise Conflict("everything paid on this receipt was refunded already",
                       code="already_refunded")  # fmt: skip
    if amount is None:
        return remaining
    try:
        given = Money.parse(amount, remaining.currency)
    except MoneyError as exc:
        raise BadRequest(str(exc), code="invalid_amount") from None
    if given.minor == 0:
        raise BadRequest("a refund gives back more than nothing", code="invalid_amount")
    if given > remaining:
        raise Conflict(
            f"only {remaining} of this receipt can still be refunded, not {given}",
            code="refund_exceeds_paid",
        )
    return given
