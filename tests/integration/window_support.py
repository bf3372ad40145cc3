"""Running the window app in this process against a real consumer port, with a clerk or two.

The app is the real one (``create_app``) on 127.0.0.1 port 0, its state in a temp dir; its
clock can be moved (``Clock``) so session expiry is tested without waiting.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from examples.window import accounts, services
from examples.window.config import WindowConfig
from examples.window.db import connect
from examples.window.web import create_app
from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from tests.integration.conftest import Net
from tests.integration.support import launch

PASSWORD = "correct horse battery staple"


@dataclass
class Clock:
    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def add_clerks(state_dir: Path, *names: str, password: str = PASSWORD) -> None:
    conn = connect(state_dir / "window.sqlite")
    try:
        for name in names:
            accounts.add_clerk(conn, name, accounts.hash_password(password), time.time())
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def running_window(
    consumer_url: str, state_dir: Path, *, clock: Clock | None = None, **options: object
) -> AsyncIterator[str]:
    """The app serving on 127.0.0.1; yields its base URL."""
    config = WindowConfig(consumer_url=consumer_url, state_dir=state_dir, **options)  # type: ignore[arg-type]
    app = create_app(config, clock=clock or Clock())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# --- the other ministries' services, as stand-ins keeping the contract's rules -------------------
# Finance's fees (idempotent), Health's insurance status, Telecom's SIMs and Interior's
# certificates, behind one real security server of a test member; the window reaches them through
# ``ROUTED`` (WindowConfig.services). Health's answer carries the dependants, which the grant
# does not release: the provider withholds them.
MEMBER = parse_member("PS/GOV/MOFW")
PAYMENTS = parse_subsystem("PS/GOV/MOFW/payments")
OTHERS = parse_subsystem("PS/GOV/MOFW/ministries")
DEPENDANT = {"national_id": "200000004", "name": "Sami Haddad"}
NID = "123456782"
POLICY = """
provider = "PS/GOV/MOFW"
[[grant]]
id = "window-payments"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOFW/payments/schedule"
methods = ["GET"]
paths = ["/"]
purposes = ["citizen-service"]
[[grant]]
id = "window-fees"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOFW/payments/fees"
methods = ["POST"]
paths = ["/", "/*/payment"]
purposes = ["citizen-service"]
[[grant]]
id = "window-insurance"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOFW/ministries/status"
methods = ["GET"]
paths = ["/*"]
fields = ["national_id", "insured", "scheme", "valid_until"]
purposes = ["citizen-service"]
[[grant]]
id = "window-sims"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOFW/ministries/sims"
methods = ["GET", "POST"]
paths = ["/"]
purposes = ["citizen-service"]
[[grant]]
id = "window-certificates"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOFW/ministries/residence-certificates"
methods = ["POST"]
paths = ["/"]
purposes = ["citizen-service"]
"""


@dataclass
class Finance:
    """The contract's fees and payments, in memory: what was charged, which keys were seen."""

    answers: dict[str, tuple[bytes, Any]] = field(default_factory=dict)
    fees: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    sims: list[dict[str, Any]] = field(default_factory=list)
    certificates: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/schedule", self.schedule)
        app.router.add_post("/fees", self.create)
        app.router.add_post("/fees/{fee_id}/payment", self.pay)
        app.router.add_get("/status/{nid}", self.insurance)
        app.router.add_post("/sims", self.register_sim)
        app.router.add_get("/sims", self.list_sims)
        app.router.add_post("/residence-certificates", self.certify)
        return app

    async def insurance(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"national_id": request.match_info["nid"], "insured": True, "scheme": "government",
             "valid_until": "2027-06-30", "dependants": [DEPENDANT]}
        )  # fmt: skip

    async def register_sim(self, request: web.Request) -> web.Response:
        def make(body: dict[str, Any], req: web.Request) -> dict[str, Any]:
            sim = {**body, "registration_id": f"SIM-{len(self.sims) + 1:06d}",
                   "registered_at": "2026-12-06T10:02:00Z",
                   "registered_by": req.headers.get("X-Road-UserId")}  # fmt: skip
            self.sims.append(sim)
            return sim

        return await self._once(request, make)

    async def list_sims(self, request: web.Request) -> web.Response:
        nid = request.query["national_id"]
        return web.json_response([s for s in self.sims if s["national_id"] == nid])

    async def certify(self, request: web.Request) -> web.Response:
        def make(body: dict[str, Any], _: web.Request) -> dict[str, Any]:
            certificate = {
                "certificate_number": f"MOI-RC-2026-{len(self.certificates) + 1:06d}",
                "national_id": body["national_id"],
                "name_ar": {"full": "أمل حداد"},
                "name_en": {"full": "Amal Haddad"},
                "address": {"locality": "Biddu", "governorate": "Jerusalem"},
                "issued_at": "2026-12-06T10:03:00Z",
                "valid_until": "2027-03-06",
                "document": "eyJhbGciOiJFUzI1NiJ9.eyJjIjoxfQ.c2lnbmVk",
            }
            self.certificates.append(certificate)
            return certificate

        return await self._once(request, make)

    async def schedule(self, request: web.Request) -> web.Response:
        item = {"service": "residence-certificate", "name_en": "Certificate of residence",
                "name_ar": "شهادة سكن", "amount": "25.00", "currency": "ILS"}  # fmt: skip
        return web.json_response([item])

    async def _once(self, request: web.Request, make: Any) -> web.Response:
        key, body = request.headers["Idempotency-Key"], await request.read()
        self.keys.append(key)
        if key in self.answers:
            first_body, answer = self.answers[key]
            if first_body != body:
                return web.json_response({"error": "idempotency_key_reused"}, status=422)
            return web.json_response(answer, status=200)
        answer = make(await request.json(), request)
        if "error" in answer:
            return web.json_response(answer, status=409)
        self.answers[key] = (body, answer)
        return web.json_response(answer, status=201)

    async def create(self, request: web.Request) -> web.Response:
        def make(body: dict[str, Any], _: web.Request) -> dict[str, Any]:
            fee = {"fee_id": str(uuid.uuid4()), "service": body["service"],
                   "national_id": body["national_id"], "amount": "25.00", "currency": "ILS",
                   "status": "due", "created_at": "2026-12-06T10:00:00Z"}  # fmt: skip
            self.fees[fee["fee_id"]] = fee
            return fee

        return await self._once(request, make)

    async def pay(self, request: web.Request) -> web.Response:
        def make(body: dict[str, Any], req: web.Request) -> dict[str, Any]:
            fee = self.fees[req.match_info["fee_id"]]
            if fee["status"] == "paid":
                return {"error": "already_paid"}
            fee["status"] = "paid"
            receipt = {
                k: fee[k] for k in ("fee_id", "service", "national_id", "amount", "currency")
            }
            receipt.update(
                receipt_number=f"MOF-2026-{len(self.payments) + 1:06d}",
                method=body["method"],
                paid_at="2026-12-06T10:01:00Z",
                collected_by=req.headers.get("X-Road-UserId"),
                document="eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmVk",
            )
            self.payments.append(receipt)
            return receipt

        return await self._once(request, make)


async def _launch_finance(net: Net, url: str) -> None:
    with net.registry() as reg:
        reg.add_member(MEMBER, "Finance (window payment tests)")
    await launch(
        net, "mofw", SecurityServerId(*MEMBER.parts, "ss1"), clients=[PAYMENTS, OTHERS],
        services=[
            *((PAYMENTS.service(code), f"{url}/{code}") for code in ("schedule", "fees")),
            *((OTHERS.service(code), f"{url}/{code}")
              for code in ("status", "sims", "residence-certificates")),
        ],
        policy=POLICY,
    )  # fmt: skip


ROUTED = {
    services.SCHEDULE: "PS/GOV/MOFW/payments/schedule",
    services.FEES: "PS/GOV/MOFW/payments/fees",
    services.INSURANCE: "PS/GOV/MOFW/ministries/status",
    services.SIMS: "PS/GOV/MOFW/ministries/sims",
    services.RESIDENCE: "PS/GOV/MOFW/ministries/residence-certificates",
}


_FINANCE: dict[int, tuple[Finance, web.AppRunner]] = {}


async def finance_of(net: Net) -> Finance:
    """The stand-in Finance of this federation, started (and its security server launched) once;
    the window reaches it through ``ROUTED``."""
    if id(net) not in _FINANCE:
        finance = Finance()
        runner = web.AppRunner(finance.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        _FINANCE[id(net)] = (finance, runner)
        await _launch_finance(net, f"http://127.0.0.1:{runner.addresses[0][1]}")
    return _FINANCE[id(net)][0]
