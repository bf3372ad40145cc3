"""A small SOAP 1.1 service for the integration tests: the shape of an X-Road 4.0 provider.

``POST /soap`` answers document/literal wrapped requests (PR-MESS §2.3) and echoes the X-Road
header as PR-MESS §2.2 requires; ``GET /soap?wsdl`` serves its WSDL (``soap_backend.wsdl``).
Operations:

- ``getPerson`` (``nationalId``): a person, or, for the special ids below, a misbehaving service;
- ``exampleService`` (``exampleInput``, PR-MESS Annex E): ``exampleOutput`` plus what the service
  received (content type, SOAPAction, SHA-256 of the raw HTTP body), so tests can check that
  attachments pass through byte for byte.

It parses with lxml on its own (entities off): it does not use :mod:`exchange.protocol.soap`, so
the security servers are tested against an independent implementation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

from aiohttp import web
from lxml import etree

SOAP_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
XRD: Final = "http://x-road.eu/xsd/xroad.xsd"
POP: Final = "http://population.moi.gov.ps/v1"
WSDL_FILE: Final = Path(__file__).with_name("soap_backend.wsdl")

BOMB: Final = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">
<SOAP-ENV:Body><x>&lol2;</x></SOAP-ENV:Body></SOAP-ENV:Envelope>"""


def _soap_part(content_type: str, body: bytes) -> bytes:
    if not content_type.startswith("multipart/related"):
        return body
    boundary = content_type.split("boundary=", 1)[1].split(";")[0].strip('"')
    first = body.split(b"--" + boundary.encode())[1]
    return first.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def _sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, name)
    el.text = text
    return el


def _person(out: etree._Element, nid: str) -> None:
    _sub(out, "nationalId", nid)
    name = _sub(out, "name")
    name.set("lang", "en")
    _sub(name, "first", "Amal")
    _sub(name, "family", "Haddad")
    _sub(name, "full", "Amal Haddad")
    _sub(out, "dateOfBirth", "1990-04-01")
    address = _sub(out, "address")
    _sub(address, "governorate", "Jerusalem")
    _sub(address, "locality", "Biddu")
    _sub(address, "street", "Main")
    _sub(out, "maritalStatus", "married")
    for child_id, full in (("200000004", "Sami Haddad"), ("200000012", "Lina Haddad")):
        child = _sub(out, "children")
        _sub(child, "nationalId", child_id)
        _sub(child, "name", full)


FAULT_RECORD = "Amal Haddad, born 1984-03-02"
"""What the service's fault for ``nationalId`` "conflict" carries in its detail besides X-Road's
``faultDetail``: a record, as some services put the conflicting one there."""


def _fault(code: str, message: str, detail: str = "") -> web.Response:
    body = (
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}"><SOAP-ENV:Header><leak>{FAULT_RECORD}'
        "</leak></SOAP-ENV:Header><SOAP-ENV:Body><SOAP-ENV:Fault>"
        f"<faultcode>{code}</faultcode><faultstring>{message}</faultstring>{detail}"
        "</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
        if detail
        else f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}"><SOAP-ENV:Body><SOAP-ENV:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{message}</faultstring>"
        "</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()
    return web.Response(status=500, body=body, content_type="text/xml", charset="utf-8")


def _xml(root: etree._Element, status: int = 200) -> web.Response:
    body = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return web.Response(status=status, body=body, content_type="text/xml", charset="utf-8")


ATTACHMENT: Final = bytes(range(256)) * 16 + b"\r\n--not-the-boundary\r\n"


def _with_attachment(root: etree._Element) -> web.Response:
    """SOAP with attachments (PR-MESS Annex F's shape): the envelope, then one binary part."""
    envelope = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    body = (
        b"preamble\r\n--MIME_boundary\r\nContent-Type: text/xml; charset=UTF-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\nContent-ID: <rootpart>\r\n\r\n"
        + envelope
        + b"\r\n--MIME_boundary\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\nContent-ID: <data.bin>\r\n\r\n"
        + ATTACHMENT
        + b"\r\n--MIME_boundary--\r\n"
    )
    content_type = (
        'multipart/related; type="text/xml"; start="<rootpart>"; boundary="MIME_boundary"'
    )
    return web.Response(body=body, headers={"Content-Type": content_type})


async def soap_service(request: web.Request) -> web.StreamResponse:
    if request.method == "GET" and "wsdl" in request.query:
        return web.Response(body=WSDL_FILE.read_bytes(), content_type="text/xml")
    raw = await request.read()
    content_type = request.headers.get("Content-Type", "")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.fromstring(_soap_part(content_type, raw), parser)
    except etree.XMLSyntaxError:
        return _fault("SOAP-ENV:Client", "malformed request")
    header = root.find(_q(SOAP_ENV, "Header"))
    body = root.find(_q(SOAP_ENV, "Body"))
    assert body is not None
    request_el = body[0]
    operation = etree.QName(request_el).localname
    response_el = etree.Element(
        _q(etree.QName(request_el).namespace or POP, operation + "Response")
    )
    body.remove(request_el)
    body.append(response_el)
    if operation == "exampleService":
        _sub(response_el, "exampleOutput", "bar")
        received = _sub(response_el, "received")
        _sub(received, "contentType", content_type)
        _sub(received, "soapAction", request.headers.get("SOAPAction"))
        _sub(received, "sha256", hashlib.sha256(raw).hexdigest())
        if request_el.findtext("exampleInput") == "big-response":
            _sub(response_el, "padding", "p" * 300_000)
        if request_el.findtext("exampleInput") == "swa-response":
            return _with_attachment(root)
        return _xml(root)
    nid = request_el.findtext("nationalId") or ""
    if nid == "000000000":
        return _fault("SOAP-ENV:Client.PersonNotFound", "no person with this national id")
    if nid == "conflict":
        detail = (
            "<detail><faultDetail>conflict-17</faultDetail>"
            f"<existing><name>{FAULT_RECORD}</name></existing></detail>"
        )
        return _fault("soapenv:Client.Conflict", "registered already", detail)
    if nid == "garbage":
        return web.Response(text="this is not SOAP", content_type="text/plain")
    if nid == "badxml":
        return web.Response(body=b"<SOAP-ENV:Envelope", content_type="text/xml")
    if nid == "bomb":
        return web.Response(body=BOMB, content_type="text/xml")
    if nid == "noecho" and header is not None:
        root.remove(header)
    if nid == "idonly" and header is not None:
        for el in list(header):
            if etree.QName(el).localname != "id":
                header.remove(el)
    if nid == "wrongid" and header is not None:
        header.find(_q(XRD, "id")).text = "not-the-request-id"  # type: ignore[union-attr]
    if nid == "forgedhash" and header is not None:
        forged = etree.SubElement(header, _q(XRD, "requestHash"), algorithmId="urn:md5")
        forged.text = "Zm9yZ2Vk"
    if nid == "wrongname":
        response_el.tag = _q(POP, "somethingElse")
    _person(response_el, nid)
    if nid == "attachment":
        return _with_attachment(root)
    return _xml(root, status=500 if nid == "http500" else 200)
