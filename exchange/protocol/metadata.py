"""X-Road service metadata, the message side (PR-META, PR-MREST): names, documents, checks.

- ``listClients`` (PR-META §2, Annex A and C.1): the members and subsystems of an instance, from
  the global configuration, as JSON (``Accept: application/json``) or the ``clientList`` XML.
- ``listMethods`` / ``allowedMethods`` for REST (PR-MREST §4, Annex B.1/B.2): the
  ``{"service": [...]}`` list with each service's identifier parts, ``service_type`` and
  ``endpoint_list``.
- ``getOpenAPI`` (PR-MREST §5): :func:`openapi_description` checks a fetched document and hides
  the backend's address, as PR-META §4 does for WSDL endpoint locations.
- SOAP ``listMethods`` / ``allowedMethods`` / ``getWsdl`` (PR-META §3-4): the response elements,
  :func:`wsdl_description` (endpoint locations replaced) and the ``multipart/related`` message
  that carries the WSDL as an attachment.

The service codes here are reserved: a provider cannot configure a service under them, and its
security server answers them itself. Values and bytes only; no IO.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import orjson
from lxml import etree

from exchange.globalconf.document import GlobalConf
from exchange.identifiers import MemberId, ServiceId, SubsystemId
from exchange.protocol.soap import ID_NS, XROAD_NS, media_type

LIST_CLIENTS: Final = "listClients"
LIST_METHODS: Final = "listMethods"
ALLOWED_METHODS: Final = "allowedMethods"
GET_OPENAPI: Final = "getOpenAPI"
GET_WSDL: Final = "getWsdl"

REST_METADATA_SERVICES: Final = frozenset({LIST_METHODS, ALLOWED_METHODS, GET_OPENAPI})
SOAP_METADATA_SERVICES: Final = frozenset({LIST_METHODS, ALLOWED_METHODS, GET_WSDL})
RESERVED_SERVICE_CODES: Final = REST_METADATA_SERVICES | SOAP_METADATA_SERVICES

ENDPOINT_PLACEHOLDER: Final = "http://example.org/xroad-endpoint"
"""PR-META §4: what replaces a backend's address in a service description."""

JSON_TYPE: Final = "application/json; charset=utf-8"
XML_TYPE: Final = "text/xml; charset=utf-8"
YAML_TYPE: Final = "text/yaml; charset=utf-8"


class DescriptionError(ValueError):
    """A fetched service description is not one we pass on; the message says why."""


# --- listClients --------------------------------------------------------------------------------


def _member_id(member: MemberId) -> dict[str, str]:
    return {
        "member_class": member.member_class,
        "member_code": member.member_code,
        "object_type": "MEMBER",
        "xroad_instance": member.instance,
    }


def _subsystem_id(subsystem: SubsystemId) -> dict[str, str]:
    return {
        "member_class": subsystem.member_class,
        "member_code": subsystem.member_code,
        "subsystem_code": subsystem.subsystem_code,
        "object_type": "SUBSYSTEM",
        "xroad_instance": subsystem.instance,
    }


def client_list(conf: GlobalConf, instance: str | None = None) -> dict[str, Any]:
    """PR-META C.1 JSON: every member of ``instance`` (default: the configuration's own),
    followed by its subsystems. Another instance is not federated here, so its list is empty."""
    members: list[dict[str, Any]] = []
    if instance not in (None, conf.instance):
        return {"member": members}
    for member in conf.members:
        members.append({"id": _member_id(member.id), "name": member.name})
        for subsystem in member.subsystems:
            members.append({"id": _subsystem_id(subsystem), "name": member.name})
    return {"member": members}


def client_list_json(conf: GlobalConf, instance: str | None = None) -> bytes:
    return orjson.dumps(client_list(conf, instance))


def client_list_xml(conf: GlobalConf, instance: str | None = None) -> bytes:
    """PR-META Annex A ``clientList`` (identifiers in the X-Road identifiers namespace)."""
    root = etree.Element(f"{{{XROAD_NS}}}clientList", nsmap={"xroad": XROAD_NS, "id": ID_NS})
    for entry in client_list(conf, instance)["member"]:
        ident = entry["id"]
        member = etree.SubElement(root, f"{{{XROAD_NS}}}member")
        id_el = etree.SubElement(member, f"{{{XROAD_NS}}}id")
        id_el.set(f"{{{ID_NS}}}objectType", ident["object_type"])
        for key, tag in _ID_TAGS:
            if key in ident:
                etree.SubElement(id_el, f"{{{ID_NS}}}{tag}").text = ident[key]
        etree.SubElement(member, f"{{{XROAD_NS}}}name").text = entry["name"]
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True))


_ID_TAGS: Final = (
    ("xroad_instance", "xRoadInstance"),
    ("member_class", "memberClass"),
    ("member_code", "memberCode"),
    ("subsystem_code", "subsystemCode"),
)


# --- listMethods / allowedMethods (REST) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """One service in a ``listMethods``/``allowedMethods`` answer."""

    id: ServiceId
    service_type: str
    """``OPENAPI`` (a REST service with an OpenAPI description), ``REST`` or ``WSDL``."""
    endpoints: Sequence[tuple[str, str]]


def service_list(entries: Iterable[ServiceEntry]) -> dict[str, Any]:
    """PR-MREST Annex B.1/B.2: ``{"service": [...]}``, never naming a metadata service."""
    out = []
    for entry in sorted(entries, key=lambda e: e.id):
        if entry.id.service_code in RESERVED_SERVICE_CODES:
            continue
        sid = entry.id
        out.append(
            {
                "member_class": sid.member_class,
                "member_code": sid.member_code,
                "object_type": "SERVICE",
                "service_code": sid.service_code,
                "service_type": entry.service_type,
                "subsystem_code": sid.subsystem_code,
                "xroad_instance": sid.instance,
                "endpoint_list": [{"method": m, "path": p} for m, p in entry.endpoints],
            }
        )
    return {"service": out}


# --- getOpenAPI ---------------------------------------------------------------------------------


def openapi_description(
    body: bytes, content_type: str, base_path: str = "", hidden_hosts: Iterable[str] = ()
) -> tuple[bytes, str]:
    """Check a fetched OpenAPI 3 document and make it safe to pass on.

    JSON: must be an object with ``openapi: "3.x.y"``; ``servers`` is replaced by
    :data:`ENDPOINT_PLACEHOLDER` (the backend's address stays inside the provider); when the
    document's paths (under the path of its own first server) lie under the service's
    ``base_path`` (the path of its configured URL), they are made relative to it, so that each is
    what a client writes after the service code in ``/r1/.../{serviceCode}``, and paths outside
    it, which no client can reach through this service, are left out; a document none of whose
    paths lie there is taken as relative to the service already. The document is answered as
    ``application/json``. YAML (``*/yaml``, ``*/x-yaml``) is passed on
    unchanged as ``text/yaml`` after a UTF-8 check: there is no YAML parser in the server, so its
    ``servers`` cannot be rewritten (operators are told so). Anything else raises
    :class:`DescriptionError`.
    """
    media = media_type(content_type)
    if media.endswith("yaml"):
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise DescriptionError("the YAML description is not UTF-8") from None
        return body, YAML_TYPE
    if media != "application/json" and not media.endswith("+json"):
        raise DescriptionError(f"the description's content type {media[:80]!r} is not JSON/YAML")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise DescriptionError("the description is not valid JSON") from None
    if not isinstance(doc, dict):
        raise DescriptionError("the description is not a JSON object")
    version = doc.get("openapi")
    if not isinstance(version, str) or not version.startswith("3."):
        raise DescriptionError("the description is not an OpenAPI 3 document ('openapi': '3.x')")
    _relative_paths(doc, _server_path(doc), base_path.rstrip("/"))
    _hide_servers(doc)
    _hide_references(doc, {host.lower() for host in hidden_hosts if host})
    return orjson.dumps(doc), JSON_TYPE


_URL_KEYS: Final = frozenset(
    {
        "$ref",
        "url",
        "operationRef",
        "authorizationUrl",
        "tokenUrl",
        "refreshUrl",
        "openIdConnectUrl",
    }
)


def _hide_references(doc: dict[str, Any], hidden: set[str]) -> None:
    """References and links (``$ref``, ``externalDocs.url``, OAuth URLs...) that are absolute
    URLs on one of the ``hidden`` hosts (the backend's) become the placeholder."""
    if not hidden:
        return
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str):
                    if key in _URL_KEYS and _on_hidden_host(value, hidden):
                        node[key] = ENDPOINT_PLACEHOLDER
                else:
                    stack.append(value)


def _server_path(doc: dict[str, Any]) -> str:
    servers = doc.get("servers")
    if isinstance(servers, list) and servers and isinstance(servers[0], dict):
        url = servers[0].get("url")
        if isinstance(url, str):
            return urlsplit(url).path.rstrip("/")
    return ""


def _relative_paths(doc: dict[str, Any], server_path: str, base: str) -> None:
    paths = doc.get("paths")
    if not base or not isinstance(paths, dict):
        return
    relative = {}
    for path, item in paths.items():
        full = server_path + path if isinstance(path, str) else ""
        if full == base:
            relative["/"] = item
        elif full.startswith(base + "/"):
            relative[full[len(base) :]] = item
    if relative:
        doc["paths"] = relative


def _hide_servers(doc: dict[str, Any]) -> None:
    """``servers`` may stand at the top, on a path item and on an operation (OpenAPI 3 §4.8)."""
    placeholder = [{"url": ENDPOINT_PLACEHOLDER}]
    doc["servers"] = placeholder
    paths = doc.get("paths")
    for item in paths.values() if isinstance(paths, dict) else ():
        if not isinstance(item, dict):
            continue
        if "servers" in item:
            item["servers"] = placeholder
        for operation in item.values():
            if isinstance(operation, dict) and "servers" in operation:
                operation["servers"] = placeholder


# --- SOAP: listMethods / allowedMethods / getWsdl (PR-META §3-4) -------------------------------

WSDL_NS: Final = "http://schemas.xmlsoap.org/wsdl/"
_WSDL_ADDRESS_NS: Final = (
    "http://schemas.xmlsoap.org/wsdl/soap/",
    "http://schemas.xmlsoap.org/wsdl/soap12/",
    "http://schemas.xmlsoap.org/wsdl/http/",
)
_SERVICE_ID_TAGS: Final = (
    "xRoadInstance",
    "memberClass",
    "memberCode",
    "subsystemCode",
    "serviceCode",
)


def soap_method_list(code: str, services: Iterable[ServiceId]) -> etree._Element:
    """``<xrd:listMethodsResponse>`` / ``<xrd:allowedMethodsResponse>`` (PR-META §3,
    ``MethodListType``): one ``xrd:service`` identifier per service, never a metadata service."""
    root = etree.Element(f"{{{XROAD_NS}}}{code}Response", nsmap={"xrd": XROAD_NS, "id": ID_NS})
    for service in sorted(services):
        if service.service_code in RESERVED_SERVICE_CODES:
            continue
        el = etree.SubElement(root, f"{{{XROAD_NS}}}service")
        el.set(f"{{{ID_NS}}}objectType", "SERVICE")
        for tag, value in zip(_SERVICE_ID_TAGS, service.parts, strict=True):
            etree.SubElement(el, f"{{{ID_NS}}}{tag}").text = value
    return root


def get_wsdl_response(service_code: str, service_version: str | None) -> etree._Element:
    """``<xrd:getWsdlResponse>``: which service the attached WSDL describes (PR-META §4)."""
    root = etree.Element(f"{{{XROAD_NS}}}getWsdlResponse", nsmap={"xrd": XROAD_NS})
    etree.SubElement(root, f"{{{XROAD_NS}}}serviceCode").text = service_code
    if service_version is not None:
        etree.SubElement(root, f"{{{XROAD_NS}}}serviceVersion").text = service_version
    return root


_XSD_NS: Final = "http://www.w3.org/2001/XMLSchema"
_REFERENCES: Final = {
    (WSDL_NS, "import"): "location",
    (_XSD_NS, "import"): "schemaLocation",
    (_XSD_NS, "include"): "schemaLocation",
    (_XSD_NS, "redefine"): "schemaLocation",
}


def wsdl_description(root: etree._Element, hidden_hosts: Iterable[str] = ()) -> bytes:
    """A parsed WSDL 1.1 document with every endpoint location replaced (PR-META §4).

    An import or include whose location is an absolute URL on one of ``hidden_hosts`` (the
    backend's: a JAX-WS service imports its schemas from its own address) is replaced too; other
    references (relative, or on another host) stay as they are.
    """
    if root.tag != f"{{{WSDL_NS}}}definitions":
        raise DescriptionError("the description is not a WSDL 1.1 document (wsdl:definitions)")
    hidden = {host.lower() for host in hidden_hosts if host}
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        name = etree.QName(el)
        if name.localname == "address" and name.namespace in _WSDL_ADDRESS_NS:
            el.set("location", ENDPOINT_PLACEHOLDER)
        attribute = _REFERENCES.get((name.namespace or "", name.localname))
        if attribute is not None and _on_hidden_host(el.get(attribute), hidden):
            el.set(attribute, ENDPOINT_PLACEHOLDER)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _on_hidden_host(location: str | None, hidden: set[str]) -> bool:
    if not location:
        return False
    try:
        host = urlsplit(location.strip()).hostname
    except ValueError:
        return True  # not even a URL we can read: do not pass it on
    return host is not None and host.lower() in hidden


def multipart_related(
    envelope: bytes, attachment: bytes, attachment_type: str = XML_TYPE
) -> tuple[str, bytes]:
    """A SOAP-with-attachments message (the SOAP part first) and its ``Content-Type``."""
    boundary = "exchange-" + secrets.token_hex(16)
    while boundary.encode() in envelope or boundary.encode() in attachment:
        boundary = "exchange-" + secrets.token_hex(16)
    crlf = b"\r\n"
    parts = [
        (XML_TYPE, "<soap-part>", envelope),
        (attachment_type, "<attachment>", attachment),
    ]
    out = b""
    for ctype, cid, data in parts:
        out += b"--" + boundary.encode() + crlf
        out += f"Content-Type: {ctype}\r\nContent-ID: {cid}\r\n\r\n".encode()
        out += data + crlf
    out += b"--" + boundary.encode() + b"--" + crlf
    content_type = f'multipart/related; type="text/xml"; start="<soap-part>"; boundary="{boundary}"'
    return content_type, out
