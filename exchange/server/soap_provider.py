"""The provider side of X-Road message protocol 4.0: after a SOAP request is verified.

:mod:`exchange.server.provider` verifies a SOAP request exactly like a REST one (signature,
client hosted by the connecting server, freshness and replay, body digest), then hands it here:

- the service is a SOAP service this server provides (``type = "soap"``), or one the server
  answers itself (:data:`LocalSoapService`, registered in ``local_soap_services`` by service
  code: the SOAP metadata services);
- the envelope inside the signed body parses (hardened) and its X-Road header says what the
  signed request says (client, service, id, user id, issue, purpose, represented party);
- the access policy is evaluated as a SOAP request (client, service and conditions; a grant's
  REST ``methods``/``paths`` are not consulted, see :mod:`exchange.policy.evaluate`);
- the backend gets the envelope bytes unchanged (attachments too) by ``POST`` to the service's
  ``url`` with ``Content-Type`` and ``SOAPAction``;
- a SOAP Fault from the backend passes through unchanged (HTTP 500), except under a grant with
  ``fields``, where only its code, string and X-Road ``faultDetail`` are kept;
- anything that is not a SOAP 1.1 response is ``Server.ServerProxy.ServiceFailed``; a response
  must echo the request's client, service and id (``...ServiceFailed.InconsistentHeaders``
  otherwise), gets the request's header fields if it has none, is filtered to the grant's
  ``fields`` (children of ``<{code}Response>``) and gets ``requestHash`` with its
  ``algorithmId`` (PR-MESS §2.2);
- a response with attachments (``multipart/related``) keeps them byte for byte, only its SOAP
  part is replaced by the finished envelope; under a grant with ``fields`` it is withheld
  (``ServiceFailed``), since no field filter reads attachments.

Errors on this path are turned into SOAP Faults by the caller (:func:`fault_answer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from lxml import etree

from exchange.errors import (
    ClientError,
    ExchangeError,
    InvalidMessage,
    ServiceFailed,
    UnknownService,
)
from exchange.globalconf.document import GlobalConf
from exchange.identifiers import ServiceId
from exchange.policy.model import Decision
from exchange.policy.xml_fields import filter_response_element
from exchange.protocol import soap
from exchange.protocol.messages import SignedRequest
from exchange.protocol.metadata import multipart_related
from exchange.server.backend import Backend
from exchange.server.config import ServerConfig, ServiceConfig
from exchange.server.records import ExchangeRecord

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SoapAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    released: tuple[str, ...] | None
    policy_version: str | None


LocalSoapService = Callable[
    [soap.SoapRequest, GlobalConf, ExchangeRecord],
    Awaitable[etree._Element | tuple[etree._Element, bytes]],
]
"""A service the security server answers itself (the SOAP metadata services of PR-META).

It gets the parsed request (already verified and matched against the signed request), decides
access itself (raising an :class:`~exchange.errors.ExchangeError`, which becomes a fault) and
returns the ``<{code}Response>`` element, or that element and an XML attachment (``getWsdl``:
the answer is then SOAP with attachments, the envelope first); this module wraps it in an
envelope that echoes the request's header and carries ``requestHash``, then it is signed and
logged like any answer.
"""

Decide = Callable[[SignedRequest, GlobalConf, ExchangeRecord], Decision]


class SoapProviderHost(Protocol):
    """What the SOAP provider pipeline uses of the security server."""

    @property
    def config(self) -> ServerConfig: ...
    @property
    def services(self) -> Mapping[ServiceId, ServiceConfig]: ...
    @property
    def local_soap_services(self) -> dict[str, LocalSoapService]: ...
    @property
    def backend(self) -> Backend: ...


async def off_loop(size: int, fn: Callable[..., T], *args: Any) -> T:
    """Large messages are parsed in a worker thread, so the event loop keeps serving."""
    if size > soap.OFF_LOOP_BYTES:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def fault_answer(err: ExchangeError) -> tuple[int, list[tuple[str, str]], bytes]:
    """The signed answer's status, headers and body for ``err`` on the SOAP path."""
    return _fault_reply(err.code, err.message, err.detail)


def _fault_reply(
    code: str, message: str, detail: str | None
) -> tuple[int, list[tuple[str, str]], bytes]:
    status, content_type, body = soap.fault_message(code, message, detail)
    return status, [("content-type", content_type)], body


def _header_value(request: SignedRequest, name: str) -> str | None:
    return next((v for k, v in request.headers if k == name), None)


def _parse(request: SignedRequest, body: bytes, limit: int) -> soap.SoapRequest:
    """The envelope inside the signed body, and that it says what the signature covers."""
    try:
        part = soap.soap_part(_header_value(request, "content-type") or "", body)
        parsed = soap.parse_request(part.envelope, max_bytes=limit)
    except ClientError as exc:
        raise InvalidMessage(f"the signed SOAP request is malformed: {exc.message}") from None
    header = parsed.header
    claimed = (
        header.client,
        header.service,
        header.message_id,
        header.user_id,
        header.issue,
        header.purpose,
        header.represented_party,
    )
    signed = (
        request.client,
        request.service,
        request.message_id,
        request.user_id,
        request.issue,
        request.purpose,
        request.represented_party,
    )
    if claimed != signed:
        raise InvalidMessage("the SOAP header differs from the signed request")
    return parsed


async def process(
    server: SoapProviderHost,
    request: SignedRequest,
    body: bytes,
    conf: GlobalConf,
    rec: ExchangeRecord,
    decide: Decide,
) -> SoapAnswer:
    limit = server.config.limits.max_body_bytes
    # (7) a SOAP service this server provides, or answers itself
    service = server.services.get(request.service)
    local = server.local_soap_services.get(request.service.service_code)
    if service is None and local is None:
        raise UnknownService(f"service {request.service} is not provided by this security server")
    if service is not None and service.type != "soap":
        raise UnknownService(
            f"service {request.service} is a REST service: call it at /r1/{request.service}"
        )
    parsed = await off_loop(len(body), _parse, request, body, limit)
    if service is None:
        assert local is not None
        answer = await local(parsed, conf, rec)
        element, attachment = answer if isinstance(answer, tuple) else (answer, None)
        envelope = soap.parse_response(soap.serialise(_wrap(element)))
        out = soap.finish_response(envelope, parsed)
        if attachment is None:
            return SoapAnswer(200, [("content-type", soap.SOAP_CONTENT_TYPE)], out, None, None)
        content_type, message = multipart_related(out, attachment)
        return SoapAnswer(200, [("content-type", content_type)], message, None, None)
    # (8) the access policy grants it
    decision = decide(request, conf, rec)
    rec.mark("decided")
    # (9) the backend answers, and only granted fields leave this server
    headers = [
        ("Content-Type", _header_value(request, "content-type") or soap.SOAP_CONTENT_TYPE),
        ("SOAPAction", _header_value(request, "soapaction") or '""'),
    ]
    result = await server.backend.call(
        "POST",
        service.url,
        "",
        "",
        headers,
        body,
        min(service.timeout, server.config.limits.backend_timeout),
    )
    rec.mark("backend")
    args = (result.status, result.headers, result.body, parsed, decision, limit, rec)
    # a large answer is parsed, filtered and re-serialised in a worker thread
    return await off_loop(len(result.body), _finish, *args)


def _wrap(element: etree._Element) -> etree._Element:
    envelope = etree.Element(
        f"{{{soap.SOAP_ENV_NS}}}Envelope", nsmap={"SOAP-ENV": soap.SOAP_ENV_NS}
    )
    etree.SubElement(envelope, f"{{{soap.SOAP_ENV_NS}}}Body").append(element)
    return envelope


def _finish(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    request: soap.SoapRequest,
    decision: Decision,
    limit: int,
    rec: ExchangeRecord,
) -> SoapAnswer:
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    kind = soap.media_type(content_type)
    if kind not in ("text/xml", "multipart/related"):
        raise ServiceFailed(
            f"the SOAP service answered {kind[:60] or 'no content type'!r}, not a SOAP 1.1 "
            "envelope (text/xml, or multipart/related with attachments)"
        )
    try:
        part = soap.soap_part(content_type, body)
        response = soap.parse_response(part.envelope, max_bytes=limit)
    except ClientError as exc:
        raise ServiceFailed(f"the SOAP service answered no valid envelope: {exc.message}") from None
    # a fault from the service passes through as it is, unless the grant releases some fields
    # only: then only its code, string and X-Road faultDetail leave (a detail may hold a record)
    if response.fault is not None:
        if decision.fields is None:
            return SoapAnswer(
                soap.FAULT_STATUS,
                [("content-type", content_type)],
                body,
                None,
                decision.policy_version,
            )
        fault = response.fault
        reply = _fault_reply(soap.prefixed_fault_code(fault), fault.string, fault.detail)
        rec.released_fields = []
        return SoapAnswer(*reply, (), decision.policy_version)
    if status != 200:
        raise ServiceFailed(f"the SOAP service answered HTTP {status} without a SOAP Fault")
    try:
        soap.check_echo(response, request)
    except ClientError as exc:
        raise ServiceFailed(
            exc.message, code="Server.ServerProxy.ServiceFailed.InconsistentHeaders"
        ) from None
    released: tuple[str, ...] | None = None
    if decision.fields is not None:
        if part.multipart:
            raise ServiceFailed(
                "the grant releases only some fields, but the service answered attachments, "
                "which no field filter can read"
            )
        released = _minimise(response, request, decision.fields)
        rec.released_fields = list(released)
    out = soap.finish_response(response, request)
    if not part.multipart:
        return SoapAnswer(
            200, [("content-type", soap.SOAP_CONTENT_TYPE)], out, released, decision.policy_version
        )
    # SwA: the finished envelope replaces the SOAP part; the attachments pass unchanged
    try:
        message = soap.replace_soap_part(content_type, body, out)
    except ClientError as exc:
        raise ServiceFailed(f"the SOAP service's attachments: {exc.message}") from None
    return SoapAnswer(
        200, [("content-type", content_type)], message, released, decision.policy_version
    )


def _minimise(
    response: soap.SoapResponse, request: soap.SoapRequest, fields: tuple[str, ...]
) -> tuple[str, ...]:
    name = etree.QName(response.body)
    if name.localname != request.response_name:
        raise ServiceFailed(
            f"the grant releases only some fields, but the service answered "
            f"<{name.localname[:60]}> instead of <{request.response_name}>"
        )
    released = filter_response_element(response.body, fields)
    # nothing the service wrote around the answer leaves either (header blocks, comments)
    soap.keep_only_the_answer(response, request)
    return released
