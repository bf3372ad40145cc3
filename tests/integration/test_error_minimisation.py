"""Field-restricted grants cover every answer of the service, not only its 2xx ones.

A service may put a record into an error body (a 409 with the conflicting record, a problem
document naming the person, an HTML error page with a stack trace). Before, the provider
filtered 2xx JSON bodies only and released any other body whole, so a client whose grant
releases only ``national_id`` could read more through an error. Now a non-2xx JSON body keeps
its granted fields and the scalar error members (``error``, ``message``, ``type``, ``title``,
``detail``, ``status``, ``code``), any other non-2xx body is withheld; status and headers stay.
A grant without ``fields`` still gets every body as the service sent it.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from exchange.identifiers import parse_security_server, parse_subsystem
from exchange.server.core import SecurityServer
from tests.integration.conftest import HEALTH, MOI, WINDOW, Net
from tests.integration.support import assert_serving, launch, logged, new_id, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBSYSTEM = parse_subsystem(f"{MOI}/error-bodies")
SERVICE = f"/r1/{SUBSYSTEM}/errors"
SECRET = "Amal Haddad, born 1984-03-02"

CONFLICT = {
    "error": "conflict",
    "message": "a person with this national ID is registered already",
    "national_id": "408857175",
    "existing": {"name_latin": SECRET, "national_id": "408857175"},
    "detail": {"name_latin": SECRET},
}
PROBLEM = {
    "type": "https://errors.example/not-found",
    "title": "not found",
    "status": 404,
    "name_latin": SECRET,
}
LISTED = [{"national_id": "408857175", "name_latin": SECRET}]


async def _conflict(request: web.Request) -> web.Response:
    return web.json_response(CONFLICT, status=409)


async def _problem(request: web.Request) -> web.Response:
    return web.Response(
        body=orjson.dumps(PROBLEM), status=404, content_type="application/problem+json"
    )


async def _listed(request: web.Request) -> web.Response:
    return web.json_response(LISTED, status=400)


async def _html(request: web.Request) -> web.Response:
    page = f"<html><body>Traceback: lookup of {SECRET} failed</body></html>"
    return web.Response(text=page, status=500, content_type="text/html")


async def _malformed(request: web.Request) -> web.Response:
    return web.Response(
        body=b'{"error": "x", "name_latin": "' + SECRET.encode() + b'"',
        status=422,
        content_type="application/json",
    )


async def _redirect(request: web.Request) -> web.Response:
    return web.Response(
        text=f"moved: {SECRET}", status=302, headers={"Location": "http://127.0.0.1:1/moved"}
    )


def _backend() -> web.Application:
    app = web.Application()
    for path, handler in (
        ("/conflict", _conflict),
        ("/problem", _problem),
        ("/listed", _listed),
        ("/html", _html),
        ("/malformed", _malformed),
        ("/redirect", _redirect),
    ):
        app.router.add_get(path, handler)
    return app


POLICY = f"""
provider = "PS/GOV/MOI"

[[grant]]
id = "window-national-id-only"
client = "{WINDOW}"
service = "{SUBSYSTEM}/errors"
methods = ["GET"]
fields = ["national_id"]

[[grant]]
id = "health-everything"
client = "{HEALTH}"
service = "{SUBSYSTEM}/errors"
methods = ["GET"]
"""


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def provider(net: Net) -> AsyncIterator[SecurityServer]:
    """A MOI server whose service answers errors that carry personal data."""
    async with serving(_backend()) as url:
        yield await launch(
            net,
            "moi-error-bodies",
            parse_security_server(f"{MOI}/ss-error-bodies"),
            clients=[SUBSYSTEM],
            policy=POLICY,
            extra={"services": [{"id": f"{SUBSYSTEM}/errors", "url": url}]},
        )


async def _window(net: Net, path: str) -> tuple[int, dict[str, str], bytes, str]:
    """The post-office window's call, redirects not followed (as the provider does not)."""
    assert net.session is not None
    mid = new_id("error-body")
    async with net.session.get(
        net.url("palpost", f"{SERVICE}{path}"),
        headers={"X-Road-Client": str(WINDOW), "X-Road-Id": mid},
        allow_redirects=False,
    ) as response:
        return response.status, dict(response.headers), await response.read(), mid


@pytest.mark.parametrize(
    ("path", "status", "expected", "released"),
    [
        pytest.param(
            "/conflict",
            409,
            {
                "error": "conflict",
                "message": "a person with this national ID is registered already",
                "national_id": "408857175",
            },
            ["error", "message", "national_id"],
            id="json-error-with-a-record",
        ),
        pytest.param(
            "/problem",
            404,
            {"type": "https://errors.example/not-found", "title": "not found", "status": 404},
            ["status", "title", "type"],
            id="problem-details",
        ),
        pytest.param(
            "/listed", 400, [{"national_id": "408857175"}], ["national_id"], id="json-list"
        ),
    ],
)
async def test_a_json_error_body_keeps_only_granted_fields_and_error_members(
    net: Net,
    provider: SecurityServer,
    path: str,
    status: int,
    expected: object,
    released: list[str],
) -> None:
    got_status, _, body, mid = await _window(net, path)
    assert got_status == status
    assert orjson.loads(body) == expected
    assert SECRET.encode() not in body
    record = logged(provider, mid, "provider")
    assert record.entry["released_fields"] == released
    assert SECRET.encode() not in base64.b64decode(record.entry["response_body"])
    consumer = logged(net.servers["palpost"], mid, "consumer")
    assert SECRET not in orjson.dumps(consumer.entry).decode()


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/html", 500, id="html-error-page"),
        pytest.param("/malformed", 422, id="malformed-json-error"),
        pytest.param("/redirect", 302, id="redirect-with-a-body"),
    ],
)
async def test_any_other_error_body_is_withheld(
    net: Net, provider: SecurityServer, path: str, status: int
) -> None:
    got_status, headers, body, mid = await _window(net, path)
    assert (got_status, body) == (status, b"")
    assert SECRET not in str(headers)
    if status == 302:
        assert headers["Location"] == "http://127.0.0.1:1/moved"
    record = logged(provider, mid, "provider")
    assert record.entry["released_fields"] == []
    assert not base64.b64decode(record.entry["response_body"] or "")
    await assert_serving(net)


@pytest.mark.parametrize("path", ["/conflict", "/problem", "/html"])
async def test_a_grant_without_fields_gets_the_error_as_sent(
    net: Net, provider: SecurityServer, path: str
) -> None:
    mid = new_id("error-body-full")
    status, _, body = await net.call(
        "moh", f"{SERVICE}{path}", client=str(HEALTH), headers={"X-Road-Id": mid}
    )
    assert status in (409, 404, 500)
    assert SECRET.encode() in body
    assert logged(provider, mid, "provider").entry["released_fields"] is None
