"""The global configuration document (docs/design.md §6): its values, dict form and lookups.

A :class:`GlobalConf` is what the central server publishes and every security server holds: the
instance, a monotonic ``version``, ``generated_at``/``expires_at`` (unix seconds), the members and
their subsystems, the security servers (address of the provider port, SHA-256 fingerprints of their
authentication certificates, hosted client subsystems), approved CAs and TSAs, global groups and
settings. :meth:`GlobalConf.from_dict` is a parser: any input either gives a document or raises
:class:`~exchange.errors.GlobalConfError`, nothing else. The lookups a security server makes per
message (which servers host a subsystem, which server owns an auth certificate, group membership)
use indexes built once when the document is made.

This module does not sign, verify or fetch (see ``signing``, ``verifier``, ``client``) and does no
IO.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from cryptography import x509

from exchange.errors import ExchangeError, GlobalConfError, InvalidIdentifier
from exchange.identifiers import (
    ClientId,
    GlobalGroupId,
    MemberId,
    SecurityServerId,
    SubsystemId,
    parse_client,
    parse_global_group,
    parse_member,
    parse_security_server,
    parse_subsystem,
    validate_part,
)
from exchange.protocol.canonical import loads
from exchange.trust.validation import find_issuer

T = TypeVar("T")

_FINGERPRINT: Final = re.compile(r"[0-9a-f]{64}")
_MAX_TEXT: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class Settings:
    """Intervals every security server applies (docs/design.md §12 defaults)."""

    ocsp_freshness_seconds: int = 3600
    timestamping_interval_seconds: int = 60
    globalconf_poll_seconds: int = 60
    globalconf_expiry_seconds: int = 600


@dataclass(frozen=True, slots=True)
class MemberInfo:
    id: MemberId
    name: str
    subsystems: tuple[SubsystemId, ...] = ()


@dataclass(frozen=True, slots=True)
class SecurityServerInfo:
    id: SecurityServerId
    address: str
    """``host:port`` of the server's provider port."""
    auth_cert_fingerprints: tuple[str, ...]
    """SHA-256 of each registered authentication certificate (DER), lowercase hex."""
    clients: tuple[SubsystemId, ...] = ()


@dataclass(frozen=True, slots=True)
class ApprovedCA:
    name: str
    cert_pem: str
    ocsp_urls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ApprovedTSA:
    name: str
    url: str
    cert_pem: str


@dataclass(frozen=True, slots=True)
class GlobalGroup:
    id: GlobalGroupId
    description: str
    members: tuple[ClientId, ...] = ()


@dataclass(frozen=True, slots=True)
class GlobalConf:
    """One version of the global configuration; lookups are O(1) via indexes built once."""

    instance: str
    version: int
    generated_at: int
    expires_at: int
    members: tuple[MemberInfo, ...] = ()
    security_servers: tuple[SecurityServerInfo, ...] = ()
    approved_cas: tuple[ApprovedCA, ...] = ()
    approved_tsas: tuple[ApprovedTSA, ...] = ()
    global_groups: tuple[GlobalGroup, ...] = ()
    settings: Settings = field(default_factory=Settings)
    _index: _Index = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", _Index.build(self))

    # --- lookups -------------------------------------------------------------------------------

    def servers_hosting(self, subsystem: SubsystemId) -> tuple[SecurityServerInfo, ...]:
        return self._index.hosting.get(subsystem, ())

    def server_by_fingerprint(self, fp_hex: str) -> SecurityServerInfo | None:
        return self._index.by_fingerprint.get(fp_hex.lower())

    def server(self, server_id: SecurityServerId) -> SecurityServerInfo | None:
        return self._index.servers.get(server_id)

    def member(self, member: MemberId) -> MemberInfo | None:
        return self._index.members.get(member)

    def has_member(self, member: MemberId) -> bool:
        return member in self._index.members

    def has_subsystem(self, subsystem: SubsystemId) -> bool:
        return subsystem in self._index.subsystems

    def groups_of(self, client: ClientId) -> frozenset[GlobalGroupId]:
        """Groups that list ``client`` itself (a group listing a member does not cover its
        subsystems, as in X-Road)."""
        return self._index.groups_of.get(client, frozenset())

    def ca_certs(self) -> list[x509.Certificate]:
        return list(self._index.ca_certs)

    def ocsp_issuer(
        self, cert: x509.Certificate
    ) -> tuple[x509.Certificate, tuple[str, ...]] | None:
        """The approved CA that issued ``cert`` (a root, or an intermediate that reaches an
        approved root) and its OCSP responder URLs, when that CA publishes a responder (its
        certificates then need a fresh "good" OCSP response)."""
        issuer = find_issuer(cert, self._index.ca_certs)
        for approved, ca in zip(self.approved_cas, self._index.ca_certs, strict=True):
            if approved.ocsp_urls and ca == issuer:
                return ca, approved.ocsp_urls
        return None

    def tsa_certs(self) -> list[x509.Certificate]:
        return list(self._index.tsa_certs)

    def is_expired(self, now: int) -> bool:
        return now >= self.expires_at

    def same_content(self, other: GlobalConf) -> bool:
        """Equal in everything but ``generated_at``/``expires_at`` (a re-signing, not a change)."""
        return _content(self) == _content(other)

    # --- dict form -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; identifiers as strings, integers only (canonical-bytes safe)."""
        return {
            "instance": self.instance,
            "version": self.version,
            "generated_at": self.generated_at,
            "expires_at": self.expires_at,
            "members": [_member_dict(m) for m in self.members],
            "security_servers": [_server_dict(s) for s in self.security_servers],
            "approved_cas": [_ca_dict(c) for c in self.approved_cas],
            "approved_tsas": [_tsa_dict(t) for t in self.approved_tsas],
            "global_groups": [_group_dict(g) for g in self.global_groups],
            "settings": _settings_dict(self.settings),
        }

    @classmethod
    def from_dict(cls, data: Any) -> GlobalConf:
        """Parse the dict form; anything malformed raises :class:`GlobalConfError`."""
        return _parse_conf(_Reader(data, "global configuration"))

    @classmethod
    def from_json(cls, payload: bytes) -> GlobalConf:
        try:
            data = loads(payload)
        except ExchangeError:
            raise GlobalConfError("global configuration payload is not JSON") from None
        return cls.from_dict(data)


@dataclass(frozen=True, slots=True)
class _Index:
    members: dict[MemberId, MemberInfo]
    subsystems: frozenset[SubsystemId]
    servers: dict[SecurityServerId, SecurityServerInfo]
    by_fingerprint: dict[str, SecurityServerInfo]
    hosting: dict[SubsystemId, tuple[SecurityServerInfo, ...]]
    groups_of: dict[ClientId, frozenset[GlobalGroupId]]
    ca_certs: tuple[x509.Certificate, ...]
    tsa_certs: tuple[x509.Certificate, ...]

    @classmethod
    def build(cls, conf: GlobalConf) -> _Index:
        members = _unique({m.id: m for m in conf.members}, conf.members, "member")
        servers = _unique(
            {s.id: s for s in conf.security_servers}, conf.security_servers, "security server"
        )
        _unique({g.id: g for g in conf.global_groups}, conf.global_groups, "global group")
        return cls(
            members=members,
            subsystems=frozenset(s for m in conf.members for s in m.subsystems),
            servers=servers,
            by_fingerprint=_by_fingerprint(conf.security_servers),
            hosting=_hosting(conf.security_servers),
            groups_of=_groups_of(conf.global_groups),
            ca_certs=tuple(_cert(c.cert_pem, f"approved CA {c.name!r}") for c in conf.approved_cas),
            tsa_certs=tuple(
                _cert(t.cert_pem, f"approved TSA {t.name!r}") for t in conf.approved_tsas
            ),
        )


def _unique(index: dict[Any, T], items: tuple[T, ...], what: str) -> dict[Any, T]:
    if len(index) != len(items):
        raise GlobalConfError(f"global configuration lists a {what} more than once")
    return index


def _by_fingerprint(servers: tuple[SecurityServerInfo, ...]) -> dict[str, SecurityServerInfo]:
    index: dict[str, SecurityServerInfo] = {}
    for server in servers:
        for fp in server.auth_cert_fingerprints:
            if index.setdefault(fp, server) is not server:
                raise GlobalConfError(
                    f"global configuration registers authentication certificate {fp} "
                    "for more than one server"
                )
    return index


def _hosting(
    servers: tuple[SecurityServerInfo, ...],
) -> dict[SubsystemId, tuple[SecurityServerInfo, ...]]:
    index: dict[SubsystemId, tuple[SecurityServerInfo, ...]] = {}
    for server in servers:
        for client in server.clients:
            index[client] = (*index.get(client, ()), server)
    return index


def _groups_of(groups: tuple[GlobalGroup, ...]) -> dict[ClientId, frozenset[GlobalGroupId]]:
    index: dict[ClientId, set[GlobalGroupId]] = {}
    for group in groups:
        for client in group.members:
            index.setdefault(client, set()).add(group.id)
    return {client: frozenset(ids) for client, ids in index.items()}


def _cert(pem: str, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode("utf-8"))
    except ValueError:
        raise GlobalConfError(f"global configuration: {what}: not a PEM certificate") from None


def _content(conf: GlobalConf) -> tuple[Any, ...]:
    return (
        conf.instance,
        conf.version,
        conf.members,
        conf.security_servers,
        conf.approved_cas,
        conf.approved_tsas,
        conf.global_groups,
        conf.settings,
    )


# --- to_dict helpers ---------------------------------------------------------------------------


def _member_dict(m: MemberInfo) -> dict[str, Any]:
    return {"id": str(m.id), "name": m.name, "subsystems": [str(s) for s in m.subsystems]}


def _server_dict(s: SecurityServerInfo) -> dict[str, Any]:
    return {
        "id": str(s.id),
        "address": s.address,
        "auth_cert_fingerprints": list(s.auth_cert_fingerprints),
        "clients": [str(c) for c in s.clients],
    }


def _ca_dict(c: ApprovedCA) -> dict[str, Any]:
    return {"name": c.name, "cert_pem": c.cert_pem, "ocsp_urls": list(c.ocsp_urls)}


def _tsa_dict(t: ApprovedTSA) -> dict[str, Any]:
    return {"name": t.name, "url": t.url, "cert_pem": t.cert_pem}


def _group_dict(g: GlobalGroup) -> dict[str, Any]:
    return {
        "id": str(g.id),
        "description": g.description,
        "members": [str(c) for c in g.members],
    }


def _settings_dict(s: Settings) -> dict[str, int]:
    return {
        "ocsp_freshness_seconds": s.ocsp_freshness_seconds,
        "timestamping_interval_seconds": s.timestamping_interval_seconds,
        "globalconf_poll_seconds": s.globalconf_poll_seconds,
        "globalconf_expiry_seconds": s.globalconf_expiry_seconds,
    }


# --- from_dict: a reader that names the path of whatever is wrong -------------------------------


class _Reader:
    """A JSON value at ``path``; every accessor raises :class:`GlobalConfError` on a mismatch."""

    __slots__ = ("path", "value")

    def __init__(self, value: Any, path: str) -> None:
        self.value = value
        self.path = path

    def fail(self, problem: str) -> GlobalConfError:
        return GlobalConfError(f"malformed global configuration: {self.path}: {problem}")

    def _object(self) -> Mapping[str, Any]:
        if not isinstance(self.value, dict):
            raise self.fail("expected an object")
        return self.value

    def get(self, key: str) -> _Reader:
        obj = self._object()
        if key not in obj:
            raise self.fail(f"missing {key!r}")
        return _Reader(obj[key], f"{self.path}.{key}")

    def text(self) -> str:
        if not isinstance(self.value, str) or len(self.value) > _MAX_TEXT:
            raise self.fail("expected a string")
        return self.value

    def integer(self, minimum: int = 0) -> int:
        if type(self.value) is not int or self.value < minimum:
            raise self.fail(f"expected an integer >= {minimum}")
        return self.value

    def items(self) -> list[_Reader]:
        if not isinstance(self.value, list):
            raise self.fail("expected a list")
        return [_Reader(v, f"{self.path}[{i}]") for i, v in enumerate(self.value)]

    def each(self, parse: Callable[[_Reader], T]) -> tuple[T, ...]:
        return tuple(parse(item) for item in self.items())

    def identifier(self, parse: Callable[[str], T]) -> T:
        try:
            return parse(self.text())
        except InvalidIdentifier as exc:
            raise self.fail(exc.message) from None


def _parse_conf(r: _Reader) -> GlobalConf:
    instance = r.get("instance").text()
    try:
        validate_part(instance, "instance")
    except InvalidIdentifier as exc:
        raise r.get("instance").fail(exc.message) from None
    generated_at = r.get("generated_at").integer()
    expires_at = r.get("expires_at").integer()
    if expires_at < generated_at:
        raise r.fail("expires_at is before generated_at")
    return GlobalConf(
        instance=instance,
        version=r.get("version").integer(),
        generated_at=generated_at,
        expires_at=expires_at,
        members=r.get("members").each(_parse_member),
        security_servers=r.get("security_servers").each(_parse_server),
        approved_cas=r.get("approved_cas").each(_parse_ca),
        approved_tsas=r.get("approved_tsas").each(_parse_tsa),
        global_groups=r.get("global_groups").each(_parse_group),
        settings=_parse_settings(r.get("settings")),
    )


def _parse_member(r: _Reader) -> MemberInfo:
    member = r.get("id").identifier(parse_member)
    subsystems = r.get("subsystems").each(lambda s: s.identifier(parse_subsystem))
    for i, subsystem in enumerate(subsystems):
        if subsystem.member != member:
            raise r.fail(f"subsystems[{i}] {subsystem} does not belong to member {member}")
    return MemberInfo(id=member, name=r.get("name").text(), subsystems=subsystems)


def _parse_server(r: _Reader) -> SecurityServerInfo:
    return SecurityServerInfo(
        id=r.get("id").identifier(parse_security_server),
        address=_address(r.get("address")),
        auth_cert_fingerprints=r.get("auth_cert_fingerprints").each(_fingerprint),
        clients=r.get("clients").each(lambda c: c.identifier(parse_subsystem)),
    )


def _parse_ca(r: _Reader) -> ApprovedCA:
    return ApprovedCA(
        name=r.get("name").text(),
        cert_pem=r.get("cert_pem").text(),
        ocsp_urls=r.get("ocsp_urls").each(_Reader.text),
    )


def _parse_tsa(r: _Reader) -> ApprovedTSA:
    return ApprovedTSA(
        name=r.get("name").text(), url=r.get("url").text(), cert_pem=r.get("cert_pem").text()
    )


def _parse_group(r: _Reader) -> GlobalGroup:
    return GlobalGroup(
        id=r.get("id").identifier(parse_global_group),
        description=r.get("description").text(),
        members=r.get("members").each(lambda c: c.identifier(parse_client)),
    )


def _parse_settings(r: _Reader) -> Settings:
    return Settings(
        ocsp_freshness_seconds=r.get("ocsp_freshness_seconds").integer(1),
        timestamping_interval_seconds=r.get("timestamping_interval_seconds").integer(1),
        globalconf_poll_seconds=r.get("globalconf_poll_seconds").integer(1),
        globalconf_expiry_seconds=r.get("globalconf_expiry_seconds").integer(1),
    )


def _fingerprint(r: _Reader) -> str:
    fp = r.text()
    if _FINGERPRINT.fullmatch(fp) is None:
        raise r.fail("expected a SHA-256 fingerprint (64 lowercase hex digits)")
    return fp


def _address(r: _Reader) -> str:
    address = r.text()
    if not valid_address(address):
        raise r.fail(f"expected host:port, got {address[:80]!r}")
    return address


def valid_address(address: str) -> bool:
    """``host:port`` with a non-empty host (``[v6]`` allowed) and a port 1..65535."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        return False
    if any(c.isspace() or c in "/@?#" for c in host):
        return False
    return 0 < int(port) < 65536
