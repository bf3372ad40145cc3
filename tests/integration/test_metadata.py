"""Metadata services end to end (PR-META §2, PR-MREST §4-5; issue 5 item 3).

A provider security server of its own (``PS/GOV/MOI/ss-meta``, subsystem ``civil-docs``) with
REST services described and undescribed, a SOAP service, and a policy that grants by subsystem,
by global group and by local group, with grants outside their validity window. The clients are
the shared federation's: the post office window, Health's records and Finance's payments. Every
call goes through the real consumer and provider security servers over mutual TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from lxml import etree
from openapi_spec_validator import validate

from exchange.identifiers import GlobalGroupId, SecurityServerId, parse_subsystem
from exchange.protocol.metadata import ENDPOINT_PLACEHOLDER, ID_NS, XROAD_NS
from exchange.server.core import SecurityServer
from tests.integration.conftest import FINANCE, HEALTH, MOI, WINDOW, Net
from tests.integration.soap_backend import BOMB, WSDL_FILE
from tests.integration.support import assert_xroad_error, launch, logged, new_id, publish

pytestmark = pytest.mark.asyncio(loop_scope="session")

DOCS = parse_subsystem("PS/GOV/MOI/civil-docs")
GHOST = parse_subsystem("PS/GOV/MOI/ghost-docs")
BASE = "/r1/PS/GOV/MOI/civil-docs"
READERS = GlobalGroupId("PS", "meta-readers")

POLICY = """
provider = "PS/GOV/MOI"

[groups]
archivists = ["PS/GOV/MOH/health-records"]

[[grant]]
id = "window-certificates"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/civil-docs/certificates"
methods = ["GET"]
paths = ["/*", "/*/pdf"]

[[grant]]
id = "window-records-expired"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/civil-docs/records"
methods = ["GET"]
valid_until = 2020-01-01T00:00:00Z

[[grant]]
id = "window-archive-future"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/civil-docs/archive"
methods = ["GET"]
valid_from = 2099-01-01T00:00:00Z

[[grant]]
id = "window-unconfigured"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/civil-docs/not-configured"
methods = ["GET"]

[[grant]]
id = "window-get-certificate"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/civil-docs/getCertificate"

[[grant]]
id = "window-get-record-expired"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/civil-docs/getRecord"
valid_until = 2020-01-01T00:00:00Z

[[grant]]
id = "readers-records"
group = "PS/meta-readers"
service = "PS/GOV/MOI/civil-docs/records"
methods = ["POST", "GET"]
paths = ["/**"]

[[grant]]
id = "archivists-archive"
group = "local:archivists"
service = "PS/GOV/MOI/civil-docs/archive"
methods = ["*"]
purposes = ["audit"]
"""

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Civil documents", "version": "1.0.0"},
    "servers": [{"url": "http://10.1.2.3:8080/internal"}],
    "paths": {
        "/{nid}": {
            "servers": [{"url": "http://10.1.2.3:8080/path-level"}],
            "get": {
                "summary": "A birth certificate",
                "operationId": "getCertificate",
                "parameters": [
                    {"name": "nid", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "The certificate"}},
            },
        }
    },
}
OPENAPI_YAML = """openapi: 3.0.3
info: {title: Archive, version: 2.0.0}
paths:
  /{year}:
    get:
      parameters:
        - {name: year, in: path, required: true, schema: {type: integer}}
      responses:
        '200': {description: One year of the archive}
"""


@dataclass
class Meta:
    provider: SecurityServer
    backend: str


def _backend(release: asyncio.Event) -> web.Application:
    async def openapi_json(request: web.Request) -> web.StreamResponse:
        return web.json_response(OPENAPI)

    async def openapi_yaml(request: web.Request) -> web.StreamResponse:
        return web.Response(text=OPENAPI_YAML, content_type="application/yaml")

    async def broken(request: web.Request) -> web.StreamResponse:
        return web.json_response({"swagger": "2.0", "info": {}})

    async def huge(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=b"[" + b"0," * (3 * 2**20) + b"0]", content_type="application/json"
        )

    async def slow(request: web.Request) -> web.StreamResponse:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 10)
        return web.json_response(OPENAPI)

    async def moved(request: web.Request) -> web.StreamResponse:
        # a valid description one redirect away: the provider must not follow it
        return web.Response(status=302, headers={"Location": "/openapi.json"})

    async def drip(request: web.Request) -> web.StreamResponse:
        # headers at once, then a byte every 0.1 s: each read is quick, the whole is not
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(30):
                await response.write(b" ")
                await asyncio.sleep(0.1)
            await response.write(orjson.dumps(OPENAPI))
        return response

    async def svc(request: web.Request) -> web.StreamResponse:
        return web.json_response({"path": request.raw_path})

    async def wsdl(request: web.Request) -> web.StreamResponse:
        if "wsdl" not in request.query:
            return web.Response(status=405)
        return web.Response(body=WSDL_FILE.read_bytes(), content_type="text/xml")

    async def not_wsdl(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html><body>no</body></html>", content_type="text/xml")

    async def refs(request: web.Request) -> web.StreamResponse:
        # references to the backend's own address outside `servers`
        here = f"http://{request.host}"
        doc = dict(
            OPENAPI,
            externalDocs={"url": f"{here}/docs"},
            components={
                "schemas": {"Person": {"$ref": f"{here}/schemas.json#/Person"}},
                "securitySchemes": {
                    "oauth": {
                        "type": "oauth2",
                        "flows": {"clientCredentials": {"tokenUrl": f"{here}/token", "scopes": {}}},
                    }
                },
            },
            info=dict(OPENAPI["info"], contact={"url": "https://www.example.org/contact"}),
        )
        return web.json_response(doc)

    async def imports(request: web.Request) -> web.StreamResponse:
        # as JAX-WS serves it: schemas and a second WSDL imported from the backend's own address
        here = f"http://{request.host}"
        wsdl = WSDL_FILE.read_bytes().replace(
            b"<wsdl:types>",
            b'<wsdl:import namespace="urn:more" location="' + here.encode() + b'/more?wsdl"/>'
            b"<wsdl:types>",
            1,
        )
        root = etree.fromstring(wsdl)
        schema = root.find(".//{http://www.w3.org/2001/XMLSchema}schema")
        assert schema is not None
        for tag, attrs in (
            ("import", {"namespace": "urn:ximp", "schemaLocation": f"{here}/svc?xsd=1"}),
            ("include", {"schemaLocation": f"{here}/svc?xsd=2"}),
            ("import", {"namespace": "urn:public", "schemaLocation": "https://www.w3.org/x.xsd"}),
        ):
            schema.insert(0, etree.Element(f"{{http://www.w3.org/2001/XMLSchema}}{tag}", attrs))
        return web.Response(body=etree.tostring(root), content_type="text/xml")

    async def bomb(request: web.Request) -> web.StreamResponse:
        return web.Response(body=BOMB, content_type="text/xml")

    app = web.Application()
    app.router.add_get("/soap", wsdl)
    app.router.add_get("/not.wsdl", not_wsdl)
    app.router.add_get("/bomb.wsdl", bomb)
    app.router.add_get("/imports.wsdl", imports)
    app.router.add_get("/refs.json", refs)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/openapi.yaml", openapi_yaml)
    app.router.add_get("/broken.json", broken)
    app.router.add_get("/huge.json", huge)
    app.router.add_get("/slow.json", slow)
    app.router.add_get("/moved.json", moved)
    app.router.add_get("/drip.json", drip)
    app.router.add_route("*", "/svc/{tail:.*}", svc)
    return app


def _services(b: str) -> list[dict[str, Any]]:
    def rest(code: str, **more: Any) -> dict[str, Any]:
        return {"id": f"{DOCS}/{code}", "url": f"{b}/svc/{code}", **more}

    return [
        rest("certificates", openapi_url=f"{b}/openapi.json"),
        rest("records"),
        rest("archive", openapi_url=f"{b}/openapi.yaml"),
        rest("broken", openapi_url=f"{b}/broken.json"),
        rest("huge", openapi_url=f"{b}/huge.json"),
        rest("slow", openapi_url=f"{b}/slow.json", timeout=0.5),
        rest("gone", openapi_url=f"{b}/nothing-here.json"),
        rest("moved", openapi_url=f"{b}/moved.json"),
        rest("refs", openapi_url=f"{b}/refs.json"),
        rest("drip", openapi_url=f"{b}/drip.json", timeout=0.5),
        {"id": f"{DOCS}/getCertificate", "type": "soap", "url": f"{b}/soap"},
        {
            "id": f"{DOCS}/getRecord",
            "type": "soap",
            "url": f"{b}/soap",
            "wsdl_url": f"{b}/not.wsdl",
        },
        {"id": f"{DOCS}/getBomb", "type": "soap", "url": f"{b}/soap", "wsdl_url": f"{b}/bomb.wsdl"},
        {
            "id": f"{DOCS}/getImports",
            "type": "soap",
            "url": f"{b}/soap",
            "wsdl_url": f"{b}/imports.wsdl",
        },
    ]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def meta(net: Net) -> AsyncIterator[Meta]:
    release = asyncio.Event()
    runner = web.AppRunner(_backend(release), shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    backend = f"http://127.0.0.1:{runner.addresses[0][1]}"
    with net.registry() as reg:
        reg.add_group(READERS, "may read civil records")
        reg.add_group_member(READERS, HEALTH)
    provider = await launch(
        net,
        "moi-meta",
        SecurityServerId(*MOI.parts, "ss-meta"),
        clients=[DOCS],
        policy=POLICY,
        extra={"services": _services(backend)},
    )
    with net.registry() as reg:
        reg.add_subsystem(GHOST)
        reg.add_server_client(provider.config.server_id, GHOST)
    await publish(net)
    try:
        yield Meta(provider, backend)
    finally:
        release.set()
        await runner.cleanup()


async def _meta_call(
    net: Net, path: str, client: str = str(WINDOW), via: str = "palpost", method: str = "GET"
) -> tuple[int, Any, bytes, str]:
    message_id = new_id("meta")
    status, headers, body = await net.call(
        via, path, client=client, method=method, headers={"X-Road-Id": message_id}
    )
    return status, headers, body, message_id


def _codes(body: bytes) -> dict[str, list[tuple[str, str]]]:
    doc = orjson.loads(body)
    assert set(doc) == {"service"}
    out = {}
    for entry in doc["service"]:
        assert entry["object_type"] == "SERVICE"
        assert (entry["xroad_instance"], entry["member_class"], entry["member_code"]) == (
            "PS",
            "GOV",
            "MOI",
        )
        assert entry["subsystem_code"] == "civil-docs"
        out[entry["service_code"]] = [(e["method"], e["path"]) for e in entry["endpoint_list"]]
    return out


# --- listClients --------------------------------------------------------------------------------


async def test_list_clients_json_is_the_global_configuration(net: Net, meta: Meta) -> None:
    status, headers, body = await net.call(
        "palpost", "/listClients", client=None, headers={"Accept": "application/json"}
    )
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    members = orjson.loads(body)["member"]
    conf = net.servers["palpost"].trusted.current
    assert conf is not None
    expected = sum(1 + len(m.subsystems) for m in conf.members)
    assert len(members) == expected
    assert {
        "id": {
            "member_class": "GOV",
            "member_code": "MOI",
            "object_type": "MEMBER",
            "xroad_instance": "PS",
        },
        "name": "Interior",
    } in members
    assert {
        "id": {
            "member_class": "GOV",
            "member_code": "MOI",
            "subsystem_code": "civil-docs",
            "object_type": "SUBSYSTEM",
            "xroad_instance": "PS",
        },
        "name": "Interior",
    } in members


async def test_list_clients_xml_by_default(net: Net, meta: Meta) -> None:
    status, headers, body = await net.call("moh", "/listClients", client=None)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/xml")
    root = etree.fromstring(body)
    assert root.tag == f"{{{XROAD_NS}}}clientList"
    ids = root.findall(f"{{{XROAD_NS}}}member/{{{XROAD_NS}}}id")
    subsystems = [
        i.findtext(f"{{{ID_NS}}}subsystemCode")
        for i in ids
        if i.get(f"{{{ID_NS}}}objectType") == "SUBSYSTEM"
    ]
    assert "population-registry" in subsystems and "civil-docs" in subsystems


@pytest.mark.parametrize(
    ("query", "status", "count"),
    [
        pytest.param("?xRoadInstance=PS", 200, None, id="own-instance"),
        pytest.param("?xRoadInstance=EE", 200, 0, id="other-instance-empty"),
        pytest.param("?xRoadInstance=P%20S", 400, None, id="bad-instance"),
    ],
)
async def test_list_clients_instance(
    net: Net, meta: Meta, query: str, status: int, count: int | None
) -> None:
    got, headers, body = await net.call(
        "palpost", f"/listClients{query}", client=None, headers={"Accept": "application/json"}
    )
    if status == 400:
        assert_xroad_error(got, headers, body, "Client.InvalidRequest", 400)
        return
    assert got == 200
    members = orjson.loads(body)["member"]
    assert len(members) == count if count is not None else len(members) > 4


# --- listMethods / allowedMethods ---------------------------------------------------------------


async def test_list_methods_lists_every_rest_service(net: Net, meta: Meta) -> None:
    status, headers, body, message_id = await _meta_call(
        net, f"{BASE}/listMethods", client=str(FINANCE), via="mof"
    )
    assert status == 200, body
    assert "X-Road-Error" not in headers
    assert headers["X-Road-Service"] == f"{DOCS}/listMethods"
    codes = _codes(body)
    assert sorted(codes) == [
        "archive",
        "broken",
        "certificates",
        "drip",
        "gone",
        "huge",
        "moved",
        "records",
        "refs",
        "slow",
    ]
    assert all(endpoints == [("*", "/**")] for endpoints in codes.values())
    types = {e["service_code"]: e["service_type"] for e in orjson.loads(body)["service"]}
    assert types["certificates"] == "OPENAPI" and types["records"] == "REST"
    # a signed, logged exchange on both sides; the provider names why it answered itself
    logged(net.servers["mof"], message_id, "consumer")
    record = logged(meta.provider, message_id, "provider")
    assert record.entry["decision"]["code"] == "Allowed.MetadataService"


@pytest.mark.parametrize(
    ("via", "client", "expected"),
    [
        pytest.param(
            "palpost",
            WINDOW,
            {"certificates": [("GET", "/*"), ("GET", "/*/pdf")]},
            id="subsystem-grant-only-valid-ones",
        ),
        pytest.param(
            "moh",
            HEALTH,
            {
                "records": [("GET", "/**"), ("POST", "/**")],
                "archive": [("*", "/**")],
            },
            id="global-and-local-group",
        ),
        pytest.param("mof", FINANCE, {}, id="no-grant-sees-none"),
    ],
)
async def test_allowed_methods_reveals_only_the_callers_grants(
    net: Net, meta: Meta, via: str, client: Any, expected: dict[str, list[tuple[str, str]]]
) -> None:
    status, _headers, body, message_id = await _meta_call(
        net, f"{BASE}/allowedMethods", client=str(client), via=via
    )
    assert status == 200, body
    assert _codes(body) == expected
    assert b"grant" not in body and b"audit" not in body  # no grant ids, no conditions
    logged(meta.provider, message_id, "provider")


async def test_allowed_methods_agree_with_enforcement(net: Net, meta: Meta) -> None:
    """What allowedMethods shows is callable; what it leaves out is refused."""
    ok = await net.call("palpost", f"{BASE}/certificates/123456782/pdf")
    assert ok[0] == 200, ok[2]
    expired = await net.call("palpost", f"{BASE}/records/1")
    assert_xroad_error(*expired, "Server.ServerProxy.AccessDenied.GrantExpired", 403)
    nothing = await net.call("mof", f"{BASE}/certificates/1", client=str(FINANCE))
    assert_xroad_error(*nothing, "Server.ServerProxy.AccessDenied", 403)
    group = await net.call("moh", f"{BASE}/records/7", client=str(HEALTH), method="POST")
    assert group[0] == 200, group[2]


@pytest.mark.parametrize(
    ("path", "method", "code", "http_status"),
    [
        pytest.param(
            f"{BASE}/listMethods", "POST", "Server.ServerProxy.InvalidRequest", 400, id="post"
        ),
        pytest.param(
            f"{BASE}/allowedMethods/extra",
            "GET",
            "Server.ServerProxy.InvalidRequest",
            400,
            id="path-after-code",
        ),
        pytest.param(
            "/r1/PS/GOV/MOI/ghost-docs/listMethods",
            "GET",
            "Server.ServerProxy.UnknownService",
            404,
            id="subsystem-not-served-here",
        ),
    ],
)
async def test_metadata_misuse_is_refused(
    net: Net, meta: Meta, path: str, method: str, code: str, http_status: int
) -> None:
    status, headers, body, message_id = await _meta_call(net, path, method=method)
    assert_xroad_error(status, headers, body, code, http_status)
    logged(meta.provider, message_id, "provider", code)


async def test_reserved_service_codes_cannot_be_configured(tmp_path: Any) -> None:
    from exchange.errors import ConfigurationError
    from exchange.server.config import parse_server_config

    keys = {
        "auth_key": "a",
        "auth_cert": "c",
        "signing": [{"member": "PS/GOV/MOI", "key": "k", "cert": "c"}],
    }
    for code in ("listMethods", "allowedMethods", "getOpenAPI", "getWsdl"):
        doc = {
            "server_id": "PS/GOV/MOI/ss1",
            "keys": keys,
            "services": [{"id": f"{DOCS}/{code}", "url": "http://127.0.0.1:1"}],
        }
        with pytest.raises(ConfigurationError, match="reserved for the metadata services"):
            parse_server_config(doc, tmp_path / "server.toml")


# --- getOpenAPI ---------------------------------------------------------------------------------


async def test_get_openapi_validates_and_hides_the_backend(net: Net, meta: Meta) -> None:
    status, headers, body, message_id = await _meta_call(
        net, f"{BASE}/getOpenAPI?serviceCode=certificates", client=str(FINANCE), via="mof"
    )
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    doc = orjson.loads(body)
    validate(doc)
    assert doc["info"] == OPENAPI["info"] and doc["paths"]["/{nid}"]["get"]["operationId"]
    assert doc["servers"] == [{"url": ENDPOINT_PLACEHOLDER}]
    assert doc["paths"]["/{nid}"]["servers"] == [{"url": ENDPOINT_PLACEHOLDER}]
    assert b"10.1.2.3" not in body and meta.backend.encode() not in body
    record = logged(meta.provider, message_id, "provider")
    assert record.entry["decision"]["code"] == "Allowed.MetadataService"


async def test_get_openapi_hides_the_backend_in_references_too(net: Net, meta: Meta) -> None:
    """Red team: ``$ref``, ``externalDocs`` and OAuth URLs on the backend's address leaked it."""
    status, _, body, _ = await _meta_call(net, f"{BASE}/getOpenAPI?serviceCode=refs")
    assert status == 200, body
    assert urlsplit(meta.backend).netloc.encode() not in body, body
    doc = orjson.loads(body)
    assert doc["externalDocs"]["url"] == ENDPOINT_PLACEHOLDER
    assert doc["components"]["schemas"]["Person"]["$ref"] == ENDPOINT_PLACEHOLDER
    assert doc["info"]["contact"]["url"] == "https://www.example.org/contact"  # elsewhere: kept


async def test_get_openapi_yaml_passes_unchanged(net: Net, meta: Meta) -> None:
    status, headers, body, _ = await _meta_call(net, f"{BASE}/getOpenAPI?serviceCode=archive")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/yaml")
    assert body.decode() == OPENAPI_YAML
    validate(yaml.safe_load(body))


@pytest.mark.parametrize(
    ("query", "code", "http_status"),
    [
        pytest.param("", "Server.ServerProxy.InvalidRequest", 400, id="no-serviceCode"),
        pytest.param(
            "?serviceCode=a&serviceCode=b",
            "Server.ServerProxy.InvalidRequest",
            400,
            id="two-serviceCodes",
        ),
        pytest.param(
            "?serviceCode=a%20b", "Server.ServerProxy.InvalidRequest", 400, id="bad-serviceCode"
        ),
        pytest.param(
            "?serviceCode=nosuch", "Server.ServerProxy.UnknownService", 404, id="unknown-service"
        ),
        pytest.param(
            "?serviceCode=listMethods",
            "Server.ServerProxy.UnknownService",
            404,
            id="metadata-service",
        ),
        pytest.param(
            "?serviceCode=records",
            "Server.ServerProxy.InvalidServiceType",
            400,
            id="rest-without-description",
        ),
        pytest.param(
            "?serviceCode=getCertificate",
            "Server.ServerProxy.InvalidServiceType",
            400,
            id="soap-service",
        ),
        pytest.param(
            "?serviceCode=broken", "Server.ServerProxy.ServiceFailed", 502, id="not-openapi-3"
        ),
        pytest.param(
            "?serviceCode=huge", "Server.ServerProxy.ServiceFailed", 502, id="over-size-limit"
        ),
        pytest.param(
            "?serviceCode=gone", "Server.ServerProxy.ServiceFailed", 502, id="description-404"
        ),
        pytest.param(
            "?serviceCode=slow", "Server.ServerProxy.ServiceTimeout", 504, id="description-timeout"
        ),
        # red team: a redirect is not followed, a trickling body is bounded by the whole timeout
        pytest.param(
            "?serviceCode=moved",
            "Server.ServerProxy.ServiceFailed",
            502,
            id="description-redirects",
        ),
        pytest.param(
            "?serviceCode=drip",
            "Server.ServerProxy.ServiceTimeout",
            504,
            id="description-trickles",
        ),
    ],
)
async def test_get_openapi_refusals(
    net: Net, meta: Meta, query: str, code: str, http_status: int
) -> None:
    status, headers, body, message_id = await _meta_call(net, f"{BASE}/getOpenAPI{query}")
    assert_xroad_error(status, headers, body, code, http_status)
    logged(meta.provider, message_id, "provider", code)
    logged(net.servers["palpost"], message_id, "consumer", code)
    # the provider keeps serving
    again = await net.call("palpost", f"{BASE}/listMethods")
    assert again[0] == 200


# --- SOAP: listMethods, allowedMethods, getWsdl (PR-META §3-4) ----------------------------------

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP_NS = "http://schemas.xmlsoap.org/wsdl/soap/"


def _soap_request(code: str, client: Any = WINDOW, body: str = "", subsystem: Any = DOCS) -> bytes:
    """A PR-META C.2/C.4/C.6-shaped request for metadata service ``code`` of ``subsystem``."""
    return f"""<?xml version="1.0" encoding="utf-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}" xmlns:xroad="{XROAD_NS}" xmlns:id="{ID_NS}">
    <SOAP-ENV:Header>
        <xroad:client id:objectType="SUBSYSTEM">
            <id:xRoadInstance>PS</id:xRoadInstance>
            <id:memberClass>{client.member_class}</id:memberClass>
            <id:memberCode>{client.member_code}</id:memberCode>
            <id:subsystemCode>{client.subsystem_code}</id:subsystemCode>
        </xroad:client>
        <xroad:service id:objectType="SERVICE">
            <id:xRoadInstance>PS</id:xRoadInstance>
            <id:memberClass>GOV</id:memberClass>
            <id:memberCode>MOI</id:memberCode>
            <id:subsystemCode>{subsystem.subsystem_code}</id:subsystemCode>
            <id:serviceCode>{code}</id:serviceCode>
        </xroad:service>
        <xroad:id>{new_id("soap-meta")}</xroad:id>
        <xroad:protocolVersion>4.0</xroad:protocolVersion>
    </SOAP-ENV:Header>
    <SOAP-ENV:Body><xroad:{code}>{body}</xroad:{code}></SOAP-ENV:Body>
</SOAP-ENV:Envelope>""".encode()


async def _soap_call(net: Net, data: bytes, via: str = "palpost") -> tuple[int, Any, bytes]:
    assert net.session is not None
    url = f"http://127.0.0.1:{net.servers[via].consumer_port}/"
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
    async with net.session.post(url, data=data, headers=headers) as r:
        return r.status, r.headers, await r.read()


def _soap_body(envelope: bytes) -> etree._Element:
    root = etree.fromstring(envelope, etree.XMLParser(resolve_entities=False, no_network=True))
    body = root.find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    return body[0]


def _listed(envelope: bytes, code: str) -> list[str]:
    response = _soap_body(envelope)
    assert response.tag == f"{{{XROAD_NS}}}{code}Response", envelope[:500]
    out = []
    for service in response:
        assert service.tag == f"{{{XROAD_NS}}}service"
        assert service.get(f"{{{ID_NS}}}objectType") == "SERVICE"
        assert service.findtext(f"{{{ID_NS}}}subsystemCode") == "civil-docs"
        out.append(service.findtext(f"{{{ID_NS}}}serviceCode") or "")
    return out


async def test_soap_list_methods(net: Net, meta: Meta) -> None:
    data = _soap_request("listMethods", client=FINANCE)
    status, headers, body = await _soap_call(net, data, via="mof")
    assert status == 200, body[:800]
    assert headers["Content-Type"].startswith("text/xml")
    assert _listed(body, "listMethods") == ["getBomb", "getCertificate", "getImports", "getRecord"]
    header = etree.fromstring(body).find(f"{{{SOAP_ENV}}}Header")
    assert header is not None and header.find(f"{{{XROAD_NS}}}requestHash") is not None
    message_id = header.findtext(f"{{{XROAD_NS}}}id") or ""
    record = logged(meta.provider, message_id, "provider")
    assert record.entry["decision"]["code"] == "Allowed.MetadataService"
    logged(net.servers["mof"], message_id, "consumer")


@pytest.mark.parametrize(
    ("via", "client", "expected"),
    [
        pytest.param("palpost", WINDOW, ["getCertificate"], id="granted-and-valid-only"),
        pytest.param("moh", HEALTH, [], id="rest-grants-only"),
        pytest.param("mof", FINANCE, [], id="no-grant-sees-none"),
    ],
)
async def test_soap_allowed_methods(
    net: Net, meta: Meta, via: str, client: Any, expected: list[str]
) -> None:
    status, _, body = await _soap_call(net, _soap_request("allowedMethods", client=client), via)
    assert status == 200, body[:800]
    assert _listed(body, "allowedMethods") == expected


def _parts(content_type: str, body: bytes) -> list[Any]:
    import email.parser
    import email.policy

    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head + body)
    assert message.is_multipart()
    return list(message.get_payload())  # type: ignore[arg-type]


async def test_soap_get_wsdl_is_an_attachment_without_the_backend_address(
    net: Net, meta: Meta, tmp_path: Any
) -> None:
    data = _soap_request(
        "getWsdl",
        body="<xroad:serviceCode>getCertificate</xroad:serviceCode>"
        "<xroad:serviceVersion>v1</xroad:serviceVersion>",
    )
    status, headers, body = await _soap_call(net, data)
    assert status == 200, body[:800]
    assert headers["Content-Type"].startswith("multipart/related")
    soap_part, attachment = _parts(headers["Content-Type"], body)
    response = _soap_body(soap_part.get_payload(decode=True))
    assert response.tag == f"{{{XROAD_NS}}}getWsdlResponse"
    assert response.findtext(f"{{{XROAD_NS}}}serviceCode") == "getCertificate"
    assert response.findtext(f"{{{XROAD_NS}}}serviceVersion") == "v1"
    wsdl = attachment.get_payload(decode=True)
    root = etree.fromstring(wsdl)
    assert root.tag == f"{{{WSDL_NS}}}definitions"
    locations = [el.get("location") for el in root.iter(f"{{{WSDL_SOAP_NS}}}address")]
    assert locations == [ENDPOINT_PLACEHOLDER]
    assert b"127.0.0.1:1/soap" not in body
    # a stock SOAP client reads it
    import zeep

    path = tmp_path / "service.wsdl"
    path.write_bytes(wsdl)
    client = await asyncio.to_thread(zeep.Client, str(path))
    assert "getPerson" in {
        op
        for service in client.wsdl.services.values()
        for port in service.ports.values()
        for op in port.binding._operations
    }


async def test_soap_get_wsdl_hides_the_backend_address_in_imports_too(net: Net, meta: Meta) -> None:
    """Red team: a WSDL that imports schemas (and a WSDL) from the backend's own address, as
    JAX-WS serves them, leaked that address through ``location``/``schemaLocation``."""
    data = _soap_request("getWsdl", body="<xroad:serviceCode>getImports</xroad:serviceCode>")
    status, headers, body = await _soap_call(net, data)
    assert status == 200, body[:800]
    _, attachment = _parts(headers["Content-Type"], body)
    wsdl = attachment.get_payload(decode=True)
    backend = urlsplit(meta.backend).netloc.encode()
    assert backend not in wsdl, wsdl
    root = etree.fromstring(wsdl)
    xsd = "{http://www.w3.org/2001/XMLSchema}"
    locations = [el.get("location") for el in root.iter(f"{{{WSDL_NS}}}import")] + [
        el.get("schemaLocation") for el in root.iter(f"{xsd}import", f"{xsd}include")
    ]
    assert sorted(filter(None, locations)) == sorted(
        [ENDPOINT_PLACEHOLDER] * 3 + ["https://www.w3.org/x.xsd"]
    )


@pytest.mark.parametrize(
    ("code", "body", "subsystem", "fault"),
    [
        pytest.param("getWsdl", "", DOCS, "Server.ServerProxy.InvalidRequest", id="no-serviceCode"),
        pytest.param(
            "getWsdl",
            "<xroad:serviceCode>nosuch</xroad:serviceCode>",
            DOCS,
            "Server.ServerProxy.UnknownService",
            id="unknown-service",
        ),
        pytest.param(
            "getWsdl",
            "<xroad:serviceCode>certificates</xroad:serviceCode>",
            DOCS,
            "Server.ServerProxy.InvalidServiceType",
            id="rest-service",
        ),
        pytest.param(
            "getWsdl",
            "<xroad:serviceCode>getRecord</xroad:serviceCode>",
            DOCS,
            "Server.ServerProxy.ServiceFailed",
            id="not-a-wsdl",
        ),
        pytest.param(
            "getWsdl",
            "<xroad:serviceCode>getBomb</xroad:serviceCode>",
            DOCS,
            "Server.ServerProxy.ServiceFailed",
            id="entity-bomb-not-expanded",
        ),
        pytest.param(
            "listMethods",
            "",
            GHOST,
            "Server.ServerProxy.UnknownService",
            id="subsystem-not-served-here",
        ),
    ],
)
async def test_soap_metadata_faults(
    net: Net, meta: Meta, code: str, body: str, subsystem: Any, fault: str
) -> None:
    data = _soap_request(code, body=body, subsystem=subsystem)
    status, headers, answer = await _soap_call(net, data)
    assert status == 500, answer[:800]
    assert headers["X-Road-Error"] == fault
    element = _soap_body(answer)
    assert element.tag == f"{{{SOAP_ENV}}}Fault"
    assert element.findtext("faultcode") == fault
    message_id = etree.fromstring(data).findtext(f".//{{{XROAD_NS}}}id") or ""
    logged(meta.provider, message_id, "provider", fault)
    again = await _soap_call(net, _soap_request("listMethods"))
    assert again[0] == 200
