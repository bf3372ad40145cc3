"""A payment at the window is never taken twice, even when the answer is lost on the way back.

Between the window and the post office's security server sits a real TCP relay that, once armed,
passes a payment request on and then drops the connection instead of relaying the answer: the
payment was made, the window did not hear of it. Finance here is a small stand-in service behind
its own real security server (the ministry's own service comes with issue 15's Finance adapter),
keeping the contract's idempotency rule: the same ``Idempotency-Key`` again gets the first
answer with 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from examples.window import services
from examples.window.clerk import ClerkSession
from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from tests.integration.conftest import Net
from tests.integration.support import launch, serving
from tests.integration.window_support import PASSWORD, add_clerks, running_window

pytestmark = pytest.mark.asyncio(loop_scope="session")

MEMBER = parse_member("PS/GOV/MOFW")
PAYMENTS = parse_subsystem("PS/GOV/MOFW/payments")
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
"""


@dataclass
class Finance:
    """The contract's fees and payments, in memory: what was charged, which keys were seen."""

    answers: dict[str, tuple[bytes, Any]] = field(default_factory=dict)
    fees: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/schedule", self.schedule)
        app.router.add_post("/fees", self.create)
        app.router.add_post("/fees/{fee_id}/payment", self.pay)
        return app

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


@dataclass
class Relay:
    """A TCP relay to ``upstream``; armed, it passes the next payment request on and then drops
    that connection instead of relaying the answer."""

    upstream: tuple[str, int]
    armed: bool = False
    cut: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        dropping = asyncio.Event()

        async def forward() -> None:
            while data := await reader.read(65536):
                if self.armed and b"POST " in data and b"/payment" in data:
                    self.armed, self.cut = False, self.cut + 1
                    dropping.set()
                up_writer.write(data)
                await up_writer.drain()

        async def back() -> None:
            while data := await up_reader.read(65536):
                if dropping.is_set():
                    return  # the answer is lost
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.create_task(forward()), asyncio.create_task(back())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            w.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            server.close()
            await server.wait_closed()


async def _finance(net: Net, url: str) -> None:
    with net.registry() as reg:
        reg.add_member(MEMBER, "Finance (window payment tests)")
    await launch(
        net, "mofw", SecurityServerId(*MEMBER.parts, "ss1"), clients=[PAYMENTS],
        services=[(PAYMENTS.service(code), f"{url}/{code}") for code in ("schedule", "fees")],
        policy=POLICY,
    )  # fmt: skip


ROUTED = {
    services.SCHEDULE: "PS/GOV/MOFW/payments/schedule",
    services.FEES: "PS/GOV/MOFW/payments/fees",
}


async def test_a_payment_whose_answer_was_lost_is_retried_with_its_key_and_taken_once(
    net: Net, tmp_path: Path
) -> None:
    finance = Finance()
    add_clerks(tmp_path, "amal")
    consumer = ("127.0.0.1", net.servers["palpost"].consumer_port)
    relay = Relay(consumer)
    async with serving(finance.app()) as finance_url, relay.running() as relay_url:
        await _finance(net, finance_url)
        async with (
            running_window(relay_url, tmp_path, services=ROUTED) as url,
            ClerkSession(url) as clerk,
        ):
            await clerk.sign_in("amal", PASSWORD)
            await clerk.look_up(NID)
            page = await clerk.on_citizen_page(
                "/citizen/fees", {"service": "residence-certificate"}
            )
            (fee_id,) = finance.fees
            assert fee_id in page.html and "₪25.00" in page.html
            pay_form = next(a for a in page.tree().xpath("//form/@action") if a.endswith("/pay"))
            relay.armed = True
            receipt = await clerk.submit(page, pay_form, {"method": "cash"})
            # the first answer was lost; the window sent the same payment again, same key
            assert relay.cut == 1
            assert len(finance.payments) == 1
            assert finance.keys[-2] == finance.keys[-1]
            assert "MOF-2026-000001" in receipt.html and "Print the receipt" in receipt.html
            assert finance.payments[0]["collected_by"] == "amal"
            # pressing Pay again on the old page sends nothing: the operation is done
            again = await clerk.submit(page, pay_form, {"method": "cash"})
            assert again.url == receipt.url and len(finance.keys) == 3
            rows = [r for r in (await clerk.history()).history() if "fees" in r["service"]]
            payment_rows = rows[:2]
            assert [r["outcome"] for r in payment_rows] == [
                "200",
                "Window.SecurityServerUnreachable",
            ]
            assert payment_rows[0]["message_id"] != payment_rows[1]["message_id"]
