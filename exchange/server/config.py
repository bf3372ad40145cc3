"""Security server configuration: one TOML file, loaded into frozen dataclasses.

Only :func:`load_server_config` reads files; everything else takes the resulting
:class:`ServerConfig`. Relative paths in the file are relative to the file's directory.
Defaults follow DESIGN.md §12.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from exchange.errors import ConfigurationError, ExchangeError
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
    # TCP connections still in their TLS handshake, from anyone, per TLS port (the provider
    # port, and the consumer's HTTPS listener when there is one)
    max_pending_handshakes: int = 128
    tls_handshake_timeout: float = 10.0


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

    @property
    def owner(self) -> MemberId:
        return self.server_id.owner

    @property
    def archive_dir(self) -> Path:
        return self.retention.archive_dir


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigurationError(f"[{name}] must be a table")
    return value


def _path(base: Path, value: Any, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be a path")
    p = Path(value)
    return p if p.is_absolute() else base / p


def _listener(section: dict[str, Any], default_port: int) -> Listener:
    return Listener(
        host=str(section.get("host", "127.0.0.1")), port=int(section.get("port", default_port))
    )


def _signing(base: Path, items: Any) -> tuple[SigningKeyConfig, ...]:
    if not isinstance(items, list) or not items:
        raise ConfigurationError("[[keys.signing]] must list at least one member signing key")
    return tuple(
        SigningKeyConfig(
            member=parse_member(str(item.get("member"))),
            key=_path(base, item.get("key"), "keys.signing.key"),
            cert=_path(base, item.get("cert"), "keys.signing.cert"),
        )
        for item in items
    )


def _clients(base: Path, items: Any) -> tuple[ClientConfig, ...]:
    out = []
    for item in items or []:
        conn = item.get("connection", "http")
        if conn not in ("http", "https", "https-noauth"):
            raise ConfigurationError(
                f"clients.connection must be http, https or https-noauth, not {conn!r}"
            )
        out.append(
            ClientConfig(
                id=parse_subsystem(str(item.get("id"))),
                connection=conn,
                is_certs=tuple(
                    _path(base, p, "clients.is_certs") for p in item.get("is_certs", [])
                ),
            )
        )
    return tuple(out)


def _http_url(item: dict[str, Any], key: str, required: bool) -> str | None:
    url = item.get(key)
    if url is None and not required:
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"services.{key} must be an http(s) URL, not {url!r}")
    return url


def _short_text(item: dict[str, Any], key: str, limit: int) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ConfigurationError(f"services.{key} must be text of 1 to {limit} characters")
    return value


def _services(items: Any) -> tuple[ServiceConfig, ...]:
    out = []
    for item in items or []:
        kind = item.get("type", "rest")
        if kind not in ("rest", "soap"):
            raise ConfigurationError(f"services.type must be rest or soap, not {kind!r}")
        service_id = parse_service(str(item.get("id")))
        if service_id.service_code in RESERVED_SERVICE_CODES:
            raise ConfigurationError(
                f"service code {service_id.service_code!r} is reserved for the metadata services "
                "the security server answers itself; choose another"
            )
        out.append(
            ServiceConfig(
                id=service_id,
                url=str(_http_url(item, "url", True)).rstrip("/"),
                timeout=float(item.get("timeout", 60.0)),
                type=kind,
                openapi_url=_http_url(item, "openapi_url", False),
                wsdl_url=_http_url(item, "wsdl_url", False),
                title=_short_text(item, "title", 200),
                description=_short_text(item, "description", 2000),
            )
        )
    return tuple(out)


def _retention(base: Path, state_dir: Path, log: dict[str, Any]) -> Retention:
    days = log.get("retention_days")
    if days is not None and (
        isinstance(days, bool) or not isinstance(days, int | float) or days < 0
    ):
        raise ConfigurationError("messagelog.retention_days must be a number of days, 0 or more")
    interval = log.get("archive_interval", DEFAULT_ARCHIVE_INTERVAL)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        raise ConfigurationError("messagelog.archive_interval must be a positive number of seconds")
    max_records = log.get("archive_max_records", DEFAULT_ARCHIVE_MAX_RECORDS)
    if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
        raise ConfigurationError("messagelog.archive_max_records must be a positive integer")
    archive_dir = (
        _path(base, log["archive_dir"], "messagelog.archive_dir")
        if "archive_dir" in log
        else state_dir / "archives"
    )
    return Retention(
        archive_dir=archive_dir,
        days=float(days) if days is not None else None,
        interval=float(interval),
        max_records=max_records,
    )


def _limits(section: dict[str, Any]) -> Limits:
    defaults = Limits()
    return Limits(
        max_body_bytes=int(section.get("max_body_bytes", defaults.max_body_bytes)),
        max_response_bytes=int(section.get("max_response_bytes", defaults.max_response_bytes)),
        connect_timeout=float(section.get("connect_timeout", defaults.connect_timeout)),
        backend_timeout=float(section.get("backend_timeout", defaults.backend_timeout)),
        clock_skew_seconds=int(section.get("clock_skew_seconds", defaults.clock_skew_seconds)),
        peer_connections=int(section.get("peer_connections", defaults.peer_connections)),
        max_peer_connections=_positive(section, "max_peer_connections", defaults),
        max_peer_requests=_positive(section, "max_peer_requests", defaults),
        max_peer_request_bytes=_positive(section, "max_peer_request_bytes", defaults),
        max_pending_handshakes=_positive(section, "max_pending_handshakes", defaults),
        tls_handshake_timeout=_seconds(section, "tls_handshake_timeout", defaults),
    )


def _positive(section: dict[str, Any], key: str, defaults: Limits) -> int:
    value = int(section.get(key, getattr(defaults, key)))
    if value < 1:
        raise ConfigurationError(f"[limits] {key} must be at least 1, not {value}")
    return value


def _seconds(section: dict[str, Any], key: str, defaults: Limits) -> float:
    value = float(section.get(key, getattr(defaults, key)))
    if not 0 < value <= 3600:
        raise ConfigurationError(f"[limits] {key} must be in (0, 3600] seconds, not {value}")
    return value


def parse_server_config(doc: dict[str, Any], path: Path) -> ServerConfig:
    base = path.parent
    keys = _section(doc, "keys")
    log = _section(doc, "messagelog")
    policy = _section(doc, "policy")
    consumer_tls = _section(doc, "consumer_tls")
    state_dir = _path(base, doc.get("state_dir", "."), "state_dir")
    return ServerConfig(
        path=path,
        server_id=parse_security_server(str(doc.get("server_id"))),
        state_dir=state_dir,
        anchor=_path(base, doc.get("anchor", "anchor.json"), "anchor"),
        consumer=_listener(_section(doc, "consumer"), 8080),
        consumer_tls=_listener(consumer_tls, 8081) if consumer_tls else None,
        provider=_listener(_section(doc, "provider"), 8443),
        auth_key=_path(base, keys.get("auth_key"), "keys.auth_key"),
        auth_cert=_path(base, keys.get("auth_cert"), "keys.auth_cert"),
        signing=_signing(base, keys.get("signing")),
        clients=_clients(base, doc.get("clients")),
        services=_services(doc.get("services")),
        policy_dir=_path(base, policy["dir"], "policy.dir") if "dir" in policy else None,
        log_path=_path(base, log.get("path", "messagelog.sqlite"), "messagelog.path"),
        log_bodies=bool(log.get("bodies", True)),
        limits=_limits(_section(doc, "limits")),
        globalconf_state=_path(
            base, doc.get("globalconf_state", "globalconf.jws"), "globalconf_state"
        ),
        passphrase_env=str(keys.get("passphrase_env", "EXCHANGE_KEY_PASSPHRASE")),
        timestamping_failure_limit=float(log.get("timestamping_failure_limit", 14400.0)),
        retention=_retention(base, state_dir, log),
    )


def pid_file_of(config_path: Path) -> Path:
    """Where a running server notes its process id (``exchange server reload`` and
    ``exchange audit export`` signal it)."""
    return config_path.resolve().parent / "server.pid"


def load_server_config(path: str | Path) -> ServerConfig:
    p = Path(path).resolve()
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read server config {p}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{p}: {exc}") from None
    try:
        return parse_server_config(doc, p)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{p}: {exc.message}") from None
    except ExchangeError as exc:
        raise ConfigurationError(f"{p}: {exc.message}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigurationError(f"{p}: {exc}") from None
