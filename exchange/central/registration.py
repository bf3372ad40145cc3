"""Registration requests: a security server asks the central server to register it (docs/design.md
§2).

The request document (canonical JSON, :func:`exchange.protocol.canonical.canonical_bytes`)::

    {"type": "register-server", "server": "PS/GOV/MOI/ss1", "address": "127.0.0.1:8443",
     "clients": ["PS/GOV/MOI/population-registry"], "auth_cert": "<PEM>", "sign_cert": "<PEM>",
     "requested_at": <unix s>, "nonce": "<random>"}

is signed twice as compact JWS (RFC 7515 §7.1) over the same bytes: by the server's
authentication key (proof of possession of the key whose certificate is registered) and by the
owner member's signing key (the member vouches for its server), as in X-Road's auth certificate
registration request. The HTTP body is ``{"auth_signature": <JWS>, "member_signature": <JWS>}``.

:func:`verify_registration` is sans-IO: it takes the body, the approved CAs, the registered
members and ``now``. :class:`RegistrationStore`, at the end of this module, is the IO shell: the
``registration_requests`` table in the central registry's SQLite file (own connection), and the
approval, which changes the registry only through :class:`~exchange.central.registry.Registry`'s
public methods. Neither publishes anything: the central server's publisher notices the registry's
new version on its own.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from cryptography import x509

from exchange.central.registry import Registry
from exchange.central.signed_documents import (
    MAX_AGE_SECONDS,
    Envelope,
    check_auth_cert,
    check_certificate,
    check_signature,
    is_fresh,
)
from exchange.central.tablestore import TableStore
from exchange.errors import ClientError, ConfigurationError, ExchangeError, InvalidIdentifier
from exchange.globalconf.document import valid_address
from exchange.identifiers import (
    MemberId,
    SecurityServerId,
    SubsystemId,
    parse_security_server,
    parse_subsystem,
)
from exchange.protocol.canonical import canonical_bytes, loads
from exchange.protocol.jws import JwsError, Signer, unverified_payload
from exchange.trust.keys import cert_from_pem, cert_pem, fingerprint
from exchange.trust.profiles import check_sign_profile, member_id_of_signing_cert

REQUEST_TYPE: Final = "register-server"
MAX_BODY_BYTES: Final = 64 * 2**10
MAX_CLIENTS: Final = 1000
_NONCE_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

Status = Literal["pending", "approved", "rejected"]


class InvalidRegistrationRequest(ClientError):
    """The central server refuses a registration request; the message says exactly why."""

    code = "Client.InvalidRegistrationRequest"


def _refuse(message: str) -> InvalidRegistrationRequest:
    return InvalidRegistrationRequest(message)


# --- the request document ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegistrationRequest:
    """What a security server asks for: its id, provider address, client subsystems and certs."""

    server: SecurityServerId
    address: str
    clients: tuple[SubsystemId, ...]
    auth_cert: x509.Certificate
    sign_cert: x509.Certificate
    requested_at: int
    nonce: str

    def document(self) -> dict[str, Any]:
        return {
            "type": REQUEST_TYPE,
            "server": str(self.server),
            "address": self.address,
            "clients": [str(c) for c in self.clients],
            "auth_cert": cert_pem(self.auth_cert),
            "sign_cert": cert_pem(self.sign_cert),
            "requested_at": self.requested_at,
            "nonce": self.nonce,
        }

    @classmethod
    def from_document(cls, doc: Any) -> RegistrationRequest:
        """Parse a request document; anything malformed is :class:`InvalidRegistrationRequest`."""
        if not isinstance(doc, dict):
            raise _refuse("the request document is not a JSON object")
        if doc.get("type") != REQUEST_TYPE:
            raise _refuse(f"type must be {REQUEST_TYPE!r}")
        unknown = sorted(set(doc) - set(_FIELDS))
        if unknown:
            raise _refuse(f"unknown field(s) {', '.join(unknown)}")
        try:
            return cls(
                server=parse_security_server(_text(doc, "server")),
                address=_address(_text(doc, "address")),
                clients=_clients(doc.get("clients")),
                auth_cert=_cert(doc, "auth_cert"),
                sign_cert=_cert(doc, "sign_cert"),
                requested_at=_integer(doc, "requested_at"),
                nonce=_nonce(_text(doc, "nonce")),
            )
        except InvalidIdentifier as exc:
            raise _refuse(exc.message) from None


_FIELDS: Final = (
    "type",
    "server",
    "address",
    "clients",
    "auth_cert",
    "sign_cert",
    "requested_at",
    "nonce",
)


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise _refuse(f"{key} must be a non-empty string")
    return value


def _integer(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _refuse(f"{key} must be a non-negative integer (unix seconds)")
    return value


def _address(address: str) -> str:
    if not valid_address(address):
        raise _refuse(f"invalid address {address[:100]!r}: expected host:port")
    return address


def _clients(value: Any) -> tuple[SubsystemId, ...]:
    if not isinstance(value, list) or len(value) > MAX_CLIENTS:
        raise _refuse(f"clients must be a list of at most {MAX_CLIENTS} subsystem ids")
    if not all(isinstance(c, str) for c in value):
        raise _refuse("clients must be a list of subsystem ids")
    clients = tuple(parse_subsystem(c) for c in value)
    if len(set(clients)) != len(clients):
        raise _refuse("clients lists a subsystem twice")
    return clients


def _cert(doc: dict[str, Any], key: str) -> x509.Certificate:
    try:
        return cert_from_pem(_text(doc, key))
    except ValueError:
        raise _refuse(f"{key} is not a PEM certificate") from None


def _nonce(nonce: str) -> str:
    if not 16 <= len(nonce) <= 128 or not set(nonce) <= _NONCE_CHARS:
        raise _refuse("nonce must be 16 to 128 base64url characters")
    return nonce


def new_request(
    server: SecurityServerId,
    address: str,
    clients: Sequence[SubsystemId],
    auth_cert: x509.Certificate,
    sign_cert: x509.Certificate,
    now: int,
) -> RegistrationRequest:
    """A request with a fresh random nonce, as of ``now``."""
    return RegistrationRequest(
        server=server,
        address=address,
        clients=tuple(clients),
        auth_cert=auth_cert,
        sign_cert=sign_cert,
        requested_at=now,
        nonce=secrets.token_urlsafe(24),
    )


def sign_registration(request: RegistrationRequest, auth: Signer, member: Signer) -> bytes:
    """The HTTP body: the document signed by the auth key and by the member's signing key."""
    payload = canonical_bytes(request.document())
    body = {"auth_signature": auth.sign(payload), "member_signature": member.sign(payload)}
    return canonical_bytes(body)


# --- verification (sans-IO) --------------------------------------------------------------------


def verify_registration(
    body: bytes,
    *,
    trusted_cas: Sequence[x509.Certificate],
    members: Collection[MemberId],
    now: int,
) -> RegistrationRequest:
    """Verify a registration request body at ``now``; raise :class:`InvalidRegistrationRequest`.

    ``members`` are the members registered at the central server. Whether the nonce was seen
    before is the store's check (:meth:`RegistrationStore.add`).
    """
    # (1) the body holds two compact JWS over the same document, which parses
    auth_jws, member_jws = ENVELOPE.tokens(body, _refuse)
    payload = _same_payload(auth_jws, member_jws)
    request = RegistrationRequest.from_document(_json(payload, "the signed document"))
    # (2) the authentication key signed it: proof of possession of the registered key
    _verify_signature(auth_jws, request.auth_cert, "authentication")
    # (3) the owner member's signing key signed it: the member vouches for its server
    _verify_signature(member_jws, request.sign_cert, "member")
    # (4) it is fresh: requested_at within MAX_AGE_SECONDS of now, either way
    if not is_fresh(request.requested_at, now):
        raise _refuse(
            f"requested_at {request.requested_at} is more than {MAX_AGE_SECONDS} s from the "
            f"central server's time {now}; check the security server's clock and send it again"
        )
    # (5) the auth cert chains to an approved CA, is valid now, has the auth profile and names
    #     this server
    check_auth_cert(
        request.auth_cert,
        request.server,
        trusted_cas,
        now,
        refuse=_refuse,
        refuse_other_server=_refuse,
    )
    # (6) the sign cert chains to an approved CA, is valid now, has the signing profile and
    #     names the server's owner member
    check_certificate(
        request.sign_cert,
        trusted_cas,
        now,
        what="signing",
        profile_check=check_sign_profile,
        refuse=_refuse,
    )
    named_member = member_id_of_signing_cert(request.sign_cert)
    if named_member != request.server.owner:
        raise _refuse(
            f"the signing certificate is issued to {named_member}, "
            f"not to the server's owner {request.server.owner}"
        )
    # (7) the owner member is registered
    if request.server.owner not in members:
        raise _refuse(
            f"member {request.server.owner} is not registered at the central server; "
            "its operator must add the member first"
        )
    # (8) every client subsystem belongs to the owner (other members register their own)
    for client in request.clients:
        if client.member != request.server.owner:
            raise _refuse(
                f"client {client} belongs to {client.member}, not to the server's owner "
                f"{request.server.owner}; that member must register it"
            )
    return request


ENVELOPE: Final = Envelope(
    fields=("auth_signature", "member_signature"),
    max_bytes=MAX_BODY_BYTES,
    too_large=f"the request is larger than {MAX_BODY_BYTES} bytes",
    not_json="the request body is not JSON",
    wrong_fields="the request body must hold exactly auth_signature and member_signature",
    not_strings="auth_signature and member_signature must be compact JWS strings",
)
"""The HTTP body of a registration request; :mod:`exchange.central.registration_app` refuses one
announced as larger in the same words."""


def _json(data: bytes, what: str) -> Any:
    try:
        return loads(data)
    except ExchangeError:
        raise _refuse(f"{what} is not JSON") from None


def _same_payload(auth_jws: str, member_jws: str) -> bytes:
    try:
        payload = unverified_payload(auth_jws)
        other = unverified_payload(member_jws)
    except JwsError as exc:
        raise _refuse(exc.message) from None
    if payload != other:
        raise _refuse("auth_signature and member_signature sign different documents")
    return payload


def _verify_signature(token: str, cert: x509.Certificate, what: str) -> None:
    check_signature(
        token, cert, cert_name="the certificate", label=f"{what} signature", refuse=_refuse
    )


# --- the store (IO) ----------------------------------------------------------------------------

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS registration_requests (
    id TEXT PRIMARY KEY,
    server TEXT NOT NULL,
    address TEXT NOT NULL,
    clients TEXT NOT NULL,
    auth_fingerprint TEXT NOT NULL,
    sign_fingerprint TEXT NOT NULL,
    nonce TEXT NOT NULL UNIQUE,
    requested_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    decided_at INTEGER,
    reason TEXT,
    body BLOB NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """A received request and what the operator decided."""

    id: str
    server: SecurityServerId
    address: str
    clients: tuple[SubsystemId, ...]
    auth_fingerprint: str
    sign_fingerprint: str
    requested_at: int
    received_at: int
    status: Status
    decided_at: int | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "server": str(self.server),
            "address": self.address,
            "clients": [str(c) for c in self.clients],
            "auth_fingerprint": self.auth_fingerprint,
            "sign_fingerprint": self.sign_fingerprint,
            "requested_at": self.requested_at,
            "received_at": self.received_at,
            "status": self.status,
            "decided_at": self.decided_at,
            "reason": self.reason,
        }


_COLUMNS: Final = (
    "id, server, address, clients, auth_fingerprint, sign_fingerprint, requested_at, "
    "received_at, status, decided_at, reason"
)


class RegistrationStore(TableStore):
    """The ``registration_requests`` table in the registry's SQLite file, on its own connection.

    Blocking: call it from a worker thread in async code; one store per thread.
    """

    schema = _SCHEMA

    def add(self, request: RegistrationRequest, body: bytes, received_at: int) -> StoredRequest:
        """Store a verified request as pending; a nonce seen before is refused."""
        row = (
            secrets.token_hex(4),
            str(request.server),
            request.address,
            json.dumps([str(c) for c in request.clients]),
            fingerprint(request.auth_cert),
            fingerprint(request.sign_cert),
            request.nonce,
            request.requested_at,
            received_at,
            "pending",
            body,
        )
        try:
            self._conn.execute(
                "INSERT INTO registration_requests (id, server, address, clients, "
                "auth_fingerprint, sign_fingerprint, nonce, requested_at, received_at, status, "
                "body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        except sqlite3.IntegrityError:
            if self._nonce_seen(request.nonce):
                raise _refuse("this request (nonce) was received before") from None
            raise
        return self.get(row[0])

    def _nonce_seen(self, nonce: str) -> bool:
        sql = "SELECT 1 FROM registration_requests WHERE nonce = ?"
        return self._conn.execute(sql, [nonce]).fetchone() is not None

    def get(self, request_id: str) -> StoredRequest:
        sql = f"SELECT {_COLUMNS} FROM registration_requests WHERE id = ?"
        row = self._conn.execute(sql, [request_id]).fetchone()
        if row is None:
            raise ConfigurationError(
                f"no registration request {request_id!r}; "
                "list them with `exchange central registration list --all`"
            )
        return _stored(row)

    def requests(self, *, include_decided: bool = False) -> list[StoredRequest]:
        where = "" if include_decided else "WHERE status = 'pending'"
        sql = f"SELECT {_COLUMNS} FROM registration_requests {where} ORDER BY received_at, id"
        return [_stored(row) for row in self._conn.execute(sql).fetchall()]

    def approve(self, request_id: str, registry: Registry, now: int) -> StoredRequest:
        """Register what a pending request asks for, then mark it approved.

        Each registry change is its own transaction; what is already registered is skipped, so
        running approve again after a failure finishes the job.
        """
        request = self._pending(request_id)
        _apply(request, registry, now)
        return self._decide(request_id, "approved", now, None)

    def reject(self, request_id: str, reason: str, now: int) -> StoredRequest:
        if not reason.strip() or len(reason) > 1000:
            raise ConfigurationError("give the reason for the rejection (at most 1000 characters)")
        self._pending(request_id)
        return self._decide(request_id, "rejected", now, reason)

    def _pending(self, request_id: str) -> StoredRequest:
        request = self.get(request_id)
        if request.status != "pending":
            raise ConfigurationError(
                f"registration request {request_id} is already {request.status}"
            )
        return request

    def _decide(
        self, request_id: str, status: Status, now: int, reason: str | None
    ) -> StoredRequest:
        self._conn.execute(
            "UPDATE registration_requests SET status = ?, decided_at = ?, reason = ? WHERE id = ?",
            [status, now, reason, request_id],
        )
        return self.get(request_id)


def _apply(request: StoredRequest, registry: Registry, now: int) -> None:
    conf = registry.build_globalconf(now)
    for client in request.clients:
        if not conf.has_subsystem(client):
            registry.add_subsystem(client)
    existing = conf.server(request.server)
    if existing is None:
        registry.add_server(request.server, request.address, [request.auth_fingerprint])
    else:
        if request.auth_fingerprint not in existing.auth_cert_fingerprints:
            registry.add_auth_cert(request.server, request.auth_fingerprint)
        if existing.address != request.address:
            registry.set_server_address(request.server, request.address)
    hosted = set(existing.clients) if existing is not None else set()
    for client in request.clients:
        if client not in hosted:
            registry.add_server_client(request.server, client)


def _stored(row: tuple[Any, ...]) -> StoredRequest:
    return StoredRequest(
        id=row[0],
        server=parse_security_server(row[1]),
        address=row[2],
        clients=tuple(parse_subsystem(c) for c in json.loads(row[3])),
        auth_fingerprint=row[4],
        sign_fingerprint=row[5],
        requested_at=row[6],
        received_at=row[7],
        status=row[8],
        decided_at=row[9],
        reason=row[10],
    )
