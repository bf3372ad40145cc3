"""The access-policy model (docs/design.md §7): grants, policy sets, requests and decisions.

Values only: frozen, slotted dataclasses and their small parsers (path patterns, rates). A
:class:`PolicySet` holds a provider's grants in file/line order and the version that identifies
the files they came from; an empty set denies everything. :class:`UnsafeAllowAll` is the one
policy that allows everything, named so and warning when built, for tests and development only.

Loading from TOML lives in :mod:`exchange.policy.loader`, evaluation in
:mod:`exchange.policy.evaluate`. This module does no IO.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from exchange.errors import AccessDenied, ConfigurationError
from exchange.identifiers import ClientId, GlobalGroupId, MemberId, ServiceId

logger = logging.getLogger(__name__)

ANY_METHOD: Final = "*"
KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

ALLOWED: Final = "Allowed"
ALLOWED_UNSAFE: Final = "Allowed.UnsafeAllowAll"
DENIED: Final = AccessDenied.code
BAD_PATH: Final = f"{DENIED}.BadPath"
GRANT_EXPIRED: Final = f"{DENIED}.GrantExpired"
GRANT_NOT_YET_VALID: Final = f"{DENIED}.GrantNotYetValid"
PURPOSE_NOT_ALLOWED: Final = f"{DENIED}.PurposeNotAllowed"
USER_ID_REQUIRED: Final = f"{DENIED}.UserIdRequired"

_SHORT_MESSAGES: Final = {
    DENIED: "Access denied",
    BAD_PATH: "Access denied: the request path is not acceptable",
    GRANT_EXPIRED: "Access denied: the access grant has expired",
    GRANT_NOT_YET_VALID: "Access denied: the access grant is not yet valid",
    PURPOSE_NOT_ALLOWED: (
        "Access denied: state an allowed purpose of use (X-Road-Purpose; in SOAP, ext:purpose)"
    ),
    USER_ID_REQUIRED: (
        "Access denied: this service requires a user id (X-Road-UserId; in SOAP, userId)"
    ),
}


class PolicyError(ConfigurationError):
    """A policy file is broken; names the file, the line (when known) and the reason."""

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {reason}")


# --- rates --------------------------------------------------------------------------------------

_RATE: Final = re.compile(r"([1-9][0-9]{0,8})/(second|minute|hour|day)")
_PERIOD_SECONDS: Final = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True, slots=True)
class Rate:
    """A quota such as ``600/minute``; the server enforces it per client."""

    count: int
    period: str

    @classmethod
    def parse(cls, text: str) -> Rate:
        match = _RATE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"bad rate {text!r}: expected N/second, N/minute, N/hour or N/day with N a "
                "positive integer, e.g. '600/minute'"
            )
        return cls(int(match.group(1)), match.group(2))

    @property
    def period_seconds(self) -> int:
        return _PERIOD_SECONDS[self.period]

    def __str__(self) -> str:
        return f"{self.count}/{self.period}"


# --- path patterns ------------------------------------------------------------------------------

_LITERAL_SEGMENT: Final = re.compile(r"[\w\-.~!$&'()+,;=:@]+")


@dataclass(frozen=True, slots=True)
class PathPattern:
    """An X-Road endpoint style path pattern, matched segment-wise against a decoded path.

    ``*`` matches exactly one non-empty segment, ``**`` (only as the last segment) zero or more;
    other segments match literally and case-sensitively. ``/`` is the service root only.
    """

    text: str
    fixed: tuple[str, ...]
    rest: bool

    @classmethod
    def parse(cls, text: str) -> PathPattern:
        if not isinstance(text, str) or not text.startswith("/"):
            raise ValueError(f"bad path pattern {text!r}: must start with '/'")
        if text == "/":
            return cls(text, (), False)
        segments = text[1:].split("/")
        for index, segment in enumerate(segments):
            _check_pattern_segment(text, segment, last=index == len(segments) - 1)
        rest = segments[-1] == "**"
        return cls(text, tuple(segments[:-1] if rest else segments), rest)

    def matches(self, segments: tuple[str, ...]) -> bool:
        """Whether already-validated, decoded path ``segments`` fall under this pattern."""
        fixed = self.fixed
        if len(segments) < len(fixed) or (not self.rest and len(segments) != len(fixed)):
            return False
        return all(p == "*" or p == s for p, s in zip(fixed, segments, strict=False))

    def __str__(self) -> str:
        return self.text


def _check_pattern_segment(text: str, segment: str, *, last: bool) -> None:
    if segment == "":
        raise ValueError(f"bad path pattern {text!r}: empty segment ('//' or a trailing '/')")
    if segment == "**":
        if not last:
            raise ValueError(f"bad path pattern {text!r}: '**' is only allowed as the last segment")
        return
    if segment == "*":
        return
    if segment in (".", ".."):
        raise ValueError(f"bad path pattern {text!r}: '.' and '..' segments are not allowed")
    if "*" in segment:
        raise ValueError(
            f"bad path pattern {text!r}: '*' and '**' must be a whole segment, e.g. '/*/address'"
        )
    if _LITERAL_SEGMENT.fullmatch(segment) is None:
        raise ValueError(
            f"bad path pattern {text!r}: segment {segment!r} may only contain letters, "
            "digits and - . _ ~ ! $ & ' ( ) + , ; = : @ (write it decoded, without %)"
        )


# --- local groups -------------------------------------------------------------------------------

LOCAL_PREFIX: Final = "local:"


@dataclass(frozen=True, slots=True, order=True)
class LocalGroupId:
    """A group the provider defines in its own policy files (``group = "local:NAME"``)."""

    name: str

    def __str__(self) -> str:
        return f"{LOCAL_PREFIX}{self.name}"


@dataclass(frozen=True, slots=True)
class LocalGroup:
    """A ``[groups]`` entry: a name and the client identifiers that are its members."""

    name: str
    members: frozenset[ClientId]
    source: str
    line: int

    @property
    def id(self) -> LocalGroupId:
        return LocalGroupId(self.name)

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"


Subject = ClientId | GlobalGroupId | LocalGroupId


# --- grants and policy sets ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """One ``[[grant]]`` table: who may call what, how, and what they get back.

    ``client`` is a subsystem (or member) matched exactly, or a global or local group whose
    members match.
    ``methods`` holds upper-case method names or ``*``. ``fields=None`` releases the whole
    response. ``purposes=None`` accepts any (or no) purpose of use. ``query=None`` accepts any
    query string; a set names the only query parameters a request may carry (empty: none).
    """

    id: str
    client: Subject
    service: ServiceId
    methods: frozenset[str]
    paths: tuple[PathPattern, ...]
    source: str
    line: int
    fields: tuple[str, ...] | None = None
    purposes: frozenset[str] | None = None
    require_user_id: bool = False
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    rate: Rate | None = None
    query: frozenset[str] | None = None

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def is_group_grant(self) -> bool:
        return isinstance(self.client, GlobalGroupId | LocalGroupId)

    def allows_method(self, method: str) -> bool:
        return ANY_METHOD in self.methods or method in self.methods


@dataclass(frozen=True, slots=True)
class PolicySet:
    """A provider's grants in file/line order, its local groups, and the files' version."""

    provider: MemberId | None
    grants: tuple[Grant, ...]
    version: str
    groups: tuple[LocalGroup, ...] = ()
    by_service: dict[ServiceId, tuple[Grant, ...]] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        index: dict[ServiceId, list[Grant]] = {}
        for grant in self.grants:
            index.setdefault(grant.service, []).append(grant)
        object.__setattr__(self, "by_service", {s: tuple(g) for s, g in index.items()})

    def grant(self, grant_id: str) -> Grant | None:
        return next((g for g in self.grants if g.id == grant_id), None)

    def local_group(self, group: LocalGroupId) -> LocalGroup | None:
        return next((g for g in self.groups if g.name == group.name), None)

    def local_groups_of(self, client: ClientId) -> tuple[LocalGroupId, ...]:
        """The local groups that list ``client``, in definition order."""
        return tuple(g.id for g in self.groups if client in g.members)


@dataclass(frozen=True, slots=True)
class UnsafeAllowAll:
    """A policy that allows every request. For tests and development only; warns when built."""

    version: str = "unsafe-allow-all"

    def __post_init__(self) -> None:
        logger.warning(
            "UNSAFE: an allow-all access policy is in force; every client may call every "
            "service and receive every field. Never use this in production."
        )


Policy = PolicySet | UnsafeAllowAll


# --- requests and decisions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """What a policy judges. ``path`` is relative to the service and still percent-encoded."""

    client: ClientId
    service: ServiceId
    method: str
    path: str
    purpose: str | None = None
    user_id: str | None = None
    protocol: str = "rest"
    """``"soap"`` for X-Road message protocol 4.0 requests: the service code is the operation,
    so a grant's ``methods`` and ``paths`` are not consulted (they scope REST requests only)."""
    query: str = ""
    """The raw query string (after ``?``, still percent-encoded), judged by a grant's ``query``."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of evaluating a policy; written into the message log.

    ``considered`` lists ``(grant id, why it did not match)`` for the grants of the requested
    service that were tried before the decision was reached. ``fields`` are the granted field
    paths (``None`` = whole response). ``rate`` is the allowing grant's quota, for the server.
    """

    allowed: bool
    code: str
    reason: str
    grant_id: str | None
    grant_source: str | None
    fields: tuple[str, ...] | None
    policy_version: str
    considered: tuple[tuple[str, str], ...] = ()
    rate: Rate | None = None

    def log_entry(self) -> dict[str, object]:
        """The decision as a JSON-ready dict for the message log."""
        return {
            "allowed": self.allowed,
            "code": self.code,
            "grant": self.grant_id,
            "source": self.grant_source,
            "fields": list(self.fields) if self.fields is not None else None,
            "policy_version": self.policy_version,
        }

    def error(self) -> AccessDenied:
        """The error for a denied request: a short message for the peer, the reason inside."""
        if self.allowed:
            raise ValueError("an allowed decision has no error")
        message = _SHORT_MESSAGES.get(self.code, _SHORT_MESSAGES[DENIED])
        return AccessDenied(message, code=self.code, internal=self.reason)
