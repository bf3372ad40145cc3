"""What one message log record proves (exchange/trustcore/records.py): honest records of every
kind verify and say what they prove; every field an insider could edit (the log's owner, or
anyone with the file) is caught against the signed documents the record carries."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from exchange.errors import (
    AccessDenied,
    InconsistentResponse,
    InvalidMessage,
    InvalidSignatureValue,
    MissingHeader,
)
from exchange.identifiers import MemberId, SecurityServerId, ServiceId, SubsystemId
from exchange.protocol.jws import JwsError, Signer
from exchange.protocol.messages import (
    SignedDecision,
    SignedRequest,
    SignedResponse,
    body_digest,
    request_hash,
)
from exchange.server.records import ExchangeRecord
from exchange.trust.keys import generate_key, self_signed_certificate
from exchange.trustcore.messages import CertifiedKey, SignerKey
from exchange.trustcore.records import Proof, verify_record

MOF = MemberId("PS", "GOV", "MOF")
MOI = MemberId("PS", "GOV", "MOI")
MOH = MemberId("PS", "GOV", "MOH")
TAX_OFFICE = SubsystemId("PS", "GOV", "MOF", "tax-office")
PERSONS = ServiceId("PS", "GOV", "MOI", "population-registry", "persons")
MOI_SS1 = SecurityServerId("PS", "GOV", "MOI", "ss1")
MOF_SS1 = SecurityServerId("PS", "GOV", "MOF", "ss1")
REQUEST_BODY = b'{"query":"Juri"}'
RESPONSE_BODY = b'{"name":"J\xc3\xbcri"}'
TS = 1_700_000_000_000
OWNERS = {"consumer": MOF_SS1, "provider": MOI_SS1}
DECISION = {
    "allowed": True,
    "code": "Allowed",
    "grant": "tax-persons",
    "source": "policies/MOI/population-registry.toml",
    "fields": ["name"],
    "policy_version": "3",
    "reason": "grant tax-persons allows GET /search",
}


@dataclass(frozen=True)
class Member:
    member: MemberId
    signer: Signer


def _member(member: MemberId) -> Member:
    key = generate_key()
    return Member(member, Signer(key, self_signed_certificate(key, member.member_code)))


@pytest.fixture(scope="module")
def members() -> dict[MemberId, Member]:
    return {m: _member(m) for m in (MOF, MOI, MOH)}


class Keys:
    def __init__(self, members: dict[MemberId, Member]) -> None:
        self.known = {
            m.signer.thumbprint: CertifiedKey(m.member, m.signer.key.public_key(), m.signer.cert)
            for m in members.values()
        }

    def signer_key(self, thumbprint: str) -> SignerKey:
        if thumbprint not in self.known:
            raise JwsError(f"no certificate with thumbprint {thumbprint}")
        return self.known[thumbprint]


@pytest.fixture(scope="module")
def keys(members: dict[MemberId, Member]) -> Keys:
    return Keys(members)


def _request(**changes: Any) -> SignedRequest:
    digest = body_digest(REQUEST_BODY)
    request = SignedRequest(
        message_id="msg-1",
        client=TAX_OFFICE,
        service=PERSONS,
        method="POST",
        path="/search",
        query="q=1",
        headers=(("content-type", "application/json"),),
        body_sha256=digest["sha256"],
        body_length=digest["length"],
        user_id="EE:clerk-17",
        purpose="tax-assessment",
        issue="case-9",
        represented_party="PS/GOV/MOF",
        security_server=MOI_SS1,
        client_server=MOF_SS1,
        timestamp_ms=TS,
    )
    return request._replace(**changes)


def _response(request: SignedRequest, token: str, **changes: Any) -> SignedResponse:
    digest = body_digest(RESPONSE_BODY)
    response = SignedResponse(
        message_id=request.message_id,
        request_id="r-1",
        request_hash=request_hash(token),
        status=200,
        headers=(("content-type", "application/json"),),
        body_sha256=digest["sha256"],
        body_length=digest["length"],
        error_type=None,
        error_message=None,
        policy_version="3",
        released_fields=("name",),
        timestamp_ms=TS + 5,
        decision=SignedDecision.of(DECISION),
    )
    return response._replace(**changes)


def _record(
    side: str,
    request: SignedRequest,
    req_token: str,
    response: SignedResponse | None,
    resp_token: str | None,
    *,
    with_bodies: bool = True,
) -> dict[str, Any]:
    """The entry as the security server writes it, from the signed documents."""
    rec = ExchangeRecord(side=side)
    rec.describe(request)
    rec.peer_server = str(request.security_server if side == "consumer" else request.client_server)
    rec.request_jws, rec.request_hash = req_token, request_hash(req_token)
    rec.request_body = REQUEST_BODY
    rec.response_jws = resp_token
    if response is not None:
        rec.response_body = RESPONSE_BODY
        rec.http_status = response.status
        rec.released_fields = (
            None if response.released_fields is None else list(response.released_fields)
        )
        if side == "provider":
            rec.decision = DECISION if response.decision is not None else None
        if response.error_type is not None:
            rec.error = AccessDenied(response.error_message or "", code=response.error_type)
    return rec.to_entry(with_bodies=with_bodies)


def _honest(
    members: dict[MemberId, Member], side: str, *, with_bodies: bool = True
) -> dict[str, Any]:
    request = _request()
    token = members[MOF].signer.sign(request.canonical())
    response = _response(request, token)
    answer = members[MOI].signer.sign(response.canonical())
    return _record(side, request, token, response, answer, with_bodies=with_bodies)


# --- what verifies, and what it proves ---------------------------------------------------------


@pytest.mark.parametrize("side", ["consumer", "provider"])
@pytest.mark.parametrize("with_bodies", [True, False], ids=["bodies-logged", "digests-only"])
def test_honest_exchange_records_verify(
    members: dict[MemberId, Member], keys: Keys, side: str, with_bodies: bool
) -> None:
    entry = _honest(members, side, with_bodies=with_bodies)
    verdict = verify_record(entry, keys, owner=OWNERS[side])
    assert verdict.problems == ()
    assert verdict.proof is Proof.EXCHANGE
    assert verdict.request is not None and verdict.request.signer.member == MOF
    assert verdict.response is not None and verdict.response.signer.member == MOI


def test_a_consumer_record_may_leave_the_decision_out(
    members: dict[MemberId, Member], keys: Keys
) -> None:
    entry = _honest(members, "consumer")
    assert entry["decision"] is None
    assert verify_record(entry, keys, owner=MOF_SS1).ok


def test_denial_signed_by_the_provider(members: dict[MemberId, Member], keys: Keys) -> None:
    request = _request()
    token = members[MOF].signer.sign(request.canonical())
    denied = {**DECISION, "allowed": False, "code": "Server.ServerProxy.AccessDenied"}
    response = _response(
        request,
        token,
        status=403,
        error_type="Server.ServerProxy.AccessDenied",
        error_message="access denied",
        released_fields=None,
        decision=SignedDecision.of(denied),
    )
    answer = members[MOI].signer.sign(response.canonical())
    entry = _record("provider", request, token, response, answer)
    entry["decision"] = denied
    verdict = verify_record(entry, keys, owner=MOI_SS1)
    assert verdict.problems == () and verdict.proof is Proof.EXCHANGE


def test_early_refusal_signed_by_the_server_owner(
    members: dict[MemberId, Member], keys: Keys
) -> None:
    """A service of another member on MOI's server, refused and signed by MOI (the owner)."""
    request = _request(service=ServiceId("PS", "GOV", "MOH", "clinics", "visits"))
    token = members[MOF].signer.sign(request.canonical())
    response = _response(
        request,
        token,
        status=404,
        error_type="Server.ServerProxy.UnknownService",
        error_message="unknown",
        released_fields=None,
        decision=None,
    )
    answer = members[MOI].signer.sign(response.canonical())
    entry = _record("provider", request, token, response, answer)
    assert verify_record(entry, keys, owner=MOI_SS1).problems == ()


def test_consumer_refusal_before_signing_proves_nothing(keys: Keys) -> None:
    record = ExchangeRecord(side="consumer", client=str(TAX_OFFICE))
    record.fail(MissingHeader("the X-Road-Client header is required"))
    verdict = verify_record(record.to_entry(with_bodies=True), keys, owner=MOF_SS1)
    assert verdict.problems == () and verdict.proof is Proof.NOTHING


def test_consumer_refused_response_is_evidence_of_the_request_only(
    members: dict[MemberId, Member], keys: Keys
) -> None:
    """The consumer logged a response it refused as inconsistent (bound to another request):
    the record proves our signed request; the response is what arrived."""
    request = _request()
    token = members[MOF].signer.sign(request.canonical())
    other = members[MOF].signer.sign(_request(message_id="msg-2").canonical())
    response = _response(_request(message_id="msg-2"), other)
    entry = _record(
        "consumer", request, token, None, members[MOI].signer.sign(response.canonical())
    )
    entry["response_body"] = base64.b64encode(b"whatever arrived").decode()
    err = InconsistentResponse("the response is not bound to this request")
    entry.update(status="error", http_status=502, error={"type": err.code, "message": err.message})
    verdict = verify_record(entry, keys, owner=MOF_SS1)
    assert verdict.problems == () and verdict.proof is Proof.REQUEST


def test_provider_refusal_of_a_request_that_does_not_verify(
    members: dict[MemberId, Member], keys: Keys
) -> None:
    """A forger's request: the provider signs its refusal bound to the bytes that arrived; the
    record states nothing the forged request claims but its id."""
    forger = _member(MOF)
    request = _request()
    token = forger.signer.sign(request.canonical())
    err = InvalidSignatureValue("request signature is invalid")
    response = _response(
        request,
        token,
        status=400,
        error_type=err.code,
        error_message=err.message,
        released_fields=None,
        decision=None,
    )
    answer = members[MOI].signer.sign(response.canonical())
    rec = ExchangeRecord(side="provider", peer_server=str(MOF_SS1), message_id="msg-1")
    rec.request_jws, rec.request_hash, rec.request_body = token, request_hash(token), REQUEST_BODY
    rec.response_jws, rec.response_body = answer, RESPONSE_BODY
    rec.fail(err)
    entry = rec.to_entry(with_bodies=True)
    verdict = verify_record(entry, keys, owner=MOI_SS1)
    assert verdict.problems == () and verdict.proof is Proof.REFUSAL
    entry["user_id"] = "EE:clerk-17"
    assert verify_record(entry, keys, owner=MOI_SS1).problems == (
        "record field user_id is stated, but the request it would come from did not verify",
    )
    signed_by_other = members[MOH].signer.sign(response.canonical())
    entry.update(user_id=None, response_jws=signed_by_other)
    (problem,) = verify_record(entry, keys, owner=MOI_SS1).problems
    assert "signed by member PS/GOV/MOH" in problem


def test_refusal_of_a_request_addressed_to_another_server(
    members: dict[MemberId, Member], keys: Keys
) -> None:
    request = _request(security_server=SecurityServerId("PS", "GOV", "MOH", "ss1"))
    token = members[MOF].signer.sign(request.canonical())
    err = InvalidMessage("request is addressed to security server PS/GOV/MOH/ss1")
    response = _response(
        request,
        token,
        status=400,
        error_type=err.code,
        error_message=err.message,
        released_fields=None,
        decision=None,
    )
    answer = members[MOI].signer.sign(response.canonical())
    entry = _record("provider", request, token, response, answer)
    entry["error"] = {"type": err.code, "message": err.message}
    verdict = verify_record(entry, keys, owner=MOI_SS1)
    assert verdict.problems == () and verdict.proof is Proof.REFUSAL


# --- what an insider edits -----------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _flip(token: str) -> str:
    head, sig = token.rsplit(".", 1)
    i = len(sig) // 2
    return f"{head}.{sig[:i]}{'A' if sig[i] != 'A' else 'B'}{sig[i + 1 :]}"


Edit = Callable[[dict[str, Any]], None]

EDITS: list[Any] = [
    pytest.param(
        lambda e: e.update(request_body=_b64(b'{"query":"Mari"}')),
        "logged request body does not match",
        id="request-body",
    ),
    pytest.param(
        lambda e: e.update(response_body=_b64(RESPONSE_BODY + b" ")),
        "response body does not match",
        id="response-body",
    ),
    pytest.param(
        lambda e: e.update(request_body=None),
        "bodies are logged, but the request body is missing",
        id="request-body-removed",
    ),
    pytest.param(
        lambda e: e.update(response_body="%%% not base64 %%%"),
        "bodies are logged, but the response body is missing",
        id="response-body-not-base64",
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
    pytest.param(lambda e: e.update(method="DELETE"), "record field method", id="method"),
    pytest.param(lambda e: e.update(path="/family?q=1"), "record field path", id="path"),
    pytest.param(lambda e: e.update(path="/search?q=2"), "record field path", id="query"),
    pytest.param(lambda e: e.update(user_id="mallory"), "record field user_id", id="user-id"),
    pytest.param(lambda e: e.update(purpose="curiosity"), "record field purpose", id="purpose"),
    pytest.param(lambda e: e.update(issue=None), "record field issue", id="issue"),
    pytest.param(
        lambda e: e.update(represented_party="PS/GOV/MOH"),
        "record field represented_party",
        id="represented-party",
    ),
    pytest.param(lambda e: e.update(protocol="soap"), "record field protocol", id="protocol"),
    pytest.param(lambda e: e.update(request_hash="AAAA"), "record request_hash", id="req-hash"),
    pytest.param(lambda e: e.update(http_status=500), "record field http_status", id="http-status"),
    pytest.param(
        lambda e: e.update(released_fields=["name", "address"]),
        "record field released_fields",
        id="released-fields",
    ),
    pytest.param(
        lambda e: e.update(decision={**DECISION, "grant": "everything", "fields": None}),
        "record field decision",
        id="decision",
    ),
    pytest.param(
        lambda e: e.update(decision={**DECISION, "policy_version": "7"}),
        "policy_version differs",
        id="policy-version",
    ),
    pytest.param(
        lambda e: e.update(peer_server="PS/GOV/MOH/ss1"),
        "record field peer_server",
        id="peer-server",
    ),
    pytest.param(
        lambda e: e.update(status="error", error={"type": "Server.ServerProxy.AccessDenied"}),
        "record field error",
        id="error-added",
    ),
    pytest.param(lambda e: e.update(status="error"), "status and error disagree", id="status-only"),
    pytest.param(lambda e: e.update(bodies=None), "does not say whether bodies", id="bodies-flag"),
    pytest.param(
        lambda e: e.update(request_jws=None), "without a signed request", id="no-request-jws"
    ),
    pytest.param(
        lambda e: e.update(response_jws=None), "without a signed response", id="no-response-jws"
    ),
    pytest.param(
        lambda e: e.update(request_jws=_flip(e["request_jws"])),
        "does not verify",
        id="request-signature-flipped",
    ),
    pytest.param(
        lambda e: e.update(response_jws=_flip(e["response_jws"])),
        "does not verify",
        id="response-signature-flipped",
    ),
    pytest.param(
        lambda e: e.update(request_jws="not a token"), "malformed JWS", id="request-garbage"
    ),
    pytest.param(
        lambda e: e.update(request_jws=e["response_jws"]),
        "not a version 1 signed request",
        id="response-as-request",
    ),
]


@pytest.mark.parametrize("side", ["consumer", "provider"])
@pytest.mark.parametrize(("edit", "problem"), EDITS)
def test_every_edit_is_caught(
    members: dict[MemberId, Member], keys: Keys, side: str, edit: Edit, problem: str
) -> None:
    entry = _honest(members, side)
    edit(entry)
    verdict = verify_record(entry, keys, owner=OWNERS[side])
    assert any(problem in p for p in verdict.problems), verdict.problems


def test_the_reviews_edited_consumer_record(members: dict[MemberId, Member], keys: Keys) -> None:
    """Issue 13 (3): a genuine consumer record with side, user id, purpose, path, released
    fields and decision edited: each edit is named."""
    entry = _honest(members, "consumer")
    entry.update(
        side="provider",
        user_id="EE:clerk-99",
        purpose="audit",
        path="/family?q=1",
        released_fields=["name", "children"],
        decision={**DECISION, "grant": "family", "fields": ["name", "children"]},
    )
    problems = verify_record(entry, keys, owner=MOF_SS1).problems
    for what in (
        "a provider record, but the signed request was addressed to PS/GOV/MOI/ss1, not the "
        "log's owner PS/GOV/MOF/ss1",
        "record field user_id",
        "record field purpose",
        "record field path",
        "record field released_fields",
        "record field decision",
    ):
        assert any(what in p for p in problems), (what, problems)


@pytest.mark.parametrize("side", ["consumer", "provider"])
def test_a_record_checked_as_another_servers_fails(
    members: dict[MemberId, Member], keys: Keys, side: str
) -> None:
    """Side is bound: the owner must be the server the client named on the record's side."""
    entry = _honest(members, side)
    other = OWNERS["provider" if side == "consumer" else "consumer"]
    (problem,) = verify_record(entry, keys, owner=other).problems
    assert f"not the log's owner {other} (side edited" in problem


def test_response_to_another_request(members: dict[MemberId, Member], keys: Keys) -> None:
    request = _request()
    token = members[MOF].signer.sign(request.canonical())
    other = members[MOF].signer.sign(_request(purpose="other").canonical())
    answer = members[MOI].signer.sign(_response(request, other).canonical())
    entry = _record("consumer", request, token, _response(request, other), answer)
    (problem,) = verify_record(entry, keys, owner=MOF_SS1).problems
    assert "request hash differs" in problem


def test_request_signed_by_another_member(members: dict[MemberId, Member], keys: Keys) -> None:
    request = _request()
    forged = members[MOH].signer.sign(request.canonical())
    response = _response(request, forged)
    entry = _record(
        "consumer", request, forged, response, members[MOI].signer.sign(response.canonical())
    )
    (problem,) = verify_record(entry, keys, owner=MOF_SS1).problems
    assert "signed by member PS/GOV/MOH" in problem


@pytest.mark.parametrize("signer", [MOH, MOF], ids=["other-provider", "the-client-itself"])
def test_response_signed_by_another_member(
    members: dict[MemberId, Member], keys: Keys, signer: MemberId
) -> None:
    request = _request()
    token = members[MOF].signer.sign(request.canonical())
    response = _response(request, token)
    entry = _record(
        "consumer", request, token, response, members[signer].signer.sign(response.canonical())
    )
    (problem,) = verify_record(entry, keys, owner=MOF_SS1).problems
    assert f"signed by member {signer}" in problem


def test_unknown_signer(keys: Keys) -> None:
    stranger = _member(MOF)
    request = _request()
    token = stranger.signer.sign(request.canonical())
    entry = _record("consumer", request, token, None, None)
    entry.update(status="error", error={"type": "Server.ClientProxy.NetworkError"})
    (problem,) = verify_record(entry, keys, owner=MOF_SS1).problems
    assert f"no certificate with thumbprint {stranger.signer.thumbprint}" in problem


def test_an_unsigned_record_that_claims_success(keys: Keys) -> None:
    record = ExchangeRecord(side="consumer", client=str(TAX_OFFICE), message_id="made-up")
    entry = record.to_entry(with_bodies=False)
    verdict = verify_record(entry, keys, owner=MOF_SS1)
    assert verdict.proof is Proof.NOTHING
    assert verdict.problems == ("a successful exchange without a signed request",)
    entry["side"] = "provider"
    assert verify_record(entry, keys, owner=MOF_SS1).problems == (
        "a provider record without a signed request",
    )
    entry["side"] = "auditor"
    assert "neither consumer nor provider" in verify_record(entry, keys, owner=MOF_SS1).problems[0]


def test_unsigned_record_states_nothing_a_provider_would_say(keys: Keys) -> None:
    record = ExchangeRecord(side="consumer", client=str(TAX_OFFICE))
    record.fail(MissingHeader("the X-Road-Client header is required"))
    entry = record.to_entry(with_bodies=True)
    entry.update(decision=DECISION, released_fields=["name"])
    assert verify_record(entry, keys, owner=MOF_SS1).problems == (
        "record field released_fields is stated without a signed response",
        "record field decision is stated without a signed response",
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = [
    "side", "status", "error", "bodies", "request_jws", "response_jws", "request_hash",
    "message_id", "client", "service", "method", "path", "user_id", "purpose", "issue",
    "represented_party", "protocol", "peer_server", "http_status", "released_fields",
    "decision", "request_body", "response_body",
]  # fmt: skip


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6))
@example(changes={"request_jws": "\x80"})  # not ASCII: its hash once raised UnicodeEncodeError
@example(changes={"request_jws": "\ud800"})
def test_any_record_gets_a_verdict_never_a_crash(
    members: dict[MemberId, Member], keys: Keys, changes: dict[str, Any]
) -> None:
    """Whatever JSON an insider writes into a record, the check answers with problems."""
    for side in ("consumer", "provider"):
        entry = {**_honest(members, side), **changes}
        verdict = verify_record(entry, keys, owner=OWNERS[side])
        assert isinstance(verdict.proof, Proof)
