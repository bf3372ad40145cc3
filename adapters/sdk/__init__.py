"""The adapter SDK: put a ministry's data behind a described, testable X-Road service.

Declare operations on an :class:`Adapter` with typed inputs (dataclasses) and outputs
(``TypedDict``); the same handler answers REST as JSON and SOAP as ``<opResponse>``; the OpenAPI 3
document (``/openapi.json``), the WSDL (``{soap_path}?wsdl``) and ``/health`` are generated.
:mod:`adapters.sdk.testkit` runs an adapter behind two real security servers in a test.
See docs/adapters.md, "Write your first adapter".
"""

from adapters.sdk.adapter import Adapter, Context, Operation, Reply, Resource
from adapters.sdk.errors import AdapterError, BadRequest, Conflict, NotFound
from adapters.sdk.serving import run, serve
from adapters.sdk.types import Schema, param

__all__ = [
    "Adapter",
    "AdapterError",
    "BadRequest",
    "Conflict",
    "Context",
    "NotFound",
    "Operation",
    "Reply",
    "Resource",
    "Schema",
    "param",
    "run",
    "serve",
]
