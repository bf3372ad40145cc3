"""A grant with ``fields`` releases no validator of the full record and answers no guess about it.

A service's ``ETag``, ``Last-Modified`` and digest headers describe the representation it sent,
not the filtered one the client gets. Before, they went out unchanged, and conditional requests
went to the service unchanged: a client allowed only ``national_id`` could send
``If-None-Match`` with the hash of a guessed full record and read the guess's truth from 304
against 200 (or from 412 against 200 with ``If-Match``). Now, under a grant with ``fields``:
validators and digests are dropped from every answer; ``If-None-Match``, ``If-Modified-Since``,
``If-Range`` and ``Range`` are not passed to the service (it answers the whole representation,
which is filtered); ``If-Match`` and ``If-Unmodified-Since`` are refused with
``Server.ServerProxy.AccessDenied`` before the service is called, since dropping them would turn
a conditional write into an unconditional one. Other end-to-end headers (``Link``) still travel,
and a grant without ``fields`` keeps every header and conditional request as before.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from multidict import CIMultiDict

from exchange.identifiers import parse_security_server, parse_subsystem
from exchange.server.core import SecurityServer
from tests.integration.conftest import HEALTH, MOI, WINDOW, Net
from tests.integration.support import (
    assert_serving,
    assert_xroad_error,
    launch,
    logged,
    new_id,
    serving,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBSYSTEM = parse_subsystem(f"{MOI}/validators")
SERVICE = f"/r1/{SUBSYSTEM}/records"
RECORD = {"national_id": "408857175", "name_latin": "Amal Haddad", "date_of_death": None}
BODY = orjson.dumps(RECORD)
ETAG = '"' + hashlib.sha256(BODY).hexdigest() + '"'
LAST_MODIFIED = "Tue, 03 Nov 2026 10:00:00 GMT"
LINK = '</records/408857176>; rel="next"'
SEEN: list[dict[str, str]] = []
"""The request headers the service received, one dict per call."""


async def _record(request: web.Request) -> web.Response:
    SEEN.append({k.lower(): v for k, v in request.headers.items()})
    if "If-Match" in request.headers and request.headers["If-Match"] != ETAG:
        return web.Response(status=412)
    if request.headers.get("If-None-Match") == ETAG:
        return web.Response(status=304, headers={"ETag": ETAG})
    if request.headers.get("Range") == "bytes=0-9":
        return web.Response(
            body=BODY[:10],
            status=206,
            content_type="application/json",
            headers={"Content-Range": f"bytes 0-9/{len(BODY)}"},
        )
    digest = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    return web.Response(
        body=BODY,
        content_type="application/json",
        headers={
            "ETag": ETAG,
            "Last-Modified": LAST_MODIFIED,
            "Content-MD5": base64.b64encode(hashlib.md5(BODY).digest()).decode(),
            "Repr-Digest": f"sha-256=:{digest}:",
            "Content-Digest": f"sha-256=:{digest}:",
            "Link": LINK,
        },
    )


POLICY = f"""
provider = "PS/GOV/MOI"

[[grant]]
id = "window-national-id-only"
client = "{WINDOW}"
service = "{SUBSYSTEM}/records"
methods = ["GET", "PUT"]
fields = ["national_id"]

[[grant]]
id = "health-everything"
client = "{HEALTH}"
service = "{SUBSYSTEM}/records"
methods = ["GET"]
"""


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def provider(net: Net) -> AsyncIterator[SecurityServer]:
    """A MOI server whose service sends validators and honours conditional requests."""
    app = web.Application()
    app.router.add_route("*", "/record", _record)
    async with serving(app) as url:
        yield await launch(
            net,
            "moi-validators",
            parse_security_server(f"{MOI}/ss-validators"),
            clients=[SUBSYSTEM],
            policy=POLICY,
            extra={"services": [{"id": f"{SUBSYSTEM}/records", "url": url}]},
        )


async def _call(
    net: Net, client: str, headers: dict[str, str], method: str = "GET"
) -> tuple[int, CIMultiDict[str], bytes, str]:
    member = "palpost" if client == str(WINDOW) else "moh"
    mid = new_id("validators")
    SEEN.clear()
    status, got, body = await net.call(
        member,
        f"{SERVICE}/record",
        client=client,
        method=method,
        headers={"X-Road-Id": mid, **headers},
    )
    return status, got, body, mid


async def test_a_filtered_answer_carries_no_validator_or_digest_of_the_full_record(
    net: Net, provider: SecurityServer
) -> None:
    status, headers, body, mid = await _call(net, str(WINDOW), {})
    assert (status, orjson.loads(body)) == (200, {"national_id": "408857175"})
    for name in ("etag", "last-modified", "content-md5", "repr-digest", "content-digest"):
        assert name not in headers, name
    assert headers["link"] == LINK  # other end-to-end headers still travel (PR-REST §4.3)
    assert logged(provider, mid, "provider").entry["released_fields"] == ["national_id"]


@pytest.mark.parametrize(
    "conditional",
    [
        pytest.param({"If-None-Match": ETAG}, id="if-none-match"),
        pytest.param({"If-Modified-Since": LAST_MODIFIED}, id="if-modified-since"),
        pytest.param({"Range": "bytes=0-9"}, id="range"),
        pytest.param({"Range": "bytes=0-9", "If-Range": ETAG}, id="if-range"),
    ],
)
async def test_a_conditional_or_range_request_is_answered_in_full_and_filtered(
    net: Net, provider: SecurityServer, conditional: dict[str, str]
) -> None:
    """The correct guess of the full record's ETag gets the same 200 as any other request."""
    status, _, body, _ = await _call(net, str(WINDOW), conditional)
    assert (status, orjson.loads(body)) == (200, {"national_id": "408857175"})
    assert len(SEEN) == 1
    for name in ("if-none-match", "if-modified-since", "if-range", "range"):
        assert name not in SEEN[0], name


@pytest.mark.parametrize(
    ("method", "precondition"),
    [
        pytest.param("GET", {"If-Match": '"a guess"'}, id="get-if-match"),
        pytest.param("PUT", {"If-Match": ETAG}, id="put-if-match"),
        pytest.param("GET", {"If-Unmodified-Since": LAST_MODIFIED}, id="get-if-unmodified-since"),
    ],
)
async def test_a_precondition_is_refused_before_the_service_is_called(
    net: Net, provider: SecurityServer, method: str, precondition: dict[str, str]
) -> None:
    status, headers, body, mid = await _call(net, str(WINDOW), precondition, method)
    doc = assert_xroad_error(status, headers, body, "Server.ServerProxy.AccessDenied", 403)
    assert "no validators" in doc["message"]
    assert SEEN == []
    logged(provider, mid, "provider", "Server.ServerProxy.AccessDenied")
    logged(net.servers["palpost"], mid, "consumer", "Server.ServerProxy.AccessDenied")
    await assert_serving(net)


async def test_a_grant_without_fields_keeps_validators_and_conditional_requests(
    net: Net, provider: SecurityServer
) -> None:
    status, headers, body, _ = await _call(net, str(HEALTH), {})
    assert (status, body) == (200, BODY)
    assert (headers["etag"], headers["last-modified"], headers["link"]) == (
        ETAG,
        LAST_MODIFIED,
        LINK,
    )
    status, headers, body, _ = await _call(net, str(HEALTH), {"If-None-Match": ETAG})
    assert (status, body, headers["etag"]) == (304, b"", ETAG)
    assert SEEN[0]["if-none-match"] == ETAG
    status, _, _, _ = await _call(net, str(HEALTH), {"If-Match": '"a guess"'})
    assert status == 412
