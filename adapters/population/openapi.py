"""The OpenAPI 3.0 description of the population registry service (served at ``/openapi.json``).

It describes the routes of :mod:`adapters.population.app` and the person schema whose field names
access policies' ``fields`` lists refer to. This module builds a plain dict; it does no IO.
"""

from __future__ import annotations

from typing import Any, Final

OPENAPI_VERSION: Final = "3.0.3"
API_VERSION: Final = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(name: str) -> dict[str, Any]:
    """``name`` or null (in OpenAPI 3.0 ``nullable`` only counts beside ``type``)."""
    return {"anyOf": [_ref(name), {"type": "object", "nullable": True, "enum": [None]}]}


def _object(properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


_NATIONAL_ID: Final = {
    "type": "string",
    "pattern": "^[0-9]{9}$",
    "description": "Nine digits; the last is a Luhn check digit.",
    "example": "123456782",
}
_DATE: Final = {"type": "string", "format": "date", "example": "1984-03-17"}
_TEXT: Final = {"type": "string"}


def _schemas() -> dict[str, Any]:
    name_parts = {key: _TEXT for key in ("first", "father", "grandfather", "family", "full")}
    return {
        "NationalId": _NATIONAL_ID,
        "Name": _object(name_parts, "Four-part name: own, father's, grandfather's, family name."),
        "Address": _object(
            {key: _TEXT for key in ("governorate", "locality", "street", "building")}
        ),
        "Person": _object(
            {
                "national_id": _ref("NationalId"),
                "name_ar": _ref("Name"),
                "name_en": _ref("Name"),
                "sex": {"type": "string", "enum": ["M", "F"]},
                "date_of_birth": _DATE,
                "place_of_birth": _TEXT,
                "governorate": _TEXT,
                "locality": _TEXT,
                "address": _ref("Address"),
                "marital_status": {
                    "type": "string",
                    "enum": ["single", "married", "divorced", "widowed"],
                },
                "father_id": _nullable("NationalId"),
                "mother_id": _nullable("NationalId"),
                "spouse_id": _nullable("NationalId"),
                "date_of_death": {**_DATE, "nullable": True},
                "status": {"type": "string", "enum": ["alive", "deceased"]},
            },
            "A person in the population registry. Parents' and spouse's IDs are null when they "
            "are not in the registry (or, for spouse, when the person is single or divorced).",
        ),
        "Family": _object(
            {
                "national_id": _ref("NationalId"),
                "father": _nullable("Person"),
                "mother": _nullable("Person"),
                "spouse": _nullable("Person"),
                "children": {"type": "array", "items": _ref("Person")},
            }
        ),
        "AddressResponse": _object({"national_id": _ref("NationalId"), "address": _ref("Address")}),
        "SearchResult": _object(
            {"count": {"type": "integer"}, "persons": {"type": "array", "items": _ref("Person")}}
        ),
        "Health": _object(
            {"status": {"type": "string"}, "persons": {"type": "integer"}, "reference_date": _DATE}
        ),
        "Error": _object(
            {
                "error": {
                    "type": "string",
                    "enum": [
                        "invalid_national_id",
                        "invalid_query",
                        "not_found",
                        "method_not_allowed",
                        "http_error",
                        "internal_error",
                    ],
                },
                "message": _TEXT,
            }
        ),
    }


def _json_content(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(schema)}}


def _responses() -> dict[str, Any]:
    return {
        "InvalidNationalId": {
            "description": "Not nine digits, or a wrong check digit (`invalid_national_id`).",
            "content": _json_content("Error"),
        },
        "InvalidQuery": {
            "description": "Missing, unknown or malformed query parameters (`invalid_query`).",
            "content": _json_content("Error"),
        },
        "NotFound": {
            "description": "No person with this national ID (`not_found`).",
            "content": _json_content("Error"),
        },
    }


def _by_id(summary: str, operation_id: str, schema: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "operationId": operation_id,
            "parameters": [{"$ref": "#/components/parameters/NationalId"}],
            "responses": {
                "200": {"description": "Found.", "content": _json_content(schema)},
                "400": {"$ref": "#/components/responses/InvalidNationalId"},
                "404": {"$ref": "#/components/responses/NotFound"},
            },
        }
    }


def _search() -> dict[str, Any]:
    return {
        "get": {
            "summary": "Search people by name and/or date of birth (at least one is required).",
            "description": "`name` matches a full four-part name or a family name, Latin "
            "(case-insensitive) or Arabic. Results are in no particular order.",
            "operationId": "searchPersons",
            "parameters": [
                {"name": "name", "in": "query", "schema": {"type": "string", "maxLength": 200}},
                {"name": "date_of_birth", "in": "query", "schema": _DATE},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                },
            ],
            "responses": {
                "200": {"description": "Matches.", "content": _json_content("SearchResult")},
                "400": {"$ref": "#/components/responses/InvalidQuery"},
            },
        }
    }


def _plain(summary: str, operation_id: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "operationId": operation_id,
            "responses": {"200": {"description": "OK.", "content": content}},
        }
    }


def openapi_document(*, base_path: str = "") -> dict[str, Any]:
    """The OpenAPI 3.0 document of the service mounted at ``base_path`` (``""`` for the root)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Population registry",
            "version": API_VERSION,
            "description": "The Ministry of Interior's population registry (civil records), "
            "served to other ministries and unified service windows through the exchange layer.",
        },
        "servers": [{"url": base_path or "/"}],
        "paths": {
            "/persons": _search(),
            "/persons/{national_id}": _by_id("One person.", "getPerson", "Person"),
            "/persons/{national_id}/family": _by_id(
                "A person's father, mother, spouse and children.", "getFamily", "Family"
            ),
            "/persons/{national_id}/address": _by_id(
                "A person's home address.", "getAddress", "AddressResponse"
            ),
            "/openapi.json": _plain(
                "This document.", "getOpenApi", {"application/json": {"schema": {"type": "object"}}}
            ),
            "/health": _plain("Liveness and size.", "getHealth", _json_content("Health")),
        },
        "components": {
            "schemas": _schemas(),
            "parameters": {
                "NationalId": {
                    "name": "national_id",
                    "in": "path",
                    "required": True,
                    "schema": _ref("NationalId"),
                }
            },
            "responses": _responses(),
        },
    }
