"""The signed request and response documents exchanged between security servers (docs/design.md §5).

A request is signed by the client member's signing key over the canonical bytes of
:class:`SignedRequest`; a response by the provider member's signing key over
:class:`SignedResponse`, which carries the hash of the exact signed request (the JWS compact
serialisation), so the consumer can prove that this response answers that request.

Bodies travel beside the JWS; the documents carry their SHA-256 digest and length.

No IO.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Final, NamedTuple, TypeVar

from exchange.errors import ExchangeError, InvalidMessage
from exchange.identifiers import (
    ClientId,
    SecurityServerId,
    ServiceId,
    parse_client,
    parse_security_server,
    parse_service,
)
from exchange.protocol import fields, forwarding
from exchange.protocol.canonical import b64url, canonical_bytes, loads, sha512_b64
from exchange.protocol.fields import FieldError
from exchange.protocol.syntax import is_path, is_query, is_token

VERSION: Final = 1
REQUEST_HASH_ALGORITHM: Final = "SHA-512"
MAX_TARGET: Final = 8192
"""Characters of path and query together, as the consumer bounds the request URI."""
PROTOCOLS: Final = frozenset({"rest", "soap"})
_MAX_ERROR_TYPE: Final = 128

T = TypeVar("T")


def _broken_rule(exc: FieldError) -> InvalidMessage:
    """A signed document breaking a field rule is an invalid message, whoever signed it."""
    return InvalidMessage(f"signed document: {exc}")


def _checked(rule: Callable[[T], T], value: T) -> T:
    try:
        return rule(value)
    except FieldError as exc:
        raise _broken_rule(exc) from None


def body_digest(body: bytes) -> dict[str, Any]:
    return {"sha256": b64url(hashlib.sha256(body).digest()), "length": len(body)}


def request_hash(request_jws: str) -> str:
    """``X-Road-Request-Hash``: base64 SHA-512 of the signed request (the compact JWS).

    A compact JWS is ASCII, whose UTF-8 bytes are the same; a logged "request" that is not one
    (an edited record) hashes to something else instead of raising."""
    return sha512_b64(request_jws.encode("utf-8", "surrogatepass"))


def _opt_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidMessage(f"signed document field {key!r} must be a string")
    return value


def _req_str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise InvalidMessage(f"signed document lacks string field {key!r}")
    return value


def _req_int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidMessage(f"signed document lacks integer field {key!r}")
    return value


def _headers(doc: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    raw = doc.get("headers", [])
    if not isinstance(raw, list):
        raise InvalidMessage("signed document field 'headers' must be a list")
    out = []
    for item in raw:
        if type(item) is not list or len(item) != 2:
            raise InvalidMessage("signed document headers must be [name, value] pairs")
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise InvalidMessage("signed document headers must be [name, value] pairs")
        out.append((name, value))
    # framing and hop-by-hop headers never travel: an honest peer never signs one
    try:
        forwarding.check_signed_headers(out)
    except FieldError as exc:
        raise _broken_rule(exc) from None
    return tuple(out)


def _digest(doc: dict[str, Any]) -> tuple[str, int]:
    body = doc.get("body")
    if not isinstance(body, dict):
        raise InvalidMessage("signed document lacks the body digest")
    return _req_str(body, "sha256"), _req_int(body, "length")


def _is_version(doc: dict[str, Any], kind: str) -> bool:
    version = doc.get("v")
    return type(version) is int and version == VERSION and doc.get("type") == kind


def _as_object(payload: bytes) -> dict[str, Any]:
    try:
        doc = loads(payload)
    except ExchangeError:
        raise InvalidMessage("signed document is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidMessage("signed document is not a JSON object")
    return doc


def _is_error_code(code: str) -> bool:
    return 0 < len(code) <= _MAX_ERROR_TYPE and is_token(code)


class SignedRequest(NamedTuple):
    """What the client's signature covers: everything about the request but the body bytes.

    The signed documents are named tuples rather than frozen dataclasses: as immutable, refused
    by the canonical encoder as dataclasses are, and cheaper to build on the path that builds
    two of them per exchange (bench/README.md)."""

    message_id: str
    client: ClientId
    service: ServiceId
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body_sha256: str
    body_length: int
    user_id: str | None
    purpose: str | None
    issue: str | None
    represented_party: str | None
    security_server: SecurityServerId
    # the provider's security server the request is addressed to
    client_server: SecurityServerId
    # the security server that sends the request for the client (the consumer's)
    timestamp_ms: int
    protocol: str = "rest"

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "type": "request",
            "protocol": self.protocol,
            "id": self.message_id,
            "client": str(self.client),
            "service": str(self.service),
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": [list(h) for h in self.headers],
            "body": {"sha256": self.body_sha256, "length": self.body_length},
            "user_id": self.user_id,
            "purpose": self.purpose,
            "issue": self.issue,
            "represented_party": self.represented_party,
            "security_server": str(self.security_server),
            "client_server": str(self.client_server),
            "ts": self.timestamp_ms,
        }

    def canonical(self) -> bytes:
        return canonical_bytes(self.to_dict(), typed=True)

    @classmethod
    def from_payload(cls, payload: bytes) -> SignedRequest:
        """The signed request in ``payload``; ``Server.ServerProxy.InvalidMessage`` unless every
        field passes the rule the consumer applies to what an information system sends."""
        doc = _as_object(payload)
        if not _is_version(doc, "request"):
            raise InvalidMessage("not a version 1 signed request")
        sha, length = _digest(doc)
        code = "Server.ServerProxy.InvalidMessage"
        method, path, query = _req_str(doc, "method"), _req_str(doc, "path"), _req_str(doc, "query")
        if (
            not is_token(method)
            or not is_path(path)
            or not is_query(query)
            or len(path) + len(query) > MAX_TARGET
        ):
            raise InvalidMessage(
                "signed request holds a method, path or query that is not valid HTTP"
            )
        protocol = _req_str(doc, "protocol")
        if protocol not in PROTOCOLS:
            raise InvalidMessage(f"unknown protocol {protocol[:20]!r} in the signed request")
        try:
            return cls(
                message_id=fields.message_id(_req_str(doc, "id")),
                client=parse_client(_req_str(doc, "client"), code=code),
                service=parse_service(_req_str(doc, "service"), code=code),
                method=fields.method(method),
                path=path,
                query=query,
                headers=_headers(doc),
                body_sha256=sha,
                body_length=length,
                user_id=fields.optional_text(_opt_str(doc, "user_id"), "user id"),
                purpose=fields.optional_text(_opt_str(doc, "purpose"), "purpose"),
                issue=fields.optional_text(_opt_str(doc, "issue"), "issue"),
                represented_party=fields.optional_represented_party(
                    _opt_str(doc, "represented_party")
                ),
                security_server=parse_security_server(_req_str(doc, "security_server"), code=code),
                client_server=parse_security_server(_req_str(doc, "client_server"), code=code),
                timestamp_ms=_req_int(doc, "ts"),
                protocol=protocol,
            )
        except FieldError as exc:
            raise _broken_rule(exc) from None


class SignedDecision(NamedTuple):
    """The provider's access decision as its signature covers it (docs/design.md §7): whether the
    policy allowed the request, its code, the grant that allowed it and the fields it grants
    (``None``: the whole answer). The policy version is the response's ``policy_version``."""

    allowed: bool
    code: str
    grant: str | None
    fields: tuple[str, ...] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "code": self.code,
            "grant": self.grant,
            "fields": None if self.fields is None else list(self.fields),
        }

    @classmethod
    def of(cls, decision: dict[str, Any] | None) -> SignedDecision | None:
        """The signed part of a decision as the message log records it (``Decision.log_entry``)."""
        if decision is None:
            return None
        return cls.from_dict(decision)

    @classmethod
    def own(cls, decision: dict[str, Any] | None) -> SignedDecision | None:
        """The signed part of a decision this server made (``Decision.log_entry``), to sign: taken
        as it is, where :meth:`of` checks one read from a record."""
        if decision is None:
            return None
        granted = decision["fields"]
        return cls(
            allowed=decision["allowed"],
            code=decision["code"],
            grant=decision["grant"],
            fields=None if granted is None else tuple(granted),
        )

    @classmethod
    def from_dict(cls, doc: object) -> SignedDecision:
        if not isinstance(doc, dict) or not isinstance(doc.get("allowed"), bool):
            raise InvalidMessage("signed decision must be an object with a boolean 'allowed'")
        granted = doc.get("fields")
        if granted is not None and (
            not isinstance(granted, list) or not all(isinstance(f, str) for f in granted)
        ):
            raise InvalidMessage("signed decision fields must be a list of strings")
        return cls(
            allowed=doc["allowed"],
            code=_req_str(doc, "code"),
            grant=_opt_str(doc, "grant"),
            fields=None if granted is None else tuple(granted),
        )


class SignedResponse(NamedTuple):
    """What the provider's signature covers; bound to the request by ``request_hash``."""

    message_id: str
    request_id: str
    request_hash: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body_sha256: str
    body_length: int
    error_type: str | None
    error_message: str | None
    policy_version: str | None
    released_fields: tuple[str, ...] | None
    timestamp_ms: int
    decision: SignedDecision | None = None
    # the provider's access decision; None when no policy was consulted (a refusal before it,
    # or a service the provider does not know)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "type": "response",
            "id": self.message_id,
            "request_id": self.request_id,
            "request_hash": {"alg": REQUEST_HASH_ALGORITHM, "value": self.request_hash},
            "status": self.status,
            "headers": [list(h) for h in self.headers],
            "body": {"sha256": self.body_sha256, "length": self.body_length},
            "error": (
                None
                if self.error_type is None
                else {"type": self.error_type, "message": self.error_message or ""}
            ),
            "policy_version": self.policy_version,
            "decision": None if self.decision is None else self.decision.to_dict(),
            "released_fields": (
                None if self.released_fields is None else list(self.released_fields)
            ),
            "ts": self.timestamp_ms,
        }

    def canonical(self) -> bytes:
        return canonical_bytes(self.to_dict(), typed=True)

    @classmethod
    def from_payload(cls, payload: bytes) -> SignedResponse:
        doc = _as_object(payload)
        if not _is_version(doc, "response"):
            raise InvalidMessage("not a version 1 signed response")
        sha, length = _digest(doc)
        rh = doc.get("request_hash")
        if not isinstance(rh, dict) or rh.get("alg") != REQUEST_HASH_ALGORITHM:
            raise InvalidMessage("signed response lacks a SHA-512 request hash")
        err = doc.get("error")
        if err is not None and not isinstance(err, dict):
            raise InvalidMessage("signed response error must be an object")
        decision = doc.get("decision")
        released = doc.get("released_fields")
        if released is not None and (
            not isinstance(released, list) or not all(isinstance(f, str) for f in released)
        ):
            raise InvalidMessage("released_fields must be a list of strings")
        error_type = None if err is None else _req_str(err, "type")
        if error_type is not None and not _is_error_code(error_type):
            raise InvalidMessage("signed response error type is not an X-Road error code")
        message_id = _req_str(doc, "id")
        return cls(
            # empty only in a refusal of a request whose id could not be read
            message_id=message_id and _checked(fields.message_id, message_id),
            request_id=_checked(fields.message_id, _req_str(doc, "request_id")),
            request_hash=_req_str(rh, "value"),
            # a final HTTP status: a 1xx, 101 or a number that is no status never reaches a caller
            status=_checked(forwarding.check_status, _req_int(doc, "status")),
            headers=_headers(doc),
            body_sha256=sha,
            body_length=length,
            error_type=error_type,
            error_message=None if err is None else _opt_str(err, "message"),
            policy_version=_opt_str(doc, "policy_version"),
            released_fields=None if released is None else tuple(released),
            timestamp_ms=_req_int(doc, "ts"),
            decision=None if decision is None else SignedDecision.from_dict(decision),
        )
