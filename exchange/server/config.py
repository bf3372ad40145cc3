"""Security server configuration: one TOML file, checked against :class:`ServerFile`, loaded
into frozen dataclasses.

Only :func:`load_server_config` reads files; everything else takes the resulting
:class:`ServerConfig`. Relative paths in the file are relative to the file's directory.
Defaults follow X-Road's (connect 30 s, backend 60 s, 10 MiB bodies, 60 s clock skew).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field

from exchange.configfile import (
    HttpUrl,
    Port,
    Schema,
    Text,
    at_least,
    check_document,
    parsed_by,
    read_toml,
    seconds,
)
from exchange.errors import ConfigurationError
from exchange.identifiers import (
    MemberId,
    SecurityServerId,
    ServiceId,
    SubsystemId,
    parse_member,
    parse_security_server,
    parse_service,
    parse_subsystem,
)
from exchange.oplog import LoggingSection, LogSettings
from exchange.protocol.metadata import RESERVED_SERVICE_CODES

ConnectionType = Literal["http", "https", "https-noauth"]


EXPIRY_WARNING_DAYS = 30
"""Own certificates closer than this to expiry are warned about (server log, ``status``)."""


@dataclass(frozen=True, slots=True)
class Listener:
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True, slots=True)
class SigningKeyConfig:
    member: MemberId
    key: Path
    cert: Path


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """A client subsystem hosted here and how its information systems may connect."""

    id: SubsystemId
    connection: ConnectionType = "http"
    is_certs: tuple[Path, ...] = ()


ServiceType = Literal["rest", "soap"]


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """A service this server provides: where its backend answers and how it is described.

    A REST service's backend gets ``url`` + the path after the service code; a SOAP service's
    backend gets the envelope POSTed to ``url``. ``openapi_url`` (REST) and ``wsdl_url`` (SOAP,
    default ``url?wsdl``) are where the metadata services fetch the service description.
    """

    id: ServiceId
    url: str
    timeout: float = 60.0
    type: ServiceType = "rest"
    openapi_url: str | None = None
    wsdl_url: str | None = None
    title: str | None = None
    description: str | None = None
    """Shown in the central server's service catalogue (declared by this server)."""

    @property
    def description_url(self) -> str | None:
        if self.type == "soap":
            return self.wsdl_url or self.url + "?wsdl"
        return self.openapi_url


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 10 * 2**20
    max_response_bytes: int = 10 * 2**20
    connect_timeout: float = 30.0
    backend_timeout: float = 60.0
    clock_skew_seconds: int = 60
    peer_connections: int = 2
    # what one peer security server may hold at this provider port at once
    max_peer_connections: int = 16
    max_peer_requests: int = 512
    max_peer_request_bytes: int = 64 * 2**20
    # a frame begun must arrive whole within this many seconds (else the connection is closed)
    frame_timeout: float = 60.0
    # TCP connections still in their TLS handshake, from anyone, per TLS port (the provider
    # port, and the consumer's HTTPS listener when there is one)
    max_pending_handshakes: int = 128
    tls_handshake_timeout: float = 10.0
    # SIGTERM: how long exchanges in flight may take to finish before the server exits anyway
    drain_timeout: float = 30.0


DEFAULT_ARCHIVE_INTERVAL = 3600.0
DEFAULT_ARCHIVE_MAX_RECORDS = 20_000
"""Records per archive file: the transaction that deletes them holds the write lock (well under
a second on a 2-core machine, `bench/archive_bench.py`), while the server's log writes wait."""


@dataclass(frozen=True, slots=True)
class Retention:
    """``[messagelog]`` archiving: records older than ``days`` move to archive files in
    ``archive_dir`` every ``interval`` seconds; ``days = None`` (the default) keeps everything
    in the live database until an operator runs ``exchange log archive``."""

    archive_dir: Path
    days: float | None = None
    interval: float = DEFAULT_ARCHIVE_INTERVAL
    max_records: int = DEFAULT_ARCHIVE_MAX_RECORDS


@dataclass(frozen=True, slots=True)
class ServerConfig:
    path: Path
    server_id: SecurityServerId
    state_dir: Path
    anchor: Path
    consumer: Listener
    consumer_tls: Listener | None
    provider: Listener
    status: Listener | None
    """``/health`` and ``/metrics`` for the operator's monitoring and load balancer (None: off)."""
    auth_key: Path
    auth_cert: Path
    signing: tuple[SigningKeyConfig, ...]
    clients: tuple[ClientConfig, ...]
    services: tuple[ServiceConfig, ...]
    policy_dir: Path | None
    log_path: Path
    log_bodies: bool = True
    limits: Limits = field(default_factory=Limits)
    globalconf_state: Path = Path("globalconf.jws")
    passphrase_env: str = "EXCHANGE_KEY_PASSPHRASE"
    timestamping_failure_limit: float = 14400.0
    """Seconds tree heads may go without a time-stamp before exchanges are refused."""
    retention: Retention = field(default_factory=lambda: Retention(Path("archives")))
    logging: LogSettings = field(default_factory=LogSettings)

    @property
    def owner(self) -> MemberId:
        return self.server_id.owner

    @property
    def archive_dir(self) -> Path:
        return self.retention.archive_dir


# --- the file: server.toml --------------------------------------------------------------------

_LIMITS: Final = Limits()
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _service_id(value: str) -> str:
    service_id = parse_service(value)
    if service_id.service_code in RESERVED_SERVICE_CODES:
        raise ConfigurationError(
            f"service code {service_id.service_code!r} is reserved for the metadata services "
            "the security server answers itself; choose another"
        )
    return value


def _env_name(value: str) -> str:
    if _ENV_NAME.fullmatch(value) is None:
        raise ValueError(f"must be the name of an environment variable, not {value!r}")
    return value


def _at_most(limit: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not value.strip() or len(value) > limit:
            raise ValueError(f"must be text of 1 to {limit} characters")
        return value

    return check


Positive = Annotated[int, AfterValidator(at_least(1))]
Timeout = Annotated[float, AfterValidator(seconds(0, 3600))]


class _Listener(Schema):
    host: Text = "127.0.0.1"
    port: Port


class _ConsumerListener(_Listener):
    port: Port = 8080


class _ConsumerTlsListener(_Listener):
    port: Port = 8081


class _ProviderListener(_Listener):
    port: Port = 8443


DEFAULT_STATUS_PORT: Final = 5588
"""The status listener's port (X-Road's health check port)."""


class _StatusListener(_Listener):
    port: Port = DEFAULT_STATUS_PORT
    enabled: bool = True


class _SigningKey(Schema):
    member: Annotated[str, AfterValidator(parsed_by(parse_member))]
    key: Text
    cert: Text


class _Keys(Schema):
    auth_key: Text
    auth_cert: Text
    signing: Annotated[list[_SigningKey], Field(min_length=1)]
    passphrase_env: Annotated[str, AfterValidator(_env_name)] = "EXCHANGE_KEY_PASSPHRASE"


class _Client(Schema):
    id: Annotated[str, AfterValidator(parsed_by(parse_subsystem))]
    connection: ConnectionType = "http"
    is_certs: list[Text] = Field(default_factory=list)


class _Service(Schema):
    id: Annotated[str, AfterValidator(parsed_by(_service_id))]
    url: HttpUrl
    timeout: Timeout = 60.0
    type: ServiceType = "rest"
    openapi_url: HttpUrl | None = None
    wsdl_url: HttpUrl | None = None
    title: Annotated[str, AfterValidator(_at_most(200))] | None = None
    description: Annotated[str, AfterValidator(_at_most(2000))] | None = None


class _Policy(Schema):
    dir: Text


class _MessageLog(Schema):
    path: Text = "messagelog.sqlite"
    bodies: bool = True
    timestamping_failure_limit: Annotated[float, AfterValidator(seconds())] = 14400.0
    retention_days: Annotated[float, AfterValidator(at_least(0, " days"))] | None = None
    archive_dir: Text | None = None
    archive_interval: Annotated[float, AfterValidator(seconds())] = DEFAULT_ARCHIVE_INTERVAL
    archive_max_records: Positive = DEFAULT_ARCHIVE_MAX_RECORDS


class _Limits(Schema):
    max_body_bytes: Positive = _LIMITS.max_body_bytes
    max_response_bytes: Positive = _LIMITS.max_response_bytes
    connect_timeout: Timeout = _LIMITS.connect_timeout
    backend_timeout: Timeout = _LIMITS.backend_timeout
    clock_skew_seconds: Annotated[int, AfterValidator(at_least(1))] = _LIMITS.clock_skew_seconds
    peer_connections: Positive = _LIMITS.peer_connections
    max_peer_connections: Positive = _LIMITS.max_peer_connections
    max_peer_requests: Positive = _LIMITS.max_peer_requests
    max_peer_request_bytes: Positive = _LIMITS.max_peer_request_bytes
    frame_timeout: Timeout = _LIMITS.frame_timeout
    max_pending_handshakes: Positive = _LIMITS.max_pending_handshakes
    tls_handshake_timeout: Timeout = _LIMITS.tls_handshake_timeout
    drain_timeout: Timeout = _LIMITS.drain_timeout


class ServerFile(Schema):
    """``server.toml``: every key a security server reads, its type, range and default."""

    server_id: Annotated[str, AfterValidator(parsed_by(parse_security_server))]
    state_dir: Text = "."
    anchor: Text = "anchor.json"
    globalconf_state: Text = "globalconf.jws"
    consumer: _ConsumerListener = _ConsumerListener()
    consumer_tls: _ConsumerTlsListener | None = None
    provider: _ProviderListener = _ProviderListener()
    status: _StatusListener = _StatusListener()
    keys: _Keys
    clients: list[_Client] = Field(default_factory=list)
    services: list[_Service] = Field(default_factory=list)
    policy: _Policy | None = None
    messagelog: _MessageLog = _MessageLog()
    limits: _Limits = _Limits()
    logging: LoggingSection = LoggingSection()


def _path(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def _server_config(file: ServerFile, path: Path) -> ServerConfig:
    base = path.parent
    state_dir = _path(base, file.state_dir)
    log = file.messagelog
    return ServerConfig(
        path=path,
        server_id=parse_security_server(file.server_id),
        state_dir=state_dir,
        anchor=_path(base, file.anchor),
        consumer=Listener(file.consumer.host, file.consumer.port),
        consumer_tls=(
            Listener(file.consumer_tls.host, file.consumer_tls.port) if file.consumer_tls else None
        ),
        provider=Listener(file.provider.host, file.provider.port),
        status=(Listener(file.status.host, file.status.port) if file.status.enabled else None),
        auth_key=_path(base, file.keys.auth_key),
        auth_cert=_path(base, file.keys.auth_cert),
        signing=tuple(
            SigningKeyConfig(parse_member(s.member), _path(base, s.key), _path(base, s.cert))
            for s in file.keys.signing
        ),
        clients=tuple(
            ClientConfig(
                parse_subsystem(c.id), c.connection, tuple(_path(base, p) for p in c.is_certs)
            )
            for c in file.clients
        ),
        services=tuple(_service_config(s) for s in file.services),
        policy_dir=_path(base, file.policy.dir) if file.policy else None,
        log_path=_path(base, log.path),
        log_bodies=log.bodies,
        limits=Limits(**file.limits.model_dump()),
        globalconf_state=_path(base, file.globalconf_state),
        passphrase_env=file.keys.passphrase_env,
        timestamping_failure_limit=log.timestamping_failure_limit,
        retention=Retention(
            archive_dir=(
                _path(base, log.archive_dir) if log.archive_dir else state_dir / "archives"
            ),
            days=log.retention_days,
            interval=log.archive_interval,
            max_records=log.archive_max_records,
        ),
        logging=file.logging.settings(),
    )


def _service_config(service: _Service) -> ServiceConfig:
    return ServiceConfig(
        id=parse_service(service.id),
        url=service.url.rstrip("/"),
        timeout=service.timeout,
        type=service.type,
        openapi_url=service.openapi_url,
        wsdl_url=service.wsdl_url,
        title=service.title,
        description=service.description,
    )


def parse_server_config(doc: dict[str, Any], path: Path, text: str | None = None) -> ServerConfig:
    """``server.toml``'s document checked and turned into a :class:`ServerConfig` (no IO);
    ``text``, when given, is the file's text, for the lines of problems."""
    return _server_config(check_document(ServerFile, doc, text, path), path)


def pid_file_of(config_path: Path) -> Path:
    """Where a running server notes its process id (``exchange server reload`` and
    ``exchange audit export`` signal it)."""
    return config_path.resolve().parent / "server.pid"


def load_server_config(path: str | Path) -> ServerConfig:
    """Read and check ``server.toml``; every problem is in one :class:`ConfigFileError`."""
    p = Path(path).resolve()
    text, doc = read_toml(p)
    return parse_server_config(doc, p, text)
