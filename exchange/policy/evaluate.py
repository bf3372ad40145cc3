"""Evaluating an access policy for one request, and explaining the decision (docs/design.md §7).

Deny by default: a request is allowed only by a grant whose client, service, method and path
scope contain it and whose conditions (validity window, purpose of use, user id) hold at ``now``.
When several grants allow a request, the first in file/line order decides, so the outcome never
depends on dictionary or file system order. A request that falls in a grant's scope but fails its
conditions is denied with a specific code (``...AccessDenied.GrantExpired``,
``...GrantNotYetValid``, ``...PurposeNotAllowed``, ``...UserIdRequired``) so that the caller
knows what to fix; anything else is the plain ``Server.ServerProxy.AccessDenied``.

SOAP requests (X-Road message protocol 4.0, ``protocol="soap"``) name their operation by the
service code alone: a grant's ``methods`` and ``paths`` scope REST requests only and are not
consulted for them; client, service and every condition are. A grant that omits ``methods``
allows no REST request at all (a SOAP-only grant). The provider never sends a SOAP request to a
REST service or the other way round, so a REST grant's path limits cannot be side-stepped.

The request path is judged before any grant: it is percent-decoded exactly once and refused
(``...AccessDenied.BadPath``) if it holds anything that a later decoding or normalisation could
turn into a different path, so that path tricks never widen a grant.

Pure functions over values, no IO; ``now`` is explicit. Rate limits are parsed into the grant and
returned in the decision, but counting requests is the server's job.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Final
from urllib.parse import unquote, unquote_plus

from exchange.identifiers import ClientId, GlobalGroupId
from exchange.policy.model import (
    ALLOWED,
    ALLOWED_UNSAFE,
    BAD_PATH,
    DENIED,
    GRANT_EXPIRED,
    GRANT_NOT_YET_VALID,
    PURPOSE_NOT_ALLOWED,
    USER_ID_REQUIRED,
    Decision,
    Grant,
    LocalGroupId,
    Policy,
    PolicyRequest,
    PolicySet,
    UnsafeAllowAll,
)

MAX_PATH_LENGTH: Final = 8192
_ENCODED_SLASH: Final = re.compile(r"%2f", re.IGNORECASE)
_UNSAFE_ASCII: Final = re.compile(r"[\x00-\x1f\x7f\\%]")
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class BadPath(ValueError):
    """A request path that could mean more than one thing; the message says why."""


def request_segments(path: str) -> tuple[str, ...]:
    """Decode a service-relative request path into its segments, or raise :class:`BadPath`.

    ``""`` and ``"/"`` are the service root (no segments). The path is the raw, still
    percent-encoded path after the service identifier, without the query.
    """
    # (1) bounded text, no encoded slash (RFC 3986 §2.2: %2F is data, but backends disagree)
    if not isinstance(path, str) or len(path) > MAX_PATH_LENGTH:
        raise BadPath("not text or too long")
    if _ENCODED_SLASH.search(path):
        raise BadPath("encoded slash (%2F) in the path")
    # (2) percent-decode exactly once, strict UTF-8 (RFC 3986 §2.1, §2.5)
    try:
        decoded = unquote(path, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadPath("percent-encoding that is not UTF-8") from None
    # (3) nothing a second decoding or a Windows backend would read differently; no controls
    unsafe = _read_two_ways(decoded)
    if unsafe is not None:
        raise BadPath(unsafe)
    if decoded in ("", "/"):
        return ()
    if not decoded.startswith("/"):
        raise BadPath("the path must start with '/'")
    # (4) no empty, '.' or '..' segments (RFC 3986 §5.2.4 would rewrite them)
    segments = tuple(decoded[1:].split("/"))
    for segment in segments:
        if segment in ("", ".", ".."):
            raise BadPath("empty, '.' or '..' segment")
    return segments


def _read_two_ways(decoded: str) -> str | None:
    """Why text decoded once could still be read differently (a second decoding, a Windows
    backend, an invisible or control character), or None."""
    if _UNSAFE_ASCII.search(decoded):
        return "backslash, control character or '%' left after decoding once"
    if not decoded.isascii() and any(
        unicodedata.category(c) in _UNSAFE_CATEGORIES for c in decoded
    ):
        return "invisible or control character"
    return None


# --- one grant ----------------------------------------------------------------------------------


def _client_mismatch(
    policy: PolicySet, grant: Grant, client: ClientId, groups: frozenset[GlobalGroupId]
) -> str | None:
    if isinstance(grant.client, LocalGroupId):
        group = policy.local_group(grant.client)
        if group is not None and client in group.members:
            return None
        return f"client {client} is not a member of local group {grant.client}"
    if isinstance(grant.client, GlobalGroupId):
        if grant.client in groups:
            return None
        return f"client {client} is not a member of global group {grant.client}"
    if grant.client == client:
        return None
    return f"client is {grant.client}, not {client}"


def _scope_mismatch(
    policy: PolicySet,
    grant: Grant,
    request: PolicyRequest,
    method: str,
    segments: tuple[str, ...],
    groups: frozenset[GlobalGroupId],
) -> str | None:
    """Why the request is outside the grant's client/service/method/path scope, if it is."""
    if grant.service != request.service:
        return f"grant is for service {grant.service}"
    client = _client_mismatch(policy, grant, request.client, groups)
    if client is not None:
        return client
    if request.protocol == "soap":
        # PR-MESS §2.3: a SOAP request names its operation by the service code alone
        return None
    if not grant.allows_method(method):
        if not grant.methods:
            return "the grant lists no methods: it allows SOAP requests only"
        return f"method {method} is not in {', '.join(sorted(grant.methods))}"
    if not any(pattern.matches(segments) for pattern in grant.paths):
        shown = "/" + "/".join(segments)
        return f"path {shown} matches none of {', '.join(map(str, grant.paths))}"
    if grant.query is not None:
        names = query_names(request.query)
        if names is None:
            return "the query string could be read more than one way"
        extra = sorted(names - grant.query)
        if extra:
            allowed = ", ".join(sorted(grant.query)) or "no query parameter"
            return f"query parameter {extra[0]!r} is not in {allowed}"
    return None


def query_names(query: str) -> frozenset[str] | None:
    """The parameter names of a raw query string, decoded as a backend would (``+`` is a space,
    percent-decoding once, strict UTF-8); ``None`` if it cannot be read one way only (bad
    percent-encoding, a control character, a name that is still encoded after one decoding)."""
    names: set[str] = set()
    for part in query.split("&"):
        if not part:
            continue
        raw = part.split("=", 1)[0]
        try:
            name = unquote_plus(raw, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            return None
        if _read_two_ways(name) is not None:
            return None
        names.add(name)
    return frozenset(names)


def _validity_failure(grant: Grant, now: datetime) -> tuple[str, str] | None:
    """The code and reason if ``grant`` is not in force at ``now``."""
    if grant.valid_from is not None and now < grant.valid_from:
        return GRANT_NOT_YET_VALID, f"grant is valid from {grant.valid_from.isoformat()}"
    if grant.valid_until is not None and now >= grant.valid_until:
        return GRANT_EXPIRED, f"grant expired at {grant.valid_until.isoformat()}"
    return None


def _condition_failure(
    grant: Grant, request: PolicyRequest, now: datetime
) -> tuple[str, str] | None:
    """The code and reason of the first condition of an in-scope grant that fails at ``now``."""
    validity = _validity_failure(grant, now)
    if validity is not None:
        return validity
    if grant.purposes is not None and request.purpose not in grant.purposes:
        stated = repr(request.purpose) if request.purpose is not None else "no purpose"
        allowed = ", ".join(sorted(grant.purposes))
        return PURPOSE_NOT_ALLOWED, f"{stated} stated; X-Road-Purpose must be one of {allowed}"
    if grant.require_user_id and not request.user_id:
        return USER_ID_REQUIRED, "grant requires X-Road-UserId"
    return None


# --- the decision -------------------------------------------------------------------------------


def _describe(request: PolicyRequest) -> str:
    if request.protocol == "soap":
        return f"{request.client} -> SOAP {request.service}"
    query = f"?{request.query}" if request.query else ""
    return (
        f"{request.client} -> {request.method.upper()} {request.service} "
        f"{request.path or '/'}{query}"
    )


def _denied(
    version: str, code: str, reason: str, considered: list[tuple[str, str]] | None = None
) -> Decision:
    return Decision(False, code, reason, None, None, None, version, tuple(considered or ()))


def _allowed(policy: PolicySet, grant: Grant, considered: list[tuple[str, str]]) -> Decision:
    return Decision(
        allowed=True,
        code=ALLOWED,
        reason=f"allowed by grant {grant.id!r} ({grant.location})",
        grant_id=grant.id,
        grant_source=grant.location,
        fields=grant.fields,
        policy_version=policy.version,
        considered=tuple(considered),
        rate=grant.rate,
    )


def _check_now(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")


def evaluate(
    policy: Policy,
    request: PolicyRequest,
    *,
    groups: frozenset[GlobalGroupId],
    now: datetime,
) -> Decision:
    """Decide whether ``policy`` allows ``request`` at ``now``; deny unless a grant allows it.

    ``groups`` are the client's global groups from the global configuration; local groups come
    from the policy itself.
    """
    _check_now(now)
    # (1) the path means one thing only
    try:
        segments = request_segments(request.path)
    except BadPath as exc:
        return _denied(policy.version, BAD_PATH, f"bad path {request.path[:200]!r}: {exc}")
    if isinstance(policy, UnsafeAllowAll):
        reason = "UNSAFE allow-all policy in force (tests and development only)"
        return Decision(True, ALLOWED_UNSAFE, reason, None, None, None, policy.version)
    method = request.method.upper()
    considered: list[tuple[str, str]] = []
    near_miss: tuple[str, str] | None = None
    for grant in policy.by_service.get(request.service, ()):
        # (2) client, service, method and path are within the grant's scope
        miss = _scope_mismatch(policy, grant, request, method, segments, groups)
        if miss is not None:
            considered.append((grant.id, miss))
            continue
        # (3) validity window, purpose of use and user id hold
        failure = _condition_failure(grant, request, now)
        if failure is not None:
            considered.append((grant.id, failure[1]))
            near_miss = near_miss or (failure[0], f"grant {grant.id!r}: {failure[1]}")
            continue
        return _allowed(policy, grant, considered)
    # (4) deny by default
    if near_miss is not None:
        return _denied(policy.version, near_miss[0], near_miss[1], considered)
    reason = f"no grant allows {_describe(request)}"
    if not considered:
        reason += f" (the policy has no grant for {request.service})"
    return _denied(policy.version, DENIED, reason, considered)


# --- explanation --------------------------------------------------------------------------------


def _diagnose(
    policy: PolicySet,
    grant: Grant,
    request: PolicyRequest,
    segments: tuple[str, ...] | None,
    groups: frozenset[GlobalGroupId],
    now: datetime,
) -> str:
    if segments is None:
        return "not considered: the path was refused"
    miss = _scope_mismatch(policy, grant, request, request.method.upper(), segments, groups)
    if miss is not None:
        return miss
    failure = _condition_failure(grant, request, now)
    if failure is not None:
        return failure[1]
    return "also allows the request, but an earlier grant in file order decided"


def _request_lines(
    policy: Policy, request: PolicyRequest, groups: frozenset[GlobalGroupId]
) -> list[str]:
    lines = [
        f"request:  {_describe(request)}",
        f"          purpose {request.purpose or '-'}, user id {request.user_id or '-'}, "
        f"groups {', '.join(sorted(map(str, groups))) or '-'}",
    ]
    if isinstance(policy, PolicySet) and policy.groups:
        local = ", ".join(map(str, policy.local_groups_of(request.client))) or "-"
        lines.append(f"          local groups {local}")
    return lines


def _grant_lines(policy: PolicySet, grant: Grant) -> list[str]:
    fields = ", ".join(grant.fields) if grant.fields is not None else "the whole response"
    lines = [f"grant:    {grant.id} at {grant.location}"]
    group = policy.local_group(grant.client) if isinstance(grant.client, LocalGroupId) else None
    if group is not None:
        members = ", ".join(sorted(map(str, group.members))) or "(none)"
        lines.append(f"group:    {group.id} ({group.location}): {members}")
    lines.append(f"fields:   {fields or '(none)'}")
    if grant.rate is not None:
        lines.append(f"rate:     {grant.rate} per client")
    return lines


def explain(
    policy: Policy,
    request: PolicyRequest,
    groups: frozenset[GlobalGroupId],
    now: datetime,
) -> str:
    """An operator-readable account of the decision for ``request`` and of every other grant."""
    decision = evaluate(policy, request, groups=groups, now=now)
    verdict = "ALLOWED" if decision.allowed else "DENIED"
    lines = [
        f"decision: {verdict} ({decision.code})",
        f"reason:   {decision.reason}",
        f"policy:   version {decision.policy_version} at {now.isoformat()}",
        *_request_lines(policy, request, groups),
    ]
    if not isinstance(policy, PolicySet):
        return "\n".join(lines)
    chosen = policy.grant(decision.grant_id) if decision.grant_id else None
    if chosen is not None:
        lines += _grant_lines(policy, chosen)
    try:
        segments: tuple[str, ...] | None = request_segments(request.path)
    except BadPath:
        segments = None
    others = [g for g in policy.grants if g is not chosen]
    heading = "other grants" if chosen is not None else "grants"
    lines.append(f"{heading}:" if others else f"{heading}: none")
    for grant in others:
        lines.append(
            f"  - {grant.id} ({grant.location}): "
            f"{_diagnose(policy, grant, request, segments, groups, now)}"
        )
    return "\n".join(lines)
