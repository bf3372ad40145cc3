"""Declaring an adapter's operations and serving them on aiohttp.

An :class:`Adapter` collects operations declared with :meth:`Adapter.operation`; each is one
handler with a typed input (a dataclass, see :mod:`adapters.sdk.types`), the X-Road
:class:`Context` of the call and a typed output (a ``TypedDict`` or dataclass). The same handler
answers REST (``rest="GET /things/{id}"``: the value as JSON) and SOAP (``soap="getThing"``: the
value as ``<getThingResponse>`` in the adapter's namespace). A REST operation answers its declared
``status`` (200 unless told, e.g. 201 for a creation); a handler that must answer another of its
declared success statuses returns :class:`Reply` (e.g. 200 for a retried creation).
:meth:`Adapter.app` builds the
``web.Application`` with ``GET /openapi.json``, ``GET {soap_path}?wsdl``, ``GET /health`` and a
JSON error model.

The adapter trusts the X-Road headers it receives: only the provider security server may reach
it (bind it to 127.0.0.1 or an internal network), which has authenticated the client, checked
its signature and the access policy before forwarding (see THREAT_MODEL.md, adapters).
"""

from __future__ import annotations

import asyncio
import decimal
import inspect
import logging
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import orjson
from aiohttp import hdrs, web

from adapters.sdk.errors import AdapterError
from adapters.sdk.types import InputBinder, InputError

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[..., Any]

_HTTP_CODES: Final = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
_KEPT_ERROR_HEADERS: Final = (hdrs.ALLOW, hdrs.RETRY_AFTER, hdrs.WWW_AUTHENTICATE)
BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
"""REST methods whose input is a JSON body (read so, and described so in the OpenAPI document)."""
_MAX_BODY: Final = 1 * 2**20


class Context:
    """The X-Road context of one call, as the provider security server forwarded it.

    REST: the ``X-Road-*`` request headers; SOAP: the envelope's X-Road headers. Values are the
    strings the security server sent (identifiers in ``INSTANCE/CLASS/CODE[/SUBSYSTEM]`` form);
    ``None`` where absent (e.g. when the adapter is called directly in a test). Read lazily:
    a handler that does not look pays nothing.
    """

    __slots__ = ("_values", "protocol", "request")

    def __init__(
        self, protocol: str, values: Mapping[str, str], request: web.Request | None = None
    ) -> None:
        self.protocol = protocol
        self._values = values
        self.request = request

    @property
    def client(self) -> str | None:
        """The calling subsystem (or member), e.g. ``PS/GOV/MOH/health-records``."""
        return self._values.get("X-Road-Client")

    @property
    def service(self) -> str | None:
        """The service called, e.g. ``PS/GOV/MOI/population-registry/persons``."""
        return self._values.get("X-Road-Service")

    @property
    def message_id(self) -> str | None:
        """The exchange's message id (``X-Road-Id``): quote it in logs."""
        return self._values.get("X-Road-Id")

    @property
    def user_id(self) -> str | None:
        """The end user acting for the client (``X-Road-UserId``)."""
        return self._values.get("X-Road-UserId")

    @property
    def issue(self) -> str | None:
        """The case the request is about (``X-Road-Issue``)."""
        return self._values.get("X-Road-Issue")

    @property
    def purpose(self) -> str | None:
        """The stated purpose of use (``X-Road-Purpose``), checked by the provider's policy."""
        return self._values.get("X-Road-Purpose")

    @property
    def represented_party(self) -> str | None:
        """The party the client acts for (``X-Road-Represented-Party``)."""
        return self._values.get("X-Road-Represented-Party")

    def header(self, name: str) -> str | None:
        """A REST request header the security servers passed on, e.g. ``Idempotency-Key``
        (``None`` where absent, and always for SOAP, whose headers are the envelope's)."""
        return self._values.get(name) if self.protocol == "rest" else None

    def __repr__(self) -> str:
        return f"Context({self.protocol}, client={self.client!r}, id={self.message_id!r})"


def rest_context(request: web.Request) -> Context:
    return Context("rest", request.headers, request)


class Resource(Generic[T]):
    """Something the adapter opens when it starts and closes when it stops (a store, a pool).

    ``resource.value`` is the opened object while the application runs.
    """

    def __init__(self, opener: Callable[[], T], closer: Callable[[T], None] | None) -> None:
        self._opener = opener
        self._closer = closer
        self._value: T | None = None

    @property
    def value(self) -> T:
        if self._value is None:
            raise RuntimeError("the adapter has not started; resources open when it starts")
        return self._value

    async def _lifespan(self, app: web.Application) -> AsyncIterator[None]:
        self._value = self._opener()
        try:
            yield
        finally:
            value, self._value = self._value, None
            if self._closer is not None and value is not None:
                self._closer(value)
            elif hasattr(value, "close"):
                value.close()


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    """A handler's value with the HTTP status to answer it with (REST; SOAP ignores the status).

    The status must be the operation's ``status`` or one of its ``success`` statuses.
    """

    value: T
    status: int


@dataclass(frozen=True, slots=True)
class Operation:
    """One declared operation: its handler, how it is reached, its types."""

    name: str
    handler: Handler
    method: str | None
    path: str | None
    soap: str | None
    input_type: type[Any] | None
    output_type: Any
    binder: InputBinder
    blocking: bool
    takes_context: bool
    input_first: bool
    summary: str
    description: str
    responses: dict[int, str]
    status: int = 200
    success: dict[int, str] | None = None

    async def call(self, adapter: Adapter, value: Any, ctx: Context) -> Any:
        """Run the handler (a plain ``def`` in the adapter's thread pool, ``async def`` inline)."""
        args: list[Any] = []
        if self.input_type is not None:
            args.append(value)
        if self.takes_context:
            args.insert(len(args) if self.input_first else 0, ctx)
        if self.blocking:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(adapter.executor, lambda: self.handler(*args))
        return await self.handler(*args)


def _signature(handler: Handler) -> tuple[type[Any] | None, Any, bool, bool]:
    """``(input type, output type, takes context, input before context)`` of a handler."""
    try:
        hints = typing.get_type_hints(handler, include_extras=True)
    except NameError as exc:
        raise TypeError(
            f"{handler.__name__}: {exc}; define an operation's types at module level"
        ) from None
    if "return" not in hints:
        raise TypeError(f"{handler.__name__}: annotate the return type (the operation's output)")
    output = hints.pop("return")
    if typing.get_origin(output) is Reply:  # -> Reply[T]: the answer is a T
        (output,) = typing.get_args(output)
    input_type: type[Any] | None = None
    takes_context = False
    input_first = True
    for position, name in enumerate(inspect.signature(handler).parameters):
        hint = hints.get(name)
        if hint is Context:
            takes_context = True
            input_first = input_type is not None
        elif input_type is None and hint is not None:
            input_type = hint
        else:
            raise TypeError(f"{handler.__name__}: parameter {position} ({name}) is not understood")
    return input_type, output, takes_context, input_first


class Adapter:
    """A set of operations served together, with their descriptions.

    ``name`` titles the OpenAPI document and the WSDL service; ``namespace`` is the SOAP
    target namespace (needed for SOAP operations); ``soap_path`` is where SOAP requests are
    POSTed and the WSDL is served (``GET {soap_path}?wsdl``); ``health`` may add members to the
    ``/health`` answer; ``workers`` is the size of the thread pool for plain ``def`` handlers.
    """

    def __init__(
        self,
        name: str,
        *,
        namespace: str | None = None,
        version: str = "1.0.0",
        description: str = "",
        soap_path: str = "/soap",
        health: Callable[[], dict[str, Any]] | None = None,
        workers: int = 2,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.version = version
        self.description = description
        self.soap_path = "/" + soap_path.strip("/")
        self.health = health
        self.workers = workers
        self.operations: list[Operation] = []
        self.resources: list[Resource[Any]] = []
        self._executor: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            raise RuntimeError("the adapter has not started")
        return self._executor

    def resource(
        self, opener: Callable[[], T], closer: Callable[[T], None] | None = None
    ) -> Resource[T]:
        """Open ``opener()`` when the application starts; close it (``.close()``) when it stops."""
        resource = Resource(opener, closer)
        self.resources.append(resource)
        return resource

    def operation(
        self,
        *,
        rest: str | None = None,
        soap: str | None = None,
        summary: str = "",
        description: str = "",
        input_error: str = "invalid_input",
        responses: dict[int, str] | None = None,
        status: int = 200,
        success: dict[int, str] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare the decorated function as an operation reached by ``rest`` and/or ``soap``.

        ``rest`` is ``"METHOD /path/{param}"``; ``soap`` the request element's name (the
        service code). ``input_error`` is the error code of bad input; ``responses`` documents
        further error statuses (e.g. ``{404: "No such thing."}``). ``status`` is the REST
        answer's status; ``success`` documents other 2xx statuses the handler may answer by
        returning :class:`Reply` (e.g. ``{200: "A retry: the thing created before."}``).
        """
        if rest is None and soap is None:
            raise ValueError("an operation needs rest=..., soap=... or both")
        for code in (status, *(success or {})):
            if not 200 <= code < 300:
                raise ValueError(f"success statuses are 2xx, not {code}")
        if soap is not None and self.namespace is None:
            raise ValueError("SOAP operations need the adapter's namespace")
        method, path = _parse_rest(rest) if rest else (None, None)

        def register(handler: Handler) -> Handler:
            input_type, output, takes_context, input_first = _signature(handler)
            doc = inspect.getdoc(handler) or ""
            self.operations.append(
                Operation(
                    name=handler.__name__,
                    handler=handler,
                    method=method,
                    path=path,
                    soap=soap,
                    input_type=input_type,
                    output_type=output,
                    binder=InputBinder(input_type, input_error),
                    blocking=not inspect.iscoroutinefunction(handler),
                    takes_context=takes_context,
                    input_first=input_first,
                    summary=summary or doc.split("\n\n")[0].replace("\n", " "),
                    description=description,
                    responses=dict(responses or {}),
                    status=status,
                    success=dict(success) if success else None,
                )
            )
            return handler

        return register

    def app(self, *, base_path: str = "", max_body: int = _MAX_BODY) -> web.Application:
        """The aiohttp application serving every operation under ``base_path``."""
        from adapters.sdk.openapi import openapi_document

        base = normalise_base_path(base_path)
        app = web.Application(middlewares=[_json_errors], client_max_size=max_body)
        app.cleanup_ctx.append(self._executor_lifespan)
        for resource in self.resources:
            app.cleanup_ctx.append(resource._lifespan)
        for op in self.operations:
            if op.method is not None and op.path is not None:
                app.router.add_route(op.method, base + op.path, _rest_handler(self, op))
        openapi = orjson.dumps(openapi_document(self, base_path=base))
        app.router.add_get(f"{base}/openapi.json", _static_json(openapi))
        app.router.add_get(f"{base}/health", self._health)
        if operations_by(self, "soap"):
            from adapters.sdk.soap import add_soap_routes

            add_soap_routes(self, app, base)
        return app

    async def _executor_lifespan(self, app: web.Application) -> AsyncIterator[None]:
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
        try:
            yield
        finally:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=True)

    async def _health(self, request: web.Request) -> web.Response:
        extra = self.health() if self.health is not None else {}
        return json_response({"status": "ok", **extra})


def _parse_rest(rest: str) -> tuple[str, str]:
    method, _, path = rest.strip().partition(" ")
    if not method.isalpha() or not path.startswith("/"):
        raise ValueError(f"rest must look like 'GET /things/{{id}}', not {rest!r}")
    return method.upper(), path.strip()


def normalise_base_path(base_path: str) -> str:
    base = base_path.strip("/")
    return f"/{base}" if base else ""


# --- REST ----------------------------------------------------------------------------------------


def json_default(value: Any) -> Any:
    """orjson's ``default``: a ``Decimal`` as its exact text."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_response(data: Any, status: int = 200) -> web.Response:
    """``data`` as JSON (a ``Decimal`` as its exact text, never a float)."""
    body = orjson.dumps(data, default=json_default)
    return web.Response(body=body, status=status, content_type="application/json")


def error_response(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": code, "message": message}, status)


def _static_json(body: bytes) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return serve


async def _rest_input(op: Operation, request: web.Request) -> Any:
    if op.input_type is None:
        if request.query:
            raise InputError(op.binder.default_error, "this operation takes no parameters")
        return None
    values: dict[str, str] = dict(request.match_info)
    if request.method in BODY_METHODS:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise InputError(op.binder.default_error, "the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise InputError(op.binder.default_error, "the body must be a JSON object")
        overlap = set(body) & set(values)
        if overlap or request.query:
            raise InputError(op.binder.default_error, "give each input once, in the body")
        return op.binder.from_json({**body, **values})
    query = request.query
    for key in query:
        if len(query.getall(key)) > 1:
            raise InputError(op.binder.default_error, "each query parameter may be given once")
        if key in values:
            raise InputError(op.binder.default_error, f"{key} is part of the path")
        values[key] = query[key]
    return op.binder.from_text(values)


def _rest_handler(
    adapter: Adapter, op: Operation
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        try:
            value = await _rest_input(op, request)
        except InputError as exc:
            return error_response(400, exc.code, exc.message)
        result = await op.call(adapter, value, rest_context(request))
        if isinstance(result, Reply):
            if result.status != op.status and result.status not in (op.success or {}):
                raise RuntimeError(f"{op.name} answered {result.status}, not a declared status")
            return json_response(result.value, result.status)
        return json_response(result, op.status)

    return handle


def incident(request: web.Request, what: str) -> str:
    """Log the exception being handled with a fresh incident id; return the id."""
    detail = str(uuid.uuid4())
    log.exception("%s %s failed (%s; incident %s)", request.method, request.path, what, detail)
    return detail


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except AdapterError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"), exc.reason)
        # what the refusal's own headers say stays said, e.g. the Allow of a 405 (RFC 9110 §15.5.6)
        for name in _KEPT_ERROR_HEADERS:
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except Exception:
        detail = incident(request, "handler error")
        return error_response(500, "internal_error", f"the adapter could not answer ({detail})")


def operations_by(adapter: Adapter, kind: str) -> Sequence[Operation]:
    """The operations reachable by ``"rest"`` or by ``"soap"``."""
    if kind == "rest":
        return [op for op in adapter.operations if op.path is not None]
    return [op for op in adapter.operations if op.soap is not None]
