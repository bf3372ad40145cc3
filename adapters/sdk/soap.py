"""SOAP for an adapter: ``POST {soap_path}`` runs the operation named by the body element, and
``GET {soap_path}?wsdl`` serves the generated WSDL.

A request is what the provider security server forwards (the client's X-Road 4.0 envelope,
``text/xml`` or the SOAP part of ``multipart/related``). It is parsed with the exchange's hardened
parser (:mod:`exchange.protocol.soap`: no DTD, no entities, no network, size and depth limits);
the X-Road header becomes the handler's :class:`~adapters.sdk.Context`; the wrapper element's
children (by their WSDL names, e.g. ``nationalId``) become its input dataclass.

The answer is a SOAP 1.1 envelope whose Header echoes the request's X-Road header fields and whose
Body holds ``<{operation}Response>`` in the adapter's namespace, one child element per field of
the handler's value (lists as repeated elements, ``None`` as ``xsi:nil``), or a SOAP Fault (HTTP
500, SOAP 1.1 §6.2): ``faultcode`` ``Client`` for the caller's errors (bad input, 4xx errors of
the handler; a malformed envelope keeps the parser's dotted ``Client.*`` code), ``Server`` for
the adapter's own (its incident id in the log); ``detail/faultDetail`` holds the error code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from lxml import etree

from adapters.sdk.adapter import (
    Context,
    Operation,
    Reply,
    error_response,
    incident,
    operations_by,
)
from adapters.sdk.errors import AdapterError
from adapters.sdk.types import InputError
from exchange.errors import ExchangeError
from exchange.protocol import soap as xsoap

if TYPE_CHECKING:
    from adapters.sdk.adapter import Adapter

XSI_NS: Final = "http://www.w3.org/2001/XMLSchema-instance"
_XML: Final = "text/xml; charset=utf-8"


def add_soap_routes(adapter: Adapter, app: web.Application, base: str) -> None:
    """``POST`` and ``GET ?wsdl`` at the adapter's SOAP path; checks the output types first."""
    from adapters.sdk.wsdl import wsdl_document

    operations = {str(op.soap): op for op in operations_by(adapter, "soap")}
    wsdl_document(adapter, "http://127.0.0.1/")  # fail at start, not at the first request
    path = base + adapter.soap_path
    app.router.add_post(path, _soap_handler(adapter, operations))
    app.router.add_get(path, _wsdl_handler(adapter, path))


def _wsdl_handler(adapter: Adapter, path: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    from adapters.sdk.wsdl import wsdl_document

    async def serve(request: web.Request) -> web.Response:
        if "wsdl" not in request.query and "WSDL" not in request.query:
            return error_response(400, "invalid_input", f"POST SOAP requests; GET {path}?wsdl")
        location = f"{request.scheme}://{request.host}{path}"
        return web.Response(body=wsdl_document(adapter, location), content_type="text/xml")

    return serve


def fault_response(code: str, message: str, detail: str | None = None) -> web.Response:
    return web.Response(
        body=xsoap.fault_envelope(code, message, detail), status=500, content_type="text/xml"
    )


def _soap_handler(
    adapter: Adapter, operations: dict[str, Operation]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return fault_response("Client.RequestTooLarge", "the SOAP message is too large")
        try:
            part = xsoap.soap_part(request.headers.get("Content-Type", ""), body)
            parsed = xsoap.parse_request(part.envelope)
        except ExchangeError as exc:
            return fault_response(exc.code, exc.message)
        op = operations.get(parsed.body_name)
        if op is None or parsed.body_namespace != adapter.namespace:
            name = f"{{{parsed.body_namespace}}}{parsed.body_name}"
            return fault_response("Client", f"no operation {name} here", "unknown_operation")
        try:
            value = op.binder.from_text(_input_values(parsed.body_element), soap=True)
        except InputError as exc:
            return fault_response("Client", exc.message, exc.code)
        ctx = Context("soap", _context_values(parsed.header), request)
        try:
            result = await op.call(adapter, value, ctx)
            if isinstance(result, Reply):
                result = result.value
            envelope = _response(adapter, op, parsed.header, result)
        except AdapterError as exc:
            side = "Client" if exc.status < 500 else "Server"
            return fault_response(side, exc.message, exc.code)
        except Exception:
            detail = incident(request, f"SOAP operation {op.soap}")
            return fault_response("Server", f"the adapter could not answer ({detail})", detail)
        return web.Response(body=envelope, content_type="text/xml", charset="utf-8")

    return handle


def _context_values(header: xsoap.XRoadHeader) -> dict[str, str]:
    values = {
        "X-Road-Client": str(header.client),
        "X-Road-Service": str(header.service),
        "X-Road-Id": header.message_id,
    }
    for name, value in (
        ("X-Road-UserId", header.user_id),
        ("X-Road-Issue", header.issue),
        ("X-Road-Purpose", header.purpose),
        ("X-Road-Represented-Party", header.represented_party),
    ):
        if value is not None:
            values[name] = value
    return values


def _input_values(wrapper: etree._Element) -> dict[str, str]:
    """The wrapper element's children as ``{local name: text}``; ``xsi:nil`` ones left out."""
    values: dict[str, str] = {}
    for child in wrapper:
        if not isinstance(child.tag, str):
            continue
        name = etree.QName(child).localname
        if len(child):
            raise InputError("invalid_input", f"{name} must hold text, not elements")
        if name in values:
            raise InputError("invalid_input", f"{name} is given more than once")
        if child.get(f"{{{XSI_NS}}}nil") in ("true", "1"):
            continue
        values[name] = child.text or ""
    return values


def _response(adapter: Adapter, op: Operation, header: xsoap.XRoadHeader, result: Any) -> bytes:
    ns = str(adapter.namespace)
    envelope = etree.Element(
        f"{{{xsoap.SOAP_ENV_NS}}}Envelope",
        nsmap={**xsoap.NSMAP, "ext": xsoap.EXT_NS, "tns": ns, "xsi": XSI_NS},
    )
    head = etree.SubElement(envelope, f"{{{xsoap.SOAP_ENV_NS}}}Header")
    head.extend(xsoap.header_elements(header))
    body = etree.SubElement(envelope, f"{{{xsoap.SOAP_ENV_NS}}}Body")
    wrapper = etree.SubElement(body, f"{{{ns}}}{op.soap}Response")
    _fill(wrapper, ns, _as_record(result))
    return xsoap.serialise(envelope)


def _as_record(value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if not isinstance(value, dict):
        raise TypeError(f"a SOAP operation returns a record, not {type(value).__name__}")
    return value


def _fill(parent: etree._Element, ns: str, record: dict[str, Any]) -> None:
    for name, value in record.items():
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            _element(parent, ns, name, item)


def _element(parent: etree._Element, ns: str, name: str, value: Any) -> None:
    el = etree.SubElement(parent, f"{{{ns}}}{name}")
    if value is None:
        el.set(f"{{{XSI_NS}}}nil", "true")
    elif isinstance(value, bool):
        el.text = "true" if value else "false"
    elif isinstance(value, dt.date | dt.datetime):
        el.text = value.isoformat()
    elif isinstance(value, dict) or dataclasses.is_dataclass(value):
        _fill(el, ns, _as_record(value))
    else:
        el.text = str(value)
