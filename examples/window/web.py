"""The app's frame: the factory, typed app state, sessions, CSRF, security headers, pages.

- Every response gets the security headers (:func:`_security_headers`): a CSP without inline
  script or style and with ``frame-ancestors 'none'``, ``nosniff``, the referrer only to this
  app, and ``Cache-Control: no-store`` on everything but the static files (pages carry
  personal data).
- :func:`_sessions` loads the clerk's session from its signed cookie and refuses every POST
  without the right CSRF token (the session's own, or before sign-in the one bound to the
  sign-in cookie) or from another origin.
- :func:`page` renders a template in the clerk's language with everything templates need.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import aiohttp
import aiohttp_jinja2
import jinja2
from aiohttp import web

from examples.window import records, sessions
from examples.window.config import WindowConfig
from examples.window.db import Database
from examples.window.i18n import N_, Formatter, Language, choose, load_languages
from examples.window.refusals import Problem
from examples.window.sessions import Session, Signer
from examples.window.xroad import ConsumerClient

SESSION_COOKIE: Final = "window_session"
SIGN_IN_COOKIE: Final = "window_sign_in"
LANG_COOKIE: Final = "window_lang"

CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}

CONFIG: Final = web.AppKey("config", WindowConfig)
Clock = Callable[[], float]
CLOCK: Final[web.AppKey[Clock]] = web.AppKey("clock")
DB: Final = web.AppKey("db", Database)
SIGNER: Final = web.AppKey("signer", Signer)
LANGUAGES: Final = web.AppKey("languages", dict[str, Language])
CONSUMER: Final = web.AppKey("consumer", ConsumerClient)
SESSION: Final[web.RequestKey[Session | None]] = web.RequestKey("window.session")
LANG: Final[web.RequestKey[str]] = web.RequestKey("window.lang")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(config: WindowConfig, *, clock: Callable[[], float] = time.time) -> web.Application:
    """The window app; its database and HTTP client open and close with it."""
    from examples.window import views_auth, views_counter

    app = web.Application(middlewares=[_sessions], client_max_size=config.max_form_bytes)
    app[CONFIG] = config
    app[CLOCK] = clock
    app[LANGUAGES] = load_languages()
    app[SIGNER] = Signer(sessions.load_key(config.key_path))
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("examples.window", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    env.policies["json.dumps_kwargs"] = {"ensure_ascii": False}
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_consumer)
    app.on_response_prepare.append(_security_headers)
    app.router.add_static("/static", Path(str(resources.files("examples.window") / "static")))
    views_auth.add_routes(app.router)
    views_counter.setup(app)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    db = await Database.open(config.db_path)
    now = app[CLOCK]()
    await db.run(sessions.purge, now, config.session_idle_seconds, config.session_max_seconds)
    await db.run(records.purge_documents, now - config.keep_documents_seconds)
    app[DB] = db
    yield
    await db.close()


async def _consumer(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    db = app[DB]

    async def record(clerk: str, exchange: records.ExchangeRecord) -> None:
        await db.run(records.add_exchange, clerk, exchange)

    async with aiohttp.ClientSession() as http:
        app[CONSUMER] = ConsumerClient(
            http,
            config.consumer_url,
            client=config.client,
            purpose=config.purpose,
            record=record,
            timeout=config.exchange_timeout_seconds,
            clock=app[CLOCK],
            services=config.services,
        )
        yield


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(_HEADERS)
    if request.app[CONFIG].secure_cookies:
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "public, max-age=3600"
    else:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"


@web.middleware
async def _sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    app = request.app
    request[LANG] = choose(
        request.cookies.get(LANG_COOKIE),
        request.headers.get("Accept-Language", ""),
        app[LANGUAGES],
    )
    request[SESSION] = await _load_session(request)
    if request.method not in ("GET", "HEAD") and not await _csrf_ok(request):
        return await page(
            request, "expired.html", {"title": N_("This form has expired")}, status=403
        )
    return await handler(request)


async def _load_session(request: web.Request) -> Session | None:
    app = request.app
    cookie = request.cookies.get(SESSION_COOKIE)
    token = app[SIGNER].unsign("session", cookie) if cookie else None
    if token is None:
        return None
    config = app[CONFIG]
    return await app[DB].run(
        sessions.find,
        sessions.token_hash(token),
        app[CLOCK](),
        config.session_idle_seconds,
        config.session_max_seconds,
    )


async def _csrf_ok(request: web.Request) -> bool:
    """(1) same origin when the browser says where the form came from, (2) the form's token
    is the session's, or before sign-in the tag of the sign-in cookie's nonce."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return False
    form = await request.post()
    sent = form.get("csrf")
    if not isinstance(sent, str):
        return False
    session: Session | None = request[SESSION]
    if session is not None:
        return _same(sent, session.csrf)
    nonce = request.cookies.get(SIGN_IN_COOKIE)
    if request.path != "/sign-in" or not nonce:
        return False
    return _same(sent, request.app[SIGNER].tag("sign-in", nonce))


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


def clerk_required(handler: Handler) -> Handler:
    """A page for signed-in clerks only; anyone else is sent to sign in."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        if request[SESSION] is None:
            return redirect("/sign-in")
        return await handler(request)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def redirect(location: str) -> web.Response:
    """303 See Other to a page of this app (after a form, the browser GETs it)."""
    return web.Response(status=303, headers={"Location": location})


def session_of(request: web.Request) -> Session:
    session: Session | None = request[SESSION]
    assert session is not None
    return session


def language_of(request: web.Request) -> Language:
    return request.app[LANGUAGES][request[LANG]]


def now(request: web.Request) -> float:
    return request.app[CLOCK]()


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.app[CONFIG].secure_cookies,
    )


async def flash(
    request: web.Request, *, problem: Problem | None = None, notice: str | None = None
) -> None:
    """A message for the next page this clerk sees (after a redirect)."""
    session = session_of(request)
    value = {"problem": asdict(problem) if problem else None, "notice": notice}
    await request.app[DB].run(sessions.set_flash, session.token_hash, value)


async def page(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    """Render ``template`` for this request's clerk and language (and show a pending flash)."""
    app = request.app
    language = language_of(request)
    session: Session | None = request[SESSION]
    shown: dict[str, Any] = {"problem": None, "notice": None}
    if session is not None and session.flash:
        await app[DB].run(sessions.set_flash, session.token_hash, None)
        shown.update(session.flash)
        if shown["problem"]:
            shown["problem"] = Problem(**shown["problem"])
    languages = app[LANGUAGES]
    return aiohttp_jinja2.render_template(
        template,
        request,
        {
            **shown,
            "_": language.gettext,
            "lang": language,
            "languages": [languages[c] for c in languages if c != language.code],
            "fmt": Formatter(language, ZoneInfo(app[CONFIG].timezone)),
            "clerk": session.username if session else None,
            "csrf": session.csrf if session else None,
            "here": request.path_qs,
            **context,
        },
        status=status,
    )


async def run_blocking(fn: Callable[..., Any], *args: Any) -> Any:
    """CPU-heavy work (password hashing) off the event loop."""
    return await asyncio.to_thread(fn, *args)
