"""Paying a fee and printing the receipt in a real browser (Debian's headless Chromium, through
Playwright's async API in the suite's event loop), against the shared federation's real security
servers, Interior's test registry and Finance's payments adapter behind its own security server
(``window_support``).

Skipped only when ``/usr/bin/chromium`` is absent (``.ci/run`` installs it).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.integration.conftest import Net
from tests.integration.window_support import (
    PASSWORD,
    ROUTED,
    add_clerks,
    ministries_of,
    running_window,
)

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (apt-get install chromium chromium-driver; "
        ".ci/run does it)",
    ),
]


async def test_pay_a_fee_and_print_the_receipt(net: Net, tmp_path: Path, screenshots: Path) -> None:
    from playwright.async_api import async_playwright

    ministries = await ministries_of(net)
    add_clerks(tmp_path, "amal.haddad")
    async with (
        running_window(net.url("palpost", ""), tmp_path, services=ROUTED) as url,
        async_playwright() as p,
    ):
        with tempfile.TemporaryDirectory() as profile:
            browser = await p.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=FLAGS,
                viewport={"width": 1000, "height": 800}, locale="en-GB",
            )  # fmt: skip
            try:
                page = await browser.new_page()
                await page.goto(url + "/sign-in")
                await page.get_by_label("Username").fill("amal.haddad")
                await page.get_by_label("Password").fill(PASSWORD)
                await page.get_by_role("button", name="Sign in").click()
                await page.get_by_label("National ID").fill("123456782")
                await page.get_by_role("button", name="Look up").click()
                await page.wait_for_url("**/citizen")
                await page.get_by_label("Service to pay for").select_option("residence-certificate")
                await page.get_by_role("button", name="Create the fee").click()
                await page.get_by_label("Card", exact=True).check()
                await page.get_by_label("Card reference (from the card terminal)").fill("TRM-0042")
                await page.get_by_role("button", name="Pay ₪10.00").click()
                await page.wait_for_url("**/documents/*")
                ((number, _),) = ministries.receipts_of(ministries.last_fee())
                assert await page.get_by_role("heading", level=1).inner_text() == "Receipt"
                body = await page.locator("article").inner_text()
                assert number in body and "₪10.00" in body and "Card" in body
                assert "Certificate of residence" in body
                # the Print button calls the browser's print (window.js; no inline script)
                await page.evaluate("window.print = () => { window.printed = true; }")
                await page.get_by_role("button", name="Print the receipt").click()
                assert await page.evaluate("window.printed === true")
                # printed, the page is the receipt alone: no navigation, buttons or forms
                await page.emulate_media(media="print")
                assert not await page.locator("header").is_visible()
                assert not await page.get_by_role("button", name="Refund").is_visible()
                assert await page.locator("article").is_visible()
                await page.screenshot(path=str(screenshots / "window-receipt-print.png"))
                pdf = await page.pdf(format="A4")
                assert pdf.startswith(b"%PDF")
            finally:
                await browser.close()
