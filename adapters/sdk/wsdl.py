"""The WSDL 1.1 of an adapter's SOAP operations (document/literal wrapped), generated from types.

Served at ``GET {soap_path}?wsdl`` (the security server's ``getWsdl`` fetches it from the
service's ``wsdl_url``). Per operation ``op``: a request element ``op`` whose children are the
input dataclass's fields (by their SOAP names), a response element ``opResponse`` whose children
are the output's fields, and a binding that carries the X-Road header fields (``client``,
``service``, ``id``, ``userId``, ``issue``, ``protocolVersion``, our ``ext:purpose``; responses
add ``requestHash``) as ``soap:header`` parts, so that stock clients (zeep, SoapUI) send them.

The X-Road and identifier schemas are declared inline (the subset the headers use, after
X-Road's ``xroad.xsd`` and ``identifiers.xsd``), so a client never fetches anything from the
network to read this WSDL. Response fields are all ``minOccurs="0"``: the provider security
server removes the fields a client's grant does not release. Builds bytes; no IO.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Final, Literal, get_args, get_origin

from lxml import etree

from adapters.sdk.adapter import operations_by
from adapters.sdk.types import (
    XSD_SCALARS,
    Schema,
    _unwrap_annotated,
    _unwrap_optional,
    record_fields,
)
from exchange.protocol.soap import EXT_NS, ID_NS, XROAD_NS

if TYPE_CHECKING:
    from adapters.sdk.adapter import Adapter, Operation

WSDL_NS: Final = "http://schemas.xmlsoap.org/wsdl/"
SOAP_BINDING_NS: Final = "http://schemas.xmlsoap.org/wsdl/soap/"
XSD_NS: Final = "http://www.w3.org/2001/XMLSchema"
HTTP_TRANSPORT: Final = "http://schemas.xmlsoap.org/soap/http"
REQUEST_HEADERS: Final = ("client", "service", "id", "userId", "issue", "protocolVersion")
_OBJECT_TYPES: Final = (
    "MEMBER", "SUBSYSTEM", "SERVER", "GLOBALGROUP", "SECURITYCATEGORY", "SERVICE",
    "CENTRALSERVICE", "LOCALGROUP",
)  # fmt: skip


def _w(tag: str) -> str:
    return f"{{{WSDL_NS}}}{tag}"


def _x(tag: str) -> str:
    return f"{{{XSD_NS}}}{tag}"


def _s(tag: str) -> str:
    return f"{{{SOAP_BINDING_NS}}}{tag}"


def _sub(parent: etree._Element, tag: str, **attributes: str) -> etree._Element:
    return etree.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attributes.items()})


# --- the X-Road header schemas (inline) ----------------------------------------------------------


def _identifiers_schema(types: etree._Element) -> None:
    schema = _sub(
        types,
        _x("schema"),
        targetNamespace=ID_NS,
        elementFormDefault="qualified",
        attributeFormDefault="qualified",
    )
    _enumeration(_sub(schema, _x("simpleType"), name="XRoadObjectType"), _OBJECT_TYPES)
    for name, parts in (
        ("XRoadClientIdentifierType", ("xRoadInstance", "memberClass", "memberCode")),
        ("XRoadServiceIdentifierType", ("xRoadInstance", "memberClass", "memberCode")),
    ):
        complex_type = _sub(schema, _x("complexType"), name=name)
        sequence = _sub(complex_type, _x("sequence"))
        for part in parts:
            _sub(sequence, _x("element"), name=part, type="xsd:string")
        _sub(sequence, _x("element"), name="subsystemCode", type="xsd:string", minOccurs="0")
        if name == "XRoadServiceIdentifierType":
            _sub(sequence, _x("element"), name="serviceCode", type="xsd:string")
            _sub(sequence, _x("element"), name="serviceVersion", type="xsd:string", minOccurs="0")
        _sub(complex_type, _x("attribute"), name="objectType", type="id:XRoadObjectType",
             use="required")  # fmt: skip


def _xroad_schema(types: etree._Element) -> None:
    schema = _sub(types, _x("schema"), targetNamespace=XROAD_NS, elementFormDefault="qualified")
    _sub(schema, _x("import"), namespace=ID_NS)
    _sub(schema, _x("element"), name="client", type="id:XRoadClientIdentifierType")
    _sub(schema, _x("element"), name="service", type="id:XRoadServiceIdentifierType")
    for name in ("id", "userId", "issue", "protocolVersion"):
        _sub(schema, _x("element"), name=name, type="xsd:string")
    request_hash = _sub(schema, _x("element"), name="requestHash")
    content = _sub(_sub(request_hash, _x("complexType")), _x("simpleContent"))
    extension = _sub(content, _x("extension"), base="xsd:string")
    _sub(extension, _x("attribute"), name="algorithmId", type="xsd:string")
    ext = _sub(types, _x("schema"), targetNamespace=EXT_NS, elementFormDefault="qualified")
    _sub(ext, _x("element"), name="purpose", type="xsd:string")


# --- the adapter's own types ---------------------------------------------------------------------


class _TypeWriter:
    """XML Schema for the operations' inputs and outputs, named types written once."""

    def __init__(self, schema: etree._Element) -> None:
        self.schema = schema
        self.named: set[str] = set()

    def element(
        self, parent: etree._Element, name: str, tp: Any, *, optional_field: bool
    ) -> etree._Element:
        tp, nullable = _unwrap_optional(tp)
        repeated = get_origin(tp) is list
        if repeated:
            tp, nullable = _unwrap_optional(get_args(tp)[0])
        el = _sub(parent, _x("element"), name=name)
        if optional_field or repeated:
            el.set("minOccurs", "0")
        if repeated:
            el.set("maxOccurs", "unbounded")
        if nullable:
            el.set("nillable", "true")
        self._type_of(el, tp)
        return el

    def _type_of(self, el: etree._Element, tp: Any) -> None:
        base, extra = _unwrap_annotated(tp)
        if extra is not None and extra.name is not None:
            self._named_simple(extra.name, base, extra)
            el.set("type", f"tns:{extra.name}")
        elif extra is not None and extra.format == "date" and base is str:
            el.set("type", "xsd:date")
        elif base in XSD_SCALARS:
            el.set("type", XSD_SCALARS[base])
        elif get_origin(base) is Literal:
            _enumeration(_sub(el, _x("simpleType")), get_args(base))
        elif base is dict or get_origin(base) is dict:
            _sub(_sub(_sub(el, _x("complexType")), _x("sequence")), _x("any"),
                 minOccurs="0", maxOccurs="unbounded", processContents="lax")  # fmt: skip
        else:
            el.set("type", f"tns:{self.record(base)}")

    def _named_simple(self, name: str, base: Any, extra: Schema) -> None:
        if name in self.named:
            return
        self.named.add(name)
        simple = _sub(self.schema, _x("simpleType"), name=name)
        restriction = _sub(simple, _x("restriction"), base=XSD_SCALARS.get(base, "xsd:string"))
        if extra.pattern is not None:
            _sub(
                restriction, _x("pattern"), value=extra.pattern.removeprefix("^").removesuffix("$")
            )
        if extra.max_length is not None:
            _sub(restriction, _x("maxLength"), value=str(extra.max_length))

    def record(self, tp: Any) -> str:
        try:
            fields = record_fields(tp)
        except TypeError:
            raise TypeError(f"cannot describe {tp!r} in a WSDL") from None
        name: str = tp.__name__
        if name not in self.named:
            self.named.add(name)
            complex_type = _sub(self.schema, _x("complexType"), name=name)
            sequence = _sub(complex_type, _x("sequence"))
            for field_name, field_type, _ in fields:
                self.element(sequence, field_name, field_type, optional_field=True)
        return name


def _enumeration(simple: etree._Element, values: tuple[str, ...]) -> None:
    restriction = _sub(simple, _x("restriction"), base="xsd:string")
    for value in values:
        _sub(restriction, _x("enumeration"), value=value)


def _input_element(writer: _TypeWriter, op: Operation) -> None:
    el = _sub(writer.schema, _x("element"), name=str(op.soap))
    sequence = _sub(_sub(el, _x("complexType")), _x("sequence"))
    for f in op.binder.fields:
        child = _sub(sequence, _x("element"), name=f.soap)
        if not f.required:
            child.set("minOccurs", "0")
        if f.optional:
            child.set("nillable", "true")
        if get_origin(f.kind) is Literal:
            _enumeration(_sub(child, _x("simpleType")), get_args(f.kind))
        else:
            child.set("type", XSD_SCALARS.get(f.kind, XSD_SCALARS[dt.date]))


def _output_element(writer: _TypeWriter, op: Operation) -> None:
    base, _ = _unwrap_annotated(_unwrap_optional(op.output_type)[0])
    if get_origin(base) is list or base in XSD_SCALARS:
        raise TypeError(f"SOAP operation {op.soap} must return a record (TypedDict or dataclass)")
    el = _sub(writer.schema, _x("element"), name=f"{op.soap}Response")
    el.set("type", f"tns:{writer.record(base)}")


# --- the document --------------------------------------------------------------------------------


def _messages(root: etree._Element, operations: list[Operation]) -> None:
    for name, parts in (
        ("requestHeader", (*REQUEST_HEADERS, "purpose")),
        ("responseHeader", (*REQUEST_HEADERS, "purpose", "requestHash")),
    ):
        message = _sub(root, _w("message"), name=name)
        for part in parts:
            prefix = "ext" if part == "purpose" else "xrd"
            _sub(message, _w("part"), name=part, element=f"{prefix}:{part}")
    for op in operations:
        for suffix in ("", "Response"):
            message = _sub(root, _w("message"), name=f"{op.soap}{suffix}")
            _sub(message, _w("part"), name="body", element=f"tns:{op.soap}{suffix}")


def _binding_io(parent: etree._Element, tag: str, header: str, parts: tuple[str, ...]) -> None:
    io = _sub(parent, _w(tag))
    _sub(io, _s("body"), parts="body", use="literal")
    for part in parts:
        _sub(io, _s("header"), message=f"tns:{header}", part=part, use="literal")


def wsdl_document(adapter: Adapter, location: str) -> bytes:
    """The WSDL of ``adapter``'s SOAP operations, its endpoint at ``location``."""
    ns = str(adapter.namespace)
    operations = list(operations_by(adapter, "soap"))
    service = "".join(ch for ch in adapter.name.title() if ch.isalnum()) or "Adapter"
    nsmap = {"wsdl": WSDL_NS, "soap": SOAP_BINDING_NS, "xsd": XSD_NS, "tns": ns,
             "xrd": XROAD_NS, "id": ID_NS, "ext": EXT_NS}  # fmt: skip
    root = etree.Element(_w("definitions"), nsmap=nsmap, name=service, targetNamespace=ns)
    types = _sub(root, _w("types"))
    _identifiers_schema(types)
    _xroad_schema(types)
    own = _sub(types, _x("schema"), targetNamespace=ns, elementFormDefault="qualified")
    writer = _TypeWriter(own)
    for op in operations:
        _input_element(writer, op)
        _output_element(writer, op)
    _messages(root, operations)
    port_type = _sub(root, _w("portType"), name=f"{service}PortType")
    for op in operations:
        operation = _sub(port_type, _w("operation"), name=str(op.soap))
        if op.summary:
            _sub(operation, _w("documentation")).text = op.summary
        _sub(operation, _w("input"), message=f"tns:{op.soap}")
        _sub(operation, _w("output"), message=f"tns:{op.soap}Response")
    binding = _sub(root, _w("binding"), name=f"{service}Binding", type=f"tns:{service}PortType")
    _sub(binding, _s("binding"), style="document", transport=HTTP_TRANSPORT)
    for op in operations:
        operation = _sub(binding, _w("operation"), name=str(op.soap))
        _sub(operation, _s("operation"), soapAction="", style="document")
        _binding_io(operation, "input", "requestHeader", (*REQUEST_HEADERS, "purpose"))
        _binding_io(
            operation, "output", "responseHeader", (*REQUEST_HEADERS, "purpose", "requestHash")
        )
    port = _sub(_sub(root, _w("service"), name=service), _w("port"),
                name=f"{service}Port", binding=f"tns:{service}Binding")  # fmt: skip
    _sub(port, _s("address"), location=location)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))
