"""The ministries' services at the window; a payment is never taken twice, even when the answer
is lost on the way back.

Between the window and the post office's security server sits a real TCP relay that, once armed,
passes a payment request on and then drops the connection instead of relaying the answer: the
payment was made, the window did not hear of it. The services here are small stand-ins behind
their own real security server (``window_support``; the ministries' own adapters come with issue
15's services), keeping the contract's rules: the same ``Idempotency-Key`` again gets the first
answer with 200.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from examples.window.clerk import ClerkSession
from tests.integration.conftest import Net
from tests.integration.window_support import (
    DEPENDANT,
    PASSWORD,
    ROUTED,
    add_clerks,
    finance_of,
    running_window,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

NID = "123456782"


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


async def test_a_payment_whose_answer_was_lost_is_retried_with_its_key_and_taken_once(
    net: Net, tmp_path: Path
) -> None:
    finance = await finance_of(net)
    add_clerks(tmp_path, "amal")
    consumer = ("127.0.0.1", net.servers["palpost"].consumer_port)
    relay = Relay(consumer)
    async with (
        relay.running() as relay_url,
        running_window(relay_url, tmp_path, services=ROUTED) as url,
        ClerkSession(url) as clerk,
    ):
        await clerk.sign_in("amal", PASSWORD)
        await clerk.look_up(NID)
        page = await clerk.on_citizen_page("/citizen/fees", {"service": "residence-certificate"})
        fee_id = list(finance.fees)[-1]
        assert fee_id in page.html and "₪25.00" in page.html
        pay_form = next(a for a in page.tree().xpath("//form/@action") if a.endswith("/pay"))
        relay.armed = True
        receipt = await clerk.submit(page, pay_form, {"method": "cash"})
        # the first answer was lost; the window sent the same payment again, same key
        assert relay.cut == 1
        assert [p["fee_id"] for p in finance.payments].count(fee_id) == 1
        assert finance.keys[-2] == finance.keys[-1]
        (paid,) = [p for p in finance.payments if p["fee_id"] == fee_id]
        assert paid["receipt_number"] in receipt.html and "Print the receipt" in receipt.html
        assert paid["collected_by"] == "amal"
        keys = len(finance.keys)
        # pressing Pay again on the old page sends nothing: the operation is done
        again = await clerk.submit(page, pay_form, {"method": "cash"})
        assert again.url == receipt.url and len(finance.keys) == keys
        rows = [r for r in (await clerk.history()).history() if "fees" in r["service"]]
        payment_rows = rows[:2]
        assert [r["outcome"] for r in payment_rows] == [
            "200",
            "Window.SecurityServerUnreachable",
        ]
        assert payment_rows[0]["message_id"] != payment_rows[1]["message_id"]


async def test_the_other_ministries_services_at_the_counter(net: Net, tmp_path: Path) -> None:
    """A certificate to print, the insurance status without the dependants the grant withholds,
    a SIM registered once even when its button is pressed twice, the SIMs listed."""
    ministries = await finance_of(net)
    add_clerks(tmp_path, "amal")
    async with (
        running_window(net.url("palpost", ""), tmp_path, services=ROUTED) as url,
        ClerkSession(url) as clerk,
    ):
        await clerk.sign_in("amal", PASSWORD)
        await clerk.look_up(NID)
        page = await clerk.on_citizen_page("/citizen/certificate")
        certificate = ministries.certificates[-1]
        assert "/documents/" in page.url and certificate["certificate_number"] in page.html
        assert "Print the certificate" in page.html and certificate["document"] in page.html
        page = await clerk.on_citizen_page("/citizen/insurance")
        assert "Government insurance" in page.html and "30/06/2027" in page.html
        assert DEPENDANT["national_id"] not in page.html and DEPENDANT["name"] not in page.html
        before = len(ministries.sims)
        form = await clerk.get("/citizen")
        fields = {"msisdn": "0599123456", "operator": "Jawwal"}
        await clerk.submit(form, "/citizen/sims", fields)
        await clerk.submit(form, "/citizen/sims", fields)  # the same form, sent twice
        assert len(ministries.sims) == before + 1
        assert ministries.sims[-1]["registered_by"] == "amal"
        page = await clerk.on_citizen_page("/citizen/sims/list")
        table = page.tree().xpath('//section[@id="telecom"]//table')[0].text_content()
        assert "0599123456" in table and "Jawwal" in table
