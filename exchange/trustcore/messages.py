"""What a signed request and a signed response prove (docs/design.md §5): the one place that says
so.

:func:`verify_request` and :func:`verify_response` are called alike by the provider, the
consumer (REST and SOAP), ``exchange log verify``, ``exchange audit verify`` and ``audit
correlate``. Which certificate may sign is the caller's trust decision, passed in as
:class:`SignerKeys`: live traffic passes a view of the peer's admitted signing certificates for one
connection, the auditor's tools a lookup over a log's certificates validated at the record's time.
An error raised by ``keys`` (unknown, refused, revoked certificate) passes through unchanged.

Errors are the receiving side's: a request that fails is refused as a provider refuses it
(``Server.ServerProxy.InvalidSignatureValue`` / ``...InvalidMessage``), a response as a consumer
refuses it (``Server.ClientProxy.InvalidSignatureValue`` / ``...InconsistentResponse``).

No IO.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.errors import (
    ConsumerInvalidSignature,
    ExchangeError,
    InconsistentResponse,
    InvalidMessage,
    InvalidSignatureValue,
)
from exchange.identifiers import MemberId
from exchange.protocol.canonical import b64url
from exchange.protocol.jws import JwsError, VerifiedJws, verify
from exchange.protocol.messages import SignedRequest, SignedResponse, request_hash
from exchange.trust.profiles import check_sign_profile, member_id_of_signing_cert


class SignerKey(Protocol):
    """A signing certificate the caller trusts, and the member it signs for."""

    @property
    def member(self) -> MemberId: ...
    @property
    def public_key(self) -> ec.EllipticCurvePublicKey: ...
    @property
    def cert(self) -> x509.Certificate: ...


class SignerKeys(Protocol):
    """The caller's trust decision: which key stands behind a JWS's ``x5t#S256``."""

    def signer_key(self, thumbprint: str) -> SignerKey:
        """The trusted signing key with this thumbprint, or an :class:`ExchangeError` saying why
        there is none (:class:`~exchange.protocol.jws.JwsError` for unknown or unfit ones)."""
        ...


@dataclass(frozen=True, slots=True)
class CertifiedKey:
    """A :class:`SignerKey` built by a caller that validated ``cert`` itself."""

    member: MemberId
    public_key: ec.EllipticCurvePublicKey
    cert: x509.Certificate


def certified_signer(cert: x509.Certificate) -> CertifiedKey:
    """``cert`` as a :class:`SignerKey`, once it has the signing profile (never an
    authentication, TSA or CA certificate), a P-256 key and names its member; else a JwsError.
    Whether its issuer is trusted, and when, is the caller's part."""
    try:
        check_sign_profile(cert)
        member = member_id_of_signing_cert(cert)
    except ExchangeError as exc:
        raise JwsError(f"certificate cannot sign messages: {exc.message}") from None
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)  # check_sign_profile: P-256
    return CertifiedKey(member, key, cert)


class BoundRequest(Protocol):
    """A signed request a response must be bound to: the exact token and what it signs."""

    @property
    def token(self) -> str: ...
    @property
    def request(self) -> SignedRequest: ...
    @property
    def request_hash(self) -> str: ...


@dataclass(frozen=True, slots=True)
class OwnRequest:
    """A request this security server signed itself (the consumer side), to bind its response."""

    token: str
    request: SignedRequest
    request_hash: str

    @classmethod
    def of(cls, token: str, request: SignedRequest) -> OwnRequest:
        return cls(token, request, request_hash(token))


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """A request whose signature verified with a trusted key of the client's member."""

    token: str
    request: SignedRequest
    signer: SignerKey
    request_hash: str


@dataclass(frozen=True, slots=True)
class VerifiedResponse:
    """A response signed by the provider's member (or its server's owner), bound to its request."""

    token: str
    response: SignedResponse
    signer: SignerKey


def body_matches(body: bytes, sha256: str, length: int) -> bool:
    """``body`` is the one a signed document describes by its SHA-256 (base64url) and length."""
    return len(body) == length and b64url(hashlib.sha256(body).digest()) == sha256


def check_request_body(request: SignedRequest, body: bytes) -> None:
    """``body`` is the request body the client signed, else InvalidMessage."""
    if not body_matches(body, request.body_sha256, request.body_length):
        raise InvalidMessage("request body does not match its signed digest")


def verify_jws(token: str, keys: SignerKeys) -> tuple[VerifiedJws, SignerKey]:
    """Step (1) of every check here: the JWS verifies with the key ``keys`` trusts for its
    ``x5t#S256``; returns what it signs and that key (JwsError or the error of ``keys``)."""
    found: list[SignerKey] = []

    def key_for(thumbprint: str) -> ec.EllipticCurvePublicKey:
        key = keys.signer_key(thumbprint)
        found.append(key)
        return key.public_key

    verified = verify(token, key_for)
    return verified, found[0]


def verify_request(
    token: object, keys: SignerKeys, *, body: bytes | None = None
) -> VerifiedRequest:
    """The signed request ``token`` (a compact JWS) and, if given, its ``body``; or an error."""
    if not isinstance(token, str):
        raise InvalidSignatureValue("the request carries no compact JWS")
    # (1) the JWS verifies with a trusted key named by its x5t#S256
    try:
        verified, signer = verify_jws(token, keys)
    except JwsError as exc:
        raise InvalidSignatureValue(f"request signature is invalid: {exc.message}") from None
    request = SignedRequest.from_payload(verified.payload)
    # (2) the signer is the client's own member
    if signer.member != request.client.member:
        raise InvalidSignatureValue(
            f"request for client {request.client} is signed by member {signer.member}"
        )
    # (4) the body is the one that was signed
    if body is not None:
        check_request_body(request, body)
    return VerifiedRequest(token, request, signer, request_hash(token))


def _signed_response(token: object, keys: SignerKeys) -> tuple[str, SignedResponse, SignerKey]:
    if not isinstance(token, str):
        raise InconsistentResponse("the provider's response carries no signature")
    try:
        verified, signer = verify_jws(token, keys)
    except JwsError as exc:
        raise ConsumerInvalidSignature(f"response signature is invalid: {exc.message}") from None
    try:
        return token, SignedResponse.from_payload(verified.payload), signer
    except ExchangeError as exc:
        raise InconsistentResponse(f"the signed response is malformed: {exc.message}") from None


def verify_response(
    token: object, request: BoundRequest, keys: SignerKeys, *, body: bytes | None = None
) -> VerifiedResponse:
    """The signed response ``token`` to ``request`` and, if given, its ``body``; or an error."""
    # (1) the JWS verifies with a trusted key named by its x5t#S256
    text, response, signer = _signed_response(token, keys)
    # (2) the signer is the service's member, or the provider server's owner (early refusals)
    signed = request.request
    if signer.member not in (signed.service.member, signed.security_server.owner):
        raise ConsumerInvalidSignature(
            f"response for {signed.service} is signed by member {signer.member}"
        )
    # (3) bound to this exact request: its SHA-512 hash and its message id
    if response.request_hash != request.request_hash:
        raise InconsistentResponse(
            "the response is not bound to this request (request hash differs)"
        )
    if response.message_id != signed.message_id:
        raise InconsistentResponse("the response is not bound to this request (message id differs)")
    # (4) the body is the one that was signed
    if body is not None and not body_matches(body, response.body_sha256, response.body_length):
        raise InconsistentResponse("response body does not match its signed digest")
    return VerifiedResponse(text, response, signer)


def verify_refusal(
    token: object,
    request_token: str | None,
    keys: SignerKeys,
    *,
    provider: MemberId,
    body: bytes | None = None,
) -> VerifiedResponse:
    """A provider's signed refusal of ``request_token``, a request that did not verify (so only
    its exact bytes are known; None when what arrived carried no request, and the refusal's
    request hash is then empty): signed by ``provider``, the member owning the provider server."""
    # (1) the JWS verifies with a trusted key named by its x5t#S256
    text, response, signer = _signed_response(token, keys)
    # (2) the signer is the provider server's owner: nothing else stands behind a refusal
    if signer.member != provider:
        raise ConsumerInvalidSignature(f"the refusal is signed by member {signer.member}")
    # (3) bound to the exact bytes that arrived
    bound_to = "" if request_token is None else request_hash(request_token)
    if response.request_hash != bound_to:
        raise InconsistentResponse(
            "the refusal is not bound to this request (request hash differs)"
        )
    # (4) the body is the one that was signed
    if body is not None and not body_matches(body, response.body_sha256, response.body_length):
        raise InconsistentResponse("response body does not match its signed digest")
    return VerifiedResponse(text, response, signer)
