"""The unified window against the real security servers of the shared federation.

The window app runs in this process; the post office's security server (``palpost``) is its
only way out. Interior's test policy releases ``national_id``, ``name_en``,
``address.locality`` and ``children[].national_id`` to the window, and nothing for the other
ministries' services exists in this federation, so their refusals are real ones.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from examples.window.clerk import ClerkSession, Page
from examples.window.web import CSP
from tests.integration.conftest import PERSON, Net
from tests.integration.support import logged
from tests.integration.window_support import PASSWORD, Clock, add_clerks, running_window

pytestmark = pytest.mark.asyncio(loop_scope="session")

NID = "123456782"
UNKNOWN = "000000000"  # the test backend answers 404 for it
UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _message_ids(page: Page, service: str = "") -> list[str]:
    return [row["message_id"] for row in page.history() if service in row["service"]]


async def test_lookup_shows_only_what_interiors_policy_releases(net: Net, tmp_path: Path) -> None:
    add_clerks(tmp_path, "amal")
    async with running_window(net.url("palpost", ""), tmp_path) as url, ClerkSession(url) as clerk:
        page = await clerk.sign_in("amal", PASSWORD)
        assert page.status == 200 and page.url.endswith("/find"), page.alerts()
        page = await clerk.look_up(NID)
        assert page.url.endswith("/citizen"), page.alerts()
        assert "Amal Haddad" in page.html
        address = page.tree().xpath('//dt[text()="Address"]/following-sibling::dd[1]')[0]
        assert address.text_content().strip() == "Biddu"
        for withheld in (PERSON["name_ar"]["full"], "Main", "1990-04-01", "200000004", "married"):
            assert withheld not in page.html, withheld


async def test_every_exchange_names_the_clerk_purpose_and_window(net: Net, tmp_path: Path) -> None:
    add_clerks(tmp_path, "amal")
    async with running_window(net.url("palpost", ""), tmp_path) as url, ClerkSession(url) as clerk:
        await clerk.sign_in("amal", PASSWORD)
        await clerk.look_up(NID)
        history = await clerk.history()
    (message_id,) = _message_ids(history, "persons")
    assert UUID7.fullmatch(message_id), message_id
    assert "exchange audit export --config server.toml --id MESSAGE-ID" in history.html
    for server, side in (("palpost", "consumer"), ("moi", "provider")):
        entry = logged(net.servers[server], message_id, side).entry
        assert entry["user_id"] == "amal"
        assert entry["purpose"] == "citizen-service"
        assert entry["client"] == "PS/GOV/PALPOST/unified-window"


async def test_refusals_are_alerts_with_the_code_for_the_help_desk(
    net: Net, tmp_path: Path
) -> None:
    add_clerks(tmp_path, "amal")
    async with running_window(net.url("palpost", ""), tmp_path) as url, ClerkSession(url) as clerk:
        await clerk.sign_in("amal", PASSWORD)
        page = await clerk.look_up(UNKNOWN)
        assert page.status == 404
        (alert,) = page.alerts()
        assert "No citizen with this national ID." in alert and "HTTP 404" in alert
        page = await clerk.look_up("123456789")  # fails the Luhn check: nothing is sent
        assert "A national ID is nine digits" in page.alerts()[0]
        await clerk.look_up(NID)
        # Health's insurance service is not in this federation: a real refusal by the exchange
        page = await clerk.on_citizen_page("/citizen/insurance")
        (alert,) = [a for a in page.alerts() if "UnknownMember" in a]
        assert "Server.ClientProxy.UnknownMember" in alert, alert
        assert "cannot be found in the exchange" in alert
        history = await clerk.history()
        services = [row["service"] for row in history.history()]
        assert sum("persons" in s for s in services) == 2  # the Luhn failure was never sent
        assert sum("health-insurance" in s for s in services) == 1


async def test_a_clerk_sees_only_their_own_history_and_documents(net: Net, tmp_path: Path) -> None:
    add_clerks(tmp_path, "amal", "basel")
    async with (
        running_window(net.url("palpost", ""), tmp_path) as url,
        ClerkSession(url) as amal,
        ClerkSession(url) as basel,
    ):
        await amal.sign_in("amal", PASSWORD)
        await basel.sign_in("basel", PASSWORD)
        await amal.look_up(NID)
        amal_ids = _message_ids(await amal.history())
        basel_page = await basel.history()
        assert amal_ids and not basel_page.history()
        assert NID not in basel_page.html
        # basel has no citizen: the citizen page of amal's citizen is not his
        assert (await basel.get("/citizen")).url.endswith("/find")


async def test_sessions_expire_and_sign_out_revokes_them(net: Net, tmp_path: Path) -> None:
    add_clerks(tmp_path, "amal")
    clock = Clock()
    async with running_window(net.url("palpost", ""), tmp_path, clock=clock) as url:
        async with ClerkSession(url) as clerk:
            await clerk.sign_in("amal", PASSWORD)
            assert (await clerk.get("/history")).url.endswith("/history")
            clock.offset += 15 * 60 + 1  # idle longer than the idle limit
            assert (await clerk.get("/history")).url.endswith("/sign-in")
        async with ClerkSession(url) as clerk:
            await clerk.sign_in("amal", PASSWORD)
            stolen = clerk.cookie("window_session")
            await clerk.sign_out()
        async with (
            aiohttp.ClientSession(cookies={"window_session": stolen}) as thief,
            thief.get(url + "/history", allow_redirects=False) as resp,
        ):
            assert resp.status == 303 and resp.headers["Location"] == "/sign-in"


async def test_forms_without_the_sessions_csrf_token_do_nothing(net: Net, tmp_path: Path) -> None:
    add_clerks(tmp_path, "amal", "basel")
    async with (
        running_window(net.url("palpost", ""), tmp_path) as url,
        ClerkSession(url) as amal,
        ClerkSession(url) as basel,
    ):
        await amal.sign_in("amal", PASSWORD)
        await basel.sign_in("basel", PASSWORD)
        basel_token = (await basel.get("/find")).form("/find")["csrf"]
        for fields, headers in (
            ({"national_id": NID}, {}),
            ({"national_id": NID, "csrf": basel_token}, {}),
            ({"national_id": NID, "csrf": ""}, {}),
        ):
            page = await amal.post("/find", fields, headers)
            assert page.status == 403 and "This form has expired" in page.html
        token = (await amal.get("/find")).form("/find")["csrf"]
        page = await amal.post("/find", {"national_id": NID, "csrf": token},
                                   {"Origin": "http://evil.example"})  # fmt: skip
        assert page.status == 403
        assert not (await amal.history()).history()


async def test_repeated_failed_sign_ins_are_slowed(net: Net, tmp_path: Path) -> None:
    add_clerks(tmp_path, "amal", "basel")
    clock = Clock()
    async with running_window(net.url("palpost", ""), tmp_path, clock=clock) as url:
        async with ClerkSession(url) as clerk:
            for _ in range(5):
                page = await clerk.sign_in("amal", "wrong password, guessed")
                assert page.status == 401 and "Wrong username or password." in page.alerts()[0]
            page = await clerk.sign_in("amal", PASSWORD)  # the right one, but too late
            assert page.status == 429
            assert "Too many failed sign-ins" in page.alerts()[0]
            assert (await clerk.sign_in("basel", PASSWORD)).url.endswith("/find")
        clock.offset += 31
        async with ClerkSession(url) as clerk:
            assert (await clerk.sign_in("amal", PASSWORD)).url.endswith("/find")


async def test_failures_from_one_address_lock_every_account_there(net: Net, tmp_path: Path) -> None:
    add_clerks(tmp_path, "amal")
    async with running_window(net.url("palpost", ""), tmp_path) as url, ClerkSession(url) as clerk:
        for n in range(20):
            page = await clerk.sign_in(f"guess{n}", "wrong password, guessed")
            assert page.status == 401
        assert (await clerk.sign_in("amal", PASSWORD)).status == 429


async def test_pages_carry_the_security_headers(net: Net, tmp_path: Path) -> None:
    add_clerks(tmp_path, "amal")
    async with running_window(net.url("palpost", ""), tmp_path) as url, ClerkSession(url) as clerk:
        await clerk.sign_in("amal", PASSWORD)
        await clerk.look_up(NID)
        for path in ("/sign-in", "/citizen", "/history", "/no-such-page"):
            headers = (await clerk.get(path)).headers
            assert headers["Content-Security-Policy"] == CSP
            assert "'unsafe-inline'" not in CSP and "frame-ancestors 'none'" in CSP
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "same-origin"
            assert headers["Cache-Control"] == "no-store"

    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        running_window(net.url("palpost", ""), tmp_path) as url,
    ):
        async with http.get(url + "/sign-in") as resp:
            token = Page(resp.status, str(resp.url), await resp.text(), {})
        fields = {**token.form("/sign-in"), "username": "amal", "password": PASSWORD}
        async with http.post(url + "/sign-in", data=fields, allow_redirects=False) as resp:
            assert resp.status == 303
            cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
