"""The population registry as a plain HTTP service (aiohttp), the backend of Interior's services.

Routes, under an optional ``base_path``:

- ``GET /persons/{national_id}``: one person;
- ``GET /persons/{national_id}/family``: father, mother, spouse and children;
- ``GET /persons/{national_id}/address``: the home address;
- ``GET /persons?name=...&date_of_birth=YYYY-MM-DD&limit=N``: search (at least one criterion);
- ``GET /openapi.json`` and ``GET /health``.

The provider security server calls it at the service's base URL plus the path after the service
code, so the service ``persons`` with base URL ``http://127.0.0.1:PORT/persons`` maps
``/r1/PS/GOV/MOI/population-registry/persons/123456782`` to ``/persons/123456782``.

Every error is JSON ``{"error": code, "message": text}``: ``invalid_national_id`` and
``invalid_query`` (400), ``not_found`` (404), ``method_not_allowed`` (405), ``internal_error``
(500). Point lookups (tens of microseconds) run on the event loop; family and search queries,
which read many rows, run in a small thread pool. The service only reads; it does not check who
is asking (the security server in front of it does that).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
from aiohttp import web
from multidict import MultiMapping

from adapters.population.generator import valid_national_id
from adapters.population.openapi import openapi_document
from adapters.population.store import MAX_SEARCH_LIMIT, Person, PopulationStore

log = logging.getLogger(__name__)

STORE: Final = web.AppKey("population_store", PopulationStore)
EXECUTOR: Final = web.AppKey("population_executor", ThreadPoolExecutor)
_OPENAPI: Final = web.AppKey("population_openapi", bytes)

_QUERY_KEYS: Final = frozenset({"name", "date_of_birth", "limit"})
_DEFAULT_LIMIT: Final = 20
_WORKERS: Final = 2
_HTTP_CODES: Final = {404: "not_found", 405: "method_not_allowed"}

T = TypeVar("T")


class ApiError(Exception):
    """An error answered as JSON ``{"error": code, "message": message}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": code, "message": message}, status)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, _HTTP_CODES.get(exc.status, "http_error"), exc.reason)
    except Exception:
        log.exception("population registry: %s %s failed", request.method, request.path)
        return _error(500, "internal_error", "the registry could not answer; see its log")


def _national_id(request: web.Request) -> str:
    national_id = request.match_info["national_id"]
    if not valid_national_id(national_id):
        raise ApiError(
            400,
            "invalid_national_id",
            "a national ID is nine digits whose last is a Luhn check digit",
        )
    return national_id


def _not_found(national_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no person with national ID {national_id}")


async def _in_thread(request: web.Request, call: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(request.app[EXECUTOR], call)


# --- handlers ------------------------------------------------------------------------------------


async def get_person(request: web.Request) -> web.Response:
    national_id = _national_id(request)
    person = request.app[STORE].get_person(national_id)
    if person is None:
        raise _not_found(national_id)
    return _json(person)


async def get_address(request: web.Request) -> web.Response:
    national_id = _national_id(request)
    address = request.app[STORE].address(national_id)
    if address is None:
        raise _not_found(national_id)
    return _json({"national_id": national_id, "address": address})


async def get_family(request: web.Request) -> web.Response:
    national_id = _national_id(request)
    store = request.app[STORE]
    family = await _in_thread(request, functools.partial(store.family, national_id))
    if family is None:
        raise _not_found(national_id)
    parents: dict[str | None, Person] = {p["national_id"]: p for p in family["parents"]}
    person = family["person"]
    return _json(
        {
            "national_id": national_id,
            "father": parents.get(person["father_id"]),
            "mother": parents.get(person["mother_id"]),
            "spouse": family["spouse"],
            "children": family["children"],
        }
    )


def _search_arguments(query: MultiMapping[str]) -> dict[str, Any]:
    unknown = sorted(set(query) - _QUERY_KEYS)
    if unknown:
        raise ApiError(400, "invalid_query", f"unknown query parameter(s): {', '.join(unknown)}")
    if any(len(query.getall(key)) > 1 for key in query):
        raise ApiError(400, "invalid_query", "each query parameter may be given once")
    limit_text = query.get("limit", str(_DEFAULT_LIMIT))
    if not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 3):
        raise ApiError(400, "invalid_query", f"limit must be a number from 1 to {MAX_SEARCH_LIMIT}")
    return {
        "name": query.get("name"),
        "date_of_birth": query.get("date_of_birth"),
        "limit": int(limit_text),
    }


async def search_persons(request: web.Request) -> web.Response:
    arguments = _search_arguments(request.query)
    store = request.app[STORE]
    try:
        persons = await _in_thread(request, functools.partial(store.search, **arguments))
    except ValueError as exc:
        raise ApiError(400, "invalid_query", str(exc)) from exc
    return _json({"count": len(persons), "persons": persons})


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_OPENAPI], content_type="application/json")


async def get_health(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return _json(
        {
            "status": "ok",
            "persons": store.count,
            "reference_date": store.reference_date.isoformat(),
        }
    )


# --- the application -----------------------------------------------------------------------------


def _normalise_base_path(base_path: str) -> str:
    base = base_path.strip("/")
    return f"/{base}" if base else ""


async def _resources(db_path: Path, app: web.Application) -> AsyncIterator[None]:
    store = PopulationStore(db_path, connections=_WORKERS + 1)
    executor = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="population-registry")
    app[STORE] = store
    app[EXECUTOR] = executor
    try:
        yield
    finally:
        executor.shutdown(wait=True)
        store.close()


def create_app(db_path: Path | str, *, base_path: str = "") -> web.Application:
    """The registry service over the SQLite file ``db_path``, its routes under ``base_path``.

    The file is opened when the application starts (``cleanup_ctx``) and closed when it stops; a
    missing or foreign file fails the start with :class:`~exchange.errors.ConfigurationError`.
    """
    base = _normalise_base_path(base_path)
    app = web.Application(middlewares=[_json_errors])
    app[_OPENAPI] = orjson.dumps(openapi_document(base_path=base))
    app.cleanup_ctx.append(functools.partial(_resources, Path(db_path)))
    app.router.add_get(f"{base}/persons", search_persons)
    app.router.add_get(f"{base}/persons/{{national_id}}", get_person)
    app.router.add_get(f"{base}/persons/{{national_id}}/family", get_family)
    app.router.add_get(f"{base}/persons/{{national_id}}/address", get_address)
    app.router.add_get(f"{base}/openapi.json", get_openapi)
    app.router.add_get(f"{base}/health", get_health)
    return app


# --- running it ----------------------------------------------------------------------------------


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(
    db_path: Path, *, host: str, port: int, on_ready: Callable[[str, int], None]
) -> None:
    """Serve until SIGINT or SIGTERM; ``on_ready(url, port)`` once listening (port 0 allowed)."""
    runner = web.AppRunner(create_app(db_path), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        on_ready(_url(bound_host, bound_port), bound_port)
        await _until_signalled()
    finally:
        await runner.cleanup()


async def _until_signalled() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return None


def run(db_path: Path, *, host: str, port: int, on_ready: Callable[[str, int], None]) -> None:
    """Run :func:`serve` on uvloop where available; returns after a clean shutdown."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(db_path, host=host, port=port, on_ready=on_ready))
