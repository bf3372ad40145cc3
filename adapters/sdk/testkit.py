"""Test an adapter through the exchange layer: two real security servers in a pytest fixture.

:class:`Exchange` starts, in the test's event loop and on 127.0.0.1: a CA (fresh keys and
certificates made at run time), a central server publishing a signed global configuration, a
**provider** security server hosting the adapter's subsystem with the policy you give, a
**consumer** security server hosting the calling subsystem, and the adapter itself. Requests go
consumer → mutual TLS → provider → adapter, signed, policy-checked and logged on both sides,
exactly as in production; nothing is mocked.

Use it as a pytest plugin (``pytest_plugins = ["adapters.sdk.testkit"]``) through the
``adapter_exchange`` fixture (the plugin sets pytest-asyncio's mode to ``auto`` unless the project
chose one)::

    async def test_receipt(adapter_exchange):
        ex = await adapter_exchange(adapter, services={"receipts": "/receipts"}, policy=POLICY)
        status, headers, body = await ex.rest("receipts/R-1", purpose="tax-audit")
        assert status == 200

or directly: ``async with Exchange.running(adapter, tmp_path, ...) as ex``. SOAP operations of
an :class:`~adapters.sdk.Adapter` are declared as services automatically (service code = the
operation's element name, ``type = "soap"``); REST services are the ``services`` you map to a
path of the adapter. Each server's message log is at ``ex.provider.config.log_path`` (and
``ex.consumer...``) for tests that check what was logged. ``ex.soap(operation, {...})`` sends a
SOAP request without a SOAP client; ``ex.consumer_url`` is where zeep sends its own.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from lxml import etree
from multidict import CIMultiDict

from adapters.sdk.adapter import Adapter, operations_by
from adapters.sdk.serving import as_app
from exchange.central.app import PUBLISHER_KEY, load_central_config
from exchange.central.app import create_app as create_central_app
from exchange.central.registry import Registry
from exchange.central.setup import init_central
from exchange.demo.processes import free_port
from exchange.identifiers import SubsystemId, parse_subsystem
from exchange.protocol import soap as xsoap
from exchange.server.config import load_server_config
from exchange.server.core import SecurityServer
from exchange.server.setup import init_server
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import cert_pem, fingerprint, load_certificate

DEFAULT_PROVIDER = "PS/GOV/PROVIDER/adapter"
DEFAULT_CLIENT = "PS/GOV/CONSUMER/client"


@dataclass
class Exchange:
    """A running adapter behind a provider and a consumer security server."""

    root: Path
    provider_id: SubsystemId
    client_id: SubsystemId
    adapter_url: str
    provider: SecurityServer
    consumer: SecurityServer
    session: aiohttp.ClientSession
    _stack: contextlib.AsyncExitStack = field(repr=False)

    @property
    def consumer_url(self) -> str:
        """The consumer security server's port, where information systems send requests."""
        return f"http://127.0.0.1:{self.consumer.consumer_port}"

    def service_path(self, service_code: str) -> str:
        return f"/r1/{self.provider_id.encoded()}/{service_code}"

    async def rest(
        self,
        path: str,
        *,
        method: str = "GET",
        client: str | None = None,
        purpose: str | None = None,
        user_id: str | None = None,
        message_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> tuple[int, CIMultiDict[str], bytes]:
        """``METHOD /r1/{provider subsystem}/{path}`` through the consumer security server.

        ``path`` starts with the service code (``"persons/123456782"``).
        """
        sent = dict(headers or {})
        sent.setdefault("X-Road-Client", client or str(self.client_id))
        for name, value in (
            ("X-Road-Purpose", purpose),
            ("X-Road-UserId", user_id),
            ("X-Road-Id", message_id),
        ):
            if value is not None:
                sent[name] = value
        url = self.consumer_url + self.service_path(path.lstrip("/"))
        async with self.session.request(method, url, headers=sent, data=body) as response:
            return response.status, CIMultiDict(response.headers), await response.read()

    async def post_soap(
        self, envelope: bytes, *, content_type: str = "text/xml; charset=utf-8"
    ) -> tuple[int, CIMultiDict[str], bytes]:
        """POST a SOAP envelope to the consumer security server (``POST /``)."""
        headers = {"Content-Type": content_type, "SOAPAction": '""'}
        async with self.session.post(
            self.consumer_url + "/", data=envelope, headers=headers
        ) as response:
            return response.status, CIMultiDict(response.headers), await response.read()

    async def soap(
        self,
        operation: str,
        values: Mapping[str, str],
        *,
        namespace: str,
        purpose: str | None = None,
        user_id: str | None = None,
        message_id: str | None = None,
    ) -> tuple[int, CIMultiDict[str], etree._Element]:
        """Call SOAP ``operation`` (the service code) through the consumer security server:
        ``<operation xmlns=namespace>`` with one child per ``values`` item, the X-Road header of
        this exchange's client. Returns the status, headers and the parsed response envelope."""
        header = xsoap.XRoadHeader(
            client=self.client_id,
            service=self.provider_id.service(operation),
            service_version=None,
            message_id=message_id or f"testkit-{uuid.uuid4()}",
            user_id=user_id,
            issue=None,
            protocol_version=xsoap.PROTOCOL_VERSION,
            represented_party=None,
            security_server=None,
            purpose=purpose,
        )
        body = etree.Element(f"{{{namespace}}}{operation}", nsmap={"op": namespace})
        for name, value in values.items():
            etree.SubElement(body, f"{{{namespace}}}{name}").text = value
        status, headers, answer = await self.post_soap(xsoap.request_envelope(header, body))
        return status, headers, xsoap.parse_xml(answer)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        target: Adapter | web.Application,
        root: Path,
        *,
        policy: str,
        services: Mapping[str, str] | None = None,
        soap_services: Mapping[str, str] | None = None,
        provider: str = DEFAULT_PROVIDER,
        client: str = DEFAULT_CLIENT,
    ) -> AsyncIterator[Exchange]:
        """Start everything under ``root``; stop it all on exit.

        ``services`` maps REST service codes to a path of the adapter (``{"persons":
        "/persons"}``); ``soap_services`` maps SOAP service codes to the adapter's SOAP path
        (filled in from an Adapter's SOAP operations when not given); ``policy`` is the
        provider's policy file (TOML, ``provider = "..."`` and ``[[grant]]`` tables).
        """
        async with contextlib.AsyncExitStack() as stack:
            session = await stack.enter_async_context(aiohttp.ClientSession())
            adapter_url = await _start_adapter(stack, target)
            soap = dict(soap_services or {})
            openapi_url = wsdl_url = None
            if isinstance(target, Adapter):
                openapi_url = f"{adapter_url}/openapi.json"
                for op in operations_by(target, "soap"):
                    soap.setdefault(str(op.soap), target.soap_path)
                wsdl_url = f"{adapter_url}{target.soap_path}?wsdl"
            provider_id, client_id = parse_subsystem(provider), parse_subsystem(client)
            declared = [
                _service(provider_id, code, adapter_url + path, "rest", openapi_url=openapi_url)
                for code, path in (services or {}).items()
            ] + [
                _service(provider_id, code, adapter_url + path, "soap", wsdl_url=wsdl_url)
                for code, path in soap.items()
            ]
            federation = _Federation(root, stack)
            await federation.start_central()
            provider_server = await federation.add_server("provider", provider_id, declared, policy)
            consumer_server = await federation.add_server("consumer", client_id, [], None)
            await federation.start_servers()
            yield cls(
                root, provider_id, client_id, adapter_url, provider_server, consumer_server,
                session, stack,
            )  # fmt: skip


def _service(
    provider: SubsystemId,
    code: str,
    url: str,
    kind: str,
    *,
    openapi_url: str | None = None,
    wsdl_url: str | None = None,
) -> dict[str, Any]:
    declared: dict[str, Any] = {"id": str(provider.service(code)), "url": url, "type": kind}
    if openapi_url is not None:
        declared["openapi_url"] = openapi_url
    if wsdl_url is not None:
        declared["wsdl_url"] = wsdl_url
    return declared


async def _start_adapter(
    stack: contextlib.AsyncExitStack, target: Adapter | web.Application
) -> str:
    runner = web.AppRunner(as_app(target), access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


class _Federation:
    """CA, central server and security servers of one test exchange."""

    def __init__(self, root: Path, stack: contextlib.AsyncExitStack) -> None:
        self.root = root
        self.stack = stack
        self.ca = CertificateAuthority.create(root / "ca", "Test kit CA")
        self.servers: list[SecurityServer] = []

    async def start_central(self) -> None:
        port = free_port()
        central = init_central(self.root / "central", "PS", port=port)
        self.db = central.db_path
        self.anchor = central.anchor_path
        with Registry.open(self.db) as registry:
            registry.add_ca("Test kit CA", cert_pem(self.ca.cert))
        runner = web.AppRunner(
            create_central_app(load_central_config(self.root / "central" / "central.toml"))
        )
        await runner.setup()
        self.stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.central = runner

    async def add_server(
        self,
        name: str,
        subsystem: SubsystemId,
        services: list[dict[str, Any]],
        policy: str | None,
    ) -> SecurityServer:
        directory = self.root / name
        policy_dir = None
        if policy is not None:
            policy_dir = self.root / f"{name}-policies"
            policy_dir.mkdir(parents=True)
            (policy_dir / "policy.toml").write_text(policy)
        server_id = subsystem.member.security_server(name)
        provider_port = free_port()
        result = init_server(
            directory,
            server_id,
            self.anchor,
            clients=[subsystem],
            ca=self.ca,
            consumer_port=0,
            provider_port=provider_port,
            policy_dir=policy_dir,
            extra={"services": services} if services else None,
        )
        with Registry.open(self.db) as registry:
            conf = registry.build_globalconf(0)
            if conf.member(server_id.owner) is None:
                registry.add_member(server_id.owner, server_id.owner.member_code)
            if not conf.has_subsystem(subsystem):
                registry.add_subsystem(subsystem)
            auth = fingerprint(load_certificate(result.auth_cert))
            registry.add_server(server_id, f"127.0.0.1:{provider_port}", [auth])
            registry.add_server_client(server_id, subsystem)
        server = SecurityServer(load_server_config(result.config))
        self.servers.append(server)
        return server

    async def start_servers(self) -> None:
        await self.central.app[PUBLISHER_KEY].regenerate()
        for server in self.servers:
            await server.start()
            self.stack.push_async_callback(server.stop)


# --- the pytest plugin ---------------------------------------------------------------------------

StartExchange = Callable[..., Awaitable[Exchange]]

try:  # the fixture needs pytest-asyncio (the dev extra); Exchange itself does not
    import pytest_asyncio
except ImportError:  # pragma: no cover - `python -m adapters.sdk try` without the dev extra
    pass
else:

    @pytest_asyncio.fixture
    async def adapter_exchange(tmp_path: Path) -> AsyncIterator[StartExchange]:
        """``await adapter_exchange(adapter, policy=..., services=...)``: a running
        :class:`Exchange` for this test (stopped when the test ends). Keyword arguments as for
        :meth:`Exchange.running`."""
        async with contextlib.AsyncExitStack() as stack:
            count = 0

            async def start(target: Adapter | web.Application, **options: Any) -> Exchange:
                nonlocal count
                count += 1
                running = Exchange.running(target, tmp_path / f"exchange-{count}", **options)
                return await stack.enter_async_context(running)

            yield start

    import pytest

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(config: pytest.Config) -> None:
        """Async tests run without a pytest configuration of the adapter project's own: where
        neither ``--asyncio-mode`` nor the ``asyncio_mode`` setting says otherwise (pytest-asyncio
        defaults to ``strict``, where an unmarked ``async def`` test fails with a message that
        wrongly says no async plugin is installed), the mode is ``auto``. Marked tests and
        fixtures behave the same in both modes."""
        if config.getoption("asyncio_mode", None) is None and (
            config.getini("asyncio_mode") == "strict"
        ):
            config.option.asyncio_mode = "auto"
