"""The adapter SDK called directly: input binding, the error model, context, OpenAPI."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypedDict

import aiohttp
import pytest
import zeep
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_openapi

from adapters.sdk import Adapter, BadRequest, Context, NotFound, Reply, param
from adapters.sdk.openapi import openapi_document
from adapters.sdk.soap import XSI_NS as XSI
from adapters.sdk.types import InputBinder, InputError
from exchange.identifiers import parse_service, parse_subsystem
from exchange.protocol import soap as xsoap


class Item(TypedDict):
    """A thing in the shop."""

    code: str
    price: float
    tags: list[str]
    colour: Literal["red", "blue"] | None
    seen_by: str | None


@dataclass(frozen=True, slots=True)
class ItemQuery:
    code: str = param(pattern="^[A-Z]{2}[0-9]{2}$", soap="itemCode", error="invalid_code")
    detail: bool = param(False)


@dataclass(frozen=True, slots=True)
class Order:
    code: str
    quantity: int = param(minimum=1, maximum=10)
    deliver_on: dt.date | None = None
    kind: Literal["gift", "plain"] = "plain"

    def __post_init__(self) -> None:
        if self.kind == "gift" and self.deliver_on is None:
            raise ValueError("a gift needs a delivery date")


class Placed(TypedDict):
    code: str
    quantity: int
    deliver_on: str | None
    kind: str
    client: str | None


def shop() -> Adapter:
    adapter = Adapter("Shop", namespace="http://shop.example/v1", description="A test shop.")

    @adapter.operation(rest="GET /items/{code}", soap="getItem", responses={404: "No such item."})
    async def get_item(query: ItemQuery, ctx: Context) -> Item:
        """One item."""
        if query.code == "ZZ99":
            raise NotFound(f"no item {query.code}")
        if query.code == "XX00":
            raise RuntimeError("secret internal detail /var/lib/shop.db")
        return {
            "code": query.code,
            "price": 2.5,
            "tags": ["a", "b"] if query.detail else [],
            "colour": None,
            "seen_by": ctx.client,
        }

    @adapter.operation(rest="POST /orders", input_error="invalid_order")
    def place(ctx: Context, order: Order) -> Placed:
        if order.code == "NOPE":
            raise BadRequest("that item cannot be ordered", code="not_orderable")
        return {
            "code": order.code,
            "quantity": order.quantity,
            "deliver_on": order.deliver_on.isoformat() if order.deliver_on else None,
            "kind": order.kind,
            "client": ctx.client,
        }

    @adapter.operation(rest="GET /context")
    async def context(ctx: Context) -> dict[str, Any]:
        return {
            "protocol": ctx.protocol,
            "client": ctx.client,
            "service": ctx.service,
            "message_id": ctx.message_id,
            "user_id": ctx.user_id,
            "issue": ctx.issue,
            "purpose": ctx.purpose,
            "represented_party": ctx.represented_party,
        }

    return adapter


@pytest.fixture
async def shop_url() -> AsyncIterator[str]:
    runner = web.AppRunner(shop().app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def test_typed_input_and_output(shop_url: str, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "GET", f"{shop_url}/items/AB12?detail=true")
    assert status == 200
    assert body == {"code": "AB12", "price": 2.5, "tags": ["a", "b"], "colour": None,
                    "seen_by": None}  # fmt: skip
    document = openapi_document(shop())
    wrapper = {"$ref": "#/components/schemas/Item", "components": document["components"]}
    OAS30Validator(wrapper).validate(body)


async def test_context_comes_from_the_x_road_headers(
    shop_url: str, http: aiohttp.ClientSession
) -> None:
    headers = {
        "X-Road-Client": "PS/GOV/MOH/health-records",
        "X-Road-Service": "PS/GOV/SHOP/shop/context",
        "X-Road-Id": "id-1",
        "X-Road-UserId": "PS-nurse-7",
        "X-Road-Issue": "case-42",
        "X-Road-Purpose": "patient-care",
        "X-Road-Represented-Party": "COM/123",
    }
    status, body = await call(http, "GET", f"{shop_url}/context", headers=headers)
    assert status == 200
    assert body == {
        "protocol": "rest",
        "client": "PS/GOV/MOH/health-records",
        "service": "PS/GOV/SHOP/shop/context",
        "message_id": "id-1",
        "user_id": "PS-nurse-7",
        "issue": "case-42",
        "purpose": "patient-care",
        "represented_party": "COM/123",
    }


async def test_json_body_input(shop_url: str, http: aiohttp.ClientSession) -> None:
    order = {"code": "AB12", "quantity": 3, "deliver_on": "2026-12-24", "kind": "gift"}
    status, body = await call(
        http, "POST", f"{shop_url}/orders", json=order, headers={"X-Road-Client": "PS/X/Y/z"}
    )
    assert status == 200
    assert body == {**order, "client": "PS/X/Y/z"}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "code"),
    [
        pytest.param("GET", "/items/ab12", {}, "invalid_code", id="pattern"),
        pytest.param("GET", "/items/AB12?detail=maybe", {}, "invalid_input", id="bad-bool"),
        pytest.param("GET", "/items/AB12?colour=red", {}, "invalid_input", id="unknown-param"),
        pytest.param("GET", "/items/AB12?detail=1&detail=0", {}, "invalid_input", id="repeated"),
        pytest.param("GET", "/items/AB12?code=CD34", {}, "invalid_input", id="path-in-query"),
        pytest.param("GET", "/context?x=1", {}, "invalid_input", id="no-params-expected"),
        pytest.param("POST", "/orders", {"data": b"not json"}, "invalid_order", id="not-json"),
        pytest.param("POST", "/orders", {"json": [1]}, "invalid_order", id="not-object"),
        pytest.param("POST", "/orders", {"json": {"quantity": 1}}, "invalid_order", id="missing"),
        pytest.param(
            "POST", "/orders", {"json": {"code": "A", "quantity": 11}}, "invalid_order", id="max"
        ),
        pytest.param(
            "POST", "/orders", {"json": {"code": "A", "quantity": "2"}}, "invalid_order", id="text"
        ),
        pytest.param(
            "POST", "/orders", {"json": {"code": "A", "quantity": True}}, "invalid_order", id="bool"
        ),
        pytest.param(
            "POST",
            "/orders",
            {"json": {"code": "A", "quantity": 1, "deliver_on": "2026-02-30"}},
            "invalid_order",
            id="no-such-date",
        ),
        pytest.param(
            "POST",
            "/orders",
            {"json": {"code": "A", "quantity": 1, "kind": "gift"}},
            "invalid_order",
            id="post-init",
        ),
        pytest.param(
            "POST",
            "/orders",
            {"json": {"code": "A", "quantity": 1, "kind": "bulk"}},
            "invalid_order",
            id="literal",
        ),
        pytest.param(
            "POST",
            "/orders",
            {"json": {"code": "A", "quantity": 1, "extra": 1}},
            "invalid_order",
            id="unknown-member",
        ),
        pytest.param(
            "POST",
            "/orders",
            {"json": {"code": "NOPE", "quantity": 1}},
            "not_orderable",
            id="handler-says-no",
        ),
    ],
)
async def test_bad_input_is_400_with_a_reason(
    shop_url: str,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    code: str,
) -> None:
    status, body = await call(http, method, shop_url + path, **kwargs)
    assert (status, body["error"]) == (400, code)
    assert body["message"]
    assert (await call(http, "GET", f"{shop_url}/items/AB12"))[0] == 200  # still serving


async def test_not_found_unknown_route_and_method(
    shop_url: str, http: aiohttp.ClientSession
) -> None:
    assert await call(http, "GET", f"{shop_url}/items/ZZ99") == (
        404,
        {"error": "not_found", "message": "no item ZZ99"},
    )
    assert (await call(http, "GET", f"{shop_url}/nothing"))[1]["error"] == "not_found"
    status, body = await call(http, "DELETE", f"{shop_url}/items/AB12")
    assert (status, body["error"]) == (405, "method_not_allowed")
    async with http.delete(f"{shop_url}/items/AB12") as response:
        # RFC 9110 §15.5.6: a 405 says which methods the resource has (dropped before, found
        # by schemathesis)
        assert response.headers["Allow"] == "GET"


async def test_internal_error_does_not_leak(
    shop_url: str, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="adapters.sdk.adapter"):
        status, body = await call(http, "GET", f"{shop_url}/items/XX00")
    assert (status, body["error"]) == (500, "internal_error")
    assert "secret" not in body["message"] and "/var/lib" not in body["message"]
    incident = body["message"].split("(")[1].rstrip(")")
    assert any(incident in r.getMessage() for r in caplog.records)
    assert "secret internal detail" in caplog.text


async def test_health_and_openapi(shop_url: str, http: aiohttp.ClientSession) -> None:
    assert await call(http, "GET", f"{shop_url}/health") == (200, {"status": "ok"})
    status, document = await call(http, "GET", f"{shop_url}/openapi.json")
    assert status == 200
    validate_openapi(document)
    assert document == openapi_document(shop())
    get_item = document["paths"]["/items/{code}"]["get"]
    assert get_item["operationId"] == "getItem"
    assert [p["name"] for p in get_item["parameters"]] == ["code", "detail"]
    assert set(get_item["responses"]) == {"200", "400", "404"}
    order = document["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]
    assert order["schema"]["required"] == ["code", "quantity"]


@pytest.mark.parametrize(
    "declare",
    [
        pytest.param(lambda a: a.operation()(lambda: None), id="no-route"),
        pytest.param(lambda a: a.operation(rest="items")(lambda: None), id="bad-rest"),
        pytest.param(lambda a: Adapter("x").operation(soap="getX"), id="soap-needs-namespace"),
    ],
)
def test_declaration_mistakes_fail_early(declare: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        declare(Adapter("x", namespace="urn:x"))


@dataclass
class Nested:
    inner: list[str]


def test_unsupported_types_fail_early() -> None:
    adapter = Adapter("x")

    async def bad_input(query: Nested) -> dict[str, Any]:
        return {}

    async def no_return(query: ItemQuery):  # type: ignore[no-untyped-def]
        return {}

    with pytest.raises(TypeError, match="input fields"):
        adapter.operation(rest="GET /x")(bad_input)
    with pytest.raises(TypeError, match="return type"):
        adapter.operation(rest="GET /y")(no_return)


# --- SOAP ----------------------------------------------------------------------------------------

SHOP_NS = "http://shop.example/v1"
CLIENT = "PS/GOV/MOH/health-records"


def envelope(body: str, *, service_code: str = "getItem", purpose: str | None = "audit") -> bytes:
    header = xsoap.XRoadHeader(
        client=parse_subsystem(CLIENT),
        service=parse_service(f"PS/GOV/SHOP/shop/{service_code}"),
        service_version=None,
        message_id="soap-1",
        user_id="PS-nurse-7",
        issue=None,
        protocol_version="4.0",
        represented_party=None,
        security_server=None,
        purpose=purpose,
    )
    return xsoap.request_envelope(header, etree.fromstring(body))


async def post_soap(
    http: aiohttp.ClientSession, url: str, data: bytes, content_type: str = "text/xml"
) -> tuple[int, etree._Element]:
    async with http.post(f"{url}/soap", data=data, headers={"Content-Type": content_type}) as r:
        assert r.content_type == "text/xml"
        return r.status, etree.fromstring(await r.read())


def fault_of(root: etree._Element) -> tuple[str, str, str | None]:
    fault = root.find(f"{{{xsoap.SOAP_ENV_NS}}}Body/{{{xsoap.SOAP_ENV_NS}}}Fault")
    assert fault is not None, etree.tostring(root)
    return (
        fault.findtext("faultcode") or "",
        fault.findtext("faultstring") or "",
        fault.findtext("detail/faultDetail"),
    )


async def test_soap_answers_from_the_same_handler(
    shop_url: str, http: aiohttp.ClientSession
) -> None:
    body = (
        f'<s:getItem xmlns:s="{SHOP_NS}"><s:itemCode>AB12</s:itemCode>'
        "<s:detail>true</s:detail></s:getItem>"
    )
    status, root = await post_soap(http, shop_url, envelope(body))
    assert status == 200
    [response] = root.find(f"{{{xsoap.SOAP_ENV_NS}}}Body")  # type: ignore[misc]
    assert response.tag == f"{{{SHOP_NS}}}getItemResponse"
    children = [(etree.QName(c).localname, c.text) for c in response]
    assert children == [("code", "AB12"), ("price", "2.5"), ("tags", "a"), ("tags", "b"),
                        ("colour", None), ("seen_by", CLIENT)]  # fmt: skip
    assert response.find(f"{{{SHOP_NS}}}colour").get(f"{{{XSI}}}nil") == "true"  # type: ignore[union-attr]
    header = root.find(f"{{{xsoap.SOAP_ENV_NS}}}Header")
    echoed = xsoap.parse_header(header)
    assert (str(echoed.client), echoed.message_id, echoed.purpose) == (CLIENT, "soap-1", "audit")


async def test_soap_inside_multipart_related(shop_url: str, http: aiohttp.ClientSession) -> None:
    soap = envelope(f'<s:getItem xmlns:s="{SHOP_NS}"><s:itemCode>AB12</s:itemCode></s:getItem>')
    data = (
        b"--B\r\nContent-Type: text/xml; charset=UTF-8\r\n\r\n" + soap
        + b"\r\n--B\r\nContent-Type: application/octet-stream\r\n\r\nattachment\r\n--B--\r\n"
    )  # fmt: skip
    status, _ = await post_soap(
        http, shop_url, data, 'multipart/related; type="text/xml"; boundary=B'
    )
    assert status == 200


@pytest.mark.parametrize(
    ("data", "code", "detail"),
    [
        pytest.param(b"<not xml", "Client.InvalidXml", None, id="malformed"),
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;">]><l>&b;</l>',
            "Client.InvalidXml",
            None,
            id="entity-expansion",
        ),
        pytest.param(
            envelope('<s:getItem xmlns:s="urn:other"><s:itemCode>AB12</s:itemCode></s:getItem>'),
            "Client",
            "unknown_operation",
            id="wrong-namespace",
        ),
        pytest.param(
            envelope(f'<s:getThing xmlns:s="{SHOP_NS}"/>', service_code="getThing"),
            "Client",
            "unknown_operation",
            id="unknown-operation",
        ),
        pytest.param(
            envelope(f'<s:getItem xmlns:s="{SHOP_NS}"><s:itemCode>ab</s:itemCode></s:getItem>'),
            "Client",
            "invalid_code",
            id="bad-input",
        ),
        pytest.param(
            envelope(f'<s:getItem xmlns:s="{SHOP_NS}"/>'), "Client", "invalid_code", id="missing"
        ),
        pytest.param(
            envelope(
                f'<s:getItem xmlns:s="{SHOP_NS}"><s:itemCode>AB12</s:itemCode>'
                "<s:colour>red</s:colour></s:getItem>"
            ),
            "Client",
            "invalid_input",
            id="unknown-element",
        ),
        pytest.param(
            envelope(
                f'<s:getItem xmlns:s="{SHOP_NS}"><s:itemCode>AB12</s:itemCode>'
                "<s:itemCode>CD34</s:itemCode></s:getItem>"
            ),
            "Client",
            "invalid_input",
            id="repeated-element",
        ),
        pytest.param(
            envelope(
                f'<s:getItem xmlns:s="{SHOP_NS}"><s:itemCode><b>AB12</b></s:itemCode></s:getItem>'
            ),
            "Client",
            "invalid_input",
            id="nested-element",
        ),
        pytest.param(
            envelope(f'<s:getItem xmlns:s="{SHOP_NS}"><s:itemCode>ZZ99</s:itemCode></s:getItem>'),
            "Client",
            "not_found",
            id="not-found",
        ),
    ],
)
async def test_soap_faults(
    shop_url: str, http: aiohttp.ClientSession, data: bytes, code: str, detail: str | None
) -> None:
    status, root = await post_soap(http, shop_url, data)
    got_code, message, got_detail = fault_of(root)
    assert (status, got_code) == (500, code)
    assert message and (detail is None or got_detail == detail)


async def test_soap_internal_error_does_not_leak(
    shop_url: str, http: aiohttp.ClientSession
) -> None:
    body = f'<s:getItem xmlns:s="{SHOP_NS}"><s:itemCode>XX00</s:itemCode></s:getItem>'
    status, root = await post_soap(http, shop_url, envelope(body))
    code, _, _ = fault_of(root)
    assert (status, code) == (500, "Server")
    assert "secret" not in etree.tostring(root).decode()


async def test_wsdl_is_served_and_zeep_calls_it(
    shop_url: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with http.get(f"{shop_url}/soap?wsdl") as response:
        assert (response.status, response.content_type) == (200, "text/xml")
        (tmp_path / "shop.wsdl").write_bytes(await response.read())
    async with http.get(f"{shop_url}/soap") as response:
        assert response.status == 400

    def call_with_zeep() -> Any:
        client = zeep.Client(str(tmp_path / "shop.wsdl"))
        operation = client.wsdl.bindings[f"{{{SHOP_NS}}}ShopBinding"].get("getItem")
        headers = [name for name, _ in operation.input.header.type.elements]
        assert headers == ["client", "service", "id", "userId", "issue", "protocolVersion",
                           "purpose"]  # fmt: skip
        service = client.create_service(f"{{{SHOP_NS}}}ShopBinding", f"{shop_url}/soap")
        return service.getItem(itemCode="AB12", detail=True, _soapheaders=ZEEP_HEADERS)

    result = await asyncio.to_thread(call_with_zeep)
    assert result.body.code == "AB12" and result.body.tags == ["a", "b"]
    assert result.header.id == "zeep-1"


ZEEP_HEADERS = {
    "client": {"objectType": "SUBSYSTEM", "xRoadInstance": "PS", "memberClass": "GOV",
               "memberCode": "MOH", "subsystemCode": "health-records"},
    "service": {"objectType": "SERVICE", "xRoadInstance": "PS", "memberClass": "GOV",
                "memberCode": "SHOP", "subsystemCode": "shop", "serviceCode": "getItem"},
    "id": "zeep-1",
    "protocolVersion": "4.0",
    "purpose": "audit",
}  # fmt: skip


# --- the input binder's contract: anything parses or is an InputError ----------------------------

_BINDER = InputBinder(Order, "invalid_order")
_TEXT = st.text(max_size=30)


@given(st.dictionaries(st.sampled_from(["code", "quantity", "deliver_on", "kind", "x"]), _TEXT))
def test_any_text_input_binds_or_is_an_input_error(values: dict[str, str]) -> None:
    try:
        order = _BINDER.from_text(values)
    except InputError as exc:
        assert exc.code == "invalid_order" and exc.message
    else:
        assert isinstance(order, Order) and 1 <= order.quantity <= 10


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)


@given(st.dictionaries(st.sampled_from(["code", "quantity", "deliver_on", "kind", "x"]), _JSON))
def test_any_json_input_binds_or_is_an_input_error(values: dict[str, Any]) -> None:
    try:
        order = _BINDER.from_json(values)
    except InputError as exc:
        assert exc.code == "invalid_order" and exc.message
    else:
        assert isinstance(order, Order) and isinstance(order.code, str)


# --- creating operations: a 201, a Reply, a header, decimal amounts ------------------------------


@dataclass(frozen=True, slots=True)
class Deposit:
    account: str
    amount: Decimal = param(minimum=0, maximum=1000)


class Deposited(TypedDict):
    account: str
    amount: Decimal
    key: str | None


def bank() -> Adapter:
    adapter = Adapter("Bank")
    seen: dict[str, Deposited] = {}

    @adapter.operation(rest="POST /deposits", status=201, success={200: "A retry."})
    async def deposit(new: Deposit, ctx: Context) -> Reply[Deposited]:
        key = ctx.header("Idempotency-Key")
        if key in seen:
            return Reply(seen[key], 200)
        done: Deposited = {"account": new.account, "amount": new.amount, "key": key}
        if key is not None:
            seen[key] = done
        return Reply(done, 201)

    @adapter.operation(rest="POST /wrong")
    async def wrong() -> Reply[Deposited]:
        return Reply({"account": "x", "amount": Decimal(1), "key": None}, 202)

    return adapter


async def test_a_creation_answers_201_and_a_reply_its_own_status(
    http: aiohttp.ClientSession,
) -> None:
    runner = web.AppRunner(bank().app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        body = {"account": "A1", "amount": "25.10"}
        first = await call(http, "POST", f"{url}/deposits", json=body,
                           headers={"Idempotency-Key": "k1"})  # fmt: skip
        assert first == (201, {"account": "A1", "amount": "25.10", "key": "k1"})
        again = await call(http, "POST", f"{url}/deposits", json=body,
                           headers={"Idempotency-Key": "k1"})  # fmt: skip
        assert again == (200, first[1])
        # an amount is text: a JSON number (a float on the way in) is refused, as is 1e3
        for amount in (25.1, "1e3", "-5", "1000.01"):
            status, error = await call(
                http, "POST", f"{url}/deposits", json={"account": "A1", "amount": amount}
            )
            assert status == 400 and error["error"] == "invalid_input", (amount, error)
        # a status the operation did not declare is a bug of the adapter, not an answer
        status, error = await call(http, "POST", f"{url}/wrong")
        assert (status, error["error"]) == (500, "internal_error")
    finally:
        await runner.cleanup()


def test_openapi_describes_each_success_status_and_decimals_as_text() -> None:
    document = openapi_document(bank())
    validate_openapi(document)
    answers = document["paths"]["/deposits"]["post"]["responses"]
    assert (
        answers["201"]["description"] == "Created." and answers["200"]["description"] == "A retry."
    )
    amount = document["paths"]["/deposits"]["post"]["requestBody"]["content"]["application/json"]
    assert amount["schema"]["properties"]["amount"]["type"] == "string"
    assert amount["schema"]["properties"]["amount"]["format"] == "decimal"
    with pytest.raises(ValueError, match="success statuses are 2xx"):
        Adapter("x").operation(rest="POST /x", status=302)
