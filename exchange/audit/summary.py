"""What a record of an evidence bundle says, shown only from what verified: the first thing
``exchange audit verify`` prints, before its checks.

Every value comes from a signed document and is shown under it: the client's signed request
(client, service, method and path, user id, purpose, issue, represented party, message id, the
time its member signed it), the provider's signed response (status and error, released fields,
the policy decision, the time it was signed), and the log owner's record itself (the time it was
logged) only once the record is proven under the owner's signed tree head, with the RFC 3161
time that head existed by. The side is where the owner stands in the signed request: it sent it
(consumer) or it was addressed to it (provider). Nothing is taken from the record's own copies
of the signed fields: check (6) of :func:`exchange.audit.bundle.verify_bundle` compares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange.identifiers import SecurityServerId
from exchange.protocol.messages import SignedRequest, SignedResponse
from exchange.trust.timestamp import TimestampInfo
from exchange.trustcore.messages import VerifiedRequest, VerifiedResponse
from exchange.trustcore.records import RecordVerdict
from exchange.utc import iso_z, utc


@dataclass(frozen=True, slots=True)
class Signed:
    """Fields and the document that states them, signed by ``member``."""

    source: str
    member: str | None
    signed_at: str | None
    fields: tuple[tuple[str, str], ...]

    def heading(self) -> str:
        by = f"member {self.member}" if self.member else ""
        at = f"signed {self.signed_at}" if self.signed_at else ""
        detail = ", ".join(p for p in (by, at) if p)
        return f"from {self.source}" + (f" ({detail})" if detail else "") + ":"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "member": self.member,
            "signed_at": self.signed_at,
            "fields": dict(self.fields),
        }


@dataclass(frozen=True, slots=True)
class RecordSummary:
    """One record of a bundle as its verified parts state it; ``unproven`` says why nothing or
    less could be shown."""

    seq: int
    side: str | None
    message_id: str | None
    parts: tuple[Signed, ...]
    unproven: tuple[str, ...]

    def heading(self) -> str:
        side = f"the {self.side}'s record" if self.side else "a record (side not established)"
        of = f" of exchange {self.message_id}" if self.message_id else ""
        return f"record {self.seq}: {side}{of}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "side": self.side,
            "message_id": self.message_id,
            "verified": [p.to_dict() for p in self.parts],
            "not_shown": list(self.unproven),
        }


def summarize(
    seq: int,
    verdict: RecordVerdict | None,
    entry: dict[str, Any] | None,
    owner: SecurityServerId,
    *,
    in_log: bool,
    stamp: TimestampInfo | None,
) -> RecordSummary:
    """Record ``seq`` as its verified parts state it. ``in_log`` says the record is proven
    under the owner's signed tree head, which ``stamp`` (when it verified) time-stamps."""
    request = verdict.request if verdict is not None else None
    response = verdict.response if verdict is not None else None
    parts: list[Signed] = []
    unproven: list[str] = []
    # (1) the client's signed request: who asked what, for whom, why
    if request is not None:
        parts.append(_request(request))
    else:
        unproven.append(
            "what was asked: the record carries no signed request that verifies, so only the "
            "log owner states it"
        )
    # (2) the provider's signed response: what was answered, released and decided
    if response is not None:
        parts.append(_response(response))
    else:
        unproven.append(
            "what was answered: no signed response verifies, so only the log owner states it"
        )
    # (3) the owner's own statement, once the record is proven in its log
    if in_log and entry is not None:
        parts.append(_logged(entry, stamp))
    else:
        unproven.append("when it was logged: the record is not proven in the owner's log")
    message_id = (
        request.request.message_id
        if request is not None
        else response.response.message_id or None
        if response is not None
        else None
    )
    side = _side(request.request, owner) if request is not None else None
    return RecordSummary(seq, side, message_id, tuple(parts), tuple(unproven))


def _side(request: SignedRequest, owner: SecurityServerId) -> str | None:
    sides = [
        name
        for name, server in (
            ("consumer", request.client_server),
            ("provider", request.security_server),
        )
        if server == owner
    ]
    return " and ".join(sides) or None


def _request(verified: VerifiedRequest) -> Signed:
    r = verified.request
    path = r.path + ("?" + r.query if r.query else "")
    fields = [
        ("client", str(r.client)),
        ("service", str(r.service)),
        ("request", f"{r.method} {path}"),
        ("user id", r.user_id if r.user_id is not None else "none stated"),
        ("purpose", r.purpose if r.purpose is not None else "none stated"),
    ]
    fields += [
        (name, value)
        for name, value in (("issue", r.issue), ("represents", r.represented_party))
        if value is not None
    ]
    fields.append(("sent by", f"{r.client_server} to {r.security_server}"))
    return Signed(
        "the client's signed request",
        str(verified.signer.member),
        _iso(r.timestamp_ms),
        tuple(fields),
    )


def _response(verified: VerifiedResponse) -> Signed:
    r = verified.response
    status = f"{r.status} {r.error_type}" if r.error_type else str(r.status)
    fields = [("status", status), ("released", _released(r)), ("decision", _decision(r))]
    return Signed(
        "the provider's signed response",
        str(verified.signer.member),
        _iso(r.timestamp_ms),
        tuple(fields),
    )


def _logged(entry: dict[str, Any], stamp: TimestampInfo | None) -> Signed:
    logged_at = entry.get("logged_at")
    when = _iso(logged_at) if isinstance(logged_at, int) else "not stated"
    existed = (
        f"under its signed tree head, time-stamped {iso_z(stamp.gen_time)}"
        if stamp is not None
        else "under its signed tree head (not time-stamped: no time proven)"
    )
    return Signed(f"the log owner's record, {existed}", None, None, (("logged at", when),))


def _released(response: SignedResponse) -> str:
    if response.error_type is not None:
        return "nothing (refused: the answer is the error)"
    if response.released_fields is None:
        return "the whole answer (the grant releases every field)"
    return ", ".join(response.released_fields) or "no field"


def _decision(response: SignedResponse) -> str:
    decision = response.decision
    policy = f" (policy {response.policy_version})" if response.policy_version else ""
    if decision is None:
        return "not stated" + policy
    if decision.allowed:
        return f"allowed by grant {decision.grant}{policy}"
    return f"denied: {decision.code}{policy}"


def _iso(ms: int) -> str:
    try:
        return iso_z(utc(ms / 1000))
    except (OverflowError, ValueError, OSError):
        return f"{ms} (not a time)"
