"""Configuration files: TOML checked against a typed schema, every problem as
``file:line: key: what is wrong``.

Each role describes its file as a :class:`Schema` (pydantic, strict): unknown keys are refused with
the closest known key as a suggestion, no value is converted from another type (``port = "8080"``
and ``bodies = "no"`` are refused, not read as 8080 and true), ranges are checked, durations are
numbers of seconds. :func:`load_config` reads and checks a file and returns the schema object;
each role turns it into the frozen dataclasses its code uses. ``tomllib`` gives no positions, so
:class:`KeyLines` finds each key's line in the text. This module knows no role's keys.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from exchange.errors import ConfigurationError, ExchangeError

M = TypeVar("M", bound="Schema")
Loc = tuple[str | int, ...]

_TOML_POSITION: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END: Final = " (at end of document)"
_DURATION_TEXT: Final = re.compile(r"\s*\d+(\.\d+)?\s*[a-zA-Z]+\s*")


class Schema(BaseModel):
    """Base of every configuration schema: strict types, unknown keys refused, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- value types shared by the roles' schemas --------------------------------------------------


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a port number from 0 to 65535 (0: any free port), not {value}")
    return value


def _nonempty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) <= len("https://"):
        raise ValueError(f"must be an http:// or https:// URL, not {value!r}")
    return value


Port = Annotated[int, AfterValidator(_port)]
"""A TCP port, 0 to 65535; 0 lets the system choose a free one."""
Text = Annotated[str, AfterValidator(_nonempty)]
"""A string that is not empty (host names, paths, identifiers)."""
HttpUrl = Annotated[str, AfterValidator(_http_url)]


def number(value: float) -> str:
    """A number as a file would write it: ``-1`` for -1.0, ``2.5``."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def at_least(low: float, what: str = "") -> Callable[[Any], Any]:
    """A validator: the number is ``>= low``."""

    def check(value: Any) -> Any:
        if value < low:
            raise ValueError(f"must be at least {number(low)}{what}, not {number(value)}")
        return value

    return check


def seconds(low_exclusive: float = 0.0, high: float | None = None) -> Callable[[float], float]:
    """A validator for durations: a number of seconds in ``(low_exclusive, high]``."""

    def check(value: float) -> float:
        if value <= low_exclusive or (high is not None and value > high):
            low = number(low_exclusive)
            bound = f"in ({low}, {number(high)}]" if high is not None else f"more than {low}"
            raise ValueError(f"must be a number of seconds {bound}, not {number(value)}")
        return value

    return check


def parsed_by(parse: Callable[[str], object]) -> Callable[[str], str]:
    """A validator: ``parse`` accepts the text; its :class:`ExchangeError` becomes the problem."""

    def check(value: str) -> str:
        try:
            parse(value)
        except ExchangeError as exc:
            raise ValueError(exc.message) from None
        return value

    return check


# --- problems ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a configuration file."""

    line: int | None
    key: str
    message: str

    def render(self, path: Path) -> str:
        where = f"{path}:{self.line}" if self.line is not None else str(path)
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "key": self.key, "message": self.message}


class ConfigFileError(ConfigurationError):
    """A configuration file is wrong: each problem on its own line (CLI exit status 2)."""

    def __init__(self, path: Path, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(p.render(path) for p in problems))
        self.path = path
        self.problems = tuple(problems)


def key_name(loc: Loc) -> str:
    """``("services", 2, "timeout")`` as ``services[2].timeout``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# --- where keys are in the text ------------------------------------------------------------------


_HEADER: Final = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(#.*)?$")
_SIMPLE_KEY: Final = r"""(?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*')"""
_KEY: Final = re.compile(rf"^\s*({_SIMPLE_KEY}(?:\s*\.\s*{_SIMPLE_KEY})*)\s*=")
_KEY_PART: Final = re.compile(rf"\s*({_SIMPLE_KEY})\s*(?:\.|$)")


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(m.group(1).strip("\"'") for m in _KEY_PART.finditer(text))


class KeyLines:
    """The line of each key of a TOML text, by its path (``("services", 1, "url")``).

    A line scanner, not a parser (the text has already parsed): it follows ``[table]`` and
    ``[[array]]`` headers and ``key =`` lines, skipping multi-line strings. A key written inside an
    inline table gets the line of the table's own key.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[Loc, int] = {}
        counts: dict[tuple[str, ...], int] = {}
        table: Loc = ()
        in_string: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if in_string is not None:
                if line.count(in_string) % 2 == 1:
                    in_string = None
                continue
            header = _HEADER.match(line) if line.lstrip().startswith("[") else None
            if header is not None:
                table = self._header(header, counts, number)
                continue
            key = _KEY.match(line)
            if key is None:
                continue
            self._lines.setdefault((*table, *_split_key(key.group(1))), number)
            rest = line[key.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_string = quote

    def _header(self, match: re.Match[str], counts: dict[tuple[str, ...], int], number: int) -> Loc:
        names = _split_key(match.group(2))
        if match.group(1) == "[[":
            index = counts.get(names, 0)
            counts[names] = index + 1
            table: Loc = (*names, index)
        else:
            table = names
        self._lines.setdefault(table, number)
        return table

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc``, else of the nearest table or key above it that is written."""
        for end in range(len(loc), 0, -1):
            line = self._lines.get(loc[:end])
            if line is not None:
                return line
        return None

    def table_line(self, loc: Loc) -> int:
        """Where a key missing from the table ``loc`` belongs: the table's line, or line 1."""
        return self.line_of(loc) or 1


# --- validation ----------------------------------------------------------------------------------


def read_toml(path: Path) -> tuple[str, dict[str, Any]]:
    """A file's text and document; unreadable or not TOML is a :class:`ConfigFileError`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigFileError(path, [Problem(line, "", "not valid UTF-8")]) from None
    try:
        return text, tomllib.loads(text)
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively: thousands of '[' exhaust
        # the stack, which is a broken file, not a crash of whoever reads it
        problem = Problem(1, "", "not valid TOML: arrays or inline tables nested too deeply")
        raise ConfigFileError(path, [problem]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(path, [_syntax_problem(str(exc), text)]) from None


def _syntax_problem(message: str, text: str) -> Problem:
    if message.endswith(_AT_END):
        last = len(text.splitlines()) or 1
        return Problem(last, "", f"not valid TOML: {message.removesuffix(_AT_END)} (at the end)")
    position = _TOML_POSITION.search(message)
    if position is None:
        return Problem(None, "", f"not valid TOML: {message}")
    reason = f"not valid TOML: {message[: position.start()]} (column {position.group(2)})"
    return Problem(int(position.group(1)), "", reason)


def check_document(schema: type[M], doc: dict[str, Any], text: str | None, path: Path) -> M:
    """``doc`` checked against ``schema``; every problem at once in one :class:`ConfigFileError`."""
    try:
        return schema.model_validate(doc)
    except ValidationError as exc:
        lines = KeyLines(text or "")
        problems = [_problem(schema, error, lines) for error in exc.errors()]
        problems.sort(key=lambda p: (p.line or 0, p.key))
        raise ConfigFileError(path, problems) from None


def load_config(schema: type[M], path: Path) -> M:
    """Read ``path`` and check it against ``schema``."""
    text, doc = read_toml(path)
    return check_document(schema, doc, text, path)


def problem_at(path: Path, text: str | None, loc: Loc, message: str) -> ConfigFileError:
    """A problem the schema cannot see (it needs other files, or several keys at once)."""
    return ConfigFileError(
        path, [Problem(KeyLines(text or "").line_of(loc), key_name(loc), message)]
    )


def _problem(schema: type[Schema], error: ErrorDetails, lines: KeyLines) -> Problem:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "missing":
        return Problem(lines.table_line(loc[:-1]), key_name(loc), "required, but missing")
    if kind == "extra_forbidden":
        known = _known_keys(schema, loc[:-1])
        what = "table" if isinstance(error.get("input"), dict) else "key"
        return Problem(lines.line_of(loc), key_name(loc), _unknown(what, str(loc[-1]), known))
    return Problem(lines.line_of(loc), key_name(loc), describe_error(error))


def _unknown(what: str, key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown {what}; did you mean {close[0]!r}?"
    return f"unknown {what} (known here: {', '.join(known)})" if known else f"unknown {what}"


_EXPECTED: Final = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "model_type": "a table",
    "dict_type": "a table",
    "list_type": "an array",
    "tuple_type": "an array",
}


def describe_error(error: ErrorDetails) -> str:
    """What is wrong with a value, in the file's terms (TOML types, no Python names)."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in _EXPECTED:
        hint = ""
        if kind == "float_type" and isinstance(value, str) and _DURATION_TEXT.fullmatch(value):
            hint = " (write the number alone, without a unit)"
        return f"must be {_EXPECTED[kind]}, not {toml_value(value)}{hint}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        return f"must be {expected.replace(chr(39), chr(34))}, not {toml_value(value)}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    bounds = {
        "greater_than_equal": "at least {ge}",
        "greater_than": "more than {gt}",
        "less_than_equal": "at most {le}",
        "less_than": "less than {lt}",
        "string_too_short": "at least {min_length} character(s) long",
        "string_too_long": "at most {max_length} character(s) long",
        "string_pattern_mismatch": "text matching {pattern}",
    }
    if kind in ("too_short", "too_long") and isinstance(value, list | dict):
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        most = "at least" if kind == "too_short" else "at most"
        return f"must have {most} {bound} item(s), not {len(value)}"
    if kind in bounds:
        return f"must be {bounds[kind].format(**ctx)}, not {toml_value(value)}"
    return str(error["msg"])


def toml_value(value: Any) -> str:
    """A value as the file wrote it, with its TOML type: ``the string "8080"``, ``5``."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime | date | time):
        return f"the date-time {value.isoformat()}"
    return repr(value)


def _known_keys(schema: type[Schema], loc: Loc) -> list[str]:
    model: type[BaseModel] | None = schema
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = next(_models_in(field.annotation), None) if field is not None else None
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """The schema classes an annotation holds (``Listener | None``, ``tuple[Service, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)
