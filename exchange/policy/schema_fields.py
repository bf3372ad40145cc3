"""Which of a grant's ``fields`` a service's published OpenAPI document does not describe.

A field list is written by hand against what the service answers; a typo (``adress``) or a field
the service renamed releases nothing and fails silently. ``exchange policy lint`` compares each
field path with the JSON response schemas (2xx, ``application/json`` or ``+json``) of the
operations the grant can reach in the service's OpenAPI 3 document as the metadata service
``getOpenAPI`` publishes it, relative to the service
(:func:`exchange.protocol.metadata.openapi_description`): the grant's methods, and paths its
patterns match, a ``{parameter}`` segment matching anything. A field path that no schema has is
reported. Local ``$ref`` s are followed, ``allOf``/``anyOf``/``oneOf`` offer each of their
branches, ``items`` stands for ``[]``. An object that lists ``properties`` is taken to
have those keys only, unless it says ``additionalProperties`` (``true`` or a schema, as a
dictionary keyed by anything does); an object with no ``properties`` at all accepts every key
below it, so a loosely described service gets no false warnings. Pure functions, no IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from exchange.policy.fields import parse_field_path
from exchange.policy.model import PathPattern

_MAX_DEPTH: Final = 64
"""References followed at most this deep (a cyclic or hostile document ends there)."""
_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def response_schemas(
    document: Mapping[str, Any],
    methods: Iterable[str],
    patterns: Iterable[PathPattern] = (),
) -> list[Any]:
    """The JSON schemas of the 2xx answers of ``document``'s operations of ``methods`` (upper
    or lower case; ``*`` or none for every method) whose path one of ``patterns`` matches (none:
    every path)."""
    wanted = {m.lower() for m in methods} - {"*"} or set(_METHODS)
    patterns = tuple(patterns)
    schemas: list[Any] = []
    paths = document.get("paths")
    for template, item in paths.items() if isinstance(paths, Mapping) else ():
        if not isinstance(item, Mapping) or not _reachable(str(template), patterns):
            continue
        for method in wanted & set(item):
            responses = item[method].get("responses") if isinstance(item[method], Mapping) else None
            for status, answer in responses.items() if isinstance(responses, Mapping) else ():
                if str(status).startswith("2") and isinstance(answer, Mapping):
                    schemas.extend(_json_schemas(answer.get("content")))
    return schemas


def _reachable(template: str, patterns: tuple[PathPattern, ...]) -> bool:
    segments = tuple(template[1:].split("/")) if template not in ("", "/") else ()
    return not patterns or any(_matches(p, segments) for p in patterns)


def _matches(pattern: PathPattern, segments: tuple[str, ...]) -> bool:
    """:meth:`PathPattern.matches`, with a template's ``{parameter}`` segment matching anything."""
    fixed = pattern.fixed
    if len(segments) < len(fixed) or (not pattern.rest and len(segments) != len(fixed)):
        return False
    return all(
        p in ("*", s) or (s.startswith("{") and s.endswith("}"))
        for p, s in zip(fixed, segments, strict=False)
    )


def _json_schemas(content: Any) -> Iterator[Any]:
    if not isinstance(content, Mapping):
        return
    for media_type, entry in content.items():
        kind = str(media_type).split(";")[0].strip().lower()
        json_type = kind == "application/json" or kind.endswith("+json")
        if json_type and isinstance(entry, Mapping) and "schema" in entry:
            yield entry["schema"]


def undescribed_fields(
    fields: Iterable[str],
    document: Mapping[str, Any],
    methods: Iterable[str] = ("GET",),
    patterns: Iterable[PathPattern] = (),
) -> list[str]:
    """The paths of ``fields`` that no 2xx JSON response schema of the operations the grant
    reaches (see :func:`response_schemas`) has.

    Nothing is reported when the document describes no JSON answer there (there is nothing to
    compare with).
    """
    schemas = response_schemas(document, methods, patterns)
    if not schemas:
        return []
    return [
        text
        for text in fields
        if not any(
            _has(document, _element(document, s), parse_field_path(text), 0) for s in schemas
        )
    ]


def _element(document: Mapping[str, Any], schema: Any) -> Any:
    """A top-level list's element schema (fields apply to each element, as filtering does);
    any other schema as it is."""
    resolved = _resolve(document, schema, 0)
    if isinstance(resolved, Mapping) and "items" in resolved:
        return resolved["items"]
    return schema


def _resolve(document: Mapping[str, Any], schema: Any, depth: int) -> Any:
    while isinstance(schema, Mapping) and depth < _MAX_DEPTH:
        ref = schema.get("$ref")
        if not isinstance(ref, str):
            break
        if not ref.startswith("#/"):
            return {}  # a remote reference: not followed, so it accepts anything
        target: Any = document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, Mapping) else None
        schema, depth = target, depth + 1
    return schema


def _has(document: Mapping[str, Any], schema: Any, path: tuple[str, ...], depth: int) -> bool:
    """Whether ``schema`` describes a value at ``path`` (components of a field path)."""
    if depth >= _MAX_DEPTH:
        return True
    schema = _resolve(document, schema, depth)
    if not isinstance(schema, Mapping):
        return schema is True  # JSON Schema's ``true`` accepts anything
    if not path:
        return True
    branches = [b for key in ("allOf", "anyOf", "oneOf") for b in schema.get(key) or ()]
    if any(_has(document, branch, path, depth + 1) for branch in branches):
        return True
    head, rest = path[0], path[1:]
    if head == "[]":
        items = schema.get("items")
        if items is not None:
            return _has(document, items, rest, depth + 1)
        return schema.get("type") == "array" and not branches
    properties = schema.get("properties")
    if isinstance(properties, Mapping) and head in properties:
        return _has(document, properties[head], rest, depth + 1)
    is_object = schema.get("type") in (None, "object") and "items" not in schema
    if not is_object:
        return False
    extra = schema.get("additionalProperties")
    if extra is not None and extra is not False:
        return extra is True or _has(document, extra, rest, depth + 1)
    return not isinstance(properties, Mapping) and not branches
