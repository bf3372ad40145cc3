"""Response field filtering for data minimisation (docs/design.md §7, a grant's ``fields``).

A grant may list the JSON fields a client may receive. Field paths are dot-separated object keys;
``[]`` after a key steps into a list: ``a``, ``a.b``, ``a[].b`` (a key of every object in list
``a``), ``a[]`` (the whole list). A path naming a value releases it whole, with everything below.

Filtering fails closed: a value whose type does not fit the path (an object where a list is
expected, or the other way round) is left out, and containers left empty by filtering are dropped
(an object with no released key, a list with no released element; a container granted whole, as
``a`` or ``a[]``, is kept as it is), so that the output reveals nothing beyond the granted
fields. If the top-level value is a list, each element is filtered as a top-level object; a
top-level scalar under a field restriction releases nothing (``None``).

The field list of a grant is compiled once into a tree (cached) so that filtering a record on the
hot path is one walk over the response's keys. This module does no IO and does not decide *whether*
a client may call a service (see :mod:`exchange.policy.evaluate`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

_SEGMENT: Final = re.compile(r"([A-Za-z0-9_\-]{1,128})((?:\[\])*)")
MAX_FIELD_PATH_LENGTH: Final = 1024
_OMIT: Final = object()


@dataclass(frozen=True, slots=True)
class FieldNode:
    """One node of a compiled field list.

    ``path`` is the granted field path this node stands for (``children[]``); ``whole`` releases the
    value as it is; otherwise ``keys`` applies when the value is an object and ``items`` when it is
    a list.
    """

    path: str
    whole: bool
    keys: Mapping[str, FieldNode] | None
    items: FieldNode | None


def parse_field_path(text: str) -> tuple[str, ...]:
    """Split a field path into components (``a[].b`` -> ``("a", "[]", "b")``).

    Raises :class:`ValueError` with an operator-readable reason for anything else.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("a field path must be a non-empty string")
    if len(text) > MAX_FIELD_PATH_LENGTH:
        raise ValueError(f"field path longer than {MAX_FIELD_PATH_LENGTH} characters")
    components: list[str] = []
    for segment in text.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise ValueError(
                f"bad field path {text!r}: each dot-separated part is a key of A-Z a-z 0-9 _ - "
                "optionally followed by [] (e.g. 'address.locality', 'children[].national_id')"
            )
        components.append(match.group(1))
        components.extend("[]" for _ in range(len(match.group(2)) // 2))
    return tuple(components)


def _join(components: Iterable[str]) -> str:
    text = ""
    for component in components:
        if component == "[]":
            text += "[]"
        else:
            text += f".{component}" if text else component
    return text


class _Builder:
    __slots__ = ("items", "keys", "path", "whole")

    def __init__(self, path: tuple[str, ...]) -> None:
        self.path = path
        self.whole = False
        self.keys: dict[str, _Builder] = {}
        self.items: _Builder | None = None

    def add(self, components: tuple[str, ...], depth: int = 0) -> None:
        if depth == len(components):
            self.whole = True
            return
        component = components[depth]
        prefix = components[: depth + 1]
        if component == "[]":
            self.items = self.items or _Builder(prefix)
            self.items.add(components, depth + 1)
        else:
            self.keys.setdefault(component, _Builder(prefix)).add(components, depth + 1)

    def freeze(self) -> FieldNode:
        if self.whole:
            return FieldNode(_join(self.path), True, None, None)
        return FieldNode(
            _join(self.path),
            False,
            {key: child.freeze() for key, child in self.keys.items()} if self.keys else None,
            self.items.freeze() if self.items is not None else None,
        )


@functools.lru_cache(maxsize=1024)
def compile_fields(fields: tuple[str, ...]) -> FieldNode:
    """Compile a grant's field list into the tree :func:`filter_fields` walks (cached)."""
    root = _Builder(())
    for text in fields:
        root.add(parse_field_path(text))
    return root.freeze()


def _filter(value: Any, node: FieldNode, released: set[str]) -> Any:
    if node.whole:
        released.add(node.path)
        return value
    if isinstance(value, dict) and node.keys is not None:
        keys = node.keys
        out = {}
        for key, item in value.items():
            child = keys.get(key)
            if child is not None:
                kept = _filter(item, child, released)
                if kept is not _OMIT:
                    out[key] = kept
        return out or _OMIT
    if isinstance(value, list) and node.items is not None:
        items = node.items
        if items.whole:
            released.add(items.path)
            return value
        kept_items = [kept for v in value if (kept := _filter(v, items, released)) is not _OMIT]
        return kept_items or _OMIT
    return _OMIT


def _top_level_keys(value: Any) -> tuple[str, ...]:
    if isinstance(value, dict):
        return tuple(sorted(value))
    if isinstance(value, list):
        return tuple(sorted({key for item in value if isinstance(item, dict) for key in item}))
    return ()


def filter_fields(value: Any, fields: tuple[str, ...] | None) -> tuple[Any, tuple[str, ...]]:
    """Keep only the granted fields of a parsed JSON ``value``.

    Returns the filtered value and the sorted granted field paths that were present and released.
    ``fields=None`` releases everything (the value is returned unchanged, the released list is its
    top-level keys).
    """
    if fields is None:
        return value, _top_level_keys(value)
    root = compile_fields(fields)
    released: set[str] = set()
    if isinstance(value, list):
        out: Any = [kept for v in value if (kept := _filter(v, root, released)) is not _OMIT]
    elif isinstance(value, dict):
        kept = _filter(value, root, released)
        out = {} if kept is _OMIT else kept
    else:
        out = None
    return out, tuple(sorted(released))
