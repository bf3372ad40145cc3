"""X-Road compatible identifiers (docs/design.md §3): parse, format, validate.

Member ``INSTANCE/CLASS/CODE``, subsystem ``INSTANCE/CLASS/CODE/SUBSYSTEM``, service
``INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICECODE``, security server ``INSTANCE/CLASS/CODE/SERVERCODE``,
global group ``INSTANCE/GROUPCODE``.

Each part is 1..255 characters from ``A-Z a-z 0-9 ' ( ) + , - . = ? _``; parts are
case-sensitive. In URLs and the ``X-Road-Client`` header each part may be percent-encoded
(PR-REST §4.2); :func:`split_encoded` decodes part by part so that an encoded ``/`` can never
split a part. Every parser either returns an identifier or raises :class:`InvalidIdentifier`
(a ``Client.*`` error), nothing else.

Pure functions, no IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, TypeVar
from urllib.parse import quote, unquote

from exchange.errors import InvalidIdentifier

MAX_PART_LENGTH: Final = 255
_PART = re.compile(r"[A-Za-z0-9'()+,\-.=?_]{1,255}")
_SAFE_IN_URL: Final = "'()+,-.=?_"


def validate_part(part: str, what: str = "identifier part", *, code: str | None = None) -> str:
    """Return ``part`` if it is a valid identifier part, else raise :class:`InvalidIdentifier`."""
    if not isinstance(part, str) or _PART.fullmatch(part) is None:
        shown = part[:40] + ("..." if len(part) > 40 else "") if isinstance(part, str) else part
        raise InvalidIdentifier(
            f"invalid {what} {shown!r}: parts are 1-{MAX_PART_LENGTH} characters of "
            "A-Z a-z 0-9 ' ( ) + , - . = ? _",
            code=code,
        )
    return part


def split_encoded(text: str, *, what: str = "identifier", code: str | None = None) -> list[str]:
    """Split on ``/`` and percent-decode each part separately (UTF-8, strict)."""
    if not isinstance(text, str):
        raise InvalidIdentifier(f"invalid {what}: not text", code=code)
    parts = []
    for raw in text.split("/"):
        try:
            parts.append(unquote(raw, encoding="utf-8", errors="strict"))
        except UnicodeDecodeError:
            raise InvalidIdentifier(f"invalid {what}: bad percent-encoding", code=code) from None
    return parts


def _encode(part: str) -> str:
    return quote(part, safe=_SAFE_IN_URL)


@dataclass(frozen=True, slots=True, order=True)
class MemberId:
    instance: str
    member_class: str
    member_code: str
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_text", f"{self.instance}/{self.member_class}/{self.member_code}")

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.instance, self.member_class, self.member_code)

    def __str__(self) -> str:
        return self._text

    def encoded(self) -> str:
        return "/".join(_encode(p) for p in self.parts)

    @property
    def member(self) -> MemberId:
        return self

    def subsystem(self, subsystem_code: str) -> SubsystemId:
        code = validate_part(subsystem_code, "subsystem code")
        return SubsystemId(self.instance, self.member_class, self.member_code, code)

    def security_server(self, server_code: str) -> SecurityServerId:
        code = validate_part(server_code, "server code")
        return SecurityServerId(self.instance, self.member_class, self.member_code, code)


def _made_once(ident: SubsystemId | SecurityServerId, member_slot: str, last_part: str) -> None:
    """Set, once, the member an identifier of four parts belongs to and its text."""
    member = MemberId(ident.instance, ident.member_class, ident.member_code)
    object.__setattr__(ident, member_slot, member)
    object.__setattr__(ident, "_text", f"{member._text}/{last_part}")


@dataclass(frozen=True, slots=True, order=True)
class SubsystemId:
    instance: str
    member_class: str
    member_code: str
    subsystem_code: str
    _member: MemberId = field(init=False, repr=False, compare=False)
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _made_once(self, "_member", self.subsystem_code)

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.instance, self.member_class, self.member_code, self.subsystem_code)

    @property
    def member(self) -> MemberId:
        return self._member

    def __str__(self) -> str:
        return self._text

    def encoded(self) -> str:
        return "/".join(_encode(p) for p in self.parts)

    def service(self, service_code: str) -> ServiceId:
        code = validate_part(service_code, "service code")
        return ServiceId(
            self.instance, self.member_class, self.member_code, self.subsystem_code, code
        )


@dataclass(frozen=True, slots=True, order=True)
class ServiceId:
    instance: str
    member_class: str
    member_code: str
    subsystem_code: str
    service_code: str
    _subsystem: SubsystemId = field(init=False, repr=False, compare=False)
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        subsystem = SubsystemId(
            self.instance, self.member_class, self.member_code, self.subsystem_code
        )
        object.__setattr__(self, "_subsystem", subsystem)
        object.__setattr__(self, "_text", f"{subsystem._text}/{self.service_code}")

    @property
    def parts(self) -> tuple[str, ...]:
        return (
            self.instance,
            self.member_class,
            self.member_code,
            self.subsystem_code,
            self.service_code,
        )

    @property
    def subsystem(self) -> SubsystemId:
        return self._subsystem

    @property
    def member(self) -> MemberId:
        return self._subsystem._member

    def __str__(self) -> str:
        return self._text

    def encoded(self) -> str:
        return "/".join(_encode(p) for p in self.parts)


@dataclass(frozen=True, slots=True, order=True)
class SecurityServerId:
    instance: str
    member_class: str
    member_code: str
    server_code: str
    _owner: MemberId = field(init=False, repr=False, compare=False)
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _made_once(self, "_owner", self.server_code)

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.instance, self.member_class, self.member_code, self.server_code)

    @property
    def owner(self) -> MemberId:
        return self._owner

    def __str__(self) -> str:
        return self._text


@dataclass(frozen=True, slots=True, order=True)
class GlobalGroupId:
    instance: str
    group_code: str

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.instance, self.group_code)

    def __str__(self) -> str:
        return f"{self.instance}/{self.group_code}"


ClientId = MemberId | SubsystemId


def _parts(text: str, count: int, what: str, *, encoded: bool, code: str | None) -> list[str]:
    if not isinstance(text, str):
        raise InvalidIdentifier(f"invalid {what}: not text", code=code)
    if len(text) > 6 * (MAX_PART_LENGTH + 1) * 3:
        raise InvalidIdentifier(f"invalid {what}: too long", code=code)
    parts = split_encoded(text, what=what, code=code) if encoded else text.split("/")
    if len(parts) != count:
        raise InvalidIdentifier(
            f"invalid {what} {text[:80]!r}: expected {count} parts separated by '/', "
            f"got {len(parts)}",
            code=code,
        )
    return [validate_part(p, f"{what} part", code=code) for p in parts]


_Id = TypeVar("_Id", "MemberId", "SubsystemId", "ServiceId", "SecurityServerId", "GlobalGroupId")


_PARSED: dict[tuple[type, str, bool], object] = {}
_PARSED_MAX: Final = 1024


def _parse(
    cls: type[_Id], count: int, what: str, text: str, encoded: bool, code: str | None
) -> _Id:
    """Identifiers are immutable values, so each text is parsed once: every exchange names the
    same few clients, services and servers. Refusals raise and are not remembered."""
    if not isinstance(text, str):
        raise InvalidIdentifier(f"invalid {what}: not text", code=code)
    key = (cls, text, encoded)
    known = _PARSED.get(key)
    if isinstance(known, cls):
        return known
    parsed = cls(*_parts(text, count, what, encoded=encoded, code=code))
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[key] = parsed
    return parsed


def parse_member(text: str, *, encoded: bool = False, code: str | None = None) -> MemberId:
    return _parse(MemberId, 3, "member identifier", text, encoded, code)


def parse_subsystem(text: str, *, encoded: bool = False, code: str | None = None) -> SubsystemId:
    return _parse(SubsystemId, 4, "subsystem identifier", text, encoded, code)


def parse_service(text: str, *, encoded: bool = False, code: str | None = None) -> ServiceId:
    return _parse(ServiceId, 5, "service identifier", text, encoded, code)


def parse_security_server(
    text: str, *, encoded: bool = False, code: str | None = None
) -> SecurityServerId:
    return _parse(SecurityServerId, 4, "security server identifier", text, encoded, code)


def parse_global_group(
    text: str, *, encoded: bool = False, code: str | None = None
) -> GlobalGroupId:
    return _parse(GlobalGroupId, 2, "global group identifier", text, encoded, code)


def parse_client(text: str, *, encoded: bool = False, code: str | None = None) -> ClientId:
    """A client is a member (3 parts) or, usually, a subsystem (4 parts)."""
    if not isinstance(text, str):
        raise InvalidIdentifier("invalid client identifier: not text", code=code)
    count = text.count("/") + 1
    if count == 3:
        return parse_member(text, encoded=encoded, code=code)
    return parse_subsystem(text, encoded=encoded, code=code)
