"""X-Road message protocol 4.0 (SOAP 1.1) on the consumer side (PR-MESS; docs/design.md §4).

What it does:

- parses the bytes an information system posts (a SOAP 1.1 envelope, or the SOAP part of a
  SOAP-with-attachments ``multipart/related`` message) with a hardened lxml parser into a typed,
  frozen :class:`XRoadHeader` and the name of the body element;
- parses response envelopes (a ``<code>Response`` body or a SOAP Fault) and checks that their
  X-Road header echoes the request's and that ``requestHash`` binds them to it;
- builds SOAP Faults with X-Road's dotted fault codes, and finishes a response envelope on the
  provider side (echoed header, ``requestHash`` with its ``algorithmId``).

XML hardening: only UTF-8, at most ``max_bytes`` bytes, any DOCTYPE refused (so no internal or
external entities, no DTD, no billion laughs, no XXE), no network access, no huge-tree mode
(libxml2's own limits on text nodes and depth stay on), at most :data:`MAX_DEPTH` levels.

The parser's contract: any input either parses or raises a ``Client.*``
:class:`~exchange.errors.ClientError` with a precise message; nothing else (property-tested).
Callers that parse what a *service* answered translate those into ``Server.ServerProxy.*``.

What it does not do: no IO, no signing, no policy; it never expands, fetches or validates
against a schema. No aiohttp, ssl or sqlite3.
"""

from __future__ import annotations

import copy
import email.message
import email.parser
import email.policy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from lxml import etree

from exchange.errors import BadRequest, ClientError, RequestTooLarge
from exchange.identifiers import (
    MAX_PART_LENGTH,
    ClientId,
    MemberId,
    SecurityServerId,
    ServiceId,
    SubsystemId,
    validate_part,
)
from exchange.protocol import fields as field_rules
from exchange.protocol.canonical import sha512_b64
from exchange.protocol.fields import FieldError
from exchange.protocol.syntax import is_field_value

SOAP_ENV_NS: Final = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV_NS: Final = "http://www.w3.org/2003/05/soap-envelope"
XROAD_NS: Final = "http://x-road.eu/xsd/xroad.xsd"
ID_NS: Final = "http://x-road.eu/xsd/identifiers"
REPR_NS: Final = "http://x-road.eu/xsd/representation.xsd"
EXT_NS: Final = "urn:exchange:xroad-ext:1"
NSMAP: Final = {"SOAP-ENV": SOAP_ENV_NS, "xrd": XROAD_NS, "id": ID_NS}

PROTOCOL_VERSION: Final = "4.0"
# PR-MESS §2.2: requestHash/@algorithmId names an XML-DSIG algorithm URI
REQUEST_HASH_ALGORITHM_ID: Final = "http://www.w3.org/2001/04/xmlenc#sha512"
MAX_ENVELOPE_BYTES: Final = 10 * 2**20
MAX_DEPTH: Final = 64
MAX_TEXT: Final = field_rules.MAX_TEXT
SOAP_CONTENT_TYPE: Final = "text/xml; charset=utf-8"
OFF_LOOP_BYTES: Final = 64 * 1024
"""Servers parse messages larger than this in a worker thread, not on their event loop."""

_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._\-]+)["']""")
_UTF8_NAMES: Final = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})

# header fields in the X-Road namespace (PR-MESS §2.2, Table 1; PR-TARGETSS)
_TEXT_FIELDS: Final = ("id", "userId", "issue", "protocolVersion")
_XROAD_FIELDS: Final = frozenset(
    {*_TEXT_FIELDS, "client", "service", "centralService", "securityServer", "requestHash"}
)


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


# --- errors (all the caller's fault: Client.*) ----------------------------------------------------


def _invalid_xml(message: str) -> ClientError:
    return BadRequest(message, code="Client.InvalidXml")


def _invalid_soap(message: str) -> ClientError:
    return BadRequest(message, code="Client.InvalidSoap")


def _missing_field(name: str) -> ClientError:
    return BadRequest(
        f"the X-Road header field {name!r} is required", code="Client.MissingHeaderField"
    )


# --- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class XRoadHeader:
    """The X-Road header fields of a request (PR-MESS §2.2), typed."""

    client: ClientId
    service: ServiceId
    service_version: str | None
    message_id: str
    user_id: str | None
    issue: str | None
    protocol_version: str
    represented_party: str | None
    security_server: SecurityServerId | None
    purpose: str | None


@dataclass(frozen=True, slots=True)
class SoapRequest:
    """A parsed request: its header, the wrapper element of its body (its name, and the parsed
    element for a service that reads its children), the exact envelope bytes, and detached copies
    of its X-Road header field elements (all but ``requestHash``), which the provider echoes
    into the response."""

    header: XRoadHeader
    body_namespace: str | None
    body_name: str
    envelope: bytes
    xroad_fields: tuple[etree._Element, ...] = field(repr=False, compare=False)
    body_element: etree._Element = field(repr=False, compare=False)

    @property
    def response_name(self) -> str:
        return self.body_name + "Response"


@dataclass(frozen=True, slots=True)
class SoapFault:
    code: str
    string: str
    detail: str | None


@dataclass(slots=True)
class SoapResponse:
    """A parsed response envelope (mutable: the provider finishes it in place).

    ``body`` is the single child of ``Body``: the ``<code>Response`` element, or ``Fault``.
    """

    root: etree._Element
    header: etree._Element | None
    body: etree._Element
    fault: SoapFault | None

    def to_bytes(self) -> bytes:
        return serialise(self.root)


@dataclass(frozen=True, slots=True)
class SoapPart:
    """Where the SOAP envelope is in what the client sent (the whole body, or the first part)."""

    envelope: bytes
    multipart: bool


def request_hash(envelope: bytes) -> str:
    """``requestHash``: base64 SHA-512 of the SOAP request message's bytes (PR-MESS §2.2)."""
    return sha512_b64(envelope)


# --- hardened parsing -----------------------------------------------------------------------------


def _parser() -> etree.XMLParser:
    # a parser per call: lxml parsers must not be shared between threads
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
        collect_ids=False,
    )


def _check_encoding(data: bytes) -> None:
    declared = _XML_ENCODING.match(data)
    if declared is not None and declared.group(1).decode("ascii").lower() not in _UTF8_NAMES:
        raise _invalid_xml(
            f"the message declares encoding {declared.group(1).decode('ascii')!r}; "
            "only UTF-8 is accepted"
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid_xml(f"the message is not valid UTF-8 (byte {exc.start})") from None
    # NUL is valid UTF-8 but never XML; refusing it also refuses UTF-16/32 without a byte order
    # mark, which libxml2 would detect on its own and which the DOCTYPE scan could not read
    if b"\x00" in data:
        raise _invalid_xml("the message holds a NUL byte: only UTF-8 XML is accepted")


def parse_xml(data: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> etree._Element:
    """Parse an XML document with every dangerous feature off, or raise ``Client.*``."""
    if len(data) > max_bytes:
        raise RequestTooLarge(f"the SOAP message of {len(data)} bytes exceeds {max_bytes} bytes")
    if not data.strip():
        raise _invalid_xml("the message is empty")
    _check_encoding(data)
    # (1) no DTD at all: it is where entities (billion laughs, XXE) are declared
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise _invalid_xml("a DOCTYPE or entity declaration is not allowed in SOAP messages")
    # (2) libxml2 parses without entities, DTD, network or huge-tree mode
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise _invalid_xml(f"malformed XML: {str(exc)[:200]}") from None
    except ValueError as exc:
        raise _invalid_xml(f"malformed XML: {str(exc)[:200]}") from None
    # (3) belt and braces: nothing of a DTD survived, no entity references, bounded depth
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise _invalid_xml("a DOCTYPE is not allowed in SOAP messages")
    _check_tree(root)
    return root


def _check_tree(root: etree._Element) -> None:
    depth = 0
    for event, node in etree.iterwalk(root, events=("start", "end")):
        if event == "end":
            depth -= 1
            continue
        depth += 1
        if depth > MAX_DEPTH:
            raise _invalid_xml(f"the message nests elements deeper than {MAX_DEPTH} levels")
        for child in node:
            if isinstance(child, etree._Entity):
                raise _invalid_xml("entity references are not allowed in SOAP messages")


def _elements(parent: etree._Element) -> list[etree._Element]:
    """Child elements; comments and processing instructions are skipped, stray text refused."""
    if parent.text is not None and parent.text.strip():
        raise _invalid_soap(f"unexpected text inside {etree.QName(parent).localname}")
    out = []
    for child in parent:
        if child.tail is not None and child.tail.strip():
            raise _invalid_soap(f"unexpected text inside {etree.QName(parent).localname}")
        if isinstance(child.tag, str):
            out.append(child)
    return out


def _envelope_parts(root: etree._Element) -> tuple[etree._Element | None, etree._Element]:
    """Header (optional) and Body of a SOAP 1.1 envelope (SOAP 1.1 §4)."""
    if not isinstance(root.tag, str):
        raise _invalid_soap("the document is not a SOAP envelope")
    tag = etree.QName(root)
    if tag.localname != "Envelope":
        raise _invalid_soap(f"the document element is {tag.localname!r}, not a SOAP Envelope")
    if tag.namespace == SOAP12_ENV_NS:
        raise _invalid_soap(
            "SOAP 1.2 envelopes are not supported: X-Road message protocol 4.0 is SOAP 1.1 "
            f"(namespace {SOAP_ENV_NS})"
        )
    if tag.namespace != SOAP_ENV_NS:
        raise _invalid_soap(
            f"the envelope namespace is {tag.namespace!r}, SOAP 1.1 requires {SOAP_ENV_NS}"
        )
    children = _elements(root)
    names = [c.tag for c in children]
    if names == [_q(SOAP_ENV_NS, "Header"), _q(SOAP_ENV_NS, "Body")]:
        return children[0], children[1]
    if names == [_q(SOAP_ENV_NS, "Body")]:
        return None, children[0]
    if _q(SOAP_ENV_NS, "Body") not in names:
        raise BadRequest("the SOAP envelope has no Body", code="Client.MissingBody")
    raise _invalid_soap("a SOAP envelope holds an optional Header, then the Body, nothing else")


def _body_element(body: etree._Element) -> etree._Element:
    children = _elements(body)
    if not children:
        raise BadRequest("the SOAP Body is empty", code="Client.MissingBody")
    if len(children) > 1:
        raise BadRequest(
            "the SOAP Body must hold exactly one element (document/literal wrapped, PR-MESS §2.3)",
            code="Client.InvalidBody",
        )
    return children[0]


# --- header fields ----------------------------------------------------------------------------


_XML_SPACE: Final = " \t\r\n"
"""XML 1.0 §2.3 S: the white space around a header field's text that is not part of it."""


def _text_of(el: etree._Element, name: str) -> str:
    if len(el):
        raise BadRequest(
            f"the X-Road header field {name!r} must hold text only", code="Client.InvalidHeader"
        )
    return (el.text or "").strip(_XML_SPACE)


def _checked_text(el: etree._Element, name: str) -> str:
    """A text field, by the rule the provider applies to the signed request."""
    try:
        return field_rules.text(_text_of(el, name), name)
    except FieldError as exc:
        raise BadRequest(
            f"the X-Road header field {name!r}: {exc}", code="Client.InvalidHeader"
        ) from None


def _object_type(el: etree._Element, name: str, allowed: tuple[str, ...], code: str) -> str:
    object_type = el.get(_q(ID_NS, "objectType"))
    if object_type is None:
        raise BadRequest(
            f"the {name!r} identifier lacks the attribute id:objectType ({ID_NS})", code=code
        )
    if object_type not in allowed:
        raise BadRequest(
            f"the {name!r} identifier has objectType {object_type[:40]!r}; "
            f"expected {' or '.join(allowed)}",
            code=code,
        )
    return object_type


def _local_names(el: etree._Element) -> list[str]:
    return [
        etree.QName(c).localname
        if etree.QName(c).namespace == ID_NS
        else f"{{{etree.QName(c).namespace or ''}}}{etree.QName(c).localname}"
        for c in _elements(el)
    ]


def _codes(el: etree._Element, name: str, expected: tuple[str, ...], code: str) -> list[str]:
    """The identifier codes of ``el`` in the order of the schema (PR-MESS §2.1, Annex A)."""
    children = _elements(el)
    if _local_names(el) != list(expected):
        raise BadRequest(
            f"the {name!r} identifier must hold "
            f"{', '.join('id:' + e for e in expected)} in that order",
            code=code,
        )
    values = []
    for child, part in zip(children, expected, strict=True):
        value = _text_of(child, f"{name}/{part}")
        if part == "serviceVersion":
            if not value or len(value) > MAX_PART_LENGTH or not is_field_value(value):
                raise BadRequest(f"invalid serviceVersion in {name!r}", code=code)
        else:
            validate_part(value, f"{name} {part}", code=code)
        values.append(value)
    return values


_MEMBER_PARTS: Final = ("xRoadInstance", "memberClass", "memberCode")
_SUBSYSTEM_PARTS: Final = (*_MEMBER_PARTS, "subsystemCode")
_SERVICE_PARTS: Final = (*_SUBSYSTEM_PARTS, "serviceCode")
_SERVER_PARTS: Final = (*_MEMBER_PARTS, "serverCode")


def _client(el: etree._Element) -> ClientId:
    code = "Client.InvalidClientIdentifier"
    object_type = _object_type(el, "client", ("MEMBER", "SUBSYSTEM"), code)
    if object_type == "MEMBER":
        return MemberId(*_codes(el, "client", _MEMBER_PARTS, code))
    return SubsystemId(*_codes(el, "client", _SUBSYSTEM_PARTS, code))


def _service(el: etree._Element) -> tuple[ServiceId, str | None]:
    code = "Client.InvalidServiceIdentifier"
    _object_type(el, "service", ("SERVICE",), code)
    names = _local_names(el)
    if "subsystemCode" not in names and names[:4] == [*_MEMBER_PARTS, "serviceCode"]:
        raise BadRequest(
            "the service identifier names no subsystemCode: services are provided by "
            "subsystems in this federation",
            code=code,
        )
    versioned = bool(names) and names[-1] == "serviceVersion"
    parts = _codes(
        el, "service", (*_SERVICE_PARTS, "serviceVersion") if versioned else _SERVICE_PARTS, code
    )
    return ServiceId(*parts[:5]), (parts[5] if versioned else None)


def _security_server(el: etree._Element) -> SecurityServerId:
    code = "Client.InvalidSecurityServer"
    _object_type(el, "securityServer", ("SERVER",), code)
    return SecurityServerId(*_codes(el, "securityServer", _SERVER_PARTS, code))


def _represented_party(el: etree._Element) -> str:
    """PR-REPR: ``partyClass`` (optional) and ``partyCode``, as ``[class/]code`` like REST."""
    code = "Client.InvalidHeader"
    parts = {
        etree.QName(c).localname: c for c in _elements(el) if etree.QName(c).namespace == REPR_NS
    }
    if "partyCode" not in parts or len(parts) != len(_elements(el)):
        raise BadRequest(
            "representedParty holds repr:partyClass (optional) and repr:partyCode", code=code
        )
    values = [
        _checked_text(parts[name], f"representedParty/{name}")
        for name in ("partyClass", "partyCode")
        if name in parts
    ]
    if any("/" in v for v in values):
        raise BadRequest("representedParty codes must not contain '/'", code=code)
    try:
        return field_rules.represented_party("/".join(values))
    except FieldError as exc:
        raise BadRequest(f"representedParty: {exc}", code=code) from None


def _field_key(qname: etree.QName) -> str | None:
    """The X-Road header field a header block is (the security servers process it), or None."""
    if qname.namespace == XROAD_NS and qname.localname in _XROAD_FIELDS:
        return str(qname.localname)
    if qname.namespace == REPR_NS and qname.localname == "representedParty":
        return "representedParty"
    if qname.namespace == EXT_NS and qname.localname == "purpose":
        return "purpose"
    return None


def _header_fields(header: etree._Element | None) -> dict[str, etree._Element]:
    """The X-Road header fields by local name; a repeated field is a client error."""
    fields: dict[str, etree._Element] = {}
    if header is None:
        return fields
    for el in _elements(header):
        key = _field_key(etree.QName(el))
        if key is None:
            continue
        if key in fields:
            raise BadRequest(
                f"the X-Road header field {key!r} appears more than once",
                code="Client.DuplicateHeaderField",
            )
        fields[key] = el
    return fields


_FIELD_NAMES: Final = frozenset({*_XROAD_FIELDS, "representedParty", "purpose"})


def _no_lookalikes(header: etree._Element | None) -> None:
    """A header block named like an X-Road field in another namespace is refused: a service that
    reads the header by local name would take it for the field the security servers checked."""
    for el in [] if header is None else _elements(header):
        qname = etree.QName(el)
        if qname.localname in _FIELD_NAMES and qname.namespace not in (XROAD_NS, REPR_NS, EXT_NS):
            raise BadRequest(
                f"the header block {qname.localname!r} in namespace "
                f"{(qname.namespace or '')[:80]!r} looks like an X-Road header field",
                code="Client.InvalidHeader",
            )


def parse_header(header: etree._Element | None) -> XRoadHeader:
    """Read and check the X-Road header of a request (PR-MESS §2.2)."""
    fields = _header_fields(header)
    for name in ("client", "id", "protocolVersion"):
        if name not in fields:
            raise _missing_field(name)
    if "centralService" in fields:
        raise BadRequest(
            "central services are not supported; name the service in the 'service' field",
            code="Client.InvalidServiceIdentifier",
        )
    if "service" not in fields:
        raise _missing_field("service")
    _no_lookalikes(header)
    version = _text_of(fields["protocolVersion"], "protocolVersion")
    if version != PROTOCOL_VERSION:
        raise BadRequest(
            f"unsupported X-Road protocol version {version[:20]!r}; this server speaks "
            f"{PROTOCOL_VERSION}",
            code="Client.InvalidProtocolVersion",
        )
    try:
        message_id = field_rules.message_id(_text_of(fields["id"], "id"))
    except FieldError as exc:
        raise BadRequest(f"invalid X-Road id: {exc}", code="Client.InvalidHeader") from None
    service, service_version = _service(fields["service"])

    def optional(name: str) -> str | None:
        return _checked_text(fields[name], name) if name in fields else None

    return XRoadHeader(
        client=_client(fields["client"]),
        service=service,
        service_version=service_version,
        message_id=message_id,
        user_id=optional("userId"),
        issue=optional("issue"),
        protocol_version=version,
        represented_party=(
            _represented_party(fields["representedParty"]) if "representedParty" in fields else None
        ),
        security_server=(
            _security_server(fields["securityServer"]) if "securityServer" in fields else None
        ),
        purpose=optional("purpose"),
    )


def parse_request(envelope: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> SoapRequest:
    """Parse a request envelope; any problem is a ``Client.*`` error with a precise message."""
    root = parse_xml(envelope, max_bytes=max_bytes)
    header_el, body = _envelope_parts(root)
    header = parse_header(header_el)
    _check_must_understand(header_el)
    element = _body_element(body)
    qname = etree.QName(element)
    # (PR-MESS §2.3) the wrapper element is named after the service code
    if qname.localname != header.service.service_code:
        raise BadRequest(
            f"the body element {qname.localname[:60]!r} does not match the service code "
            f"{header.service.service_code!r}",
            code="Client.InvalidBody",
        )
    return SoapRequest(
        header=header,
        body_namespace=qname.namespace,
        body_name=qname.localname,
        envelope=envelope,
        xroad_fields=_xroad_field_copies(header_el),
        body_element=element,
    )


SOAP_ACTOR_NEXT: Final = "http://schemas.xmlsoap.org/soap/actor/next"


def _check_must_understand(header: etree._Element | None) -> None:
    """SOAP 1.1 §4.2.3: ``mustUnderstand`` is "0" or "1"; a block marked "1" for the next SOAP
    node (``actor`` .../actor/next), which is the security server, must be one it processes,
    i.e. an X-Road header field. Blocks for the ultimate recipient (no ``actor``) go on to the
    service, which answers for them."""
    for el in [] if header is None else _elements(header):
        value = el.get(_q(SOAP_ENV_NS, "mustUnderstand"))
        if value is None:
            continue
        if value not in ("0", "1"):
            raise _invalid_soap(f'mustUnderstand must be "0" or "1", not {value[:20]!r}')
        qname = etree.QName(el)
        understood = _field_key(qname) is not None
        if value == "1" and el.get(_q(SOAP_ENV_NS, "actor")) == SOAP_ACTOR_NEXT and not understood:
            raise BadRequest(
                f"the header block {qname.localname[:60]!r} in namespace "
                f"{(qname.namespace or '')[:80]!r} must be understood by the next SOAP node, the "
                "security server, which does not process it",
                code="Client.MustUnderstand",
            )


def _xroad_field_copies(header: etree._Element | None) -> tuple[etree._Element, ...]:
    if header is None:
        return ()
    return tuple(
        copy.deepcopy(el)
        for el in _elements(header)
        if etree.QName(el).namespace in (XROAD_NS, REPR_NS, EXT_NS)
        and etree.QName(el).localname != "requestHash"
    )


# --- SOAP with attachments (SwA, PR-MESS §2.4) ------------------------------------------------


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def soap_part(content_type: str, body: bytes) -> SoapPart:
    """The SOAP envelope in what a client sent: the body itself, or the first MIME part.

    Attachments are not touched: the whole multipart body travels unchanged.
    """
    kind = media_type(content_type)
    if kind == "text/xml":
        return SoapPart(envelope=body, multipart=False)
    if kind != "multipart/related":
        raise BadRequest(
            f"content type {kind[:60]!r} is not SOAP 1.1: use text/xml or multipart/related",
            code="Client.InvalidContentType",
        )
    return SoapPart(envelope=_first_part(content_type, body), multipart=True)


def _first_part(content_type: str, body: bytes) -> bytes:
    def fail(why: str) -> ClientError:
        return BadRequest(f"multipart message: {why}", code="Client.MimeParsingFailed")

    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode(
        "utf-8", "surrogateescape"
    )
    try:
        message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head + body)
    except Exception:  # the email package raises various errors on hostile input
        raise fail("cannot be parsed") from None
    if not message.is_multipart() or message.get_boundary() is None:
        raise fail("no boundary parameter, or no parts")
    parts = message.get_payload()
    if not isinstance(parts, list) or not parts or message.defects:
        raise fail("malformed MIME structure")
    first = parts[0]
    if not isinstance(first, email.message.Message):
        raise fail("malformed MIME structure")
    part_type = first.get_content_type()
    if part_type not in ("text/xml", "application/xop+xml"):
        raise fail(f"the first part must be the SOAP envelope (text/xml), not {part_type!r}")
    encoding = (first.get("Content-Transfer-Encoding") or "8bit").strip().lower()
    if encoding not in ("8bit", "7bit", "binary"):
        raise fail("the SOAP part's Content-Transfer-Encoding must be 8bit (PR-MESS §2.4)")
    _check_root_part(message, first, fail)
    payload = first.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raise fail("the SOAP part is empty")
    return payload


def _check_root_part(
    message: email.message.Message,
    first: email.message.Message,
    fail: Callable[[str], ClientError],
) -> None:
    """Every reader must take the same part for the envelope: the first (PR-MESS §2.4).

    A ``start`` parameter naming another part (RFC 2387 §3.2), or a repeated parameter such as
    two ``boundary`` values, would let a service's MIME parser read another envelope than the
    one the security servers checked, signed and matched against the policy.
    """
    names = [name.lower() for name, _ in (message.get_params() or [])[1:]]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise fail(f"the content type repeats the parameter(s) {', '.join(repeated)[:80]}")
    start = message.get_param("start")
    if start is not None:
        content_id = (first.get("Content-ID") or "").strip()
        if not isinstance(start, str) or start.strip() != content_id:
            raise fail(
                "the start parameter names another part than the first: the SOAP envelope "
                "must be the first part (PR-MESS §2.4)"
            )


def replace_soap_part(content_type: str, body: bytes, envelope: bytes) -> bytes:
    """``body`` (a ``multipart/related`` message) with its SOAP part replaced by ``envelope``;
    the preamble, every MIME header and every attachment stay byte for byte.

    Only a message whose first part the byte search finds exactly where the MIME parser does is
    rewritten (CRLF line ends, RFC 2046 §5.1.1); anything else is ``Client.MimeParsingFailed``.
    """
    current = _first_part(content_type, body)
    holder = email.message.Message()
    holder["Content-Type"] = content_type
    boundary = holder.get_boundary()
    assert boundary is not None  # _first_part checked it
    delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    # the first delimiter *line* (RFC 2046 §5.1.1), as the MIME parser finds it: not the same
    # bytes inside the preamble, which would put the finished envelope where no one reads it
    line = re.compile(rb"(?:\A|\r\n)" + re.escape(delimiter) + rb"[ \t]*\r\n")
    found = line.search(body)
    start = -1 if found is None else found.start() + (2 if found.group().startswith(b"\r\n") else 0)
    head_end = body.find(b"\r\n\r\n", start) + 4 if start >= 0 else -1
    end = body.find(b"\r\n" + delimiter, head_end) if head_end >= 4 else -1
    if start < 0 or head_end < 4 or end < 0 or body[head_end:end] != current:
        raise BadRequest(
            "multipart message: cannot locate the SOAP part byte for byte (CRLF line ends needed)",
            code="Client.MimeParsingFailed",
        )
    return body[:head_end] + envelope + body[end:]


# --- responses ------------------------------------------------------------------------------------


def parse_response(data: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> SoapResponse:
    """Parse a response envelope (body element or Fault); problems are ``Client.*`` errors.

    The caller decides whose fault a bad response is (the provider blames the service).
    """
    root = parse_xml(data, max_bytes=max_bytes)
    header, body = _envelope_parts(root)
    if header is not None:
        _header_fields(header)
    element = _body_element(body)
    fault = _fault(element) if element.tag == _q(SOAP_ENV_NS, "Fault") else None
    return SoapResponse(root=root, header=header, body=element, fault=fault)


def _fault(el: etree._Element) -> SoapFault:
    def text(name: str) -> str | None:
        child = el.find(name)
        return None if child is None else "".join(child.itertext()).strip()

    code = text("faultcode")
    if code is None:
        raise _invalid_soap("the SOAP Fault has no faultcode")
    detail = el.find("detail")
    detail_id = None
    if detail is not None:
        node = detail.find("faultDetail")
        detail_id = None if node is None else "".join(node.itertext()).strip()
    return SoapFault(code=code, string=text("faultstring") or "", detail=detail_id)


def _strip_prefix(code: str) -> str:
    """A faultcode may be a QName (``SOAP-ENV:Server.X``); X-Road's codes have no prefix."""
    prefix, sep, rest = code.partition(":")
    return rest if sep and "." not in prefix else code


def fault_code(fault: SoapFault) -> str:
    return _strip_prefix(fault.code)


def prefixed_fault_code(fault: SoapFault) -> str:
    """The faultcode for an envelope of :func:`fault_envelope`: a QName's prefix becomes that
    envelope's ``SOAP-ENV`` (faultcodes are in the SOAP envelope namespace), a dotted X-Road code
    stays as it is."""
    stripped = _strip_prefix(fault.code)
    return stripped if stripped == fault.code else f"SOAP-ENV:{stripped}"


def check_echo(response: SoapResponse, request: SoapRequest) -> None:
    """The response's X-Road header names the request's client, service and id (PR-MESS §2.2).

    Raises ``Client.InconsistentHeaders`` (a ``ClientError``: the caller decides whose fault).
    """
    fields = _header_fields(response.header)
    req = request.header
    problems = []
    try:
        if "client" in fields and _client(fields["client"]) != req.client:
            problems.append("client")
        if "service" in fields and _service(fields["service"])[0] != req.service:
            problems.append("service")
        if "id" in fields and _text_of(fields["id"], "id") != req.message_id:
            problems.append("id")
    except ClientError as exc:
        raise BadRequest(
            f"the response header is malformed: {exc.message}", code="Client.InconsistentHeaders"
        ) from None
    if problems:
        raise BadRequest(
            f"the response header does not echo the request's {', '.join(problems)}",
            code="Client.InconsistentHeaders",
        )


def _request_header_copies(request: SoapRequest) -> list[etree._Element]:
    return [copy.deepcopy(el) for el in request.xroad_fields]


def keep_only_the_answer(response: SoapResponse, request: SoapRequest) -> None:
    """Nothing but the ``Body``'s element and the X-Road header stays in ``response``.

    For a grant with ``fields``: what the service put around the filtered element (other header
    blocks, text, comments, processing instructions, attributes of Envelope, Header and Body, its
    own copies of the X-Road fields) is dropped; the Header holds the request's X-Road fields.
    """
    for el in (response.root, response.header, response.body.getparent()):
        if el is None:
            continue
        el.text = None
        el.attrib.clear()
        for child in list(el):
            if isinstance(child.tag, str):
                child.tail = None
            else:
                el.remove(child)
    if response.header is not None:
        for child in list(response.header):
            response.header.remove(child)
        response.header.extend(_request_header_copies(request))
    etree.cleanup_namespaces(response.root)


def finish_response(response: SoapResponse, request: SoapRequest) -> bytes:
    """The provider's last touch: echo each field of the request's header that the service did
    not (so the client always finds its client, service and id, PR-MESS §2.2), and put in
    ``requestHash`` (replacing any the service sent)."""
    root = response.root
    header = response.header
    if header is None:
        header = etree.Element(_q(SOAP_ENV_NS, "Header"))
        root.insert(0, header)
        response.header = header
    fields = _header_fields(header)
    old = fields.get("requestHash")
    if old is not None:
        header.remove(old)
    present = {(etree.QName(el).namespace, etree.QName(el).localname) for el in _elements(header)}
    for el in _request_header_copies(request):
        if (etree.QName(el).namespace, etree.QName(el).localname) not in present:
            header.append(el)
    hash_el = etree.SubElement(header, _q(XROAD_NS, "requestHash"), nsmap={"xrd": XROAD_NS})
    hash_el.set("algorithmId", REQUEST_HASH_ALGORITHM_ID)
    hash_el.text = request_hash(request.envelope)
    return serialise(root)


def response_request_hash(response: SoapResponse) -> tuple[str | None, str | None]:
    """The ``requestHash`` value and ``algorithmId`` of a response (None where absent)."""
    el = _header_fields(response.header).get("requestHash")
    if el is None:
        return None, None
    value = "".join((el.text or "").split())
    return value, el.get("algorithmId")


def serialise(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


# --- building requests ----------------------------------------------------------------------


def _identifier(tag: str, object_type: str, parts: dict[str, str]) -> etree._Element:
    el = etree.Element(_q(XROAD_NS, tag), nsmap={"xrd": XROAD_NS, "id": ID_NS})
    el.set(_q(ID_NS, "objectType"), object_type)
    for name, value in parts.items():
        etree.SubElement(el, _q(ID_NS, name)).text = value
    return el


def _id_parts(names: tuple[str, ...], values: tuple[str, ...]) -> dict[str, str]:
    return dict(zip(names, values, strict=True))


def header_elements(header: XRoadHeader) -> list[etree._Element]:
    """The X-Road header fields of ``header`` as elements, in PR-MESS Annex E's order."""
    client = header.client
    if isinstance(client, SubsystemId):
        out = [_identifier("client", "SUBSYSTEM", _id_parts(_SUBSYSTEM_PARTS, client.parts))]
    else:
        out = [_identifier("client", "MEMBER", _id_parts(_MEMBER_PARTS, client.parts))]
    service = _id_parts(_SERVICE_PARTS, header.service.parts)
    if header.service_version is not None:
        service["serviceVersion"] = header.service_version
    out.append(_identifier("service", "SERVICE", service))
    if header.security_server is not None:
        parts = _id_parts(_SERVER_PARTS, header.security_server.parts)
        out.append(_identifier("securityServer", "SERVER", parts))
    for tag, value in (
        ("id", header.message_id),
        ("userId", header.user_id),
        ("issue", header.issue),
        ("protocolVersion", header.protocol_version),
    ):
        if value is not None:
            el = etree.Element(_q(XROAD_NS, tag), nsmap={"xrd": XROAD_NS})
            el.text = value
            out.append(el)
    if header.represented_party is not None:
        party = etree.Element(_q(REPR_NS, "representedParty"), nsmap={"repr": REPR_NS})
        codes = header.represented_party.split("/", 1)
        names = ("partyClass", "partyCode") if len(codes) == 2 else ("partyCode",)
        for name, code in zip(names, codes, strict=True):
            etree.SubElement(party, _q(REPR_NS, name)).text = code
        out.append(party)
    if header.purpose is not None:
        purpose = etree.Element(_q(EXT_NS, "purpose"), nsmap={"ext": EXT_NS})
        purpose.text = header.purpose
        out.append(purpose)
    return out


def request_envelope(header: XRoadHeader, body: etree._Element) -> bytes:
    """A request envelope: ``header``'s fields and ``body`` (the ``<serviceCode>`` element)."""
    envelope = etree.Element(_q(SOAP_ENV_NS, "Envelope"), nsmap=NSMAP)
    header_el = etree.SubElement(envelope, _q(SOAP_ENV_NS, "Header"))
    header_el.extend(header_elements(header))
    etree.SubElement(envelope, _q(SOAP_ENV_NS, "Body")).append(body)
    return serialise(envelope)


# --- faults ---------------------------------------------------------------------------------------

FAULT_STATUS: Final = 500
"""SOAP 1.1 §6.2: a SOAP Fault travels with HTTP 500, whatever the fault."""


def fault_message(code: str, message: str, detail: str | None = None) -> tuple[int, str, bytes]:
    """A fault as HTTP carries it: :data:`FAULT_STATUS`, :data:`SOAP_CONTENT_TYPE` and the
    :func:`fault_envelope`. The headers are the caller's: the provider signs the content type
    alone (the code travels as the signed ``error_type``), the consumer adds ``X-Road-Error``."""
    return FAULT_STATUS, SOAP_CONTENT_TYPE, fault_envelope(code, message, detail)


def fault_envelope(code: str, message: str, detail: str | None = None) -> bytes:
    """A SOAP 1.1 Fault with X-Road's dotted code (PR-MESS §2.5, Annex D.1)."""
    envelope = etree.Element(_q(SOAP_ENV_NS, "Envelope"), nsmap={"SOAP-ENV": SOAP_ENV_NS})
    body = etree.SubElement(envelope, _q(SOAP_ENV_NS, "Body"))
    fault = etree.SubElement(body, _q(SOAP_ENV_NS, "Fault"))
    etree.SubElement(fault, "faultcode").text = _xml_safe(code)
    etree.SubElement(fault, "faultstring").text = _xml_safe(message)
    if detail is not None:
        detail_el = etree.SubElement(fault, "detail")
        etree.SubElement(detail_el, "faultDetail").text = _xml_safe(detail)
    return serialise(envelope)


_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(text: str) -> str:
    return _NOT_XML_CHAR.sub("\ufffd", text)
