"""Loading access policies from a provider's directory of TOML files (docs/design.md §7).

Every ``*.toml`` file directly in the directory (names starting with ``.`` are editor files and
skipped) holds ``provider = "INSTANCE/CLASS/CODE"``, ``[[grant]]`` tables and optionally a
``[groups]`` table of local groups (``name = ["client id", ...]``) that a grant of any file of the
directory names with ``group = "local:name"``. Everything is
checked before anything is used: a broken file raises :class:`PolicyError` naming the file, the
line and the reason, and nothing of the directory is loaded. An empty directory is a valid,
deny-all policy. The policy version is the first 16 hex digits of SHA-256 over the files' names
and bytes in name order, so the message log can name exactly which files made a decision.

:class:`PolicyStore` keeps the policy in force and reloads it on request or when a poll sees the
files change; a broken reload keeps the old policy. This module reads files; it does not evaluate
requests (see :mod:`exchange.policy.evaluate`).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any, Final, Protocol, TypeVar

from exchange.errors import InvalidIdentifier
from exchange.identifiers import (
    GlobalGroupId,
    MemberId,
    ServiceId,
    parse_client,
    parse_global_group,
    parse_member,
    parse_service,
)
from exchange.policy.fields import compile_fields
from exchange.policy.model import (
    ANY_METHOD,
    KNOWN_METHODS,
    LOCAL_PREFIX,
    Grant,
    LocalGroup,
    LocalGroupId,
    PathPattern,
    PolicyError,
    PolicySet,
    Rate,
    Subject,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

FILE_KEYS: Final = ("provider", "groups", "grant")
GRANT_KEYS: Final = (
    "id",
    "client",
    "group",
    "service",
    "methods",
    "paths",
    "fields",
    "purposes",
    "require_user_id",
    "valid_from",
    "valid_until",
    "rate",
    "query",
)
DEFAULT_PATHS: Final = ("/**",)
_GRANT_ID: Final = re.compile(r"[A-Za-z0-9._\-]{1,64}")
_PURPOSE: Final = re.compile(r"[A-Za-z0-9._:/\-]{1,128}")
_QUERY_NAME: Final = re.compile(r"[A-Za-z0-9._\-\[\]]{1,128}")
_GRANT_HEADER: Final = re.compile(r"^[ \t]*\[\[[ \t]*grant[ \t]*\]\]", re.MULTILINE)
_GROUPS_HEADER: Final = re.compile(r"^[ \t]*\[[ \t]*groups[ \t]*\]", re.MULTILINE)
_TOML_POSITION: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


# --- one file -----------------------------------------------------------------------------------


class _Source:
    """A policy file's name and text, for error messages with line numbers."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.lines = text.splitlines()
        self.headers = [text.count("\n", 0, m.start()) + 1 for m in _GRANT_HEADER.finditer(text)]
        groups = _GROUPS_HEADER.search(text)
        self.groups_line = text.count("\n", 0, groups.start()) + 1 if groups else 0

    def header_line(self, index: int) -> int:
        return self.headers[index] if index < len(self.headers) else 1

    def key_line(self, start: int, key: str) -> int:
        """The line of ``key = ...`` in the table starting at ``start`` (else ``start``)."""
        pattern = re.compile(rf"[ \t]*{re.escape(key)}[ \t]*=")
        for number in range(start + 1, len(self.lines) + 1):
            line = self.lines[number - 1]
            if line.lstrip().startswith("["):
                break
            if pattern.match(line):
                return number
        return start


def _decode(name: str, data: bytes) -> tuple[str, dict[str, Any]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PolicyError(name, line, "not valid UTF-8") from None
    try:
        return text, tomllib.loads(text)
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively: a file of thousands of
        # '[' exhausts the stack; that is a broken file, not a crash of whoever loads it
        raise PolicyError(name, None, "TOML nested too deeply (arrays or inline tables)") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _TOML_POSITION.search(message)
        if position is None:
            raise PolicyError(name, None, f"TOML syntax error: {message}") from None
        reason = f"TOML syntax error: {message[: position.start()]} (column {position.group(2)})"
        raise PolicyError(name, int(position.group(1)), reason) from None


def _unknown_key(keys: Iterable[str], allowed: tuple[str, ...]) -> tuple[str, str] | None:
    """The first key not in ``allowed`` and a message suggesting the closest allowed key."""
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(allowed)})"
            return key, f"unknown key {key!r}{hint}"
    return None


@dataclass(frozen=True, slots=True)
class _ParsedFile:
    provider: MemberId
    grants: tuple[Grant, ...]
    groups: tuple[LocalGroup, ...]
    references: tuple[tuple[Grant, int], ...]


def parse_policy_file(
    name: str, data: bytes, provider: MemberId | None
) -> tuple[MemberId, tuple[Grant, ...]]:
    """Parse and check one policy file (sans-IO); ``provider``, if given, must match the file's.

    References to local groups are checked by :func:`build_policy_set`, which sees every file.
    """
    parsed = _parse_file(name, data, provider)
    return parsed.provider, parsed.grants


def _parse_file(name: str, data: bytes, provider: MemberId | None) -> _ParsedFile:
    text, document = _decode(name, data)
    source = _Source(name, text)
    unknown = _unknown_key(document, FILE_KEYS)
    if unknown is not None:
        raise PolicyError(name, source.key_line(0, unknown[0]), unknown[1])
    declared = _file_provider(source, document)
    if provider is not None and declared != provider:
        raise PolicyError(
            name,
            source.key_line(0, "provider"),
            f"provider {declared} does not match {provider}; a policy directory holds the "
            "grants of one provider",
        )
    tables = document.get("grant", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise PolicyError(
            name, source.key_line(0, "grant"), "'grant' must be a list of [[grant]] tables"
        )
    parsers = [
        _GrantParser(source, source.header_line(i), table, declared)
        for i, table in enumerate(tables)
    ]
    grants = tuple(parser.grant() for parser in parsers)
    references = tuple(
        (grant, parser.group_line)
        for grant, parser in zip(grants, parsers, strict=True)
        if isinstance(grant.client, LocalGroupId)
    )
    return _ParsedFile(declared, grants, _local_groups(source, document), references)


def _local_groups(source: _Source, document: Mapping[str, Any]) -> tuple[LocalGroup, ...]:
    """The ``[groups]`` table: each name a list of client identifiers."""
    table = document.get("groups", {})
    start = source.groups_line or source.key_line(0, "groups")
    if not isinstance(table, dict):
        raise PolicyError(source.name, start, "'groups' must be a table: [groups]")
    groups = []
    for name, members in table.items():
        line = source.key_line(start, name)
        if _GRANT_ID.fullmatch(name) is None:
            raise PolicyError(
                source.name, line, f"bad group name {name!r}: use 1-64 of A-Z a-z 0-9 . _ -"
            )
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise PolicyError(
                source.name, line, f"group {name!r} must be a list of client identifiers"
            )
        try:
            clients = frozenset(parse_client(m) for m in members)
        except InvalidIdentifier as exc:
            raise PolicyError(source.name, line, f"group {name!r}: {exc.message}") from None
        groups.append(LocalGroup(name, clients, source.name, line))
    return tuple(groups)


def _file_provider(source: _Source, document: Mapping[str, Any]) -> MemberId:
    value = document.get("provider")
    if not isinstance(value, str):
        raise PolicyError(
            source.name, 1, "missing 'provider = \"INSTANCE/CLASS/CODE\"' (the provider member)"
        )
    try:
        return parse_member(value)
    except InvalidIdentifier as exc:
        raise PolicyError(source.name, source.key_line(0, "provider"), exc.message) from None


class _GrantParser:
    """Checks one ``[[grant]]`` table; every refusal names the line of the offending key."""

    def __init__(
        self, source: _Source, line: int, table: Mapping[str, Any], provider: MemberId
    ) -> None:
        self.source = source
        self.line = line
        self.table = table
        self.provider = provider
        self.label = "grant"
        self.group_line = line

    def fail(self, key: str | None, reason: str) -> PolicyError:
        line = self.source.key_line(self.line, key) if key else self.line
        return PolicyError(self.source.name, line, f"{self.label}: {reason}")

    def grant(self) -> Grant:
        grant_id = self.required("id", str)
        if _GRANT_ID.fullmatch(grant_id) is None:
            raise self.fail("id", f"bad grant id {grant_id!r}: use 1-64 of A-Z a-z 0-9 . _ -")
        self.label = f"grant {grant_id!r}"
        unknown = _unknown_key(self.table, GRANT_KEYS)
        if unknown is not None:
            raise self.fail(unknown[0], unknown[1])
        valid_from, valid_until = self.validity()
        return Grant(
            id=grant_id,
            client=self.client(),
            service=self.service(),
            methods=self.methods(),
            paths=self.paths(),
            source=self.source.name,
            line=self.line,
            fields=self.fields(),
            purposes=self.purposes(),
            require_user_id=self.optional("require_user_id", bool) or False,
            valid_from=valid_from,
            valid_until=valid_until,
            rate=self.parsed("rate", Rate.parse),
            query=self.query(),
        )

    def required(self, key: str, kind: type[T]) -> T:
        value = self.optional(key, kind)
        if value is None:
            raise self.fail(None, f"missing {key!r}")
        return value

    def optional(self, key: str, kind: type[T]) -> T | None:
        value = self.table.get(key)
        if value is not None and not isinstance(value, kind):
            raise self.fail(key, f"{key!r} must be a {_KIND_NAMES.get(kind, kind.__name__)}")
        return value

    def string_list(self, key: str) -> list[str] | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, f"{key!r} must be a list of strings")
        return value

    def parsed(self, key: str, parse: Callable[[str], T]) -> T | None:
        value = self.optional(key, str)
        return None if value is None else self.convert(key, value, parse)

    def parsed_required(self, key: str, parse: Callable[[str], T]) -> T:
        return self.convert(key, self.required(key, str), parse)

    def convert(self, key: str, value: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(value)
        except (ValueError, InvalidIdentifier) as exc:
            reason = exc.message if isinstance(exc, InvalidIdentifier) else str(exc)
            raise self.fail(key, reason) from None

    def client(self) -> Subject:
        if ("client" in self.table) == ("group" in self.table):
            raise self.fail(None, "give exactly one of 'client' (a subsystem) or 'group'")
        if "group" in self.table:
            self.group_line = self.source.key_line(self.line, "group")
            return self.parsed_required("group", _parse_group)
        return self.parsed_required("client", parse_client)

    def service(self) -> ServiceId:
        service = self.parsed_required("service", parse_service)
        if service.member != self.provider:
            raise self.fail(
                "service",
                f"service {service} belongs to {service.member}, but this policy is for "
                f"provider {self.provider}",
            )
        return service

    def methods(self) -> frozenset[str]:
        methods = self.string_list("methods")
        if methods is None:
            # a grant without methods allows no REST request: it is for a SOAP service
            return frozenset()
        if not methods:
            raise self.fail("methods", "'methods' must list at least one method, or [\"*\"]")
        names = frozenset(m.upper() for m in methods)
        if ANY_METHOD in names and len(names) > 1:
            raise self.fail("methods", "'*' already allows every method; list it alone")
        unknown = sorted(names - KNOWN_METHODS - {ANY_METHOD})
        if unknown:
            raise self.fail(
                "methods",
                f"unknown method {unknown[0]!r} (allowed: {', '.join(sorted(KNOWN_METHODS))}, *)",
            )
        return names

    def paths(self) -> tuple[PathPattern, ...]:
        paths = self.string_list("paths")
        if paths is not None and not paths:
            raise self.fail("paths", "'paths' is empty; omit it to allow every path ('/**')")
        try:
            return tuple(PathPattern.parse(p) for p in paths or DEFAULT_PATHS)
        except ValueError as exc:
            raise self.fail("paths", str(exc)) from None

    def fields(self) -> tuple[str, ...] | None:
        fields = self.string_list("fields")
        if fields is None:
            return None
        unique = tuple(dict.fromkeys(fields))
        try:
            compile_fields(unique)
        except ValueError as exc:
            raise self.fail("fields", str(exc)) from None
        return unique

    def purposes(self) -> frozenset[str] | None:
        purposes = self.string_list("purposes")
        if purposes is None:
            return None
        if not purposes:
            raise self.fail("purposes", "'purposes' is empty; omit it to accept any purpose")
        for purpose in purposes:
            if _PURPOSE.fullmatch(purpose) is None:
                raise self.fail("purposes", f"bad purpose {purpose!r}: use A-Z a-z 0-9 . _ : / -")
        return frozenset(purposes)

    def query(self) -> frozenset[str] | None:
        names = self.string_list("query")
        if names is None:
            return None
        for name in names:
            if _QUERY_NAME.fullmatch(name) is None:
                raise self.fail(
                    "query", f"bad query parameter name {name!r}: use A-Z a-z 0-9 . _ - [ ]"
                )
        return frozenset(names)

    def validity(self) -> tuple[datetime | None, datetime | None]:
        start = self.instant("valid_from")
        end = self.instant("valid_until")
        if start is not None and end is not None and end <= start:
            raise self.fail("valid_until", "'valid_until' must be later than 'valid_from'")
        return start, end

    def instant(self, key: str) -> datetime | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise self.fail(
                key, f"{key!r} must be a TOML date-time with a time zone, e.g. 2026-01-01T00:00:00Z"
            )
        return value


def _parse_group(text: str) -> GlobalGroupId | LocalGroupId:
    if not text.startswith(LOCAL_PREFIX):
        return parse_global_group(text)
    name = text.removeprefix(LOCAL_PREFIX)
    if _GRANT_ID.fullmatch(name) is None:
        raise ValueError(f"bad local group {text!r}: 'local:' and 1-64 of A-Z a-z 0-9 . _ -")
    return LocalGroupId(name)


_KIND_NAMES: Final[dict[type, str]] = {str: "string", bool: "boolean (true or false)"}


# --- a directory --------------------------------------------------------------------------------


def policy_files(directory: Path) -> list[Path]:
    """The files a policy directory's policy is read from: its ``*.toml``, hidden ones aside."""
    return _policy_files(directory)


def _policy_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise PolicyError(str(directory), None, "policy directory does not exist")
    return sorted(
        (p for p in directory.glob("*.toml") if not p.name.startswith(".") and p.is_file()),
        key=lambda p: p.name,
    )


def policy_version(files: Iterable[tuple[str, bytes]]) -> str:
    """First 16 hex digits of SHA-256 over (file name, bytes) in name order, length-prefixed.

    Only the file name counts, not the directory, so a copied policy keeps its version.
    """
    digest = hashlib.sha256()
    for name, data in sorted((PurePath(n).name, d) for n, d in files):
        encoded = name.encode("utf-8")
        for part in (encoded, data):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()[:16]


def build_policy_set(
    files: Iterable[tuple[str, bytes]], provider: MemberId | None = None
) -> PolicySet:
    """Parse named file contents into one checked :class:`PolicySet` (sans-IO)."""
    contents = sorted(files, key=lambda f: f[0])
    parsed: list[_ParsedFile] = []
    for name, data in contents:
        parsed.append(_parse_file(name, data, provider))
        provider = parsed[-1].provider
    grants = _unique((g for f in parsed for g in f.grants), lambda g: g.id, "grant id")
    groups = _unique((g for f in parsed for g in f.groups), lambda g: g.name, "local group")
    _check_references(parsed, {g.name for g in groups})
    return PolicySet(provider, grants, policy_version(contents), groups)


class _Located(Protocol):
    """A grant or a local group: defined at a line of a policy file."""

    @property
    def source(self) -> str: ...

    @property
    def line(self) -> int: ...

    @property
    def location(self) -> str: ...


_L = TypeVar("_L", bound=_Located)


def _unique(items: Iterable[_L], key: Callable[[_L], str], kind: str) -> tuple[_L, ...]:
    """``items`` in order; a second item with the same key is ``duplicate <kind> 'key'``."""
    seen: dict[str, _L] = {}
    for item in items:
        name = key(item)
        if name in seen:
            raise PolicyError(
                item.source,
                item.line,
                f"duplicate {kind} {name!r} (first at {seen[name].location})",
            )
        seen[name] = item
    return tuple(seen.values())


def _check_references(parsed: Iterable[_ParsedFile], defined: set[str]) -> None:
    for grant, line in (r for f in parsed for r in f.references):
        assert isinstance(grant.client, LocalGroupId)
        if grant.client.name not in defined:
            known = ", ".join(sorted(defined)) or "none is defined"
            raise PolicyError(
                grant.source,
                line,
                f"grant {grant.id!r}: unknown local group {grant.client} "
                f"(define it in a [groups] table; known: {known})",
            )


def load_policy_dir(path: str | os.PathLike[str], provider: MemberId | None = None) -> PolicySet:
    """Load and check every policy file in ``path``; raise :class:`PolicyError` on any problem.

    With ``provider`` given, every file must name that provider; otherwise all files must agree.
    """
    directory = Path(path)
    files = [(str(p), p.read_bytes()) for p in _policy_files(directory)]
    return build_policy_set(files, provider)


# --- the policy in force ------------------------------------------------------------------------

Snapshot = tuple[tuple[str, int, int], ...]


def _snapshot(directory: Path) -> Snapshot:
    try:
        files = _policy_files(directory)
        return tuple((p.name, (st := p.stat()).st_mtime_ns, st.st_size) for p in files)
    except (OSError, PolicyError):
        return ()


Files = tuple[tuple[str, bytes], ...]
ReloadHook = Callable[[Files, Files, "PolicySet | PolicyError"], object]


def _read_files(directory: Path) -> Files:
    return tuple((str(p), p.read_bytes()) for p in _policy_files(directory))


class PolicyStore:
    """The provider's policy in force, reloaded from its directory; a broken reload changes nothing.

    Construction loads the directory and raises :class:`PolicyError` if it is broken (a server must
    not start on a broken policy). ``last_error`` keeps the most recent reload failure; ``files``
    holds the names and bytes of the files in force. ``on_reload(old_files, new_files, outcome)``,
    if given, is called for every changed version before it takes force (outcome: the new
    :class:`PolicySet`) and for every refused reload (outcome: the :class:`PolicyError`), e.g.
    :func:`exchange.policy.audit.record_reload` bound to a trail. If it raises on a change, the
    change does not take force and the next poll tries again.

    Whatever fails in a reload (a broken file, an unreadable directory, the hook, a bug of ours)
    keeps the policy in force, is logged, and raises :class:`PolicyError`; ``last_error`` and
    ``last_error_at`` (``now()`` when it failed) keep it until a reload succeeds, for
    :meth:`health`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        provider: MemberId | None = None,
        *,
        on_reload: ReloadHook | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.provider = provider
        self.on_reload = on_reload
        self._now = now
        self._snapshot = _snapshot(self.path)
        self.files = _read_files(self.path)
        self._current = build_policy_set(self.files, provider)
        self.last_error: PolicyError | None = None
        self.last_error_at: float | None = None

    @property
    def current(self) -> PolicySet:
        return self._current

    def reload(self) -> bool:
        """Load the files again; return whether the policy version changed.

        Raises :class:`PolicyError` (and keeps the old policy in force) if anything fails.
        """
        self._snapshot = _snapshot(self.path)
        files: Files = ()
        try:
            files = _read_files(self.path)
            new = build_policy_set(files, self.provider)
        except Exception as exc:
            error = self._as_policy_error(exc)
            self._refused(files, error)
            raise error from None
        changed = new.version != self._current.version
        if changed:
            try:
                self._accept(files, new)
            except Exception as exc:
                error = PolicyError(
                    str(self.path),
                    None,
                    f"version {new.version} not put in force: recording it failed "
                    f"({type(exc).__name__}: {exc})",
                )
                self._failed(error)
                raise error from exc
        self.last_error = self.last_error_at = None
        return changed

    def health(self) -> dict[str, str | None]:
        """The version in force and the last reload failure (its reason and ISO time), if the
        last reload failed."""
        at = self.last_error_at
        return {
            "version": self._current.version,
            "last_reload_error": None if self.last_error is None else self.last_error.message,
            "last_reload_error_at": (
                None
                if at is None
                else datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
            ),
        }

    def _as_policy_error(self, exc: Exception) -> PolicyError:
        if isinstance(exc, PolicyError):
            return exc
        if isinstance(exc, OSError):
            return PolicyError(str(self.path), None, str(exc))
        # a bug of ours: the operator gets the traceback, the policy in force stays
        logger.error("policy reload failed unexpectedly", exc_info=exc)
        return PolicyError(
            str(self.path), None, f"could not be loaded ({type(exc).__name__}: {exc})"
        )

    def _failed(self, error: PolicyError) -> None:
        self.last_error = error
        self.last_error_at = self._now()

    def _refused(self, files: Files, error: PolicyError) -> None:
        self._failed(error)
        logger.error(
            "policy reload refused, version %s stays in force: %s",
            self._current.version,
            error.message,
        )
        if self.on_reload is not None:
            try:
                self.on_reload(self.files, files, error)
            except Exception:
                logger.exception("could not record the refused policy reload")

    def _accept(self, files: Files, new: PolicySet) -> None:
        if self.on_reload is not None:
            try:
                self.on_reload(self.files, files, new)
            except Exception:
                self._snapshot = ()
                logger.exception("policy %s not put in force: recording it failed", new.version)
                raise
        logger.info("policy version %s -> %s", self._current.version, new.version)
        self.files = files
        self._current = new

    def maybe_reload(self) -> bool:
        """Reload if a file was added, removed or changed (by mtime and size) since the last look.

        Cheap enough for a polling file watch; a broken change raises once, not on every poll.
        """
        if _snapshot(self.path) == self._snapshot:
            return False
        return self.reload()
