"""What one message log record proves (docs/design.md §8): the one check behind ``exchange log
verify``, ``exchange audit verify`` and ``audit correlate``.

A record is written by its log's owner, and the owner's tree heads make it tamper-evident; but
what *others* said (the client member's request, the provider's answer and decision) is proven
only by their signatures. So every field a record states about the exchange either comes from a
signed document it carries or is checked equal to one: side and peer server (against the owner
and the servers the client named in its signed request), client, service, message id, method,
path and query, user id, purpose, issue, represented party, protocol, request hash, HTTP status,
error, released fields and the provider's decision. What the owner alone states (times, detail
ids, the internal reason of an error, its own annotations of a decision) stays its statement.

:func:`verify_record` returns what the record proves (:class:`Proof`) and every problem found:
(1) the record's shape; (2) it carries the signatures it must; (3) the signed request verifies;
(4) the record states it as signed; (5) side and peer server agree with the owner and the
request; (6) the bodies it holds match the signed digests (whatever it says of logging them);
(7) the signed response verifies and is bound to the request; (8) the record states it as
signed.

No IO: ``keys`` is the caller's trust decision for this record (certificates of the log
validated at the record's time, for the auditor's tools).
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from exchange.errors import ExchangeError
from exchange.identifiers import SecurityServerId
from exchange.protocol.messages import SignedDecision, SignedRequest, SignedResponse, request_hash
from exchange.trustcore.messages import (
    SignerKeys,
    VerifiedRequest,
    VerifiedResponse,
    body_matches,
    verify_refusal,
    verify_request,
    verify_response,
)

PROVIDER_REFUSALS: Final = frozenset(
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
"""Codes under which a provider refuses a request whose signature did not check out: its record
keeps the request as evidence of what arrived, not of what a client member asked."""

SENDER_REFUSED: Final = "Server.ServerProxy.SslAuthenticationFailed"
"""The code under which a provider refuses a request from a connecting server that does not
host its client or is not the sender the client named: the record's peer server is then the
connecting one (authenticated by TLS), not the one in the request."""

REQUEST_FIELDS: Final = (
    "client",
    "service",
    "method",
    "path",
    "user_id",
    "purpose",
    "issue",
    "represented_party",
)


class Proof(enum.Enum):
    """What a record's signatures prove, beyond its owner's word."""

    EXCHANGE = "the client's signed request and the provider's signed response, bound to it"
    REFUSAL = "a request that did not verify, and the provider's signed refusal bound to its bytes"
    REQUEST = "the client's signed request only (no signed response was accepted)"
    NOTHING = "nothing: no signature, only the log owner's statement"


@dataclass(frozen=True, slots=True)
class RecordVerdict:
    """The outcome of :func:`verify_record`; ``ok`` when no problem was found."""

    proof: Proof
    problems: tuple[str, ...]
    request: VerifiedRequest | None = None
    response: VerifiedResponse | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_record(
    entry: Mapping[str, Any], keys: SignerKeys, *, owner: SecurityServerId
) -> RecordVerdict:
    """What ``entry``, a record of the log of ``owner``, proves; see the module docstring."""
    return _Check(entry, keys, owner).run()


class _Check:
    def __init__(self, entry: Mapping[str, Any], keys: SignerKeys, owner: SecurityServerId) -> None:
        self.entry = entry
        self.keys = keys
        self.owner = owner
        self.problems: list[str] = []
        error = entry.get("error")
        self.error = error if isinstance(error, dict) else None
        error_type = None if self.error is None else self.error.get("type")
        self.error_type = error_type if isinstance(error_type, str) else None
        self.logged = entry.get("bodies") == "logged"

    def run(self) -> RecordVerdict:
        # (1) the record's shape
        side = self.entry.get("side")
        if side not in ("consumer", "provider"):
            return self._verdict(Proof.NOTHING, f"side {side!r} is neither consumer nor provider")
        status = self.entry.get("status")
        if (status, self.error is None) not in (("ok", True), ("error", False)):
            self.problems.append("status and error disagree (an error needs status 'error')")
        if self.entry.get("bodies") not in ("logged", "digests-only"):
            self.problems.append("the record does not say whether bodies were logged")
        # (2) the signatures it must carry
        req_token, resp_token = self.entry.get("request_jws"), self.entry.get("response_jws")
        refusal = side == "provider" and self.error_type in PROVIDER_REFUSALS
        if not isinstance(req_token, str):
            if refusal and req_token is None:  # a frame that carried no signed request at all
                return self._refusal(None, resp_token, None)
            return self._unsigned(side, status, resp_token)
        if side == "provider" and not isinstance(resp_token, str):
            return self._verdict(Proof.NOTHING, "a provider record without a signed response")
        if status == "ok" and not isinstance(resp_token, str):
            return self._verdict(Proof.NOTHING, "a successful exchange without a signed response")
        if self.entry.get("request_hash") != request_hash(req_token):
            self.problems.append("record request_hash differs from the hash of the signed request")
        # (3) the signed request verifies, signed by the client's member
        try:
            verified = verify_request(req_token, self.keys)
        except ExchangeError as exc:
            if refusal:
                return self._refusal(req_token, resp_token, None)
            self.problems.append(exc.message)
            return self._verdict(Proof.NOTHING)
        request = verified.request
        if refusal:
            return self._refusal(req_token, resp_token, verified)
        # (4) the record states the request as it was signed
        self._stated(request)
        # (5) side and peer server: the owner is the server the client named on its side
        self._sides(side, request)
        # (6) the logged request body is the signed one (also where the record says bodies
        # were not logged but holds one)
        self._body("request", request.body_sha256, request.body_length)
        if not isinstance(resp_token, str):
            self._no_response()
            return self._verdict(Proof.REQUEST, request=verified)
        return self._response(side, resp_token, verified)

    # -- records without a (verifiable) request

    def _unsigned(self, side: str, status: object, resp_token: object) -> RecordVerdict:
        """A consumer's early refusal, before anything was signed: its owner's word only."""
        if side == "provider":
            return self._verdict(Proof.NOTHING, "a provider record without a signed request")
        if status == "ok":
            return self._verdict(Proof.NOTHING, "a successful exchange without a signed request")
        if resp_token is not None:
            self.problems.append("a signed response without the signed request it answers")
        if self.entry.get("request_hash") is not None:
            self.problems.append("a request hash without the signed request")
        self._no_response()
        return self._verdict(Proof.NOTHING)

    def _refusal(
        self, req_token: str | None, resp_token: object, verified: VerifiedRequest | None
    ) -> RecordVerdict:
        """A provider refused a request at its signature or shape (its signature did not check
        out for the provider, ``verified`` is None when it does not for us either, and
        ``req_token`` None when the frame carried none; or it was addressed to another server, or
        its body is not the signed one); the provider signed the refusal with its owner's key,
        bound to the exact bytes that arrived, which are kept as what arrived."""
        if verified is not None:
            # (4) what the record states of the request is as it was signed (a refusal before
            # the request was read states nothing of it)
            self._stated(verified.request, only_stated=True)
        else:
            # (4) nothing the unverified request claims is stated as fact, but its claimed id
            for name in REQUEST_FIELDS:
                if self.entry.get(name) is not None:
                    self.problems.append(
                        f"record field {name} is stated, but the request it would come from did "
                        "not verify"
                    )
        if self.logged and req_token is not None:
            self._body_present("request")
        try:
            response = verify_refusal(
                resp_token,
                req_token,
                self.keys,
                provider=self.owner.owner,
                body=self._response_body(),
            )
        except ExchangeError as exc:
            return self._verdict(Proof.NOTHING, exc.message)
        # (8) the record states the refusal as signed
        if self.entry.get("message_id") != (response.response.message_id or None):
            self.problems.append("record field message_id differs from the signed response")
        self._stated_response(response.response, consumer=False)
        return self._verdict(Proof.REFUSAL, request=verified, response=response)

    # -- the request

    def _stated(self, request: SignedRequest, *, only_stated: bool = False) -> None:
        path = request.path + ("?" + request.query if request.query else "")
        for name, signed in (
            ("message_id", request.message_id),
            ("client", str(request.client)),
            ("service", str(request.service)),
            ("method", request.method),
            ("path", path),
            ("user_id", request.user_id),
            ("purpose", request.purpose),
            ("issue", request.issue),
            ("represented_party", request.represented_party),
        ):
            stated = self.entry.get(name)
            if stated != signed and not (only_stated and stated is None):
                self.problems.append(f"record field {name} differs from the signed request")
        protocol = self.entry.get("protocol", None if only_stated else "rest")
        if protocol is not None and protocol != request.protocol:
            self.problems.append("record field protocol differs from the signed request")

    def _sides(self, side: str, request: SignedRequest) -> None:
        mine, peer = (
            (request.client_server, request.security_server)
            if side == "consumer"
            else (request.security_server, request.client_server)
        )
        if mine != self.owner:
            role = "sent by" if side == "consumer" else "addressed to"
            self.problems.append(
                f"a {side} record, but the signed request was {role} {mine}, not the log's "
                f"owner {self.owner} (side edited, or a record of another log)"
            )
        # a provider refuses a connecting server that is not the sender the client named
        refused_sender = side == "provider" and self.error_type == SENDER_REFUSED
        if self.entry.get("peer_server") != str(peer) and not refused_sender:
            self.problems.append("record field peer_server differs from the signed request")

    def _no_response(self) -> None:
        """Without a verified response, nothing the provider would have said is stated."""
        for name in ("released_fields", "decision"):
            if self.entry.get(name) is not None:
                self.problems.append(f"record field {name} is stated without a signed response")

    # -- the response

    def _response(self, side: str, resp_token: str, verified: VerifiedRequest) -> RecordVerdict:
        refused_by_consumer = side == "consumer" and str(self.error_type or "").startswith(
            "Server.ClientProxy."
        )
        body = None if refused_by_consumer else self._response_body()
        # (7) the signed response verifies, from the service's member (or the provider server's
        # owner), bound to this request by its hash and message id
        try:
            response = verify_response(resp_token, verified, self.keys, body=body)
        except ExchangeError as exc:
            if refused_by_consumer:
                # the consumer refused what arrived and logged it as evidence of that
                self._no_response()
                return self._verdict(Proof.REQUEST, request=verified)
            return self._verdict(Proof.REQUEST, exc.message, request=verified)
        # (8) the record states the response as signed
        self._stated_response(
            response.response, consumer=side == "consumer", refused=refused_by_consumer
        )
        return self._verdict(Proof.EXCHANGE, request=verified, response=response)

    def _stated_response(
        self, response: SignedResponse, *, consumer: bool, refused: bool = False
    ) -> None:
        released = self.entry.get("released_fields")
        signed = None if response.released_fields is None else list(response.released_fields)
        # a consumer that refused the response took nothing from it
        if released != signed and not (refused and released is None):
            self.problems.append("record field released_fields differs from the signed response")
        self._decision(response, consumer=consumer)
        if refused:
            return  # status and error are the consumer's own refusal
        if self.entry.get("http_status") != response.status:
            self.problems.append("record field http_status differs from the signed response")
        if response.error_type != self.error_type:
            self.problems.append("record field error differs from the signed response's error")
        elif self.error is not None and self.error.get("message") != (response.error_message or ""):
            self.problems.append("record error message differs from the signed response's")

    def _decision(self, response: SignedResponse, *, consumer: bool) -> None:
        stated = self.entry.get("decision")
        if stated is None:
            if response.decision is not None and not consumer:
                self.problems.append("the provider's record omits the decision it signed")
            return
        try:
            decision = SignedDecision.of(stated) if isinstance(stated, dict) else None
        except ExchangeError:
            decision = None
        if decision is None or decision != response.decision:
            self.problems.append("record field decision differs from the signed response")
        elif stated.get("policy_version") != response.policy_version:
            self.problems.append("record decision's policy_version differs from the signed one")

    # -- bodies

    def _response_body(self) -> bytes | None:
        return self._body_present("response") if self.logged else self._body_stated("response")

    def _body_present(self, which: str) -> bytes | None:
        body = _decoded(self.entry.get(f"{which}_body"))
        if body is None:
            self.problems.append(
                f"bodies are logged, but the {which} body is missing or not base64"
            )
        return body

    def _body_stated(self, which: str) -> bytes | None:
        """A body the record holds though it says bodies were not logged: checked all the
        same (whoever reads the record takes it for what was sent)."""
        value = self.entry.get(f"{which}_body")
        if value is None:
            return None
        body = _decoded(value)
        if body is None:
            self.problems.append(f"the {which} body is not base64")
        return body

    def _body(self, which: str, sha256: str, length: int) -> None:
        body = self._body_present(which) if self.logged else self._body_stated(which)
        if body is not None and not body_matches(body, sha256, length):
            self.problems.append(f"logged {which} body does not match the signed digest")

    def _verdict(
        self,
        proof: Proof,
        problem: str | None = None,
        *,
        request: VerifiedRequest | None = None,
        response: VerifiedResponse | None = None,
    ) -> RecordVerdict:
        if problem is not None:
            self.problems.append(problem)
        return RecordVerdict(proof, tuple(self.problems), request, response)


def _decoded(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
