"""The post office's window in the example federation: its clerk, its process, one session.

At set-up the demo makes a clerk account with a fresh random password, as the post office's
operator would (``python -m examples.window add-clerk --password-stdin``); the account is
written into ``endpoints.json`` for a newcomer to sign in with. At run time the window app
(:mod:`examples.window`) serves on 127.0.0.1 against the post office's consumer port, its only
way out. ``exchange demo`` then runs one clerk's session through the app's HTTP interface, as a
browser would: sign in, look a citizen up, create the fee of a certificate of residence and pay
it in cash; each step names what the clerk saw, and the session's exchanges are in the logs the
demo verifies.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from exchange.demo.processes import ChildFailed

CLERK: Final = "clerk-biddu"
"""The demo clerk's username, also the X-Road user id of the clerk's exchanges."""
_RECEIPT: Final = re.compile(r"MOF-[0-9]{4}-[0-9]{6}")


@dataclass
class WindowSite:
    """The window's state directory, its clerk, and (once it serves) its URL."""

    state_dir: Path
    username: str
    password: str
    url: str = ""

    def command(self, consumer_url: str) -> list[str]:
        """``python -m`` arguments that serve the window on a free port of 127.0.0.1."""
        where = ["--state-dir", str(self.state_dir), "--host", "127.0.0.1", "--port", "0"]
        return ["examples.window", "serve", "--consumer-url", consumer_url, *where]

    def endpoints(self) -> dict[str, object]:
        return {"url": self.url, "clerk": {"username": self.username, "password": self.password}}


def build_window(state_dir: Path, username: str = CLERK) -> WindowSite:
    """The window's state directory with one clerk account (a fresh random password)."""
    password = secrets.token_urlsafe(18)
    state_dir.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(
        [sys.executable, "-m", "examples.window", "add-clerk", "--state-dir", str(state_dir),
         "--username", username, "--password-stdin"],
        input=password + "\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if made.returncode != 0:
        raise ChildFailed(f"the window's clerk could not be made: {made.stderr.strip()}")
    return WindowSite(state_dir, username, password)


@dataclass(frozen=True, slots=True)
class SessionStep:
    """One thing the clerk did in the window, and what the page showed."""

    what: str
    ok: bool
    detail: str


async def clerk_session(site: WindowSite, national_id: str) -> list[SessionStep]:
    """Sign in, look ``national_id`` up, create and pay a fee; stops at the first failure."""
    from examples.window.clerk import ClerkSession, Page

    steps: list[SessionStep] = []

    def seen(what: str, page: Page, ok: bool, detail: str) -> bool:
        alerts = page.alerts()
        steps.append(SessionStep(what, ok and not alerts, "; ".join(alerts) or detail))
        return steps[-1].ok

    async with ClerkSession(site.url) as clerk:
        page = await clerk.sign_in(site.username, site.password)
        if not seen(f"sign in as {site.username}", page, page.status == 200, "signed in"):
            return steps
        page = await clerk.look_up(national_id)
        shown = "the citizen's page shows Interior's answer"
        if not seen(f"look up citizen {national_id} (Interior)", page,
                    national_id in page.html, shown):  # fmt: skip
            return steps
        page = await clerk.on_citizen_page("/citizen/fees", {"service": "residence-certificate"})
        pay = [str(a) for a in page.tree().xpath("//form/@action") if str(a).endswith("/pay")]
        if not seen("create the fee of a certificate of residence (Finance)", page, bool(pay),
                    "the fee is due"):  # fmt: skip
            return steps
        page = await clerk.submit(page, pay[0], {"method": "cash"})
        receipt = _RECEIPT.search(page.html)
        number = receipt.group(0) if receipt is not None else "none shown"
        if not seen("pay it in cash (Finance)", page, receipt is not None, f"receipt {number}"):
            return steps
        history = await clerk.history()
        rows = history.history()
        seen("the clerk's history of the day", history, bool(rows),
             f"{len(rows)} exchanges, each with its message id")  # fmt: skip
    return steps
