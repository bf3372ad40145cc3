"""A small real federation in this process: CA, central server, security servers, backends.

Everything listens on 127.0.0.1 with real TLS and real SQLite files; nothing is mocked. The
federation is built once per session (keys and processes are the expensive part) and tests
share it; tests that need their own variant (expired certificates, rogue servers) build
additional servers with :meth:`Net.add_server`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from multidict import CIMultiDict

from exchange.central.app import create_app as create_central_app
from exchange.central.app import load_central_config
from exchange.central.registry import Registry
from exchange.central.setup import init_central
from exchange.demo.processes import free_port
from exchange.identifiers import (
    SecurityServerId,
    ServiceId,
    SubsystemId,
    parse_member,
    parse_subsystem,
)
from exchange.server.config import load_server_config
from exchange.server.core import SecurityServer
from exchange.server.setup import init_server
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import cert_pem, fingerprint, load_certificate
from tests.integration.soap_backend import soap_service

INTEGRATION = Path(__file__).parent


PERSON = {
    "national_id": "123456782",
    "name_en": {"first": "Amal", "family": "Haddad", "full": "Amal Haddad"},
    "name_ar": {"first": "أمل", "family": "حداد", "full": "أمل حداد"},
    "date_of_birth": "1990-04-01",
    "address": {"governorate": "Jerusalem", "locality": "Biddu", "street": "Main", "building": "7"},
    "marital_status": "married",
    "children": [{"national_id": "200000004", "name_en": {"full": "Sami Haddad"}}],
}


async def _person(request: web.Request) -> web.StreamResponse:
    nid = request.match_info["nid"]
    if nid == "000000000":
        return web.json_response({"error": "not_found"}, status=404)
    body = dict(PERSON, national_id=nid)
    return web.Response(
        body=orjson.dumps(body), content_type="application/json", headers={"X-Backend": "yes"}
    )


async def _echo(request: web.Request) -> web.StreamResponse:
    data = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path,
            "headers": {k: v for k, v in request.headers.items()},
            "body": data.decode(errors="replace"),
        }
    )


async def _slow(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(float(request.query.get("s", "5")))
    return web.json_response({"slow": True})


async def _garbage(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    transport = request.transport
    assert transport is not None
    transport.write(b"\x00\x01 this is not HTTP \r\n\r\n")
    transport.close()
    return resp


async def _text(request: web.Request) -> web.StreamResponse:
    return web.Response(text="plain text, not JSON")


async def _hop_by_hop(request: web.Request) -> web.StreamResponse:
    """An answer with connection-specific headers beside an end-to-end one."""
    return web.json_response(
        {"ok": True},
        headers={
            "Connection": "keep-alive, X-Hop-Secret",
            "X-Hop-Secret": "for this connection only",
            "Keep-Alive": "timeout=5",
            "Proxy-Status": "backend; error=none",
            "X-End-To-End": "kept",
        },
    )


async def _status(request: web.Request) -> web.StreamResponse:
    """The status line the test asks for, written raw (aiohttp writes only real statuses)."""
    transport = request.transport
    assert transport is not None
    line = request.match_info["line"].encode()
    transport.write(b"HTTP/1.1 " + line + b" X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    transport.close()
    return web.Response()


async def _redirect(request: web.Request) -> web.StreamResponse:
    return web.Response(status=302, headers={"Location": "http://127.0.0.1:1/elsewhere"})


def backend_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/persons/{nid}", _person)
    app.router.add_route("*", "/echo{tail:.*}", _echo)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/garbage", _garbage)
    app.router.add_get("/text", _text)
    app.router.add_get("/redirect", _redirect)
    app.router.add_get("/hop-by-hop", _hop_by_hop)
    app.router.add_get("/status/{line}", _status)
    app.router.add_route("*", "/soap", soap_service)
    return app


POLICY = """
provider = "PS/GOV/MOI"

[[grant]]
id = "window-persons"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/population-registry/persons"
methods = ["GET"]
paths = ["/*"]
fields = ["national_id", "name_en", "address.locality", "children[].national_id"]

[[grant]]
id = "window-echo"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/population-registry/echo"
methods = ["*"]
paths = ["/**"]

[[grant]]
id = "window-misc"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/population-registry/misc"
methods = ["GET"]
paths = ["/**"]

[[grant]]
id = "window-text-minimised"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/population-registry/text"
methods = ["GET"]
fields = ["national_id"]

[[grant]]
id = "health-purpose"
client = "PS/GOV/MOH/health-records"
service = "PS/GOV/MOI/population-registry/persons"
methods = ["GET"]
paths = ["/*"]
purposes = ["patient-care"]
"""

MOI = parse_member("PS/GOV/MOI")
PALPOST = parse_member("PS/GOV/PALPOST")
MOH = parse_member("PS/GOV/MOH")
MOF = parse_member("PS/GOV/MOF")
WINDOW = parse_subsystem("PS/GOV/PALPOST/unified-window")
HEALTH = parse_subsystem("PS/GOV/MOH/health-records")
FINANCE = parse_subsystem("PS/GOV/MOF/payments")
REGISTRY_SUB = parse_subsystem("PS/GOV/MOI/population-registry")


def service(code: str) -> ServiceId:
    return ServiceId(*REGISTRY_SUB.parts, code)


@dataclass
class Net:
    root: Path
    ca: CertificateAuthority
    central_db: Path
    anchor: Path
    central_runner: web.AppRunner
    backend_runner: web.AppRunner
    backend_url: str
    servers: dict[str, SecurityServer] = field(default_factory=dict)
    session: aiohttp.ClientSession | None = None

    def registry(self) -> Registry:
        return Registry.open(self.central_db)

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.servers[name].consumer_port}{path}"

    async def call(
        self,
        name: str,
        path: str,
        *,
        client: str | None = str(WINDOW),
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> tuple[int, CIMultiDict[str], bytes]:
        assert self.session is not None
        h = dict(headers or {})
        if client is not None:
            h.setdefault("X-Road-Client", client)
        async with self.session.request(method, self.url(name, path), headers=h, data=body) as r:
            return r.status, CIMultiDict(r.headers), await r.read()

    async def refresh_globalconf(self) -> None:
        """Make every server fetch the configuration the central server publishes now."""
        with self.registry() as reg:
            version = reg.version()
        publisher = self.central_runner.app[_publisher_key()]
        await publisher.wait_for_version(version)
        for server in self.servers.values():
            if server.poller is not None:
                await server.poller.fetch_once()

    async def add_server(
        self,
        name: str,
        server_id: SecurityServerId,
        *,
        clients: list[SubsystemId],
        services: list[tuple[ServiceId, str]] = (),  # type: ignore[assignment]
        policy: str | None = None,
        register: bool = True,
        ca: CertificateAuthority | None = None,
        extra: dict[str, Any] | None = None,
        start: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> SecurityServer:
        directory = self.root / "servers" / name
        policy_dir = None
        if policy is not None:
            policy_dir = directory.parent / f"{name}-policies"
            policy_dir.mkdir(parents=True, exist_ok=True)
            (policy_dir / "policy.toml").write_text(policy)
        provider_port = free_port()
        result = init_server(
            directory,
            server_id,
            self.anchor,
            clients=clients,
            services=services,
            ca=ca or self.ca,
            consumer_port=0,
            provider_port=provider_port,
            policy_dir=policy_dir,
            extra=extra,
        )
        if register:
            with self.registry() as reg:
                if reg.build_globalconf(0).member(server_id.owner) is None:
                    reg.add_member(server_id.owner, server_id.owner.member_code)
                for c in clients:
                    if not reg.build_globalconf(0).has_subsystem(c):
                        reg.add_subsystem(c)
                reg.add_server(
                    server_id,
                    f"127.0.0.1:{provider_port}",
                    [fingerprint(load_certificate(result.auth_cert))],
                )
                for c in clients:
                    reg.add_server_client(server_id, c)
        config = load_server_config(result.config)
        server = SecurityServer(config, clock=clock) if clock else SecurityServer(config)
        self.servers[name] = server
        if start:
            await self.refresh_globalconf()
            await server.start()
        return server


def _publisher_key() -> Any:
    from exchange.central.app import PUBLISHER_KEY

    return PUBLISHER_KEY


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def net(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Net]:
    root = tmp_path_factory.mktemp("federation")
    ca = CertificateAuthority.create(root / "ca", "Test CA")
    central_port = free_port()
    central = init_central(root / "central", "PS", port=central_port)
    with Registry.open(central.db_path) as reg:
        reg.add_ca("Test CA", cert_pem(ca.cert))
        for member, name in (
            (MOI, "Interior"),
            (PALPOST, "Post"),
            (MOH, "Health"),
            (MOF, "Finance"),
        ):
            reg.add_member(member, name)
    central_runner = web.AppRunner(
        create_central_app(load_central_config(root / "central" / "central.toml"))
    )
    await central_runner.setup()
    await web.TCPSite(central_runner, "127.0.0.1", central_port).start()
    backend_runner = web.AppRunner(backend_app())
    await backend_runner.setup()
    backend_site = web.TCPSite(backend_runner, "127.0.0.1", 0)
    await backend_site.start()
    backend_port = backend_runner.addresses[0][1]
    backend_url = f"http://127.0.0.1:{backend_port}"
    n = Net(
        root=root,
        ca=ca,
        central_db=central.db_path,
        anchor=central.anchor_path,
        central_runner=central_runner,
        backend_runner=backend_runner,
        backend_url=backend_url,
    )
    n.session = aiohttp.ClientSession()
    services = [
        (service("persons"), f"{backend_url}/persons"),
        (service("echo"), f"{backend_url}/echo"),
        (service("misc"), backend_url),
        (service("text"), f"{backend_url}/text"),
    ]
    try:
        await n.add_server(
            "moi",
            SecurityServerId(*MOI.parts, "ss1"),
            clients=[REGISTRY_SUB],
            services=services,
            policy=POLICY,
            start=False,
        )
        await n.add_server(
            "palpost", SecurityServerId(*PALPOST.parts, "ss1"), clients=[WINDOW], start=False
        )
        await n.add_server(
            "moh", SecurityServerId(*MOH.parts, "ss1"), clients=[HEALTH], start=False
        )
        await n.add_server(
            "mof", SecurityServerId(*MOF.parts, "ss1"), clients=[FINANCE], start=False
        )
        await n.refresh_globalconf()
        for server in n.servers.values():
            await server.start()
        yield n
    finally:
        for server in n.servers.values():
            await server.stop()
        await n.session.close()
        await backend_runner.cleanup()
        await central_runner.cleanup()
