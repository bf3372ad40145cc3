"""The one verification of signed requests and responses (exchange/trustcore/messages.py): what
a forger without the key, a rogue registered peer signing for another member, and a provider
answering another request would try, each refused with the receiving side's code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.errors import (
    ConsumerInvalidSignature,
    ExchangeError,
    InconsistentResponse,
    InvalidMessage,
    InvalidSignatureValue,
)
from exchange.identifiers import MemberId, SecurityServerId, ServiceId, SubsystemId
from exchange.protocol.canonical import b64url
from exchange.protocol.jws import JwsError, Signer
from exchange.protocol.messages import SignedRequest, SignedResponse, body_digest, request_hash
from exchange.trust.keys import generate_key, self_signed_certificate
from exchange.trustcore.messages import (
    CertifiedKey,
    OwnRequest,
    SignerKey,
    verify_request,
    verify_response,
)

MOF = MemberId("PS", "GOV", "MOF")
MOI = MemberId("PS", "GOV", "MOI")
MOH = MemberId("PS", "GOV", "MOH")
TAX_OFFICE = SubsystemId("PS", "GOV", "MOF", "tax-office")
PERSONS = ServiceId("PS", "GOV", "MOI", "population-registry", "persons")
CLINICS = ServiceId("PS", "GOV", "MOH", "clinics", "visits")
MOI_SS1 = SecurityServerId("PS", "GOV", "MOI", "ss1")
MOF_SS1 = SecurityServerId("PS", "GOV", "MOF", "ss1")
REQUEST_BODY = b'{"query":"Juri"}'
RESPONSE_BODY = b'{"name":"J\xc3\xbcri"}'


@dataclass(frozen=True)
class Member:
    member: MemberId
    signer: Signer

    def key(self) -> CertifiedKey:
        public = self.signer.key.public_key()
        return CertifiedKey(self.member, public, self.signer.cert)


def _member(member: MemberId) -> Member:
    key = generate_key()
    return Member(member, Signer(key, self_signed_certificate(key, member.member_code)))


class Keys:
    """A caller's trust decision: thumbprint -> key of a member, else a JwsError."""

    def __init__(self, *members: Member) -> None:
        self.known = {m.signer.thumbprint: m.key() for m in members}

    def signer_key(self, thumbprint: str) -> SignerKey:
        if thumbprint not in self.known:
            raise JwsError(f"no trusted certificate {thumbprint}")
        return self.known[thumbprint]


@pytest.fixture(scope="module")
def mof() -> Member:
    return _member(MOF)


@pytest.fixture(scope="module")
def moi() -> Member:
    return _member(MOI)


@pytest.fixture(scope="module")
def moh() -> Member:
    return _member(MOH)


@pytest.fixture(scope="module")
def keys(mof: Member, moi: Member, moh: Member) -> Keys:
    return Keys(mof, moi, moh)


def _request(service: ServiceId = PERSONS, message_id: str = "msg-1") -> SignedRequest:
    digest = body_digest(REQUEST_BODY)
    return SignedRequest(
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
        client_server=MOF_SS1,
        timestamp_ms=1_700_000_000_000,
    )


def _response(bound: OwnRequest, **changes: Any) -> SignedResponse:
    digest = body_digest(RESPONSE_BODY)
    response = SignedResponse(
        message_id=bound.request.message_id,
        request_id="r-1",
        request_hash=bound.request_hash,
        status=200,
        headers=(("content-type", "application/json"),),
        body_sha256=digest["sha256"],
        body_length=digest["length"],
        error_type=None,
        error_message=None,
        policy_version="3",
        released_fields=None,
        timestamp_ms=1_700_000_000_005,
    )
    return response._replace(**changes)


def _signed(member: Member, request: SignedRequest | None = None) -> OwnRequest:
    request = request or _request()
    return OwnRequest.of(member.signer.sign(request.canonical()), request)


# --- what verifies ------------------------------------------------------------------------------


def test_request_and_response_verify(mof: Member, moi: Member, keys: Keys) -> None:
    sent = _signed(mof)
    verified = verify_request(sent.token, keys, body=REQUEST_BODY)
    assert verified.request == sent.request
    assert verified.signer.member == MOF
    assert verified.request_hash == request_hash(sent.token)
    token = moi.signer.sign(_response(sent).canonical())
    for bound in (sent, verified):
        answer = verify_response(token, bound, keys, body=RESPONSE_BODY)
        assert answer.response.status == 200
        assert answer.signer.member == MOI


def test_early_refusal_signed_by_the_provider_servers_owner(
    mof: Member, moi: Member, keys: Keys
) -> None:
    """A service of MOH requested from MOI's server: MOI, the server's owner, signs the refusal."""
    sent = _signed(mof, _request(service=CLINICS))
    refusal = _response(sent, status=404, error_type="Server.ServerProxy.UnknownService")
    token = moi.signer.sign(refusal.canonical())
    assert verify_response(token, sent, keys).response.error_type == refusal.error_type


# --- what is refused ------------------------------------------------------------------------------


def test_request_signed_by_a_key_nobody_trusts(keys: Keys) -> None:
    stranger = _member(MOF)  # claims the right member, but its certificate is not trusted
    with pytest.raises(InvalidSignatureValue, match="no trusted certificate"):
        verify_request(_signed(stranger).token, keys)


def test_request_with_a_trusted_thumbprint_but_another_key(mof: Member, keys: Keys) -> None:
    """A forger names MOF's certificate in the header but signs with its own key."""
    forger = Member(MOF, Signer(generate_key(), mof.signer.cert))
    with pytest.raises(InvalidSignatureValue, match="signature does not verify"):
        verify_request(_signed(forger).token, keys)


def test_request_signed_by_another_member(moh: Member, keys: Keys) -> None:
    """A rogue registered peer signs a request for MOF's subsystem with MOH's valid key."""
    with pytest.raises(InvalidSignatureValue, match="signed by member PS/GOV/MOH"):
        verify_request(_signed(moh).token, keys)


def test_response_signed_by_another_member(mof: Member, moh: Member, keys: Keys) -> None:
    sent = _signed(mof)
    token = moh.signer.sign(_response(sent).canonical())
    with pytest.raises(ConsumerInvalidSignature, match="signed by member PS/GOV/MOH"):
        verify_response(token, sent, keys)


def test_response_signed_by_the_client_itself(mof: Member, keys: Keys) -> None:
    sent = _signed(mof)
    token = mof.signer.sign(_response(sent).canonical())
    with pytest.raises(ConsumerInvalidSignature, match="signed by member PS/GOV/MOF"):
        verify_response(token, sent, keys)


def test_response_bound_to_another_request(mof: Member, moi: Member, keys: Keys) -> None:
    """A genuine MOI response, but to another request of the same client (same message id)."""
    sent = _signed(mof)
    other = _signed(mof, _request()._replace(purpose="other"))
    token = moi.signer.sign(_response(other).canonical())
    with pytest.raises(InconsistentResponse, match="request hash differs"):
        verify_response(token, sent, keys)


def test_response_under_another_message_id(mof: Member, moi: Member, keys: Keys) -> None:
    sent = _signed(mof)
    token = moi.signer.sign(_response(sent, message_id="msg-2").canonical())
    with pytest.raises(InconsistentResponse, match="message id differs"):
        verify_response(token, sent, keys)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"query":"Mari"}', id="other-bytes"),
        pytest.param(REQUEST_BODY + b" ", id="longer"),
        pytest.param(b"", id="empty"),
    ],
)
def test_request_body_not_the_signed_one(mof: Member, keys: Keys, body: bytes) -> None:
    with pytest.raises(InvalidMessage, match="request body does not match"):
        verify_request(_signed(mof).token, keys, body=body)


def test_response_body_not_the_signed_one(mof: Member, moi: Member, keys: Keys) -> None:
    sent = _signed(mof)
    token = moi.signer.sign(_response(sent).canonical())
    with pytest.raises(InconsistentResponse, match="response body does not match"):
        verify_response(token, sent, keys, body=RESPONSE_BODY[:-1])


def test_same_length_other_digest_is_refused(mof: Member, moi: Member, keys: Keys) -> None:
    sent = _signed(mof)
    fake = b64url(b"\x00" * 32)
    token = moi.signer.sign(_response(sent, body_sha256=fake).canonical())
    with pytest.raises(InconsistentResponse, match="response body does not match"):
        verify_response(token, sent, keys, body=RESPONSE_BODY)


def _segments(token: str) -> list[str]:
    return token.split(".")


MALFORMED: list[Any] = [
    pytest.param(None, id="none"),
    pytest.param(12, id="not-a-string"),
    pytest.param("", id="empty"),
    pytest.param("a.b", id="two-segments"),
    pytest.param("a.b.c.d", id="four-segments"),
    pytest.param("!!.@@.##", id="bad-base64"),
    pytest.param("eyJhbGciOiJub25lIn0.e30.", id="alg-none"),
    pytest.param("ünïcode.x.y", id="not-ascii"),
]


@pytest.mark.parametrize("token", MALFORMED)
def test_malformed_request_token(keys: Keys, token: object) -> None:
    with pytest.raises(InvalidSignatureValue):
        verify_request(token, keys)


@pytest.mark.parametrize("token", MALFORMED)
def test_malformed_response_token(mof: Member, keys: Keys, token: object) -> None:
    with pytest.raises((ConsumerInvalidSignature, InconsistentResponse)):
        verify_response(token, _signed(mof), keys)


def test_signed_payload_that_is_not_a_request(mof: Member, moi: Member, keys: Keys) -> None:
    """A genuine signed response presented as a request, and signed non-JSON."""
    sent = _signed(mof)
    response_token = moi.signer.sign(_response(sent).canonical())
    with pytest.raises(InvalidMessage, match="not a version 1 signed request"):
        verify_request(response_token, keys)
    with pytest.raises(InvalidMessage, match="not JSON"):
        verify_request(mof.signer.sign(b"\xff not json"), keys)


def test_signed_payload_that_is_not_a_response(mof: Member, keys: Keys) -> None:
    sent = _signed(mof)
    with pytest.raises(InconsistentResponse, match="malformed"):
        verify_response(sent.token, sent, keys)


def test_a_refusal_of_the_callers_keys_passes_through(mof: Member) -> None:
    """``keys`` says why a known certificate may not sign (e.g. revoked): that error, unchanged."""

    class Revoked(ExchangeError):
        code = "Server.ServerProxy.CertificateRevoked"

    class RevokedKeys:
        def signer_key(self, thumbprint: str) -> SignerKey:
            raise Revoked("the signing certificate is revoked")

    with pytest.raises(Revoked):
        verify_request(_signed(mof).token, RevokedKeys())


def test_a_certified_key_is_a_signer_key(mof: Member) -> None:
    key: SignerKey = mof.key()
    assert isinstance(key.public_key, ec.EllipticCurvePublicKey)
