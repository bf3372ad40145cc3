"""What a client may call: the endpoints a policy grants it, for ``allowedMethods`` (PR-MREST §4).

:func:`allowed_endpoints` answers, for one client at ``now``, which ``(method, path pattern)``
pairs of each service the policy grants: grants naming the client itself, a global group it is a
member of (from the global configuration), or a local group of the policy that lists it; only
grants inside their validity window. Grants that add conditions (purposes of use, a user id, a
rate) still count: the client can meet them. Nothing about other clients' grants, grant ids,
fields or sources is returned, so the answer reveals only what the caller may do.

Client matching and the validity window are :mod:`exchange.policy.evaluate`'s own, so discovery
and enforcement cannot disagree about who a grant covers, or when. Pure functions, no IO; ``now``
is explicit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final

from exchange.identifiers import ClientId, GlobalGroupId, ServiceId
from exchange.policy.evaluate import _check_now, _client_mismatch, _validity_failure
from exchange.policy.model import ANY_METHOD, Grant, Policy, PolicySet, UnsafeAllowAll

Endpoint = tuple[str, str]
"""``(METHOD or "*", path pattern)`` as written in the grant, e.g. ``("GET", "/*")``."""

ALL_ENDPOINTS: Final[tuple[Endpoint, ...]] = ((ANY_METHOD, "/**"),)


def _endpoints(grant: Grant) -> list[Endpoint]:
    methods = [ANY_METHOD] if ANY_METHOD in grant.methods else sorted(grant.methods)
    return [(method, str(path)) for method in methods for path in grant.paths]


def allowed_endpoints(
    policy: Policy,
    client: ClientId,
    services: Iterable[ServiceId],
    *,
    groups: frozenset[GlobalGroupId],
    now: datetime,
) -> dict[ServiceId, tuple[Endpoint, ...]]:
    """The endpoints of each of ``services`` that ``policy`` grants ``client`` at ``now``.

    Services without any such grant are left out. A service granted only by grants without
    ``methods`` (SOAP-only grants) is in the answer with no endpoints: callable over SOAP, not
    over REST. Under :class:`UnsafeAllowAll` every service is open on every endpoint (which is
    the truth under that policy).
    """
    _check_now(now)
    out: dict[ServiceId, tuple[Endpoint, ...]] = {}
    for service in services:
        if isinstance(policy, UnsafeAllowAll):
            out[service] = ALL_ENDPOINTS
            continue
        found = _granted(policy, client, service, groups, now)
        if found is not None:
            out[service] = tuple(found)
    return out


def _granted(
    policy: PolicySet,
    client: ClientId,
    service: ServiceId,
    groups: frozenset[GlobalGroupId],
    now: datetime,
) -> list[Endpoint] | None:
    """The endpoints the covering grants in force name, or None without any such grant."""
    found: dict[Endpoint, None] | None = None
    for grant in policy.by_service.get(service, ()):
        # (1) the grant covers this client (itself, a global group, a local group)
        if _client_mismatch(policy, grant, client, groups) is not None:
            continue
        # (2) and is in force now
        if _validity_failure(grant, now) is not None:
            continue
        found = {} if found is None else found
        for endpoint in _endpoints(grant):
            found.setdefault(endpoint, None)
    return None if found is None else list(found)
