"""The provider's backend fails or misbehaves (docs/design.md §4): the exchange layer says so
exactly.

A backend that is down, too slow, speaks garbage, answers too much, or answers something the
grant's field filter cannot read gives ``Server.ServerProxy.ServiceFailed`` (502) or
``...ServiceTimeout`` (504), logged by both security servers, and leaks nothing of what the
backend sent; redirects are handed back, never followed. The provider servers keep serving.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from exchange.demo.processes import free_port
from exchange.identifiers import parse_security_server, parse_subsystem
from exchange.server.core import SecurityServer
from tests.integration.conftest import MOI, WINDOW, Net
from tests.integration.support import (
    MISC,
    TEXT,
    assert_serving,
    assert_xroad_error,
    launch,
    logged,
    new_id,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBSYSTEM = parse_subsystem(f"{MOI}/backend-tests")
BKD = f"/r1/{SUBSYSTEM}"
MAX_RESPONSE = 4096
SECRET = "secret-backend-detail"


async def _chunked_big(request: web.Request) -> web.StreamResponse:
    """A response without Content-Length that grows past the limit while it streams."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    for _ in range(8):
        await resp.write(b" " * 1024)
    await resp.write_eof()
    return resp


async def _bad_json(request: web.Request) -> web.StreamResponse:
    return web.Response(
        body=b'{"national_id": "1", "' + SECRET.encode() + b'": ', content_type="application/json"
    )


async def _hop_headers(request: web.Request) -> web.StreamResponse:
    return web.json_response(
        {"ok": True},
        headers={
            "X-Backend-Header": "kept",
            "Proxy-Authenticate": "Basic realm=backend",
            "Keep-Alive": "timeout=99",
            "Trailer": "X-Checksum",
        },
    )


def _misbehaving_backend() -> web.Application:
    app = web.Application()
    app.router.add_get("/chunked-big", _chunked_big)
    app.router.add_get("/bad-json", _bad_json)
    app.router.add_get("/hop", _hop_headers)
    return app


CODES = ("down", "slow", "echo", "chunked-big", "hop")


def _policy() -> str:
    grants = "".join(
        f"""
[[grant]]
id = "window-{code}"
client = "{WINDOW}"
service = "{SUBSYSTEM}/{code}"
methods = ["*"]
"""
        for code in CODES
    )
    minimised = f"""
[[grant]]
id = "window-bad-json-minimised"
client = "{WINDOW}"
service = "{SUBSYSTEM}/bad-json"
methods = ["GET"]
fields = ["national_id"]
"""
    return 'provider = "PS/GOV/MOI"\n' + grants + minimised


@dataclass
class Provider:
    server: SecurityServer


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def provider(net: Net) -> AsyncIterator[Provider]:
    """MOI's second security server with services that fail in every way, and a small
    response limit."""
    runner = web.AppRunner(_misbehaving_backend())
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield Provider(await _launch(net, f"http://127.0.0.1:{runner.addresses[0][1]}"))
    finally:
        await runner.cleanup()


async def _launch(net: Net, bad: str) -> SecurityServer:
    services = {
        "down": (f"http://127.0.0.1:{free_port()}", 60.0),
        "slow": (f"{net.backend_url}/slow", 0.3),
        "echo": (f"{net.backend_url}/echo", 60.0),
        "chunked-big": (f"{bad}/chunked-big", 60.0),
        "hop": (f"{bad}/hop", 60.0),
    }
    extra = {
        "services": [
            {"id": f"{SUBSYSTEM}/{code}", "url": url, "timeout": timeout}
            for code, (url, timeout) in services.items()
        ]
        + [{"id": f"{SUBSYSTEM}/bad-json", "url": f"{bad}/bad-json"}],
        "limits": {"max_response_bytes": MAX_RESPONSE},
    }
    return await launch(
        net,
        "moi-backend-tests",
        parse_security_server(f"{MOI}/ss-backend-tests"),
        clients=[SUBSYSTEM],
        policy=_policy(),
        extra=extra,
    )


FAILURES = [
    pytest.param(
        "bkd",
        f"{BKD}/down/x",
        "GET",
        b"",
        "Server.ServerProxy.ServiceFailed",
        502,
        id="backend-down",
    ),
    pytest.param(
        "bkd",
        f"{BKD}/slow?s=1",
        "GET",
        b"",
        "Server.ServerProxy.ServiceTimeout",
        504,
        id="slower-than-service-timeout",
    ),
    pytest.param(
        "moi",
        f"{MISC}/garbage",
        "GET",
        b"",
        "Server.ServerProxy.ServiceFailed",
        502,
        id="garbage-instead-of-http",
    ),
    pytest.param(
        "bkd",
        f"{BKD}/echo",
        "POST",
        b"x" * (MAX_RESPONSE + 1),
        "Server.ServerProxy.ServiceFailed",
        502,
        id="response-over-limit-declared",
    ),
    pytest.param(
        "bkd",
        f"{BKD}/chunked-big",
        "GET",
        b"",
        "Server.ServerProxy.ServiceFailed",
        502,
        id="response-over-limit-streamed",
    ),
]


@pytest.mark.parametrize(("where", "path", "method", "body", "code", "status"), FAILURES)
async def test_backend_failure(
    net: Net,
    provider: Provider,
    where: str,
    path: str,
    method: str,
    body: bytes,
    code: str,
    status: int,
) -> None:
    mid = new_id("backend")
    result = await net.call(
        "palpost", path, method=method, body=body or None, headers={"X-Road-Id": mid}
    )
    doc = assert_xroad_error(*result, code, status)
    # the consumer is told what failed, never where the service lives (THREAT_MODEL §7)
    assert "127.0.0.1" not in doc["message"] and "Connect call" not in doc["message"]
    server = provider.server if where == "bkd" else net.servers["moi"]
    record = logged(server, mid, "provider", code)
    if path.startswith(f"{BKD}/down"):  # the operator's record says where
        assert "cannot reach the service at 127.0.0.1:" in record.entry["error"]["internal"]
    logged(net.servers["palpost"], mid, "consumer", code)
    await _assert_both_serving(net, provider)


@pytest.mark.parametrize(
    ("where", "path", "leak"),
    [
        pytest.param("moi", TEXT, "plain text", id="text-where-grant-filters-fields"),
        pytest.param("bkd", f"{BKD}/bad-json", SECRET, id="malformed-json-where-grant-filters"),
    ],
)
async def test_unfilterable_response_is_withheld(
    net: Net, provider: Provider, where: str, path: str, leak: str
) -> None:
    """The grant releases some fields only; a response that cannot be filtered is not sent."""
    mid = new_id("unfilterable")
    status, headers, body = await net.call("palpost", path, headers={"X-Road-Id": mid})
    assert_xroad_error(status, headers, body, "Server.ServerProxy.ServiceFailed", 502)
    assert leak.encode() not in body
    assert not any(leak in v for v in headers.values())
    server = provider.server if where == "bkd" else net.servers["moi"]
    record = logged(server, mid, "provider", "Server.ServerProxy.ServiceFailed")
    assert leak.encode() not in base64.b64decode(record.entry["response_body"])
    consumer = logged(net.servers["palpost"], mid, "consumer", "Server.ServerProxy.ServiceFailed")
    assert leak.encode() not in orjson.dumps(consumer.entry)
    await _assert_both_serving(net, provider)


async def test_redirect_is_returned_not_followed(net: Net) -> None:
    mid = new_id("redirect")
    assert net.session is not None
    async with net.session.get(
        net.url("palpost", f"{MISC}/redirect"),
        headers={"X-Road-Client": str(WINDOW), "X-Road-Id": mid},
        allow_redirects=False,  # this test's own client must not follow it either
    ) as resp:
        status, headers = resp.status, resp.headers
    # followed by the provider, it would have failed: nothing listens on port 1
    assert status == 302
    assert headers["Location"] == "http://127.0.0.1:1/elsewhere"
    assert "X-Road-Error" not in headers
    assert headers["X-Road-Id"] == mid
    logged(net.servers["moi"], mid, "provider")
    logged(net.servers["palpost"], mid, "consumer")


async def test_hop_by_hop_response_headers_are_not_passed_back(
    net: Net, provider: Provider
) -> None:
    status, headers, body = await net.call("palpost", f"{BKD}/hop")
    assert status == 200, body
    assert headers["X-Backend-Header"] == "kept"
    for name in ("Proxy-Authenticate", "Keep-Alive", "Trailer"):
        assert name not in headers, name


async def _assert_both_serving(net: Net, provider: Provider) -> None:
    await assert_serving(net)
    status, _, body = await net.call("palpost", f"{BKD}/echo/still-here", method="POST", body=b"1")
    assert status == 200, body
    assert orjson.loads(body)["path"] == "/echo/still-here"


async def test_provider_slower_than_consumer_timeout(net: Net, provider: Provider) -> None:
    """The consumer stops waiting for a provider that has not answered in time, answers
    ``Server.ClientProxy.Timeout`` and logs it; a late answer is dropped, both keep serving."""
    consumer = net.servers["palpost"]
    kept = consumer.response_timeout
    consumer.response_timeout = 0.1
    mid = new_id("consumer-timeout")
    try:
        result = await net.call("palpost", f"{BKD}/slow?s=1", headers={"X-Road-Id": mid})
    finally:
        consumer.response_timeout = kept
    assert_xroad_error(*result, "Server.ClientProxy.Timeout", 504)
    logged(consumer, mid, "consumer", "Server.ClientProxy.Timeout")
    await _assert_both_serving(net, provider)
