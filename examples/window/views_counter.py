"""The counter: finding a citizen, the four ministries' services, documents, the history.

Reads (a lookup, a search, an insurance status, a SIM list) are one exchange each. Operations
that change something at a ministry (a certificate, a SIM registration, a fee, a payment, a
refund) run through :func:`_operate`: the form carries the key of an open operation, the first
request body sent under that key is kept, and a retry (automatic after an uncertain outcome,
or the clerk pressing the button again) sends that same body with the same
``Idempotency-Key``. A definite refusal closes the operation; success keeps the answer as a
document and redirects to it (so reloading a page never repeats an operation).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from zoneinfo import ZoneInfo

from aiohttp import web

from examples.window import forms, records, services, sessions
from examples.window.db import Database
from examples.window.i18n import N_
from examples.window.refusals import Problem, explain
from examples.window.web import (
    CLOCK,
    CONFIG,
    CONSUMER,
    DB,
    clerk_required,
    flash,
    now,
    page,
    redirect,
    session_of,
)
from examples.window.xroad import Request

SCHEDULE_SECONDS: Final = 600.0
_DOCUMENT_OF: Final = {"payment": "receipt"}
"""The kind of document an operation's answer is kept as, where the two names differ."""
_TITLES: Final = {
    "certificate": N_("Certificate of residence"),
    "receipt": N_("Receipt"),
    "refund": N_("Refund"),
}
_EXPIRED: Final = Problem(N_("This form has expired. Please try again."), "Window.FormExpired")


@dataclass
class Schedule:
    """Finance's fee schedule, fetched through the exchange at most every ten minutes."""

    items: list[dict[str, Any]] = field(default_factory=list)
    fetched_at: float = -SCHEDULE_SECONDS


SCHEDULE: Final = web.AppKey("schedule", Schedule)


def setup(app: web.Application) -> None:
    app[SCHEDULE] = Schedule()
    r = app.router
    r.add_get("/find", clerk_required(find_form))
    r.add_post("/find", clerk_required(find))
    r.add_post("/search", clerk_required(search))
    r.add_get("/citizen", clerk_required(citizen))
    r.add_post("/citizen/next", clerk_required(next_citizen))
    r.add_post("/citizen/certificate", clerk_required(issue_certificate))
    r.add_post("/citizen/insurance", clerk_required(check_insurance))
    r.add_post("/citizen/sims", clerk_required(register_sim))
    r.add_post("/citizen/sims/list", clerk_required(list_sims))
    r.add_post("/citizen/fees", clerk_required(create_fee))
    r.add_post("/fees/{doc}/pay", clerk_required(pay_fee))
    r.add_post("/receipts/find", clerk_required(find_receipt))
    r.add_post("/documents/{doc}/refund", clerk_required(refund))
    r.add_get("/documents/{doc}", clerk_required(show_document))
    r.add_get("/history", clerk_required(history))


# -- finding a citizen ----------------------------------------------------------------------------


async def find_form(request: web.Request) -> web.StreamResponse:
    return await _find_page(request, None, {})


async def _find_page(
    request: web.Request, problem: Problem | None, typed: dict[str, str], *, status: int = 200,
    results: list[dict[str, Any]] | None = None,
) -> web.Response:  # fmt: skip
    return await page(
        request,
        "find.html",
        {"title": N_("Find a citizen"), "problem": problem, "typed": typed, "results": results},
        status=status,
    )


async def find(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    nid = forms.national_id(form.get("national_id"))
    if nid is None:
        bad = Problem(N_("A national ID is nine digits; please check it."), "Window.InvalidInput")
        return await _find_page(request, bad, {"national_id": str(form.get("national_id", ""))},
                                status=400)  # fmt: skip
    answer = await _call(request, services.lookup(nid))
    person = services.person(answer.body) if answer.ok else {}
    if not person:
        problem = (
            Problem(N_("No citizen with this national ID."), "HTTP 404", answer.message_id)
            if answer.status == 404 and answer.error_code is None
            else explain(answer)
        )
        return await _find_page(request, problem, {"national_id": nid}, status=_status(answer))
    await _db(request).run(sessions.set_citizen, session_of(request).token_hash, person)
    return redirect("/citizen")


async def search(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    typed = {"name": str(form.get("name", "")), "date_of_birth": str(form.get("date_of_birth", ""))}
    name = forms.name(typed["name"])
    born = forms.birth_date(typed["date_of_birth"], _today(request))
    if name is None or born is None:
        bad = Problem(N_("Give a name and a date of birth to search."), "Window.InvalidInput")
        return await _find_page(request, bad, typed, status=400)
    answer = await _call(request, services.search(name, born))
    if not answer.ok:
        return await _find_page(request, explain(answer), typed, status=_status(answer))
    return await _find_page(request, None, typed, results=services.persons(answer.body))


async def next_citizen(request: web.Request) -> web.StreamResponse:
    await _db(request).run(sessions.set_citizen, session_of(request).token_hash, None)
    return redirect("/find")


# -- the citizen's page ---------------------------------------------------------------------------


async def citizen(request: web.Request) -> web.StreamResponse:
    person = session_of(request).citizen
    if not person:
        return redirect("/find")
    nid = str(person["national_id"])
    clerk, db = _clerk(request), _db(request)
    docs = await db.run(records.documents_of, clerk, nid, _midnight(request))
    by_kind: dict[str, list[records.Document]] = {}
    for doc in docs:
        by_kind.setdefault(doc.kind, []).append(doc)
    receipts = {d.body.get("fee_id"): d for d in by_kind.get("receipt", [])}
    fees = []
    for fee in by_kind.get("fee", []):
        paid = receipts.get(fee.body.get("fee_id"))
        key = None if paid else await _open(request, "payment", str(fee.body.get("fee_id")))
        fees.append({"doc": fee, "receipt": paid, "key": key})
    schedule, schedule_problem = await _schedule(request)
    return await page(
        request,
        "citizen.html",
        {
            "title": N_("Citizen"),
            "person": person,
            "certificates": by_kind.get("certificate", []),
            "insurance": _latest(by_kind, "insurance"),
            "sims": _latest(by_kind, "sims"),
            "registrations": by_kind.get("sim", []),
            "fees": fees,
            "schedule": schedule,
            "schedule_problem": schedule_problem,
            "operators": services.OPERATORS,
            "keys": {
                "certificate": await _open(request, "certificate", nid),
                "sim": await _open(request, "sim", nid),
                "fee": await _open(request, "fee", nid),
            },
        },
    )


def _latest(by_kind: dict[str, list[records.Document]], kind: str) -> records.Document | None:
    found = by_kind.get(kind)
    return found[-1] if found else None


async def _schedule(request: web.Request) -> tuple[list[dict[str, Any]], Problem | None]:
    cache = request.app[SCHEDULE]
    if now(request) - cache.fetched_at < SCHEDULE_SECONDS:
        return cache.items, None
    answer = await _call(request, services.schedule())
    if not answer.ok:
        return [], explain(answer)
    cache.items = services.listing(answer.body, services.SCHEDULE_ITEM)
    cache.fetched_at = now(request)
    return cache.items, None


# -- Interior, Health, Telecom --------------------------------------------------------------------


async def issue_certificate(request: web.Request) -> web.StreamResponse:
    nid = _served(request)
    if nid is None:
        return redirect("/find")
    result = await _operate(
        request, "certificate", nid, {"national_id": nid},
        lambda body, key: services.residence_certificate(str(body["national_id"]), key),
        services.certificate, nid,
    )  # fmt: skip
    return await _after(request, result, "#interior", show=True)


async def check_insurance(request: web.Request) -> web.StreamResponse:
    nid = _served(request)
    if nid is None:
        return redirect("/find")
    answer = await _call(request, services.insurance(nid))
    if answer.ok:
        await _keep(request, "insurance", nid, services.pick(answer.body, services.INSURED),
                    answer.message_id)  # fmt: skip
    else:
        await flash(
            request, problem=_not_found_or(answer, N_("No insurance record for this citizen."))
        )
    return redirect("/citizen#health")


async def list_sims(request: web.Request) -> web.StreamResponse:
    nid = _served(request)
    if nid is None:
        return redirect("/find")
    answer = await _call(request, services.sims_of(nid))
    if answer.ok:
        items = services.listing(answer.body, services.SIM)
        await _keep(request, "sims", nid, {"items": items}, answer.message_id)
    else:
        await flash(request, problem=explain(answer))
    return redirect("/citizen#telecom")


async def register_sim(request: web.Request) -> web.StreamResponse:
    nid = _served(request)
    if nid is None:
        return redirect("/find")
    form = await request.post()
    msisdn = forms.phone(form.get("msisdn"))
    operator = forms.choice(form.get("operator"), services.OPERATORS)
    if msisdn is None or operator is None:
        bad = Problem(N_("Give the SIM's phone number and its operator."), "Window.InvalidInput")
        await flash(request, problem=bad)
        return redirect("/citizen#telecom")
    result = await _operate(
        request, "sim", nid, {"national_id": nid, "msisdn": msisdn, "operator": operator},
        services.register_sim, lambda body: services.pick(body, services.SIM), nid,
    )  # fmt: skip
    return await _after(request, result, "#telecom")


# -- Finance --------------------------------------------------------------------------------------


async def create_fee(request: web.Request) -> web.StreamResponse:
    nid = _served(request)
    if nid is None:
        return redirect("/find")
    form = await request.post()
    service = forms.reference(form.get("service"))
    if service is None:
        await flash(
            request, problem=Problem(N_("Choose the service to pay for."), "Window.InvalidInput")
        )
        return redirect("/citizen#finance")
    result = await _operate(
        request, "fee", nid, {"service": service, "national_id": nid}, services.create_fee,
        lambda body: services.pick(body, services.FEE), nid,
    )  # fmt: skip
    return await _after(request, result, "#finance")


async def pay_fee(request: web.Request) -> web.StreamResponse:
    fee = await _document(request, "fee")
    form = await request.post()
    method = forms.choice(form.get("method"), ("cash", "card"))
    body: dict[str, Any] = {"method": method}
    if method == "card":
        body["card_reference"] = forms.card_reference(form.get("card_reference"))
    if method is None or body.get("card_reference", "") is None:
        bad = Problem(N_("Choose cash, or card with the card terminal's reference."),
                      "Window.InvalidInput")  # fmt: skip
        await flash(request, problem=bad)
        return redirect("/citizen#finance")
    fee_id, nid = str(fee.body.get("fee_id")), fee.national_id
    result = await _operate(
        request, "payment", fee_id, body,
        lambda sent, key: services.pay(fee_id, sent, key, str(nid)),
        lambda answer: services.pick(answer, services.RECEIPT), nid,
    )  # fmt: skip
    return await _after(request, result, "#finance", show=True)


async def find_receipt(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    number = forms.reference(form.get("receipt_number"))
    if number is None:
        await flash(request, problem=Problem(N_("Give a receipt number."), "Window.InvalidInput"))
        return redirect("/citizen#finance")
    answer = await _call(request, services.receipt(number))
    if not answer.ok:
        await flash(request, problem=_not_found_or(answer, N_("No receipt with this number.")))
        return redirect("/citizen#finance")
    shown = services.pick(answer.body, services.RECEIPT)
    doc = await _keep(request, "receipt", shown.get("national_id"), shown, answer.message_id)
    return redirect(f"/documents/{doc}")


async def refund(request: web.Request) -> web.StreamResponse:
    receipt = await _document(request, "receipt")
    form = await request.post()
    why = forms.reason(form.get("reason"))
    number = str(receipt.body.get("receipt_number"))
    if why is None:
        await flash(request, problem=Problem(N_("Give the reason for the refund."),
                                             "Window.InvalidInput"))  # fmt: skip
        return redirect(f"/documents/{receipt.id}")
    result = await _operate(
        request, "refund", number, {"reason": why},
        lambda sent, key: services.refund(number, str(sent["reason"]), key, receipt.national_id),
        lambda answer: services.pick(answer, services.REFUND), receipt.national_id,
    )  # fmt: skip
    if isinstance(result, Problem):
        await flash(request, problem=result)
        return redirect(f"/documents/{receipt.id}")
    return redirect(f"/documents/{result}")


# -- documents and history ------------------------------------------------------------------------


async def show_document(request: web.Request) -> web.StreamResponse:
    doc = await _db(request).run(records.document, _clerk(request), request.match_info["doc"])
    if doc is None or doc.kind not in _TITLES:
        raise web.HTTPNotFound()
    names = {item.get("service"): item for item in request.app[SCHEDULE].items}
    context: dict[str, Any] = {
        "title": _TITLES[doc.kind],
        "doc": doc,
        "refund_key": None,
        "service": names.get(doc.body.get("service"), {}),
    }
    if doc.kind == "receipt":
        number = str(doc.body.get("receipt_number"))
        context["refund_key"] = await _open(request, "refund", number)
    return await page(request, "document.html", context)


async def history(request: web.Request) -> web.StreamResponse:
    rows = await _db(request).run(records.exchanges_since, _clerk(request), _midnight(request))
    return await page(request, "history.html", {"title": N_("History of the day"), "rows": rows})


# -- helpers --------------------------------------------------------------------------------------


Build = Callable[[dict[str, Any], str], Request]
Shape = Callable[[Any], dict[str, Any]]


async def _operate(
    request: web.Request, kind: str, target: str, body: dict[str, Any], build: Build,
    shape: Shape, national_id: str | None,
) -> str | Problem:  # fmt: skip
    """Run one operation under its key; the new document's id, or the problem to show.

    (1) the form's key is an open operation of this clerk, of this kind, on this target,
    (2) done already: its document, nothing is sent again, (3) the first body sent under the
    key is the one sent (again), (4) retried while the outcome is uncertain, (5) success keeps
    the answer and closes the operation; a definite refusal closes it without a document.
    """
    form = await request.post()
    clerk, db = _clerk(request), _db(request)
    key = str(form.get("op", ""))
    # (1) an open operation of this clerk, kind and target
    op = await db.run(records.operation, clerk, key)
    if op is None or op.kind != kind or op.target != target:
        return _EXPIRED
    # (2) done already
    if op.document_id is not None:
        return op.document_id
    # (3) the first body sent under this key
    sent = await db.run(records.remember_request, clerk, key, body)
    # (4) retried while uncertain, with the same body and key
    retries = request.app[CONFIG].automatic_retries
    answer = await request.app[CONSUMER].call_until_certain(clerk, build(sent, key), retries)
    # (5) kept, or closed
    if answer.ok:
        kept = _DOCUMENT_OF.get(kind, kind)
        doc = await _keep(request, kept, national_id, shape(answer.body), answer.message_id)
        await db.run(records.complete_operation, clerk, key, doc)
        return doc
    if not answer.uncertain:
        await db.run(records.abandon_operation, clerk, key)
    return explain(answer, changes_something=True)


async def _after(
    request: web.Request, result: str | Problem, anchor: str, *, show: bool = False
) -> web.Response:
    if isinstance(result, Problem):
        await flash(request, problem=result)
        return redirect("/citizen" + anchor)
    return redirect(f"/documents/{result}" if show else "/citizen" + anchor)


async def _keep(
    request: web.Request, kind: str, national_id: str | None, body: dict[str, Any],
    message_id: str,
) -> str:  # fmt: skip
    body = {**body, "_message_id": message_id}
    return await _db(request).run(
        records.add_document, _clerk(request), kind, national_id, body, now(request)
    )


async def _document(request: web.Request, kind: str) -> records.Document:
    doc = await _db(request).run(records.document, _clerk(request), request.match_info["doc"])
    if doc is None or doc.kind != kind:
        raise web.HTTPNotFound()
    return doc


async def _open(request: web.Request, kind: str, target: str) -> str:
    return await _db(request).run(
        records.open_operation, _clerk(request), kind, target, now(request)
    )


async def _call(request: web.Request, call: Request) -> Any:
    return await request.app[CONSUMER].call(_clerk(request), call)


def _not_found_or(answer: Any, message: str) -> Problem:
    if answer.status == 404 and answer.error_code is None:
        return Problem(message, "HTTP 404", answer.message_id)
    return explain(answer)


def _status(answer: Any) -> int:
    if answer.status is None or answer.status >= 500:
        return 502
    return int(answer.status) if answer.status >= 400 else 502


def _served(request: web.Request) -> str | None:
    person = session_of(request).citizen
    return str(person["national_id"]) if person else None


def _clerk(request: web.Request) -> str:
    return session_of(request).username


def _db(request: web.Request) -> Database:
    return request.app[DB]


def _today(request: web.Request) -> dt.date:
    zone = ZoneInfo(request.app[CONFIG].timezone)
    return dt.datetime.fromtimestamp(request.app[CLOCK](), zone).date()


def _midnight(request: web.Request) -> float:
    zone = ZoneInfo(request.app[CONFIG].timezone)
    day = _today(request)
    return dt.datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()
