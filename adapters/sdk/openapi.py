"""The OpenAPI 3.0 document of an adapter, generated from its operations' types.

Served at ``GET {base}/openapi.json``; the metadata service ``getOpenAPI`` of the security server
fetches it from the service's ``openapi_url``. Every REST operation appears with its parameters
(path and query, or a JSON request body for POST/PUT/PATCH), its output schema under each success
status it declares, a 400 answer when it takes input and the error statuses it declares. This
module builds a plain dict; it does no IO.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from adapters.sdk.adapter import BODY_METHODS
from adapters.sdk.types import SchemaBuilder, input_parameter_schema

if TYPE_CHECKING:
    from adapters.sdk.adapter import Adapter, Operation

OPENAPI_VERSION: Final = "3.0.3"
_PATH_PARAM: Final = re.compile(r"\{([^}:]+)(:[^}]*)?\}")
_DEFAULT_DESCRIPTIONS: Final = {
    400: "The input is missing, unknown or malformed.",
    404: "Not found.",
    500: "The adapter could not answer; the reason is in its log.",
}

_SUCCESS: Final = {200: "OK.", 201: "Created."}

ERROR_SCHEMA: Final = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    "additionalProperties": False,
    "description": "Every error the adapter answers: a stable code and a message for people.",
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _parameters(op: Operation, path_names: set[str]) -> list[dict[str, Any]]:
    out = []
    for f in op.binder.fields:
        where = "path" if f.name in path_names else "query"
        parameter: dict[str, Any] = {
            "name": f.name,
            "in": where,
            "required": where == "path" or f.required,
            "schema": input_parameter_schema(f),
        }
        if f.param.schema.description:
            parameter["description"] = f.param.schema.description
        out.append(parameter)
    return out


def _request_body(op: Operation, path_names: set[str]) -> dict[str, Any]:
    fields = [f for f in op.binder.fields if f.name not in path_names]
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {f.name: input_parameter_schema(f) for f in fields},
        "additionalProperties": False,
    }
    required = [f.name for f in fields if f.required]
    if required:
        schema["required"] = required
    return {"required": True, "content": _json(schema)}


def _operation(op: Operation, builder: SchemaBuilder, path: str) -> dict[str, Any]:
    path_names = {m.group(1) for m in _PATH_PARAM.finditer(path)}
    head, *rest = op.name.split("_")
    described: dict[str, Any] = {"operationId": head + "".join(w.title() for w in rest)}
    if op.summary:
        described["summary"] = op.summary
    if op.description:
        described["description"] = op.description
    if op.method in BODY_METHODS and op.binder.fields:
        path_fields = [f for f in _parameters(op, path_names) if f["in"] == "path"]
        if path_fields:
            described["parameters"] = path_fields
        described["requestBody"] = _request_body(op, path_names)
    elif op.binder.fields:
        described["parameters"] = _parameters(op, path_names)
    output = _json(builder.schema(op.output_type))
    ok = {op.status: _SUCCESS.get(op.status, "OK."), **(op.success or {})}
    responses: dict[str, Any] = {
        str(status): {"description": text, "content": output} for status, text in sorted(ok.items())
    }
    statuses = dict(op.responses)
    if op.binder.fields:
        statuses.setdefault(400, _DEFAULT_DESCRIPTIONS[400])
    for status, text in sorted(statuses.items()):
        responses[str(status)] = {"description": text, "content": _json(builder.ref("Error"))}
    described["responses"] = responses
    return described


def openapi_document(adapter: Adapter, *, base_path: str = "") -> dict[str, Any]:
    """The OpenAPI 3.0 document of ``adapter`` mounted at ``base_path``."""
    builder = SchemaBuilder()
    builder.components["Error"] = ERROR_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for op in adapter.operations:
        if op.method is None or op.path is None:
            continue
        path = _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", op.path)
        paths.setdefault(path, {})[op.method.lower()] = _operation(op, builder, op.path)
    paths["/openapi.json"] = {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document.",
            "responses": {"200": {"description": "OK.", "content": _json({"type": "object"})}},
        }
    }
    paths["/health"] = {
        "get": {
            "operationId": "getHealth",
            "summary": "Liveness.",
            "responses": {"200": {"description": "OK.", "content": _json({"type": "object"})}},
        }
    }
    info: dict[str, Any] = {"title": adapter.name, "version": adapter.version}
    if adapter.description:
        info["description"] = adapter.description
    return {
        "openapi": OPENAPI_VERSION,
        "info": info,
        "servers": [{"url": base_path or "/"}],
        "paths": paths,
        "components": {"schemas": builder.components},
    }
