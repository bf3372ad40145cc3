"""An auditor's check of one message log entry (DESIGN.md §8): honest entries pass, and each
kind of tampering is reported (never a crash)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.errors import InconsistentResponse, MissingHeader, VerificationFailed
from exchange.identifiers import MemberId, SecurityServerId, ServiceId, SubsystemId
from exchange.protocol.jws import Signer
from exchange.protocol.messages import SignedRequest, SignedResponse, body_digest, request_hash
from exchange.server.evidence import check_entry
from exchange.server.records import ExchangeRecord
from exchange.trust.keys import generate_key, self_signed_certificate

MOF = MemberId("PS", "GOV", "MOF")
MOI = MemberId("PS", "GOV", "MOI")
MOH = MemberId("PS", "GOV", "MOH")
EVIL = MemberId("PS", "GOV", "EVIL")
TAX_OFFICE = SubsystemId("PS", "GOV", "MOF", "tax-office")
PERSONS = ServiceId("PS", "GOV", "MOI", "population-registry", "persons")
MOI_SS1 = SecurityServerId("PS", "GOV", "MOI", "ss1")
REQUEST_BODY = b'{"query":"Juri"}'
RESPONSE_BODY = b'{"name":"J\xc3\xbcri"}'
TS = 1_700_000_000_000


@dataclass(frozen=True)
class Member:
    member: MemberId
    key: ec.EllipticCurvePrivateKey
    signer: Signer


def _member(member: MemberId) -> Member:
    key = generate_key()
    return Member(member, key, Signer(key, self_signed_certificate(key, member.member_code)))


@pytest.fixture(scope="module")
def members() -> dict[MemberId, Member]:
    return {m: _member(m) for m in (MOF, MOI, MOH, EVIL)}


Lookup = Callable[[str], tuple[MemberId, ec.EllipticCurvePublicKey]]


@pytest.fixture(scope="module")
def lookup(members: dict[MemberId, Member]) -> Lookup:
    known = {m.signer.thumbprint: (m.member, m.key.public_key()) for m in members.values()}

    def find(thumbprint: str) -> tuple[MemberId, ec.EllipticCurvePublicKey]:
        if thumbprint not in known:
            raise VerificationFailed(f"no certificate with thumbprint {thumbprint}")
        return known[thumbprint]

    return find


def _signed_request(
    signer: Member, *, message_id: str = "msg-1", service: ServiceId = PERSONS
) -> tuple[SignedRequest, str]:
    digest = body_digest(REQUEST_BODY)
    request = SignedRequest(
        message_id=message_id,
        client=TAX_OFFICE,
        service=service,
        method="POST",
        path="/search",
        query="",
        headers=(("content-type", "application/json"),),
        body_sha256=digest["sha256"],
        body_length=digest["length"],
        user_id="EE:clerk-17",
        purpose="tax-assessment",
        issue=None,
        represented_party=None,
        security_server=MOI_SS1,
        timestamp_ms=TS,
    )
    return request, signer.signer.sign(request.canonical())


def _signed_response(
    signer: Member,
    request: SignedRequest,
    token: str,
    *,
    status: int = 200,
    error: str | None = None,
) -> str:
    digest = body_digest(RESPONSE_BODY)
    response = SignedResponse(
        message_id=request.message_id,
        request_id="r-1",
        request_hash=request_hash(token),
        status=status,
        headers=(("content-type", "application/json"),),
        body_sha256=digest["sha256"],
        body_length=digest["length"],
        error_type=error,
        error_message=None if error is None else "refused",
        policy_version="3",
        released_fields=None,
        timestamp_ms=TS + 5,
    )
    return signer.signer.sign(response.canonical())


def _entry(
    side: str,
    request: SignedRequest,
    req_token: str | None,
    resp_token: str | None,
    *,
    status: int = 200,
    with_bodies: bool = True,
) -> dict[str, Any]:
    record = ExchangeRecord(
        side=side,
        message_id=request.message_id,
        client=str(request.client),
        service=str(request.service),
        peer_server=str(MOI_SS1),
        method=request.method,
        path=request.path,
        user_id=request.user_id,
        purpose=request.purpose,
        request_jws=req_token,
        response_jws=resp_token,
        request_hash=None if req_token is None else request_hash(req_token),
        request_body=REQUEST_BODY,
        response_body=RESPONSE_BODY,
        http_status=status,
    )
    return record.to_entry(with_bodies=with_bodies)


def _honest(members: dict[MemberId, Member], side: str = "consumer", **kw: Any) -> dict[str, Any]:
    request, req_token = _signed_request(members[MOF])
    resp_token = _signed_response(members[MOI], request, req_token)
    return _entry(side, request, req_token, resp_token, **kw)


# --- honest entries ----------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["consumer", "provider"])
@pytest.mark.parametrize("with_bodies", [True, False], ids=["bodies-logged", "digests-only"])
def test_honest_entry_has_no_problems(
    members: dict[MemberId, Member], lookup: Lookup, side: str, with_bodies: bool
) -> None:
    entry = _honest(members, side, with_bodies=with_bodies)
    assert entry["status"] == "ok"
    assert check_entry(entry, lookup) == []


def test_early_refusal_signed_by_the_server_owner(
    members: dict[MemberId, Member], lookup: Lookup
) -> None:
    """A service of another member on MOI's server, refused and signed by MOI (the owner)."""
    service = ServiceId("PS", "GOV", "MOH", "clinics", "visits")
    request, req_token = _signed_request(members[MOF], service=service)
    resp_token = _signed_response(
        members[MOI], request, req_token, status=404, error="Server.ServerProxy.UnknownService"
    )
    entry = _entry("provider", request, req_token, resp_token, status=404)
    assert check_entry(entry, lookup) == []


def test_entry_refused_before_signing(lookup: Lookup) -> None:
    record = ExchangeRecord(side="consumer", client=str(TAX_OFFICE))
    record.fail(MissingHeader("the X-Road-Client header is required"))
    entry = record.to_entry(with_bodies=True)
    assert entry["status"] == "error"
    assert check_entry(entry, lookup) == []


def test_consumer_refused_response_is_evidence_only(
    members: dict[MemberId, Member], lookup: Lookup
) -> None:
    """The consumer logged a response it refused as inconsistent; that response is expected not
    to check out, and is not reported."""
    request, req_token = _signed_request(members[MOF])
    other, other_token = _signed_request(members[MOF], message_id="msg-2")
    resp_token = _signed_response(members[MOI], other, other_token)
    record = ExchangeRecord(
        side="consumer",
        message_id=request.message_id,
        client=str(request.client),
        service=str(request.service),
        request_jws=req_token,
        response_jws=resp_token,
        request_hash=request_hash(req_token),
        request_body=REQUEST_BODY,
        response_body=b"whatever arrived",
    )
    record.fail(InconsistentResponse("the response is not bound to this request"))
    assert check_entry(record.to_entry(with_bodies=True), lookup) == []


# --- tampering ---------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _flip_signature(token: str) -> str:
    head, sig = token.rsplit(".", 1)
    i = len(sig) // 2
    return f"{head}.{sig[:i]}{'A' if sig[i] != 'A' else 'B'}{sig[i + 1 :]}"


TAMPERINGS: list[Any] = [
    pytest.param(
        lambda e: e.update(request_body=_b64(b'{"query":"Mari"}')),
        "logged request body does not match",
        id="edited-request-body",
    ),
    pytest.param(
        lambda e: e.update(response_body=_b64(RESPONSE_BODY + b" ")),
        "logged response body does not match",
        id="edited-response-body",
    ),
    pytest.param(
        lambda e: e.update(request_body=None),
        "logged request body does not match",
        id="request-body-removed",
    ),
    pytest.param(
        lambda e: e.update(response_body="%%% not base64 %%%"),
        "logged response body does not match",
        id="response-body-not-base64",
    ),
    pytest.param(
        lambda e: e.update(request_body="QUJD="),
        "logged request body does not match",
        id="request-body-bad-padding",
    ),
    pytest.param(
        lambda e: e.update(client="PS/GOV/MOH/clinics"), "record field client", id="client"
    ),
    pytest.param(
        lambda e: e.update(service="PS/GOV/MOI/population-registry/addresses"),
        "record field service",
        id="service",
    ),
    pytest.param(
        lambda e: e.update(message_id="msg-2"), "record field message_id", id="message-id"
    ),
    pytest.param(lambda e: e.update(request_hash="AAAA"), "record request_hash", id="request-hash"),
    pytest.param(lambda e: e.update(http_status=500), "record http_status", id="http-status"),
    pytest.param(
        lambda e: e.update(request_jws=None),
        "without a signed request",
        id="request-signature-missing",
    ),
    pytest.param(
        lambda e: e.update(response_jws=None),
        "without a signed response",
        id="response-signature-missing",
    ),
    pytest.param(
        lambda e: e.update(request_jws=_flip_signature(e["request_jws"])),
        "does not verify",
        id="request-signature-flipped",
    ),
    pytest.param(
        lambda e: e.update(response_jws=_flip_signature(e["response_jws"])),
        "does not verify",
        id="response-signature-flipped",
    ),
    pytest.param(
        lambda e: e.update(request_jws="not a token"),
        "malformed JWS",
        id="request-signature-garbage",
    ),
]


@pytest.mark.parametrize("side", ["consumer", "provider"])
@pytest.mark.parametrize(("tamper", "problem"), TAMPERINGS)
def test_tampering_is_reported(
    members: dict[MemberId, Member],
    lookup: Lookup,
    side: str,
    tamper: Callable[[dict[str, Any]], None],
    problem: str,
) -> None:
    entry = _honest(members, side)
    tamper(entry)
    problems = check_entry(entry, lookup)
    assert any(problem in p for p in problems), problems


def test_swapped_response_is_reported(members: dict[MemberId, Member], lookup: Lookup) -> None:
    """A genuine MOI response, but to another request of the same client."""
    request, req_token = _signed_request(members[MOF])
    other, other_token = _signed_request(members[MOF], message_id="msg-2")
    swapped = _signed_response(members[MOI], other, other_token)
    entry = _entry("consumer", request, req_token, swapped)
    assert "response is bound to another request (request hash differs)" in check_entry(
        entry, lookup
    )


def test_request_signed_by_another_member(members: dict[MemberId, Member], lookup: Lookup) -> None:
    request, forged = _signed_request(members[EVIL])
    resp_token = _signed_response(members[MOI], request, forged)
    entry = _entry("provider", request, forged, resp_token)
    assert check_entry(entry, lookup) == ["request is not signed by the client's member"]


@pytest.mark.parametrize(
    "signer", [pytest.param(EVIL, id="stranger"), pytest.param(MOH, id="other-provider")]
)
def test_response_signed_by_another_member(
    members: dict[MemberId, Member], lookup: Lookup, signer: MemberId
) -> None:
    request, req_token = _signed_request(members[MOF])
    resp_token = _signed_response(members[signer], request, req_token)
    entry = _entry("consumer", request, req_token, resp_token)
    assert check_entry(entry, lookup) == ["response is not signed by the provider's member"]


def test_unknown_signer_is_reported(lookup: Lookup) -> None:
    stranger = _member(MOF)
    request, req_token = _signed_request(stranger)
    entry = _entry("provider", request, req_token, None, status=400)
    entry["status"] = "error"
    assert check_entry(entry, lookup) == [
        f"no certificate with thumbprint {stranger.signer.thumbprint}"
    ]


def test_signed_document_of_the_wrong_type(members: dict[MemberId, Member], lookup: Lookup) -> None:
    """A response JWS logged in the request slot."""
    entry = _honest(members)
    entry["request_jws"] = entry["response_jws"]
    assert check_entry(entry, lookup) == ["not a version 1 signed request"]


def test_record_edit_of_every_field_at_once(
    members: dict[MemberId, Member], lookup: Lookup
) -> None:
    entry = _honest(members)
    request, _ = _signed_request(members[MOF])
    altered = replace(request, message_id="other")
    entry.update(
        message_id=altered.message_id, client="PS/GOV/MOF/other", service=str(MOH) + "/a/b"
    )
    problems = check_entry(entry, lookup)
    assert [p for p in problems if p.startswith("record field")] == [
        "record field message_id differs from the signed request",
        "record field client differs from the signed request",
        "record field service differs from the signed request",
    ]
