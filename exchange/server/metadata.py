"""The metadata services a security server answers itself (PR-META, PR-MREST).

- ``GET /listClients[?xRoadInstance=..]`` on the consumer port: the members and subsystems of the
  verified global configuration in force (JSON with ``Accept: application/json``, else XML). No
  ``X-Road-Client`` is needed: the list is what every security server already holds.
- ``GET /r1/{provider subsystem}/listMethods``, ``.../allowedMethods`` and
  ``.../getOpenAPI?serviceCode=CODE``: the consumer server treats them as ordinary services (signed
  request, mutual TLS, signed response bound to the request, both sides log). The provider server
  recognises the reserved service code after every check of the request (signature, client hosted
  by the connecting server, freshness, replay, body digest) and answers from its own configuration
  and policy instead of calling a backend.
- SOAP ``listMethods``, ``allowedMethods`` and ``getWsdl`` (PR-META §3-4): registered in
  ``server.local_soap_services``, the hook :mod:`exchange.server.soap_provider` calls once a SOAP
  request is verified and its envelope matched against the signed request. ``getWsdl`` answers
  SOAP with attachments: the ``getWsdlResponse`` envelope, then the WSDL (hardened parse,
  endpoint locations replaced).

Access: as in X-Road, every authenticated client of the federation may call them; there is no
grant to hold. What they reveal is bounded instead: ``listMethods`` names the subsystem's services
and types (what the central catalogue publishes anyway) with the catch-all endpoint, never the
policy; ``allowedMethods`` lists only the endpoints the policy grants the *verified* caller now;
``getOpenAPI`` passes on the service's description with the backend's address replaced.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import parse_qsl, urlsplit

import orjson
from aiohttp import web
from lxml import etree

from exchange.errors import (
    ClientError,
    ExchangeError,
    ProviderServerError,
    ServiceFailed,
    UnknownService,
)
from exchange.globalconf.document import GlobalConf
from exchange.identifiers import ClientId, ServiceId, SubsystemId, validate_part
from exchange.policy.discovery import ALL_ENDPOINTS, Endpoint, allowed_endpoints
from exchange.policy.model import PolicySet
from exchange.protocol import soap
from exchange.protocol.messages import SignedRequest
from exchange.protocol.metadata import (
    ALLOWED_METHODS,
    GET_OPENAPI,
    GET_WSDL,
    JSON_TYPE,
    LIST_METHODS,
    REST_METADATA_SERVICES,
    XML_TYPE,
    DescriptionError,
    ServiceEntry,
    client_list_json,
    client_list_xml,
    get_wsdl_response,
    openapi_description,
    service_list,
    soap_method_list,
    wsdl_description,
)
from exchange.server.config import ClientConfig, ServerConfig, ServiceConfig, ServiceType
from exchange.server.consumer_steps import error_response
from exchange.server.httpclient import HttpClient
from exchange.server.records import ExchangeRecord
from exchange.server.soap_provider import LocalSoapService

log = logging.getLogger("exchange.server.metadata")

MAX_DESCRIPTION_BYTES: Final = 4 * 2**20
DESCRIPTION_TIMEOUT: Final = 30.0
METADATA_DECISION: Final = "Allowed.MetadataService"


class InvalidMetadataRequest(ProviderServerError):
    """A metadata service was called the wrong way (method, path, missing ``serviceCode``)."""

    code = "Server.ServerProxy.InvalidRequest"
    status = 400


class InvalidServiceType(ProviderServerError):
    """The service has no description of the kind asked for (e.g. getOpenAPI of a SOAP service
    or of a REST service without ``openapi_url``)."""

    code = "Server.ServerProxy.InvalidServiceType"
    status = 400


@dataclass(frozen=True, slots=True)
class MetadataAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    policy_version: str


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


# --- the consumer side: listClients ------------------------------------------------------------


class ClientListHost(Protocol):
    """What ``/listClients`` uses of the security server."""

    def globalconf_or_fail(self, *, provider: bool, now: float | None = None) -> GlobalConf: ...


class MetadataHost(Protocol):
    """What the provider's metadata services use of the security server."""

    @property
    def config(self) -> ServerConfig: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def clients(self) -> Mapping[SubsystemId, ClientConfig]: ...
    @property
    def services(self) -> Mapping[ServiceId, ServiceConfig]: ...
    @property
    def local_soap_services(self) -> dict[str, LocalSoapService]: ...
    def policy_set(self) -> PolicySet: ...


def list_clients_handler(server: ClientListHost) -> Handler:
    """``GET /listClients`` (PR-META §2) for the consumer port."""

    async def list_clients(request: web.BaseRequest) -> web.StreamResponse:
        try:
            instance = request.query.get("xRoadInstance")
            if instance is not None:
                validate_part(instance, "X-Road instance", code="Client.InvalidRequest")
            conf = server.globalconf_or_fail(provider=False)
        except ExchangeError as err:
            log.info("listClients refused: %s [%s]", err.internal, err.detail)
            return error_response(err)
        if "application/json" in request.headers.get("Accept", ""):
            return web.Response(
                body=client_list_json(conf, instance),
                content_type=None,
                headers={"Content-Type": JSON_TYPE},
            )
        return web.Response(
            body=client_list_xml(conf, instance), headers={"Content-Type": XML_TYPE}
        )

    return list_clients


# --- the provider side -------------------------------------------------------------------------


def is_rest_metadata(request: SignedRequest) -> bool:
    return request.service.service_code in REST_METADATA_SERVICES


class MetadataServices:
    """The provider's answers to metadata requests; owns the client that fetches descriptions."""

    def __init__(self, server: MetadataHost) -> None:
        self.server = server
        self.client = HttpClient(
            max_response_bytes=MAX_DESCRIPTION_BYTES,
            connect_timeout=min(server.config.limits.connect_timeout, DESCRIPTION_TIMEOUT),
        )
        server.local_soap_services.update(
            {
                LIST_METHODS: self._soap_list_methods,
                ALLOWED_METHODS: self._soap_allowed_methods,
                GET_WSDL: self._soap_get_wsdl,
            }
        )

    async def close(self) -> None:
        await self.client.close()

    def provided_subsystems(self) -> frozenset[SubsystemId]:
        """Subsystems this server provides for: its configured clients and services."""
        return frozenset(c for c in self.server.clients) | frozenset(
            s.subsystem for s in self.server.services
        )

    def services_of(self, subsystem: SubsystemId, kind: ServiceType) -> list[ServiceConfig]:
        return sorted(
            (
                s
                for s in self.server.services.values()
                if s.id.subsystem == subsystem and s.type == kind
            ),
            key=lambda s: s.id,
        )

    async def answer_rest(
        self, request: SignedRequest, conf: GlobalConf, rec: ExchangeRecord
    ) -> MetadataAnswer:
        """Answer a verified REST metadata request (PR-MREST §4, §5)."""
        code = request.service.service_code
        # (1) the provider subsystem is served here
        if request.service.subsystem not in self.provided_subsystems():
            raise UnknownService(
                f"service {request.service} is not provided by this security server"
            )
        # (2) called as PR-MREST describes: GET, nothing after the service code
        if request.method != "GET":
            raise InvalidMetadataRequest(f"{code} is called with GET, not {request.method}")
        if request.path not in ("", "/"):
            raise InvalidMetadataRequest(f"{code} takes no path after the service code")
        policy_version = self._record_decision(code, rec)
        if code == LIST_METHODS:
            body = orjson.dumps(service_list(self._rest_entries(request.service.subsystem)))
        elif code == ALLOWED_METHODS:
            body = orjson.dumps(service_list(self._allowed_entries(request, conf)))
        else:
            return await self._get_openapi(request, policy_version)
        return MetadataAnswer(200, [("content-type", JSON_TYPE)], body, policy_version)

    def _record_decision(self, code: str, rec: ExchangeRecord) -> str:
        policy_version = self.server.policy_set().version
        rec.decision = {
            "allowed": True,
            "code": METADATA_DECISION,
            "grant": None,
            "source": None,
            "fields": None,
            "policy_version": policy_version,
            "reason": f"metadata service {code}: answered by the provider security server",
        }
        return policy_version

    def _rest_entries(self, subsystem: SubsystemId) -> list[ServiceEntry]:
        return [
            ServiceEntry(s.id, _rest_type(s), ALL_ENDPOINTS)
            for s in self.services_of(subsystem, "rest")
        ]

    def _allowed_entries(self, request: SignedRequest, conf: GlobalConf) -> list[ServiceEntry]:
        services = self.services_of(request.service.subsystem, "rest")
        granted = self._granted(request.client, services, conf)
        # a service granted by SOAP-only grants (no methods) has no REST endpoint to show
        return [
            ServiceEntry(s.id, _rest_type(s), granted[s.id]) for s in services if granted.get(s.id)
        ]

    def _granted(
        self, client: ClientId, services: list[ServiceConfig], conf: GlobalConf
    ) -> dict[ServiceId, tuple[Endpoint, ...]]:
        return allowed_endpoints(
            self.server.policy_set(),
            client,
            [s.id for s in services],
            groups=conf.groups_of(client),
            now=dt.datetime.fromtimestamp(self.server.clock(), dt.UTC),
        )

    # -- SOAP (PR-META §3-4), through the hook of :mod:`exchange.server.soap_provider` ---------

    def _check_soap(self, request: soap.SoapRequest, rec: ExchangeRecord) -> SubsystemId:
        """The provider subsystem is served here; the decision is recorded."""
        service = request.header.service
        if service.subsystem not in self.provided_subsystems():
            raise UnknownService(f"service {service} is not provided by this security server")
        self._record_decision(service.service_code, rec)
        return service.subsystem

    async def _soap_list_methods(
        self,
        request: soap.SoapRequest,
        conf: GlobalConf,
        rec: ExchangeRecord,
    ) -> etree._Element:
        subsystem = self._check_soap(request, rec)
        services = [s.id for s in self.services_of(subsystem, "soap")]
        return soap_method_list(LIST_METHODS, services)

    async def _soap_allowed_methods(
        self,
        request: soap.SoapRequest,
        conf: GlobalConf,
        rec: ExchangeRecord,
    ) -> etree._Element:
        subsystem = self._check_soap(request, rec)
        services = self.services_of(subsystem, "soap")
        granted = self._granted(request.header.client, services, conf)
        return soap_method_list(ALLOWED_METHODS, [s.id for s in services if s.id in granted])

    async def _soap_get_wsdl(
        self,
        request: soap.SoapRequest,
        conf: GlobalConf,
        rec: ExchangeRecord,
    ) -> tuple[etree._Element, bytes]:
        subsystem = self._check_soap(request, rec)
        code, version = _get_wsdl_arguments(request)
        service = self.described_service(subsystem, code)
        url = service.description_url
        if service.type != "soap" or url is None:
            raise InvalidServiceType(
                f"service {service.id} has no WSDL (it is a REST service: use getOpenAPI)"
            )
        raw, _ = await self.fetch_description(service, url)
        try:
            wsdl = wsdl_description(
                soap.parse_xml(raw, max_bytes=MAX_DESCRIPTION_BYTES),
                hidden_hosts=[urlsplit(u).hostname or "" for u in (service.url, url)],
            )
        except (ClientError, DescriptionError) as exc:
            reason = exc.message if isinstance(exc, ClientError) else str(exc)
            raise ServiceFailed(
                "the service's WSDL is not usable", internal=f"{url}: {reason}"
            ) from None
        return get_wsdl_response(code, version), wsdl

    async def _get_openapi(self, request: SignedRequest, policy_version: str) -> MetadataAnswer:
        codes = [
            v for k, v in parse_qsl(request.query, keep_blank_values=True) if k == "serviceCode"
        ]
        if len(codes) != 1 or not codes[0]:
            raise InvalidMetadataRequest(f"{GET_OPENAPI} needs exactly one serviceCode parameter")
        service = self.described_service(request.service.subsystem, codes[0])
        if service.type != "rest" or service.openapi_url is None:
            raise InvalidServiceType(
                f"service {service.id} has no OpenAPI description"
                + (" (it is a SOAP service: use getWsdl)" if service.type == "soap" else "")
            )
        raw, content_type = await self.fetch_description(service, service.openapi_url)
        try:
            body, answer_type = openapi_description(
                raw,
                content_type,
                urlsplit(service.url).path,
                hidden_hosts=[
                    urlsplit(u).hostname or "" for u in (service.url, service.openapi_url)
                ],
            )
        except DescriptionError as exc:
            raise ServiceFailed(
                "the service's OpenAPI description is not usable",
                internal=f"{service.openapi_url}: {exc}",
            ) from None
        return MetadataAnswer(200, [("content-type", answer_type)], body, policy_version)

    def described_service(self, subsystem: SubsystemId, code: str) -> ServiceConfig:
        """The configured service ``code`` of ``subsystem``, or ``UnknownService``."""
        try:
            service_id = subsystem.service(code)
        except ExchangeError:
            raise InvalidMetadataRequest("serviceCode is not a valid service code") from None
        service = self.server.services.get(service_id)
        if service is None:
            raise UnknownService(f"service {service_id} is not provided by this security server")
        return service

    async def fetch_description(self, service: ServiceConfig, url: str) -> tuple[bytes, str]:
        """GET a service description with a timeout and a size limit; non-200 is a failure."""
        timeout = min(
            service.timeout, self.server.config.limits.backend_timeout, DESCRIPTION_TIMEOUT
        )
        try:
            response = await self.client.request(
                "GET", url, [("Accept", "application/json, text/yaml, text/xml")], b"", timeout
            )
        except ProviderServerError as exc:
            exc.internal = f"fetching the description of {service.id} from {url}: {exc.internal}"
            raise
        if response.status != 200:
            raise ServiceFailed(
                "the service's description could not be fetched",
                internal=f"{url} answered HTTP {response.status}",
            )
        content_type = next((v for k, v in response.headers if k.lower() == "content-type"), "")
        return response.body, content_type


def _get_wsdl_arguments(request: soap.SoapRequest) -> tuple[str, str | None]:
    """``serviceCode`` (required) and ``serviceVersion`` of a ``getWsdl`` body (PR-META §4)."""
    root = soap.parse_xml(request.envelope)
    body = root.find(f"{{{soap.SOAP_ENV_NS}}}Body")
    wrapper = (
        next((el for el in body if isinstance(el.tag, str)), None) if body is not None else None
    )
    found: dict[str, list[str]] = {}
    for el in wrapper if wrapper is not None else ():
        if isinstance(el.tag, str):
            found.setdefault(etree.QName(el).localname, []).append((el.text or "").strip())
    codes, versions = found.get("serviceCode", []), found.get("serviceVersion", [])
    if len(codes) != 1 or not codes[0] or len(versions) > 1:
        raise InvalidMetadataRequest(
            "getWsdl needs exactly one serviceCode (and at most one serviceVersion)"
        )
    return codes[0], versions[0] if versions else None


def _rest_type(service: ServiceConfig) -> str:
    """X-Road's service types: ``OPENAPI`` when described by an OpenAPI document, else ``REST``."""
    return "OPENAPI" if service.openapi_url is not None else "REST"
