"""What an information system sends to its security server (docs/design.md §4, §7).

Malformed identifiers and headers are the caller's fault (``Client.*``, 4xx) and never a crash;
unknown clients, services and providers, oversized bodies and policy denials each have their
exact code. What is granted passes end to end unchanged (headers that matter, bodies, query
strings), and what is not granted — hop-by-hop headers, unreleased response fields — never
arrives. Every refusal is in the message log, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio
from multidict import CIMultiDict
from yarl import URL

from exchange.identifiers import parse_security_server, parse_subsystem
from exchange.messagelog.query import query_records
from exchange.server import consumer as consumer_side
from exchange.server import provider as provider_side
from exchange.server import soap_consumer
from exchange.server.core import SecurityServer
from tests.integration.conftest import FINANCE, HEALTH, PALPOST, WINDOW, Net
from tests.integration.support import (
    ECHO,
    PERSONS,
    assert_serving,
    assert_xroad_error,
    launch,
    logged,
    new_id,
    records,
    until,
)
from tests.integration.test_soap import envelope

pytestmark = pytest.mark.asyncio(loop_scope="session")

REGISTRY = "PS/GOV/MOI/population-registry"


async def raw_call(
    net: Net,
    name: str,
    path: str,
    *,
    headers: list[tuple[str, str]],
    method: str = "GET",
    body: Any = None,
) -> tuple[int, CIMultiDict[str], bytes]:
    """A request whose URL goes out exactly as written (no re-quoting) with repeatable headers."""
    assert net.session is not None
    url = URL(net.url(name, path), encoded=True)
    async with net.session.request(method, url, headers=headers, data=body) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.read()


# --- identifiers in the path -------------------------------------------------------------------

BAD_PATHS = [
    pytest.param(
        f"/r1/{REGISTRY}/per$ons/1", "Client.InvalidServiceIdentifier", 400, id="bad-char"
    ),
    pytest.param(
        "/r1/PS/GOV/MOI/population%20registry/persons",
        "Client.InvalidServiceIdentifier",
        400,
        id="encoded-space",
    ),
    pytest.param(f"/r1/{REGISTRY}", "Client.InvalidServiceIdentifier", 400, id="too-few-parts"),
    pytest.param("/r1/PS/GOV/MOI", "Client.InvalidServiceIdentifier", 400, id="member-only"),
    pytest.param(
        "/r1/PS/GOV//population-registry/persons",
        "Client.InvalidServiceIdentifier",
        400,
        id="empty-part",
    ),
    pytest.param(
        "/r1/PS/GOV/MOI/population%2Fregistry/persons",
        "Client.InvalidServiceIdentifier",
        400,
        id="encoded-slash-in-part",
    ),
    pytest.param(
        "/r1/PS/GOV/MOI/population%FFregistry/persons",
        "Client.InvalidServiceIdentifier",
        400,
        id="non-utf8-in-part",
    ),
    pytest.param(
        f"/r1/PS/GOV/MOI/{'p' * 256}/persons",
        "Client.InvalidServiceIdentifier",
        400,
        id="over-long-part",
    ),
    pytest.param(
        f"/r2/{REGISTRY}/persons/1", "Client.InvalidProtocolVersion", 400, id="protocol-r2"
    ),
    pytest.param(f"/{REGISTRY}/persons/1", "Client.InvalidProtocolVersion", 400, id="no-protocol"),
    pytest.param(f"/r1/{REGISTRY}/persons/{'x' * 9000}", "Client.BadRequest", 414, id="long-uri"),
    pytest.param(
        f"/r1/{REGISTRY}/persons/1?q={'x' * 9000}", "Client.BadRequest", 414, id="long-query"
    ),
]


@pytest.mark.parametrize(("path", "code", "status"), BAD_PATHS)
async def test_malformed_service_path(net: Net, path: str, code: str, status: int) -> None:
    palpost = net.servers["palpost"]
    before = refusals(palpost, code)
    result = await raw_call(net, "palpost", path, headers=[("X-Road-Client", str(WINDOW))])
    assert_xroad_error(*result, code, status)
    assert refusals(palpost, code) == before + 1
    await assert_serving(net)


def refusals(server: SecurityServer, code: str) -> int:
    """How many consumer-side refusals with ``code`` the log holds (a refusal before the
    headers parse has no message id to look it up by)."""
    views = query_records(server.config.log_path, side="consumer", limit=10_000)
    return sum(1 for v in views if (v.entry.get("error") or {}).get("type") == code)


# --- the X-Road headers ------------------------------------------------------------------------

BAD_HEADERS = [
    pytest.param([], "Client.MissingHeader", 400, id="no-client"),
    pytest.param([("X-Road-Client", "")], "Client.MissingHeader", 400, id="empty-client"),
    pytest.param(
        [("X-Road-Client", "PS/GOV")], "Client.InvalidClientIdentifier", 400, id="client-too-short"
    ),
    pytest.param(
        [("X-Road-Client", "PS/GOV/PAL POST/unified-window")],
        "Client.InvalidClientIdentifier",
        400,
        id="client-bad-char",
    ),
    pytest.param(
        [("X-Road-Client", "PS/GOV/PALPOST/unified-window/extra")],
        "Client.InvalidClientIdentifier",
        400,
        id="client-too-long",
    ),
    pytest.param(
        [("X-Road-Client", "PS/GOV/PALPOST%2Funified-window")],
        "Client.InvalidClientIdentifier",
        400,
        id="client-encoded-slash",
    ),
    pytest.param(
        [("X-Road-Client", str(PALPOST))], "Client.UnknownClient", 403, id="client-is-a-member"
    ),
    pytest.param(
        [("X-Road-Client", str(HEALTH))], "Client.UnknownClient", 403, id="client-not-hosted-here"
    ),
    pytest.param(
        [("X-Road-Client", "PS/GOV/PALPOST/no-such-subsystem")],
        "Client.UnknownClient",
        403,
        id="client-unknown",
    ),
    pytest.param(
        [("X-Road-Client", str(WINDOW)), ("X-Road-Id", "has space")],
        "Client.InvalidHeader",
        400,
        id="bad-message-id",
    ),
    pytest.param(
        [("X-Road-Client", str(WINDOW)), ("X-Road-UserId", "u" * 1025)],
        "Client.InvalidHeader",
        400,
        id="over-long-user-id",
    ),
    pytest.param(
        [("X-Road-Client", str(WINDOW)), ("X-Road-Security-Server", "PS/GOV")],
        "Client.InvalidHeader",
        400,
        id="bad-security-server",
    ),
]


@pytest.mark.parametrize(("headers", "code", "status"), BAD_HEADERS)
async def test_bad_xroad_headers(
    net: Net, headers: list[tuple[str, str]], code: str, status: int
) -> None:
    palpost = net.servers["palpost"]
    before = refusals(palpost, code)
    result = await raw_call(net, "palpost", f"{PERSONS}/123456782", headers=headers)
    assert_xroad_error(*result, code, status)
    assert refusals(palpost, code) == before + 1
    await assert_serving(net)


async def test_repeated_client_header_last_wins(net: Net) -> None:
    headers = [("X-Road-Client", str(HEALTH)), ("X-Road-Client", str(WINDOW))]
    status, _, body = await raw_call(net, "palpost", f"{PERSONS}/123456782", headers=headers)
    assert status == 200, body


# --- what the provider knows nothing about, and what its policy refuses ------------------------

UNKNOWN = [
    pytest.param(
        "palpost",
        WINDOW,
        f"/r1/{REGISTRY}/no-such-service",
        {},
        "Server.ServerProxy.UnknownService",
        404,
        id="unknown-service",
    ),
    pytest.param(
        "palpost",
        WINDOW,
        "/r1/PS/GOV/MOI/no-such-subsystem/persons/1",
        {},
        "Server.ClientProxy.UnknownMember",
        404,
        id="unknown-provider-subsystem",
    ),
    pytest.param(
        "palpost",
        WINDOW,
        "/r1/XX/GOV/MOI/population-registry/persons/1",
        {},
        "Server.ClientProxy.UnknownMember",
        404,
        id="other-instance",
    ),
    pytest.param(
        "palpost",
        WINDOW,
        f"{PERSONS}/123456782",
        {"X-Road-Security-Server": "PS/GOV/MOH/ss1"},
        "Server.ClientProxy.UnknownMember",
        404,
        id="pinned-server-does-not-provide",
    ),
    pytest.param(
        "mof",
        FINANCE,
        f"{PERSONS}/123456782",
        {},
        "Server.ServerProxy.AccessDenied",
        403,
        id="client-without-grant",
    ),
    pytest.param(
        "palpost",
        WINDOW,
        f"{PERSONS}/123456782/children",
        {},
        "Server.ServerProxy.AccessDenied",
        403,
        id="path-not-granted",
    ),
    pytest.param(
        "palpost",
        WINDOW,
        f"{PERSONS}/../echo",
        {},
        "Server.ServerProxy.AccessDenied.BadPath",
        403,
        id="dot-dot-path",
    ),
    pytest.param(
        "palpost",
        WINDOW,
        f"{PERSONS}/a%2Fb",
        {},
        "Server.ServerProxy.AccessDenied.BadPath",
        403,
        id="encoded-slash-in-path",
    ),
    pytest.param(
        "moh",
        HEALTH,
        f"{PERSONS}/123456782",
        {},
        "Server.ServerProxy.AccessDenied.PurposeNotAllowed",
        403,
        id="purpose-missing",
    ),
    pytest.param(
        "moh",
        HEALTH,
        f"{PERSONS}/123456782",
        {"X-Road-Purpose": "curiosity"},
        "Server.ServerProxy.AccessDenied.PurposeNotAllowed",
        403,
        id="purpose-not-granted",
    ),
]


@pytest.mark.parametrize(("name", "client", "path", "headers", "code", "status"), UNKNOWN)
async def test_unknown_or_denied(
    net: Net,
    name: str,
    client: Any,
    path: str,
    headers: dict[str, str],
    code: str,
    status: int,
) -> None:
    mid = new_id("refused")
    all_headers = [("X-Road-Client", str(client)), ("X-Road-Id", mid), *headers.items()]
    result = await raw_call(net, name, path, headers=all_headers)
    assert_xroad_error(*result, code, status)
    logged(net.servers[name], mid, "consumer", code)
    if code.startswith("Server.ServerProxy."):
        provider = logged(net.servers["moi"], mid, "provider", code)
        if ".AccessDenied" in code:
            decision = provider.entry["decision"]
            assert decision["policy_version"], decision
    await assert_serving(net)


async def test_post_is_not_granted_where_only_get_is(net: Net) -> None:
    mid = new_id("method")
    result = await net.call(
        "palpost", f"{PERSONS}/123456782", method="POST", body=b"{}", headers={"X-Road-Id": mid}
    )
    assert_xroad_error(*result, "Server.ServerProxy.AccessDenied", 403)
    logged(net.servers["moi"], mid, "provider", "Server.ServerProxy.AccessDenied")


async def test_granted_purpose_is_allowed(net: Net) -> None:
    status, _, body = await net.call(
        "moh",
        f"{PERSONS}/123456782",
        client=str(HEALTH),
        headers={"X-Road-Purpose": "patient-care"},
    )
    assert status == 200, body
    assert orjson.loads(body)["date_of_birth"] == "1990-04-01"  # no field filter for HEALTH


# --- request body limit ------------------------------------------------------------------------

SMALL_LIMIT = 1024


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def small(net: Net) -> AsyncIterator[SecurityServer]:
    """A second PALPOST security server for the same client, with a 1 KiB request limit."""
    yield await launch(
        net,
        "palpost-small",
        parse_security_server(f"{PALPOST}/ss-small"),
        clients=[WINDOW],
        extra={"limits": {"max_body_bytes": SMALL_LIMIT}},
    )


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 256):
        yield b"y" * 256


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"x" * (SMALL_LIMIT + 1), id="content-length"),
        pytest.param("chunked", id="chunked"),
    ],
)
async def test_request_body_over_limit(net: Net, small: SecurityServer, body: Any) -> None:
    mid = new_id("big")
    data = _chunks(4 * SMALL_LIMIT) if body == "chunked" else body
    result = await raw_call(
        net,
        "palpost-small",
        ECHO,
        method="POST",
        body=data,
        headers=[("X-Road-Client", str(WINDOW)), ("X-Road-Id", mid)],
    )
    assert_xroad_error(*result, "Client.RequestTooLarge", 413)
    logged(small, mid, "consumer", "Client.RequestTooLarge")
    status, _, echoed = await net.call(
        "palpost-small", ECHO, method="POST", body=b"z" * SMALL_LIMIT
    )
    assert status == 200, echoed
    assert orjson.loads(echoed)["body"] == "z" * SMALL_LIMIT


# --- field filtering ---------------------------------------------------------------------------

NOT_RELEASED = [
    "date_of_birth",
    "1990-04-01",
    "marital_status",
    "married",
    "governorate",
    "Jerusalem",
    "street",
    "Main",
    "building",
    "name_ar",
    "أمل",
    "Sami",
]


async def test_only_granted_fields_reach_the_client(net: Net) -> None:
    mid = new_id("fields")
    status, _, body = await net.call("palpost", f"{PERSONS}/123456782", headers={"X-Road-Id": mid})
    assert status == 200, body
    assert orjson.loads(body) == {
        "national_id": "123456782",
        "name_en": {"first": "Amal", "family": "Haddad", "full": "Amal Haddad"},
        "address": {"locality": "Biddu"},
        "children": [{"national_id": "200000004"}],
    }
    text = body.decode()
    for value in NOT_RELEASED:
        assert value not in text, value
    provider = logged(net.servers["moi"], mid, "provider")
    consumer = logged(net.servers["palpost"], mid, "consumer")
    assert sorted(provider.released_fields or ()) == sorted(
        ["national_id", "name_en", "address.locality", "children[].national_id"]
    )
    for record in (provider, consumer):
        logged_entry = orjson.dumps(record.entry).decode()
        assert "Jerusalem" not in logged_entry and "1990-04-01" not in logged_entry


# --- what passes end to end --------------------------------------------------------------------


async def test_headers_pass_end_to_end(net: Net) -> None:
    mid = new_id("headers")
    sent = [
        ("X-Road-Client", str(WINDOW)),
        ("X-Road-Id", mid),
        ("X-Road-UserId", "clerk-17"),
        ("X-Road-Issue", "CASE-2026-42"),
        ("X-Road-Purpose", "citizen-service"),
        ("X-Road-Represented-Party", "PS/GOV/CITIZEN"),
        ("X-Custom", "kept"),
        ("Accept-Language", "ar, en;q=0.5"),
        ("User-Agent", "evil-agent/1.0"),
        ("Host", "consumer.example"),
        ("Keep-Alive", "timeout=99"),
        ("Proxy-Authorization", "Basic c2VjcmV0"),
        ("Trailer", "X-Checksum"),
    ]
    status, headers, body = await raw_call(net, "palpost", f"{ECHO}/h", headers=sent)
    assert status == 200, body
    received = CIMultiDict(orjson.loads(body)["headers"])
    assert received["X-Custom"] == "kept"
    assert received["Accept-Language"] == "ar, en;q=0.5"
    for name, value in (
        ("X-Road-Client", str(WINDOW)),
        ("X-Road-Service", f"{REGISTRY}/echo"),
        ("X-Road-Id", mid),
        ("X-Road-UserId", "clerk-17"),
        ("X-Road-Issue", "CASE-2026-42"),
        ("X-Road-Purpose", "citizen-service"),
        ("X-Road-Represented-Party", "PS/GOV/CITIZEN"),
    ):
        assert received.get(name) == value, name
    for name in ("User-Agent", "Keep-Alive", "Proxy-Authorization", "Trailer"):
        assert name not in received, name
    assert received["Host"] == URL(net.backend_url).raw_authority
    # the response carries the binding to the exact signed request
    assert headers["X-Road-Id"] == mid
    uuid.UUID(headers["X-Road-Request-Id"])
    consumer = logged(net.servers["palpost"], mid, "consumer")
    provider = logged(net.servers["moi"], mid, "provider")
    assert headers["X-Road-Request-Hash"] == consumer.entry["request_hash"]
    assert headers["X-Road-Request-Hash"] == provider.entry["request_hash"]
    assert (headers["X-Road-Client"], headers["X-Road-Service"]) == (
        str(WINDOW),
        f"{REGISTRY}/echo",
    )
    assert consumer.entry["user_id"] == provider.entry["user_id"] == "clerk-17"
    assert consumer.entry["purpose"] == provider.entry["purpose"] == "citizen-service"


async def test_post_body_reaches_the_backend_intact(net: Net) -> None:
    payload = orjson.dumps({"name": "أمل حداد", "amount": 12, "note": "a\nb\tc \\ \u00e9"})
    status, _, body = await net.call(
        "palpost",
        f"{ECHO}/forms",
        method="PUT",
        body=payload,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert status == 200, body
    echoed = orjson.loads(body)
    assert echoed["method"] == "PUT"
    assert echoed["body"].encode() == payload
    assert CIMultiDict(echoed["headers"])["Content-Type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param("/a%20b/c?x=1&y=%2F&z=a+b&x=2&empty=&utf=%C3%A9", id="encoded-and-repeated"),
        pytest.param("?q=%25%26%3D&flag", id="query-only"),
        pytest.param("/only/path", id="no-query"),
    ],
)
async def test_path_and_query_pass_unchanged(net: Net, tail: str) -> None:
    status, _, body = await raw_call(
        net, "palpost", f"{ECHO}{tail}", headers=[("X-Road-Client", str(WINDOW))]
    )
    assert status == 200, body
    assert orjson.loads(body)["path"] == f"/echo{tail}"


# --- the consumer port: entry points, Server header, Expect -------------------------------------

ENTRY_POINTS = [
    pytest.param("GET", "/health", 200, None, id="health"),
    pytest.param("HEAD", "/health", 200, None, id="health-head"),
    pytest.param("GET", "/listClients", 200, None, id="list-clients"),
    pytest.param("GET", f"{ECHO}/x", 200, None, id="rest"),
    pytest.param("GET", "/r2/x", 400, "Client.InvalidProtocolVersion", id="rest-error"),
    pytest.param("POST", "/", 500, "Client.InvalidSoap", id="soap"),
    pytest.param("GET", "/", 400, "Client.InvalidProtocolVersion", id="get-root-is-rest"),
    pytest.param("POST", "/health", 400, "Client.InvalidProtocolVersion", id="post-health-is-rest"),
    pytest.param(
        "POST", "/listClients", 400, "Client.InvalidProtocolVersion", id="post-list-is-rest"
    ),
]


@pytest.mark.parametrize(("method", "path", "status", "code"), ENTRY_POINTS)
async def test_entry_points_answer_as_exchange(
    net: Net, method: str, path: str, status: int, code: str | None
) -> None:
    """PR-REST §4.3: no answer of the consumer port names the software behind it."""
    got, headers, body = await raw_call(
        net,
        "palpost",
        path,
        method=method,
        body=b"<not-soap/>" if method == "POST" else None,
        headers=[("X-Road-Client", str(WINDOW)), ("Content-Type", "text/xml")],
    )
    assert (got, headers.get("X-Road-Error")) == (status, code), body[:300]
    assert headers["Server"] == "Exchange"


async def _raw_exchange(net: Net, head: bytes, body: bytes) -> tuple[bytes, bytes]:
    """Send ``head``, read the interim answer, then send ``body`` and read the final answer."""
    port = net.servers["palpost"].consumer_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        interim = await reader.readuntil(b"\r\n\r\n")
        if not interim.startswith(b"HTTP/1.1 100 "):
            return interim, b""
        writer.write(body)
        return interim, await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
        await writer.wait_closed()


def _head(expect: str, body: bytes) -> bytes:
    return (
        f"POST {ECHO}/expect HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Road-Client: {WINDOW}\r\n"
        f"Content-Length: {len(body)}\r\nExpect: {expect}\r\nConnection: close\r\n\r\n"
    ).encode()


async def test_expect_100_continue_is_answered_before_the_body(net: Net) -> None:
    interim, final = await _raw_exchange(net, _head("100-continue", b"hello"), b"hello")
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert final.startswith(b"HTTP/1.1 200 "), final
    assert b"\r\nServer: Exchange\r\n" in final


async def test_unknown_expectation_is_refused(net: Net) -> None:
    answer, _ = await _raw_exchange(net, _head("something-else", b"hello"), b"hello")
    assert answer.startswith(b"HTTP/1.1 417 "), answer
    assert b"\r\nServer: Exchange\r\n" in answer
    await assert_serving(net, "palpost")


# --- a failure of the security server itself ---------------------------------------------------


@pytest.mark.parametrize("protocol", ["rest", "soap"])
async def test_an_internal_failure_is_answered_logged_and_survived(
    net: Net, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """A bug of ours (a fault injected where the consumer assembles the signed request) is
    ``Server.ClientProxy.InternalError`` (500) for the caller, with its message id; the
    exchange is in the log with that code, and the next request is served."""

    def broken(*args: object) -> object:
        raise RuntimeError("injected fault")

    message_id = new_id("internal")
    if protocol == "rest":
        monkeypatch.setattr(consumer_side, "end_to_end_headers", broken)
        headers = [("X-Road-Client", str(WINDOW)), ("X-Road-Id", message_id)]
        status, got, body = await raw_call(net, "palpost", f"{PERSONS}/123456782", headers=headers)
        assert_xroad_error(status, got, body, "Server.ClientProxy.InternalError", 500)
        assert got["X-Road-Id"] == message_id
        assert b"injected" not in body
    else:
        monkeypatch.setattr(soap_consumer, "_signed_headers", broken)
        data, message_id = envelope(subsystem=parse_subsystem(REGISTRY))
        status, got, body = await raw_call(
            net, "palpost", "/", headers=[("Content-Type", "text/xml")], method="POST", body=data
        )
        assert status == 500 and got["X-Road-Error"] == "Server.ClientProxy.InternalError"
        assert b"<faultcode>Server.ClientProxy.InternalError</faultcode>" in body
        assert b"injected" not in body
    logged(net.servers["palpost"], message_id, "consumer", "Server.ClientProxy.InternalError")
    monkeypatch.undo()
    await assert_serving(net)


async def test_an_internal_failure_of_the_provider_is_signed_logged_and_survived(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug of the provider's (a fault injected in its field filter) does not leave the
    consumer waiting for an answer that never comes: the provider answers a signed
    ``Server.ServerProxy.InternalError``, both sides log it, and both keep serving."""

    def broken(*args: object) -> object:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(provider_side, "filter_fields", broken)
    message_id = new_id("internal")
    headers = [("X-Road-Client", str(WINDOW)), ("X-Road-Id", message_id)]
    status, got, body = await raw_call(net, "palpost", f"{PERSONS}/123456782", headers=headers)
    assert_xroad_error(status, got, body, "Server.ServerProxy.InternalError", 500)
    assert b"injected" not in body
    logged(net.servers["moi"], message_id, "provider", "Server.ServerProxy.InternalError")
    logged(net.servers["palpost"], message_id, "consumer", "Server.ServerProxy.InternalError")
    monkeypatch.undo()
    await assert_serving(net)


# --- a caller that goes away ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(b"Content-Length: 1000\r\n\r\n" + b"x" * 10, id="content-length"),
        pytest.param(b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", id="chunked"),
    ],
)
async def test_a_caller_that_drops_mid_body_is_logged_as_the_callers_doing(
    net: Net, caplog: pytest.LogCaptureFixture, framing: bytes
) -> None:
    """An information system that closes its connection half-way through its request body
    (item 8 of issue 13): before, the consumer logged an internal error with a traceback. Now
    the record says ``Client.IncompleteRequest``, the operator's log says it was the caller's
    doing, at INFO and without a traceback, and nothing reached the provider."""
    palpost = net.servers["palpost"]
    mid = new_id("dropped")
    head = (
        f"POST /r1/{REGISTRY}/echo/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-Road-Client: {WINDOW}\r\nX-Road-Id: {mid}\r\n"
    ).encode()
    with caplog.at_level(logging.INFO, logger="exchange"):
        _, writer = await asyncio.open_connection("127.0.0.1", palpost.consumer_port)
        writer.write(head + framing)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await until(lambda: records(palpost, mid, "consumer"), "the refusal is logged")
    record = logged(palpost, mid, "consumer", "Client.IncompleteRequest")
    assert record.entry["http_status"] == 400
    lines = [r for r in caplog.records if mid in r.getMessage()]
    assert lines and all(r.levelno == logging.INFO and r.exc_info is None for r in lines)
    assert "caller's fault" in lines[0].getMessage()
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
    assert query_records(net.servers["moi"].config.log_path, message_id=mid) == []
    await assert_serving(net)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"get /r1/x HTTP/1.1\r\nHost: x\r\n\r\n", id="lower-case-method"),
        pytest.param(
            b"GET /r1/x HTTP/1.1\r\nHost: x\r\nX-Road-Id: " + b"a" * 100_000 + b"\r\n\r\n",
            id="header-past-its-limit",
        ),
        pytest.param(
            b"GET /r1/x HTTP/1.1\r\nHost: x\r\nX-Road-UserId: a\x01aaaa\r\n\r\n",
            id="control-character",
        ),
        pytest.param(
            b"POST /r1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="framed-two-ways",
        ),
    ],
)
async def test_a_request_that_is_not_http_gets_an_xroad_error_and_one_log_line(
    net: Net, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    """Refused by aiohttp's parser before any handler runs: the answer is still JSON with
    ``Client.BadRequest`` and echoes nothing of the request, the operator's log has one line
    and no traceback (anyone reaching the port could otherwise fill it), and the port serves
    on."""
    port = net.servers["palpost"].consumer_port
    with caplog.at_level(logging.INFO):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request_bytes)
            answer = await asyncio.wait_for(reader.read(), 10)  # the server closes
        finally:
            writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    # HTTP/1.0 when the version could not be read
    assert head.split(b" ", 2)[1] == b"400", answer[:200]
    assert b"\r\nX-Road-Error: Client.BadRequest\r\n" in head
    assert b"\r\nServer: Exchange\r\n" in head
    assert orjson.loads(body)["type"] == "Client.BadRequest"
    assert b"aaaa" not in answer
    refusals = [r for r in caplog.records if "is not valid HTTP" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info is not None]
    await assert_serving(net)
