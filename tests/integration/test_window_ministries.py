"""The ministries' services at the window; a payment is never taken twice, even when the answer
is lost on the way back.

Between the window and the post office's security server sits a real TCP relay that, once armed,
passes a payment request on and then drops the connection instead of relaying the answer: the
payment was made, the window did not hear of it. Finance and Telecom are their real adapters
under their real policies; Health's insurance status and Interior's certificates are small
stand-ins keeping the contract's rules; all behind one real security server of a test member
(``window_support``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from examples.window.clerk import ClerkSession
from exchange.messagelog.query import RecordView, query_records
from tests.integration.conftest import Net
from tests.integration.window_support import (
    DEPENDANT,
    PASSWORD,
    ROUTED,
    add_clerks,
    ministries_of,
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
    ministries = await ministries_of(net)
    add_clerks(tmp_path, "amal")
    relay = Relay(("127.0.0.1", net.servers["palpost"].consumer_port))
    async with (
        relay.running() as relay_url,
        running_window(relay_url, tmp_path, services=ROUTED) as url,
        ClerkSession(url) as clerk,
    ):
        await clerk.sign_in("amal", PASSWORD)
        await clerk.look_up(NID)
        page = await clerk.on_citizen_page("/citizen/fees", {"service": "residence-certificate"})
        fee_id = ministries.last_fee()
        assert fee_id in page.html and "₪10.00" in page.html
        pay_form = next(a for a in page.tree().xpath("//form/@action") if a.endswith("/pay"))
        relay.armed = True
        receipt = await clerk.submit(page, pay_form, {"method": "cash"})
        # the first answer was lost on its way back; the window sent the same payment again
        assert relay.cut == 1
        ((number, collected_by),) = ministries.receipts_of(fee_id)
        assert number in receipt.html and "Print the receipt" in receipt.html
        assert collected_by == "amal"
        # Finance saw two exchanges for this payment: it made the receipt, then answered the
        # repeated key with that receipt (a new key would have been refused: the fee is paid)
        payments = _payment_records(net, fee_id)
        assert [r.entry["http_status"] for r in payments] == [201, 200]
        assert payments[0].message_id != payments[1].message_id
        # pressing Pay again on the old page sends nothing: the operation is done
        again = await clerk.submit(page, pay_form, {"method": "cash"})
        assert again.url == receipt.url and len(_payment_records(net, fee_id)) == 2
        rows = [r for r in (await clerk.history()).history() if "fees" in r["service"]]
        assert [r["outcome"] for r in rows[:2]] == ["200", "Window.SecurityServerUnreachable"]


def _payment_records(net: Net, fee_id: str) -> list[RecordView]:
    found = query_records(
        net.servers["mofw"].config.log_path, service="PS/GOV/MOFW/payments/fees", side="provider"
    )
    return [r for r in found if r.entry["path"] == f"/{fee_id}/payment"]


async def test_the_other_ministries_services_at_the_counter(net: Net, tmp_path: Path) -> None:
    """A certificate to print, the insurance status without the dependants the grant withholds,
    a SIM registered once (Telecom's adapter) even when its form is sent twice, the SIMs listed."""
    ministries = await ministries_of(net)
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
        form = await clerk.get("/citizen")
        fields = {"msisdn": "0599123456", "operator": "Jawwal"}
        first = await clerk.submit(form, "/citizen/sims", fields)
        again = await clerk.submit(form, "/citizen/sims", fields)  # the same form, sent twice
        assert not [a for a in again.alerts() if "done already" in a], again.alerts()
        registered = first.tree().xpath('//section[@id="telecom"]//p[@role="status"]')
        assert len(registered) == 1 and "+970599123456" in registered[0].text_content()
        page = await clerk.on_citizen_page("/citizen/sims/list")
        table = page.tree().xpath('//section[@id="telecom"]//table')[0].text_content()
        assert table.count("+970599123456") == 1 and "Jawwal" in table


async def test_a_receipt_found_by_its_number_and_refunded_once(net: Net, tmp_path: Path) -> None:
    """Finance's real adapter: the receipt comes back by its number, a refund with its reason is
    its own signed record, and the refund form sent twice refunds once."""
    ministries = await ministries_of(net)
    add_clerks(tmp_path, "amal")
    async with (
        running_window(net.url("palpost", ""), tmp_path, services=ROUTED) as url,
        ClerkSession(url) as clerk,
    ):
        await clerk.sign_in("amal", PASSWORD)
        await clerk.look_up(NID)
        page = await clerk.on_citizen_page("/citizen/fees", {"service": "residence-certificate"})
        pay_form = next(a for a in page.tree().xpath("//form/@action") if a.endswith("/pay"))
        await clerk.submit(page, pay_form, {"method": "cash"})
        ((number, _),) = ministries.receipts_of(ministries.last_fee())
        found = await clerk.on_citizen_page("/receipts/find", {"receipt_number": number})
        assert "/documents/" in found.url and number in found.html, found.alerts()
        refund_form = next(a for a in found.tree().xpath("//form/@action") if "refund" in a)
        reason = {"reason": "The citizen paid for the wrong service"}
        refund = await clerk.submit(found, refund_form, reason)
        again = await clerk.submit(found, refund_form, reason)  # the same form, sent twice
        heading = refund.tree().xpath("//h1")[0].text_content()
        assert heading == "Refund" and number in refund.html and "₪10.00" in refund.html
        assert again.url == refund.url and ministries.refunds_of(number) == 1
        assert "The citizen paid for the wrong service" in refund.html
        missing = await clerk.on_citizen_page(
            "/receipts/find", {"receipt_number": "MOF-2026-999999"}
        )
        assert any("No receipt with this number." in a for a in missing.alerts())
