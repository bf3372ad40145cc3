"""A clerk's session through the window's HTTP interface, for scripts, the demo and tests.

It does what a browser does: keeps the cookies, reads each form's CSRF token and operation key
from the page, posts the form, follows the redirect. Pages come back as text; :func:`alerts`
and :func:`field` read what the clerk would read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import lxml.html


@dataclass(frozen=True, slots=True)
class Page:
    status: int
    url: str
    html: str
    headers: dict[str, str]

    def tree(self) -> Any:
        return lxml.html.fromstring(self.html)

    def alerts(self) -> list[str]:
        """The text of every ``role="alert"`` element."""
        return [" ".join(e.text_content().split()) for e in self.tree().xpath('//*[@role="alert"]')]

    def form(self, action: str) -> dict[str, str]:
        """The hidden fields (CSRF token, operation key) of the first form posting to
        ``action``."""
        forms = self.tree().xpath(f'//form[@action="{action}"]')
        if not forms:
            raise LookupError(f"no form posting to {action} on {self.url}")
        return {
            str(i.get("name")): str(i.get("value", ""))
            for i in forms[0].xpath('.//input[@type="hidden"]')
        }

    def history(self) -> list[dict[str, str]]:
        """The rows of the history page: time, service, national_id, outcome, message_id."""
        names = ("time", "service", "national_id", "outcome", "message_id")
        return [
            dict(zip(names, (" ".join(td.text_content().split()) for td in row), strict=True))
            for row in self.tree().xpath("//table/tbody/tr")
        ]

    def links(self, prefix: str) -> list[str]:
        return [str(h) for h in self.tree().xpath("//a/@href") if str(h).startswith(prefix)]


class ClerkSession:
    """``async with ClerkSession(url) as clerk: await clerk.sign_in(user, password)``."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.last: Page | None = None

    async def __aenter__(self) -> ClerkSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.close()

    async def get(self, path: str) -> Page:
        return await self._request("GET", path)

    async def post(
        self, path: str, fields: dict[str, str], headers: dict[str, str] | None = None
    ) -> Page:
        """Post ``fields`` as they are (no token added), following the redirect."""
        return await self._request("POST", path, fields, headers)

    async def submit(self, page: Page, action: str, fields: dict[str, str] | None = None) -> Page:
        """Post the form of ``page`` that posts to ``action``, with ``fields`` filled in."""
        return await self.post(action, {**page.form(action), **(fields or {})})

    async def _request(
        self, method: str, path: str, data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Page:  # fmt: skip
        async with self._http.request(
            method, self.base_url + path, data=data, headers=headers
        ) as resp:
            self.last = Page(resp.status, str(resp.url), await resp.text(), dict(resp.headers))
        return self.last

    def cookie(self, name: str) -> str:
        """The value of one of the app's cookies this session holds."""
        for morsel in self._http.cookie_jar:
            if morsel.key == name:
                return morsel.value
        raise LookupError(name)

    async def sign_in(self, username: str, password: str) -> Page:
        page = await self.get("/sign-in")
        return await self.submit(page, "/sign-in", {"username": username, "password": password})

    async def look_up(self, national_id: str) -> Page:
        page = await self.get("/find")
        return await self.submit(page, "/find", {"national_id": national_id})

    async def on_citizen_page(self, action: str, fields: dict[str, str] | None = None) -> Page:
        """Press the button of the citizen page's form posting to ``action``."""
        return await self.submit(await self.get("/citizen"), action, fields)

    async def history(self) -> Page:
        return await self.get("/history")

    async def sign_out(self) -> Page:
        return await self.submit(await self.get("/find"), "/sign-out")
