"""The service catalogue: what security servers declare they provide, verified and browsable.

A security server declares the services of the subsystems it provides for, on start and on
reload. The declaration document (canonical JSON,
:func:`exchange.protocol.canonical.canonical_bytes`)::

    {"type": "service-declaration", "server": "PS/GOV/MOI/ss1", "declared_at": <unix ms>,
     "nonce": "<random>", "auth_cert": "<PEM>", "ocsp": "<base64url DER OCSP response>",
     "subsystems": [{"id": "PS/GOV/MOI/population-registry",
                     "services": [{"code": "persons", "type": "rest", "title": "...",
                                   "description": "...", "described": true}]}]}

is signed as compact JWS (RFC 7515 §7.1, ES256) by the server's *authentication* key: the key
whose certificate fingerprint the registry holds for exactly that server. The HTTP body is
``{"signature": <JWS>}``. A declaration replaces everything the server declared before.
``ocsp`` is the fresh OCSP response the server staples to its peers for that certificate; it is
required when the certificate's CA publishes an OCSP responder, so that a server whose
authentication certificate was revoked can no longer declare.

:func:`verify_declaration` is sans-IO: the body, the registry's current content (a
:class:`GlobalConf`) and ``now``. It refuses with :class:`InvalidServiceDeclaration` (400: the
document or its signature is wrong, stale, replayed) or :class:`ServiceDeclarationForbidden` (403:
a valid signature, but not by a key registered for that server, or for subsystems the registry
does not place on that server). :func:`build_catalogue` joins the stored declarations with the
registry at read time, so a subsystem moved off a server or a removed server drops out at once.
:class:`DeclarationStore` is the IO shell: the ``service_declarations`` table in the central
registry's SQLite file, on its own connection.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from cryptography import x509

from exchange.central.signed_documents import (
    MAX_AGE_SECONDS,
    Envelope,
    check_auth_cert,
    check_signature,
    is_fresh,
)
from exchange.central.tablestore import TableStore
from exchange.errors import ClientError, ExchangeError
from exchange.globalconf.document import GlobalConf, SecurityServerInfo
from exchange.identifiers import (
    MemberId,
    SecurityServerId,
    SubsystemId,
    parse_security_server,
    parse_subsystem,
    validate_part,
)
from exchange.protocol.canonical import b64url, b64url_decode, canonical_bytes, loads
from exchange.protocol.jws import Signer, unverified_payload
from exchange.protocol.metadata import RESERVED_SERVICE_CODES
from exchange.transaction import write_transaction
from exchange.trust.keys import cert_from_pem, cert_pem, fingerprint
from exchange.trust.ocsp import (
    MAX_RESPONSE_BYTES,
    CertificateRevoked,
    OcspError,
    verify_ocsp_response,
)
from exchange.utc import iso_seconds

DECLARATION_TYPE: Final = "service-declaration"
MAX_BODY_BYTES: Final = 512 * 2**10
MAX_SUBSYSTEMS: Final = 100
MAX_SERVICES: Final = 1000
MAX_TITLE: Final = 200
MAX_DESCRIPTION: Final = 2000

ServiceKind = Literal["rest", "soap"]


class InvalidServiceDeclaration(ClientError):
    """The declaration is malformed, badly signed, stale or replayed; the message says why."""

    code = "Client.InvalidServiceDeclaration"


class ServiceDeclarationForbidden(ClientError):
    """A well-signed declaration the signer may not make: not its server, not its subsystems."""

    code = "Client.ServiceDeclarationForbidden"
    status = 403


def _invalid(message: str) -> InvalidServiceDeclaration:
    return InvalidServiceDeclaration(message)


# --- the document -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeclaredService:
    code: str
    type: ServiceKind
    title: str | None = None
    description: str | None = None
    described: bool = False
    """Whether the service has a description (OpenAPI for REST, WSDL for SOAP)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "type": self.type, "described": self.described}
        if self.title is not None:
            out["title"] = self.title
        if self.description is not None:
            out["description"] = self.description
        return out


@dataclass(frozen=True, slots=True)
class Declaration:
    server: SecurityServerId
    declared_at: int
    """Unix milliseconds; each declaration of a server must be later than the one held."""
    nonce: str
    auth_cert: x509.Certificate
    subsystems: tuple[tuple[SubsystemId, tuple[DeclaredService, ...]], ...]
    ocsp: bytes | None = None
    """DER OCSP response about ``auth_cert`` (RFC 6960), when its CA publishes a responder."""

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": DECLARATION_TYPE,
            "server": str(self.server),
            "declared_at": self.declared_at,
            "nonce": self.nonce,
            "auth_cert": cert_pem(self.auth_cert),
            "subsystems": [
                {"id": str(sub), "services": [s.to_dict() for s in services]}
                for sub, services in self.subsystems
            ],
        }
        if self.ocsp is not None:
            doc["ocsp"] = b64url(self.ocsp)
        return doc

    @classmethod
    def from_document(cls, doc: Any) -> Declaration:
        """Parse a declaration; anything malformed is :class:`InvalidServiceDeclaration`."""
        _object(doc, "the declaration", {*_FIELDS})
        if doc.get("type") != DECLARATION_TYPE:
            raise _invalid(f"type must be {DECLARATION_TYPE!r}")
        try:
            return cls(
                server=parse_security_server(_text(doc, "server", 1100)),
                declared_at=_integer(doc, "declared_at"),
                nonce=_nonce(_text(doc, "nonce", 128)),
                auth_cert=_cert(_text(doc, "auth_cert", 16384)),
                subsystems=_subsystems(doc.get("subsystems")),
                ocsp=_ocsp(doc.get("ocsp")),
            )
        except ExchangeError as exc:
            if isinstance(exc, InvalidServiceDeclaration):
                raise
            raise _invalid(exc.message) from None


_FIELDS: Final = ("type", "server", "declared_at", "nonce", "auth_cert", "subsystems", "ocsp")
# base64url of the largest OCSP response a security server's fetcher accepts
MAX_OCSP_CHARS: Final = 4 * MAX_RESPONSE_BYTES // 3 + 4
_SERVICE_FIELDS: Final = ("code", "type", "title", "description", "described")


def new_declaration(
    server: SecurityServerId,
    auth_cert: x509.Certificate,
    subsystems: Iterable[tuple[SubsystemId, Iterable[DeclaredService]]],
    now_ms: int,
    ocsp: bytes | None = None,
) -> Declaration:
    return Declaration(
        server=server,
        declared_at=now_ms,
        nonce=secrets.token_urlsafe(18),
        auth_cert=auth_cert,
        subsystems=tuple((sub, tuple(services)) for sub, services in subsystems),
        ocsp=ocsp,
    )


def sign_declaration(declaration: Declaration, auth: Signer) -> bytes:
    """The HTTP body: the document signed with the server's authentication key."""
    return canonical_bytes({"signature": auth.sign(canonical_bytes(declaration.document()))})


def _object(value: Any, what: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"{what} is not a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _invalid(f"{what}: unknown field(s) {', '.join(unknown)[:200]}")
    return value


def _text(doc: dict[str, Any], key: str, limit: int) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise _invalid(f"{key} must be a non-empty string of at most {limit} characters")
    return value


def _optional_text(doc: dict[str, Any], key: str, limit: int) -> str | None:
    if doc.get(key) is None:
        return None
    value = _text(doc, key, limit)
    if not all(c.isprintable() or c in "\n\t" for c in value):
        raise _invalid(f"{key} holds control characters")
    return value


def _integer(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _invalid(f"{key} must be a non-negative integer")
    return value


def _nonce(nonce: str) -> str:
    if len(nonce) < 16 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in nonce):
        raise _invalid("nonce must be 16 to 128 base64url characters")
    return nonce


def _ocsp(value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_OCSP_CHARS:
        raise _invalid(f"ocsp must be a base64url string of at most {MAX_OCSP_CHARS} characters")
    try:
        return b64url_decode(value)
    except ValueError:
        raise _invalid("ocsp is not base64url") from None


def _cert(pem: str) -> x509.Certificate:
    try:
        return cert_from_pem(pem)
    except ValueError:
        raise _invalid("auth_cert is not a PEM certificate") from None


def _subsystems(value: Any) -> tuple[tuple[SubsystemId, tuple[DeclaredService, ...]], ...]:
    if not isinstance(value, list) or len(value) > MAX_SUBSYSTEMS:
        raise _invalid(f"subsystems must be a list of at most {MAX_SUBSYSTEMS}")
    out = []
    total = 0
    for index, item in enumerate(value):
        entry = _object(item, f"subsystems[{index}]", {"id", "services"})
        subsystem = parse_subsystem(_text(entry, "id", 1100))
        services = entry.get("services")
        if not isinstance(services, list):
            raise _invalid(f"subsystems[{index}].services must be a list")
        total += len(services)
        if total > MAX_SERVICES:
            raise _invalid(f"a declaration names at most {MAX_SERVICES} services")
        parsed = tuple(_service(s, f"{subsystem}") for s in services)
        if len({s.code for s in parsed}) != len(parsed):
            raise _invalid(f"subsystem {subsystem} declares a service code twice")
        out.append((subsystem, parsed))
    if len({sub for sub, _ in out}) != len(out):
        raise _invalid("a subsystem is declared twice")
    return tuple(out)


def _service(value: Any, where: str) -> DeclaredService:
    entry = _object(value, f"a service of {where}", {*_SERVICE_FIELDS})
    code = validate_part(_text(entry, "code", 255), "service code")
    if code in RESERVED_SERVICE_CODES:
        raise _invalid(f"service code {code!r} is reserved for the metadata services")
    kind = entry.get("type")
    if kind not in ("rest", "soap"):
        raise _invalid(f"service {where}/{code}: type must be 'rest' or 'soap'")
    described = entry.get("described", False)
    if not isinstance(described, bool):
        raise _invalid(f"service {where}/{code}: described must be true or false")
    return DeclaredService(
        code=code,
        type=kind,
        title=_optional_text(entry, "title", MAX_TITLE),
        description=_optional_text(entry, "description", MAX_DESCRIPTION),
        described=described,
    )


# --- verification (sans-IO) ---------------------------------------------------------------------


def verify_declaration(body: bytes, *, registry: GlobalConf, now: int) -> Declaration:
    """Verify a declaration body against the registry's current content at ``now`` (seconds).

    Whether it is newer than the declaration held for the server is the store's check
    (:meth:`DeclarationStore.put`).
    """
    # (1) the body holds one compact JWS whose payload parses as a declaration
    (token,) = ENVELOPE.tokens(body, _invalid)
    try:
        payload = unverified_payload(token)
        declaration = Declaration.from_document(loads(payload))
    except ExchangeError as exc:
        if isinstance(exc, InvalidServiceDeclaration):
            raise
        raise _invalid(f"the signed document: {exc.message}") from None
    # (2) the key of the certificate it carries signed it
    check_signature(
        token, declaration.auth_cert, cert_name="auth_cert", label="signature", refuse=_invalid
    )
    # (3) it is fresh
    if not is_fresh(declaration.declared_at, now, per_second=1000):
        raise _invalid(
            f"declared_at is more than {MAX_AGE_SECONDS} s from the central server's time; "
            "check the security server's clock"
        )
    # (4) the certificate is an authentication certificate of an approved CA, valid now, issued
    #     to the declaring server
    server = declaration.server
    check_auth_cert(
        declaration.auth_cert,
        server,
        registry.ca_certs(),
        now,
        refuse=_invalid,
        refuse_other_server=ServiceDeclarationForbidden,
    )
    # (4b) not revoked: when its CA publishes an OCSP responder, the declaration carries a
    #      fresh "good" OCSP response about it
    _check_not_revoked(declaration, registry, now)
    # (5) and registered for it
    info = _registered_server(registry, declaration)
    if info is None:
        raise ServiceDeclarationForbidden(
            f"the authentication certificate is not registered for security server {server}"
        )
    # (6) every declared subsystem is one the registry places on that server
    for subsystem, _ in declaration.subsystems:
        if subsystem not in info.clients:
            raise ServiceDeclarationForbidden(
                f"security server {server} does not host subsystem {subsystem} in the registry; "
                "it cannot declare services for it"
            )
    return declaration


def _check_not_revoked(declaration: Declaration, registry: GlobalConf, now: int) -> None:
    responder = registry.ocsp_issuer(declaration.auth_cert)
    if responder is None:
        if declaration.ocsp is not None:
            raise _invalid(
                "ocsp is given, but the authentication certificate's CA publishes no OCSP responder"
            )
        return
    if declaration.ocsp is None:
        raise _invalid(
            "the declaration carries no OCSP response for its authentication certificate, "
            "whose CA publishes an OCSP responder"
        )
    try:
        verify_ocsp_response(
            declaration.ocsp,
            cert=declaration.auth_cert,
            issuer=responder[0],
            now=dt.datetime.fromtimestamp(now, dt.UTC),
            max_age_seconds=registry.settings.ocsp_freshness_seconds,
        )
    except CertificateRevoked:
        raise ServiceDeclarationForbidden("the authentication certificate is revoked") from None
    except OcspError as exc:
        raise _invalid(
            f"the OCSP response for the authentication certificate: {exc.message}"
        ) from None


ENVELOPE: Final = Envelope(
    fields=("signature",),
    max_bytes=MAX_BODY_BYTES,
    too_large=f"the declaration is larger than {MAX_BODY_BYTES} bytes",
    not_json="the body is not JSON",
    wrong_fields="the body must hold exactly 'signature'",
    not_strings="signature must be a compact JWS string",
)
"""The HTTP body of a service declaration; :mod:`exchange.central.catalogue_app` refuses one
announced as larger in the same words."""


def _registered_server(registry: GlobalConf, declaration: Declaration) -> SecurityServerInfo | None:
    """The declaring server in the registry, if the declaration's key is registered for it."""
    info = registry.server(declaration.server)
    if info is None or fingerprint(declaration.auth_cert) not in info.auth_cert_fingerprints:
        return None
    return info


# --- the catalogue ------------------------------------------------------------------------------


def _service_type(service: DeclaredService) -> str:
    if service.type == "soap":
        return "WSDL"
    return "OPENAPI" if service.described else "REST"


def _service_entry(subsystem: SubsystemId, service: DeclaredService) -> dict[str, Any]:
    getter = "getWsdl" if service.type == "soap" else "getOpenAPI"
    return {
        "id": str(subsystem.service(service.code)),
        "service_code": service.code,
        "service_type": _service_type(service),
        "title": service.title,
        "description": service.description,
        "description_service": getter if service.described else None,
    }


def build_catalogue(
    registry: GlobalConf,
    declarations: Iterable[Declaration],
    *,
    member: MemberId | None = None,
    subsystem: SubsystemId | None = None,
) -> dict[str, Any]:
    """The browsable catalogue: per subsystem, the services its servers declared.

    Only what the registry still places on the declaring server, signed with a key the
    registry still holds for it, counts. When several servers (a cluster) declare one
    subsystem, the latest declaration gives its services.
    """
    latest: dict[SubsystemId, tuple[Declaration, tuple[DeclaredService, ...]]] = {}
    servers: dict[SubsystemId, set[SecurityServerId]] = {}
    for declaration in declarations:
        # a key removed from the registry (rotated away, or stolen) no longer speaks for it
        info = _registered_server(registry, declaration)
        if info is None:
            continue
        for sub, services in declaration.subsystems:
            if sub not in info.clients:
                continue
            servers.setdefault(sub, set()).add(declaration.server)
            held = latest.get(sub)
            if held is None or held[0].declared_at < declaration.declared_at:
                latest[sub] = (declaration, services)
    entries = []
    for sub in sorted(latest):
        if (member is not None and sub.member != member) or (
            subsystem is not None and sub != subsystem
        ):
            continue
        declaration, services = latest[sub]
        info_member = registry.member(sub.member)
        entries.append(
            {
                "subsystem": str(sub),
                "member": str(sub.member),
                "member_name": info_member.name if info_member is not None else None,
                "servers": sorted(str(s) for s in servers[sub]),
                "declared_at": iso_seconds(declaration.declared_at / 1000),
                "services": [_service_entry(sub, s) for s in sorted(services, key=_code)],
            }
        )
    return {"instance": registry.instance, "subsystems": entries}


def _speaks_for(registry: GlobalConf, declaration: Declaration) -> bool:
    """The declaration's key is still registered for its server."""
    return _registered_server(registry, declaration) is not None


def _held(body: bytes) -> Declaration:
    (token,) = ENVELOPE.tokens(body, _invalid)
    return Declaration.from_document(loads(unverified_payload(token)))


def _code(service: DeclaredService) -> str:
    return service.code


# --- the store (IO) -----------------------------------------------------------------------------

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS service_declarations (
    server TEXT PRIMARY KEY,
    declared_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    body BLOB NOT NULL
)
"""


class DeclarationStore(TableStore):
    """The ``service_declarations`` table in the registry's SQLite file (its own connection).

    Blocking: call it from a worker thread in async code; one store per thread. The signed body
    is kept, so what a server declared can be re-verified later.
    """

    schema = _SCHEMA

    def put(
        self,
        declaration: Declaration,
        body: bytes,
        received_at: int,
        registry: GlobalConf | None = None,
    ) -> None:
        """Replace the server's declaration; one not later than the held one is refused, unless
        the held one no longer counts in ``registry`` (its key was removed): a declaration dated
        ahead by a key that is then removed must not block the server's own."""
        with write_transaction(self._conn):
            row = self._conn.execute(
                "SELECT declared_at, body FROM service_declarations WHERE server = ?",
                [str(declaration.server)],
            ).fetchone()
            if (
                row is not None
                and row[0] >= declaration.declared_at
                and (registry is None or _speaks_for(registry, _held(bytes(row[1]))))
            ):
                raise _invalid(
                    "a declaration at least as recent is already held for this server "
                    "(replayed or out of order)"
                )
            self._conn.execute(
                "INSERT OR REPLACE INTO service_declarations (server, declared_at, received_at, "
                "body) VALUES (?, ?, ?, ?)",
                [str(declaration.server), declaration.declared_at, received_at, body],
            )

    def declarations(self) -> list[Declaration]:
        """Every held declaration, parsed again from the signed bodies."""
        rows = self._conn.execute("SELECT body FROM service_declarations ORDER BY server")
        return [_held(bytes(body)) for (body,) in rows.fetchall()]
