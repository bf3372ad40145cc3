"""Checks of one message log entry as an auditor makes them (DESIGN.md §8).

For an exchange record: (1) the signed request verifies and was signed by the client's member,
(2) the signed response verifies and was signed by the provider's member (or, for an early
refusal, by the provider server's owner), (3) the response is bound to the request by its
SHA-512 request hash and message id, (4) the record's own fields agree with what was signed,
(5) where bodies were logged, they match the signed digests. Entries that never got as far as
a signature (refused before signing) carry their error and are checked for shape only.

No IO: certificates come from a lookup the caller builds (from the log's ``certs`` table).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from exchange.errors import ExchangeError
from exchange.identifiers import MemberId
from exchange.protocol.canonical import b64url
from exchange.protocol.jws import verify
from exchange.protocol.messages import SignedRequest, SignedResponse, request_hash

KeyLookup = Callable[[str], tuple[MemberId, ec.EllipticCurvePublicKey]]


def _digest_ok(b64_body: Any, sha: str, length: int) -> bool:
    if not isinstance(b64_body, str):
        return False
    try:
        body = base64.b64decode(b64_body, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(body) == length and b64url(hashlib.sha256(body).digest()) == sha


def _refused_by_consumer(entry: dict[str, Any]) -> bool:
    """The consumer itself refused what it received: the response is logged as evidence of
    what arrived, and is expected not to check out."""
    error = entry.get("error")
    return (
        entry.get("side") == "consumer"
        and isinstance(error, dict)
        and str(error.get("type", "")).startswith("Server.ClientProxy.")
    )


_PROVIDER_REFUSALS = frozenset(
    {
        "Server.ServerProxy.InvalidSignatureValue",
        "Server.ServerProxy.InvalidMessage",
        # the signer's certificate was not fresh-good: refused before the request was read
        "Server.ServerProxy.CertificateRevoked",
        "Server.ServerProxy.CertificateStatusUnknown",
        "Server.ServerProxy.OcspResponseStale",
        "Server.ServerProxy.OcspResponseInvalid",
    }
)


def _refused_by_provider(entry: dict[str, Any]) -> bool:
    """The provider refused a request whose signature or shape did not check out: the request
    is logged as evidence of what arrived, and is expected not to check out."""
    error = entry.get("error")
    return (
        entry.get("side") == "provider"
        and isinstance(error, dict)
        and error.get("type") in _PROVIDER_REFUSALS
    )


def check_entry(entry: dict[str, Any], lookup: KeyLookup) -> list[str]:
    problems: list[str] = []
    signers: dict[str, MemberId] = {}

    def key_for(thumb: str) -> ec.EllipticCurvePublicKey:
        member, key = lookup(thumb)
        signers[thumb] = member
        return key

    req_token = entry.get("request_jws")
    resp_token = entry.get("response_jws")
    request: SignedRequest | None = None
    try:
        if isinstance(req_token, str) and not _refused_by_provider(entry):
            # (1) the signed request verifies, signed by the client's member
            verified = verify(req_token, key_for)
            request = SignedRequest.from_payload(verified.payload)
            if signers[verified.header["x5t#S256"]] != request.client.member:
                problems.append("request is not signed by the client's member")
            # (4) the record agrees with what was signed
            for field, value in (
                ("message_id", request.message_id),
                ("client", str(request.client)),
                ("service", str(request.service)),
            ):
                if entry.get(field) != value:
                    problems.append(f"record field {field} differs from the signed request")
            if entry.get("request_hash") != request_hash(req_token):
                problems.append("record request_hash differs from the hash of the signed request")
            # (5) the logged request body is the signed one
            if entry.get("bodies") == "logged" and not _digest_ok(
                entry.get("request_body"), request.body_sha256, request.body_length
            ):
                problems.append("logged request body does not match the signed digest")
        if isinstance(resp_token, str) and not _refused_by_consumer(entry):
            # (2) the signed response verifies
            verified_resp = verify(resp_token, key_for)
            response = SignedResponse.from_payload(verified_resp.payload)
            signer = signers[verified_resp.header["x5t#S256"]]
            if request is not None and signer not in (
                request.service.member,
                request.security_server.owner,
            ):
                problems.append("response is not signed by the provider's member")
            # (3) bound to the request
            if isinstance(req_token, str) and response.request_hash != request_hash(req_token):
                problems.append("response is bound to another request (request hash differs)")
            if entry.get("http_status") != response.status:
                problems.append("record http_status differs from the signed response")
            if entry.get("bodies") == "logged" and not _digest_ok(
                entry.get("response_body"), response.body_sha256, response.body_length
            ):
                problems.append("logged response body does not match the signed digest")
    except ExchangeError as exc:
        problems.append(exc.message)
    if entry.get("status") == "ok":
        if not isinstance(req_token, str):
            problems.append("a successful exchange without a signed request")
        if not isinstance(resp_token, str):
            problems.append("a successful exchange without a signed response")
    return problems
