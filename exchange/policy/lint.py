"""Finding overlapping and dead grants in a loaded policy (``exchange policy lint``).

Grants are tried in file/line order and the first that allows a request decides
(:mod:`exchange.policy.evaluate`), so two grants whose scopes intersect are worth a look, and a
grant that can never decide is dead. A finding is one of:

- ``overlap``: two grants of the same service for intersecting subjects (the same client, or a
  local group and one of its members, or two local groups sharing a member) whose methods and path
  patterns intersect; the earlier grant wins where both allow a request;
- ``shadowed``: an earlier grant whose scope contains the later one's and whose conditions
  (validity, purposes, user id) are no stricter, so the later grant never decides;
- ``expired``: ``valid_until`` is at or before ``now``;
- ``empty-group``: the grant names a local group with no members;
- ``unknown-field``: a ``fields`` entry that the service's published OpenAPI document describes in
  no answer the grant can reach (:mod:`exchange.policy.schema_fields`; only for services whose
  document the caller gives).

The checks are sound but not complete: a grant covered only by the union of several earlier grants
is reported as overlapping, not as shadowed. Global group membership lives in the global
configuration and is not consulted: a global group only intersects itself. Pure functions, no IO.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations
from typing import Any, Final

from exchange.identifiers import ClientId, ServiceId
from exchange.policy.evaluate import _check_now
from exchange.policy.model import ANY_METHOD, Grant, LocalGroupId, PathPattern, PolicySet
from exchange.policy.schema_fields import undescribed_fields

OVERLAP: Final = "overlap"
SHADOWED: Final = "shadowed"
EXPIRED: Final = "expired"
EMPTY_GROUP: Final = "empty-group"
UNKNOWN_FIELD: Final = "unknown-field"


ServiceDescription = Mapping[str, Any]
"""A REST service's OpenAPI document as ``getOpenAPI`` publishes it (relative to the service)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One lint finding about ``grant`` (and the earlier grant ``other``, if any)."""

    kind: str
    grant: str
    location: str
    message: str
    other: str | None = None
    other_location: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "grant": self.grant,
            "location": self.location,
            "other": self.other,
            "other_location": self.other_location,
            "message": self.message,
        }


# --- scopes -------------------------------------------------------------------------------------


def _segment_meets(a: str, b: str) -> bool:
    return a == b or "*" in (a, b)


def patterns_intersect(a: PathPattern, b: PathPattern) -> bool:
    """Whether some path matches both ``a`` and ``b``."""
    if not a.rest and not b.rest and len(a.fixed) != len(b.fixed):
        return False
    if (a.rest and not b.rest and len(b.fixed) < len(a.fixed)) or (
        b.rest and not a.rest and len(a.fixed) < len(b.fixed)
    ):
        return False
    return all(_segment_meets(x, y) for x, y in zip(a.fixed, b.fixed, strict=False))


def pattern_covers(outer: PathPattern, inner: PathPattern) -> bool:
    """Whether every path that ``inner`` matches also matches ``outer``."""
    if outer.rest:
        if len(inner.fixed) < len(outer.fixed):
            return False
    elif inner.rest or len(inner.fixed) != len(outer.fixed):
        return False
    return all(o in ("*", i) for o, i in zip(outer.fixed, inner.fixed, strict=False))


def _methods_intersect(a: Grant, b: Grant) -> bool:
    return ANY_METHOD in a.methods or ANY_METHOD in b.methods or bool(a.methods & b.methods)


def _methods_cover(outer: Grant, inner: Grant) -> bool:
    return ANY_METHOD in outer.methods or (
        ANY_METHOD not in inner.methods and inner.methods <= outer.methods
    )


def _members(policy: PolicySet, grant: Grant) -> frozenset[ClientId] | None:
    """The clients a local-group grant names, or ``None`` for any other subject."""
    if not isinstance(grant.client, LocalGroupId):
        return None
    group = policy.local_group(grant.client)
    return group.members if group is not None else frozenset()


def _subjects_intersect(policy: PolicySet, a: Grant, b: Grant) -> bool:
    if a.client == b.client:
        return True
    ma, mb = _members(policy, a), _members(policy, b)
    if ma is not None and mb is not None:
        return bool(ma & mb)
    return (ma is not None and b.client in ma) or (mb is not None and a.client in mb)


def _subject_covers(policy: PolicySet, outer: Grant, inner: Grant) -> bool:
    if outer.client == inner.client:
        return True
    mo, mi = _members(policy, outer), _members(policy, inner)
    if mo is None:
        return False
    return mi <= mo if mi is not None else inner.client in mo


def _scopes_intersect(policy: PolicySet, a: Grant, b: Grant) -> bool:
    return (
        a.service == b.service
        and _subjects_intersect(policy, a, b)
        and _methods_intersect(a, b)
        and any(patterns_intersect(p, q) for p in a.paths for q in b.paths)
    )


def _conditions_no_stricter(outer: Grant, inner: Grant) -> bool:
    """Whenever ``inner``'s conditions hold, ``outer``'s hold too."""
    return (
        (
            outer.purposes is None
            or (inner.purposes is not None and inner.purposes <= outer.purposes)
        )
        and (inner.require_user_id or not outer.require_user_id)
        and (
            outer.valid_from is None
            or (inner.valid_from is not None and inner.valid_from >= outer.valid_from)
        )
        and (
            outer.valid_until is None
            or (inner.valid_until is not None and inner.valid_until <= outer.valid_until)
        )
    )


def shadows(policy: PolicySet, earlier: Grant, later: Grant) -> bool:
    """Whether ``earlier`` decides every request that ``later`` would allow."""
    return (
        earlier.service == later.service
        and _subject_covers(policy, earlier, later)
        and _methods_cover(earlier, later)
        and all(any(pattern_covers(o, i) for o in earlier.paths) for i in later.paths)
        and (earlier.query is None or (later.query is not None and later.query <= earlier.query))
        and _conditions_no_stricter(earlier, later)
    )


# --- findings -----------------------------------------------------------------------------------


def _pair_finding(policy: PolicySet, earlier: Grant, later: Grant) -> Finding | None:
    if shadows(policy, earlier, later):
        message = (
            f"never decides: {earlier.id!r} ({earlier.location}) covers its client, methods and "
            "paths with conditions no stricter, and comes first"
        )
        return Finding(SHADOWED, later.id, later.location, message, earlier.id, earlier.location)
    if _scopes_intersect(policy, earlier, later):
        message = (
            f"overlaps {earlier.id!r} ({earlier.location}) for {later.service}; where both "
            f"allow a request, {earlier.id!r} wins (first in file/line order)"
        )
        return Finding(OVERLAP, later.id, later.location, message, earlier.id, earlier.location)
    return None


def _single_findings(policy: PolicySet, grant: Grant, now: datetime) -> list[Finding]:
    found = []
    if grant.valid_until is not None and grant.valid_until <= now:
        message = f"expired at {grant.valid_until.isoformat()}; it denies with GrantExpired"
        found.append(Finding(EXPIRED, grant.id, grant.location, message))
    if _members(policy, grant) == frozenset():
        message = f"local group {grant.client} has no members; the grant allows nobody"
        found.append(Finding(EMPTY_GROUP, grant.id, grant.location, message))
    return found


def _field_findings(grant: Grant, described: ServiceDescription | None) -> list[Finding]:
    if described is None or not grant.fields or not grant.methods:
        return []  # no document, no field list, or a SOAP grant (fields name XML elements)
    methods = () if ANY_METHOD in grant.methods else grant.methods
    unknown = undescribed_fields(grant.fields, described, methods, grant.paths)
    return [
        Finding(
            UNKNOWN_FIELD,
            grant.id,
            grant.location,
            f"releases field {name!r}, which the service's OpenAPI document does not describe "
            f"in any answer the grant reaches (a typo, or a field the service renamed?)",
        )
        for name in unknown
    ]


def lint(
    policy: PolicySet,
    now: datetime,
    descriptions: Mapping[ServiceId, ServiceDescription] | None = None,
) -> tuple[Finding, ...]:
    """Every finding about ``policy`` at ``now``, grant by grant in file/line order;
    ``descriptions`` are the published OpenAPI documents of services to check ``fields`` with."""
    _check_now(now)
    found: list[Finding] = []
    for grant in policy.grants:
        found += _single_findings(policy, grant, now)
        found += _field_findings(grant, (descriptions or {}).get(grant.service))
    for earlier, later in combinations(policy.grants, 2):
        finding = _pair_finding(policy, earlier, later)
        if finding is not None:
            found.append(finding)
    order = {g.id: i for i, g in enumerate(policy.grants)}
    return tuple(sorted(found, key=lambda f: order[f.grant]))
