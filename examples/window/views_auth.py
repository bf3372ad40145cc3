"""Signing in and out, and choosing the language.

Sign-in steps: (1) the account and the address are not locked by earlier failures, (2) the
password verifies (an unknown clerk costs the same time), (3) on failure both counters grow,
(4) on success the account's counter is cleared and a new session is made: a session id is
never carried over from before sign-in.
"""

from __future__ import annotations

import math
import secrets
from typing import Final

from aiohttp import web

from examples.window import accounts, sessions
from examples.window.i18n import N_
from examples.window.refusals import Problem
from examples.window.web import (
    CONFIG,
    DB,
    LANG_COOKIE,
    LANGUAGES,
    SESSION,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SIGNER,
    now,
    page,
    redirect,
    run_blocking,
    session_of,
    set_cookie,
)

_WRONG: Final = Problem(N_("Wrong username or password."), "Window.SignInFailed")
_LOCKED: Final = "Window.SignInLocked"


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", home)
    router.add_get("/sign-in", sign_in_form)
    router.add_post("/sign-in", sign_in)
    router.add_post("/sign-out", sign_out)
    router.add_get("/lang/{code}", switch_language)


async def home(request: web.Request) -> web.StreamResponse:
    return redirect("/find" if request[SESSION] else "/sign-in")


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    if request[SESSION] is not None:
        return redirect("/find")
    return await _sign_in_page(request, None, "", status=200)


async def _sign_in_page(
    request: web.Request, problem: Problem | None, username: str, *, status: int,
    minutes: int | None = None,
) -> web.Response:  # fmt: skip
    nonce = secrets.token_urlsafe(24)
    response = await page(
        request,
        "sign_in.html",
        {
            "title": N_("Sign in"),
            "sign_in_csrf": request.app[SIGNER].tag("sign-in", nonce),
            "username": username,
            "problem": problem,
            "minutes": minutes,
        },
        status=status,
    )
    set_cookie(request, response, SIGN_IN_COOKIE, nonce)
    return response


async def sign_in(request: web.Request) -> web.StreamResponse:
    app = request.app
    config, db = app[CONFIG], app[DB]
    form = await request.post()
    username = str(form.get("username", "")).strip().lower()[:64]
    password = str(form.get("password", ""))
    keys = [f"account:{username}", f"address:{request.remote}"]
    # (1) neither the account nor the address is locked
    until = await db.run(accounts.locked_until, keys, now(request))
    if until:
        minutes = max(1, math.ceil((until - now(request)) / 60))
        locked = Problem(N_("Too many failed sign-ins. Please wait before trying again."), _LOCKED)
        return await _sign_in_page(request, locked, username, status=429, minutes=minutes)
    # (2) the password verifies, in the same time for an unknown clerk
    stored = await db.run(accounts.stored_hash, username)
    if not await run_blocking(accounts.verify_password, stored, password):
        # (3) both counters grow
        await db.run(accounts.record_failure, keys[0], config.per_account, now(request))
        await db.run(accounts.record_failure, keys[1], config.per_address, now(request))
        return await _sign_in_page(request, _WRONG, username, status=401)
    # (4) a fresh session
    await db.run(accounts.clear_failures, keys[0])
    token = await db.run(sessions.create, username, now(request))
    response = redirect("/find")
    set_cookie(request, response, SESSION_COOKIE, app[SIGNER].sign("session", token))
    response.del_cookie(SIGN_IN_COOKIE, path="/")
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    session = request[SESSION]
    if session is not None:
        await request.app[DB].run(sessions.revoke, session_of(request).token_hash)
    response = redirect("/sign-in")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def switch_language(request: web.Request) -> web.StreamResponse:
    """``/lang/ar?next=/citizen``: remember the choice, go back to a page of this app only."""
    code = request.match_info["code"]
    if code not in request.app[LANGUAGES]:
        raise web.HTTPNotFound()
    target = request.query.get("next", "/")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = "/"
    response = redirect(target)
    set_cookie(request, response, LANG_COOKIE, code)
    return response
