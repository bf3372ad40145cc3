"""What the SDK understands of an operation's Python types, and what it makes of them.

Inputs are frozen dataclasses whose fields are scalars (``str``, ``int``, ``float``, ``bool``,
``datetime.date``, ``decimal.Decimal``, a ``Literal`` of strings, each optionally ``| None`` or
with a default); a ``Decimal`` is written as text in JSON (``"25.00"``), never as a JSON number,
so an amount never passes through a float;
:func:`param` adds constraints and the SOAP element name. :class:`InputBinder` turns text (a path
segment, a query value, a SOAP element's text) or JSON values into such a dataclass, or raises
:class:`InputError` with the field and the reason.

Outputs are ``TypedDict`` classes (or dataclasses), nested, with ``list[...]`` and ``| None``;
``Annotated[str, Schema(...)]`` names a reusable scalar schema (a pattern, an example).
:class:`SchemaBuilder` describes those types as OpenAPI 3.0 schemas and as XML Schema, so the
OpenAPI document and the WSDL come from the same declarations as the handler.

This module does no IO.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args, get_origin, is_typeddict

_MAX_TEXT: Final = 10_000
_INT_TEXT: Final = re.compile(r"-?[0-9]{1,18}")
_FLOAT_TEXT: Final = re.compile(r"-?[0-9]{1,18}(\.[0-9]{1,18})?")
DECIMAL_PATTERN: Final = r"^-?[0-9]{1,18}(\.[0-9]{1,18})?$"
_DECIMAL_TEXT: Final = re.compile(DECIMAL_PATTERN)
_DATE_TEXT: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_BOOL_TEXT: Final = {"true": True, "1": True, "false": False, "0": False}


class InputError(ValueError):
    """An input field is missing, unknown or malformed; ``code`` is the error code to answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Schema:
    """Schema details for ``Annotated[str, Schema(...)]`` (outputs) or for :func:`param`.

    ``name`` makes it a reusable component (``#/components/schemas/{name}``, ``tns:{name}``).
    """

    name: str | None = None
    description: str = ""
    format: str | None = None
    pattern: str | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    example: Any = None


@dataclass(frozen=True, slots=True)
class Param:
    """How one input field is named in SOAP, checked, and described (see :func:`param`)."""

    soap: str | None = None
    schema: Schema = Schema()
    check: Callable[[Any], bool] | None = None
    message: str | None = None
    error: str | None = None


def param(
    default: Any = dataclasses.MISSING,
    *,
    soap: str | None = None,
    description: str = "",
    pattern: str | None = None,
    max_length: int | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    example: Any = None,
    check: Callable[[Any], bool] | None = None,
    message: str | None = None,
    error: str | None = None,
) -> Any:
    """A dataclass field of an operation's input with constraints.

    ``soap`` is the request element's child name (default: the field name); ``pattern``,
    ``max_length``, ``minimum`` and ``maximum`` are checked and published; ``check(value)`` is a
    further test (e.g. a check digit) whose failure answers ``message``; ``error`` is the error
    code for this field's failures (default: the operation's ``input_error``).
    """
    schema = Schema(None, description, None, pattern, max_length, minimum, maximum, example)
    meta = {"sdk": Param(soap, schema, check, message, error)}
    return dataclasses.field(default=default, metadata=meta)


# --- type analysis -------------------------------------------------------------------------------


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(args) < len(get_args(tp)):
            return args[0], True
        raise TypeError(f"unions other than X | None are not supported: {tp!r}")
    return tp, False


def _unwrap_annotated(tp: Any) -> tuple[Any, Schema | None]:
    if get_origin(tp) is typing.Annotated:
        base, *extras = get_args(tp)
        found = next((e for e in extras if isinstance(e, Schema)), None)
        return base, found
    return tp, None


def _is_record(tp: Any) -> bool:
    return is_typeddict(tp) or (isinstance(tp, type) and dataclasses.is_dataclass(tp))


def record_fields(tp: Any) -> list[tuple[str, Any, bool]]:
    """``(name, type, required)`` of a TypedDict's keys or a dataclass's fields, in order."""
    hints = typing.get_type_hints(tp, include_extras=True)
    if is_typeddict(tp):
        required = tp.__required_keys__
        return [(name, hints[name], name in required) for name in hints]
    return [(f.name, hints[f.name], True) for f in dataclasses.fields(tp)]


# --- inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    soap: str
    kind: Any
    optional: bool
    default: Any
    param: Param
    required: bool
    pattern: re.Pattern[str] | None


def _scalar_kind(tp: Any) -> Any:
    if tp in (str, int, float, bool, dt.date, decimal.Decimal):
        return tp
    if get_origin(tp) is Literal and all(isinstance(a, str) for a in get_args(tp)):
        return tp
    raise TypeError(
        f"input fields are str, int, float, bool, date, Decimal or Literal[...], not {tp!r}"
    )


class InputBinder:
    """Builds an operation's input dataclass from untrusted values, checking every field."""

    def __init__(self, input_type: type[Any] | None, default_error: str) -> None:
        self.input_type = input_type
        self.default_error = default_error
        self.fields: list[_Field] = []
        if input_type is None:
            return
        if not (isinstance(input_type, type) and dataclasses.is_dataclass(input_type)):
            raise TypeError(f"an operation's input must be a dataclass, not {input_type!r}")
        hints = typing.get_type_hints(input_type)
        for f in dataclasses.fields(input_type):
            base, optional = _unwrap_optional(hints[f.name])
            meta = f.metadata.get("sdk", Param())
            default = f.default if f.default is not dataclasses.MISSING else None
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            self.fields.append(
                _Field(
                    f.name,
                    meta.soap or f.name,
                    _scalar_kind(base),
                    optional,
                    default,
                    meta,
                    required and not optional,
                    re.compile(meta.schema.pattern) if meta.schema.pattern else None,
                )
            )
        self.by_name = {f.name: f for f in self.fields}
        self.soap_names = {f.soap: f for f in self.fields}

    def _fail(self, f: _Field | None, message: str) -> InputError:
        code = (f.param.error if f is not None else None) or self.default_error
        return InputError(code, message)

    def from_text(self, values: Mapping[str, str], *, soap: bool = False) -> Any:
        """The input from text values keyed by field name (by SOAP element name if ``soap``)."""
        known = self.soap_names if soap else self.by_name
        if any(key not in known for key in values):
            unknown = sorted(set(values) - set(known))
            label = "element" if soap else "parameter"
            raise self._fail(None, f"unknown {label}(s): {', '.join(unknown)}")
        arguments: dict[str, Any] = {}
        for key, f in known.items():
            text = values.get(key)
            arguments[f.name] = self._missing(f, key) if text is None else self._parse(f, key, text)
        return self._build(arguments)

    def from_json(self, values: Mapping[str, Any]) -> Any:
        """The input from a JSON object's members (dates as ``YYYY-MM-DD`` strings)."""
        known = self.by_name
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise self._fail(None, f"unknown member(s): {', '.join(unknown)}")
        arguments: dict[str, Any] = {}
        for key, f in known.items():
            if key not in values or values[key] is None:
                arguments[key] = self._missing(f, key)
            elif isinstance(values[key], str) and f.kind not in (int, float, bool):
                arguments[key] = self._parse(f, key, values[key])
            else:
                arguments[key] = self._checked(f, key, self._json_value(f, key, values[key]))
        return self._build(arguments)

    def _build(self, arguments: dict[str, Any]) -> Any:
        assert self.input_type is not None
        try:
            return self.input_type(**arguments)
        except (ValueError, TypeError) as exc:
            raise self._fail(None, str(exc) or "invalid input") from None

    def _missing(self, f: _Field, key: str) -> Any:
        if f.required:
            raise self._fail(f, f"{key} is required")
        return f.default

    def _json_value(self, f: _Field, key: str, value: Any) -> Any:
        kind = f.kind
        ok = (
            (kind is bool and isinstance(value, bool))
            or (kind is int and isinstance(value, int) and not isinstance(value, bool))
            or (kind is float and isinstance(value, int | float) and not isinstance(value, bool))
        )
        if not ok:
            raise self._fail(f, f"{key} must be {_kind_name(kind)}")
        return float(value) if kind is float else value

    def _parse(self, f: _Field, key: str, text: str) -> Any:
        if len(text) > _MAX_TEXT:
            raise self._fail(f, f"{key} is too long")
        kind = f.kind
        value: Any
        if kind is str:
            value = text
        elif kind is int and _INT_TEXT.fullmatch(text):
            value = int(text)
        elif kind is float and _FLOAT_TEXT.fullmatch(text):
            value = float(text)
        elif kind is decimal.Decimal and _DECIMAL_TEXT.fullmatch(text):
            value = decimal.Decimal(text)
        elif kind is bool and text in _BOOL_TEXT:
            value = _BOOL_TEXT[text]
        elif kind is dt.date and _DATE_TEXT.fullmatch(text):
            try:
                value = dt.date.fromisoformat(text)
            except ValueError:
                raise self._fail(f, f"{key} must be a date written YYYY-MM-DD") from None
        elif get_origin(kind) is Literal and text in get_args(kind):
            value = text
        else:
            raise self._fail(f, f"{key} must be {_kind_name(kind)}")
        return self._checked(f, key, value)

    def _checked(self, f: _Field, key: str, value: Any) -> Any:
        s = f.param.schema
        if f.param.check is not None and not f.param.check(value):
            raise self._fail(f, f.param.message or f"{key} is not valid")
        if isinstance(value, str):
            if s.max_length is not None and len(value) > s.max_length:
                raise self._fail(f, f.param.message or f"{key} is longer than {s.max_length}")
            if f.pattern is not None and not f.pattern.search(value):
                raise self._fail(f, f.param.message or f"{key} must match {s.pattern}")
        elif isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool):
            low, high = s.minimum, s.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                raise self._fail(f, f.param.message or f"{key} must be from {low} to {high}")
        return value


def _kind_name(kind: Any) -> str:
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(get_args(kind))
    names = {
        str: "text",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        decimal.Decimal: 'a decimal number written as text, e.g. "25.00"',
    }
    return names.get(kind, "a date written YYYY-MM-DD")


# --- schemas -------------------------------------------------------------------------------------

_OPENAPI_SCALARS: Final[dict[Any, dict[str, Any]]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    dt.date: {"type": "string", "format": "date"},
    dt.datetime: {"type": "string", "format": "date-time"},
    decimal.Decimal: {"type": "string", "format": "decimal", "pattern": DECIMAL_PATTERN},
}
XSD_SCALARS: Final[dict[Any, str]] = {
    str: "xsd:string",
    int: "xsd:long",
    float: "xsd:double",
    bool: "xsd:boolean",
    dt.date: "xsd:date",
    dt.datetime: "xsd:dateTime",
    decimal.Decimal: "xsd:decimal",
}


def schema_constraints(s: Schema) -> dict[str, Any]:
    """The OpenAPI keywords of a :class:`Schema`'s constraints."""
    out: dict[str, Any] = {}
    for key, value in (
        ("description", s.description or None),
        ("format", s.format),
        ("pattern", s.pattern),
        ("maxLength", s.max_length),
        ("minimum", s.minimum),
        ("maximum", s.maximum),
        ("example", s.example),
    ):
        if value is not None:
            out[key] = value
    return out


class SchemaBuilder:
    """OpenAPI 3.0 schemas for output types; named records go to ``components``."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    def schema(self, tp: Any) -> dict[str, Any]:
        tp, optional = _unwrap_optional(tp)
        body = self._required_schema(tp)
        if not optional:
            return body
        if "$ref" in body:  # OpenAPI 3.0: nullable only counts beside a type
            return {"anyOf": [body, {"type": "object", "nullable": True, "enum": [None]}]}
        if "enum" in body:  # a nullable enum lists null among its values (OAS 3.0.3 §4.7.24)
            return {**body, "nullable": True, "enum": [*body["enum"], None]}
        return {**body, "nullable": True}

    def _required_schema(self, tp: Any) -> dict[str, Any]:
        tp, extra = _unwrap_annotated(tp)
        if extra is not None and extra.name is not None:
            if extra.name not in self.components:
                self.components[extra.name] = {
                    **self._required_schema(tp),
                    **schema_constraints(extra),
                }
            return self.ref(extra.name)
        if extra is not None:
            return {**self._required_schema(tp), **schema_constraints(extra)}
        if tp in _OPENAPI_SCALARS:
            return dict(_OPENAPI_SCALARS[tp])
        if get_origin(tp) is Literal:
            return {"type": "string", "enum": list(get_args(tp))}
        if get_origin(tp) is list:
            return {"type": "array", "items": self.schema(get_args(tp)[0])}
        if get_origin(tp) is dict or tp is dict:
            return {"type": "object"}
        if _is_record(tp):
            return self._record(tp)
        raise TypeError(f"cannot describe {tp!r} in OpenAPI")

    def _record(self, tp: Any) -> dict[str, Any]:
        name = tp.__name__
        if name not in self.components:
            self.components[name] = {}  # placeholder against recursion
            fields = record_fields(tp)
            schema: dict[str, Any] = {
                "type": "object",
                "properties": {n: self.schema(t) for n, t, _ in fields},
                "additionalProperties": False,
            }
            required = [n for n, _, req in fields if req]
            if required:
                schema["required"] = required
            doc = (tp.__doc__ or "").strip()
            if doc and not doc.startswith(f"{name}("):
                schema["description"] = " ".join(doc.split())
            self.components[name] = schema
        return self.ref(name)


def input_parameter_schema(f: _Field) -> dict[str, Any]:
    """The OpenAPI schema of one input field, constraints included."""
    if get_origin(f.kind) is Literal:
        schema: dict[str, Any] = {"type": "string", "enum": list(get_args(f.kind))}
    else:
        schema = dict(_OPENAPI_SCALARS[f.kind])
    schema.update(schema_constraints(f.param.schema))
    schema.pop("description", None)
    if f.default is not None:
        schema["default"] = f.default.isoformat() if isinstance(f.default, dt.date) else f.default
    return schema
