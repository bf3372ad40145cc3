"""Response field filtering (docs/design.md §7 data minimisation): exact outputs and a property
test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.policy.fields import compile_fields, filter_fields, parse_field_path

PERSON: dict[str, Any] = {
    "national_id": "123456789",
    "name_ar": "ليلى",
    "name_en": "Layla",
    "birth_date": "1990-01-01",
    "mother_name": "Hana",
    "address": {"locality": "Ramallah", "street": "Main 1", "geo": {"lat": "31.9"}},
    "children": [
        {"national_id": "111", "name_en": "Omar", "school": "X"},
        {"national_id": "222", "name_en": "Sara"},
        {"name_en": "no id yet"},
    ],
}
GRANTED = ("national_id", "name_ar", "name_en", "address.locality", "children[].national_id")


def test_person_record_is_minimised() -> None:
    out, released = filter_fields(PERSON, GRANTED)
    assert out == {
        "national_id": "123456789",
        "name_ar": "ليلى",
        "name_en": "Layla",
        "address": {"locality": "Ramallah"},
        "children": [{"national_id": "111"}, {"national_id": "222"}],
    }
    assert released == (
        "address.locality",
        "children[].national_id",
        "name_ar",
        "name_en",
        "national_id",
    )
    assert "street" in PERSON["address"]


def test_output_keeps_the_response_key_order() -> None:
    out, _ = filter_fields(PERSON, ("address.locality", "national_id"))
    assert list(out) == ["national_id", "address"]


def test_top_level_list_filters_each_element() -> None:
    out, released = filter_fields(
        [PERSON, {"name_en": "B", "address": {"street": "s"}}, "not-an-object"],
        ("name_en", "address.locality"),
    )
    assert out == [{"name_en": "Layla", "address": {"locality": "Ramallah"}}, {"name_en": "B"}]
    assert released == ("address.locality", "name_en")


@pytest.mark.parametrize(
    ("value", "fields", "expected", "released"),
    [
        pytest.param(PERSON, None, PERSON, tuple(sorted(PERSON)), id="no-restriction"),
        pytest.param(PERSON, (), {}, (), id="nothing-granted"),
        pytest.param(
            PERSON,
            ("address",),
            {"address": PERSON["address"]},
            ("address",),
            id="whole-object",
        ),
        pytest.param(
            PERSON,
            ("children[]",),
            {"children": PERSON["children"]},
            ("children[]",),
            id="whole-list",
        ),
        pytest.param(
            PERSON,
            ("address.geo.lat", "address"),
            {"address": PERSON["address"]},
            ("address",),
            id="whole-wins-over-narrower",
        ),
        pytest.param(
            {"address": ["a", "b"]}, ("address.locality",), {}, (), id="list-where-object-expected"
        ),
        pytest.param(
            {"children": {"national_id": "1"}},
            ("children[].national_id",),
            {},
            (),
            id="object-where-list-expected",
        ),
        pytest.param(
            {"address": {"street": "s"}}, ("address.locality",), {}, (), id="empty-object-dropped"
        ),
        pytest.param(
            {"children": []}, ("children[].national_id",), {}, (), id="empty-list-dropped"
        ),
        pytest.param(
            {"children": []},
            ("children[]",),
            {"children": []},
            ("children[]",),
            id="empty-whole-list",
        ),
        pytest.param(
            {"address": None}, ("address.locality",), {}, (), id="null-where-object-expected"
        ),
        pytest.param(
            {"m": [[{"x": 1, "y": 2}]]},
            ("m[][].x",),
            {"m": [[{"x": 1}]]},
            ("m[][].x",),
            id="nested-lists",
        ),
        pytest.param("scalar", ("a",), None, (), id="top-level-scalar"),
        pytest.param(
            {"a.b": 1, "a": {"b": 2}},
            ("a.b",),
            {"a": {"b": 2}},
            ("a.b",),
            id="dotted-key-is-not-a-path",
        ),
        pytest.param(
            {"a[]": 1, "a": [3]}, ("a[]",), {"a": [3]}, ("a[]",), id="bracket-key-is-not-a-path"
        ),
    ],
)
def test_filter_cases(
    value: Any, fields: tuple[str, ...] | None, expected: Any, released: tuple[str, ...]
) -> None:
    assert filter_fields(value, fields) == (expected, released)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("a..b", id="empty-part"),
        pytest.param(".a", id="leading-dot"),
        pytest.param("a.", id="trailing-dot"),
        pytest.param("a[0]", id="index"),
        pytest.param("[]", id="no-key"),
        pytest.param("a[", id="open-bracket"),
        pytest.param("a b", id="space"),
        pytest.param("a.*", id="wildcard"),
        pytest.param("x" * 2000, id="too-long"),
    ],
)
def test_bad_field_paths_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="field path"):
        parse_field_path(text)


def test_field_path_components() -> None:
    assert parse_field_path("children[].national_id") == ("children", "[]", "national_id")
    assert parse_field_path("m[][]") == ("m", "[]", "[]")


def test_compiled_tree_is_cached() -> None:
    assert compile_fields(GRANTED) is compile_fields(GRANTED)


# --- property: nothing outside the granted fields ever leaves ------------------------------------

KEYS = ["a", "b", "c", "a.b", "a[]"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS), children, max_size=4)
    ),
    max_leaves=20,
)
field_path = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 2)), min_size=1, max_size=3
).map(lambda parts: ".".join(key + "[]" * n for key, n in parts))


def _leaves(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*prefix, key))
    elif isinstance(value, list):
        for item in value or [{}]:
            yield from _leaves(item, (*prefix, "[]"))
    elif prefix:
        yield prefix


@given(json_values, st.lists(field_path, max_size=4).map(tuple))
def test_output_never_holds_a_field_outside_the_grant(value: Any, fields: tuple[str, ...]) -> None:
    out, released = filter_fields(value, fields)
    granted = [parse_field_path(f) for f in fields]
    elements = out if isinstance(out, list) else [out]
    for element in elements:
        for leaf in _leaves(element):
            assert any(leaf[: len(g)] == g for g in granted), (leaf, fields)
    assert set(released) <= set(fields)
    assert filter_fields(out, fields)[0] == out
