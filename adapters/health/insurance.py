"""Health insurance status (``PS/GOV/MOH/health-insurance``), an adapter on :mod:`adapters.sdk`.

- ``GET /status/{national_id}`` (service ``status``): whether the person is insured today, under
  which scheme, until when, and who their dependants are (a person Health does not know is
  simply not insured: scheme ``none``);
- ``GET /openapi.json``, ``GET /health``.

Read-only; the store's calls are plain functions, so the SDK runs them in its thread pool.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from adapters.health.insurance_store import InsuranceStore
from adapters.health.model import InsuranceStatus
from adapters.population.generator import valid_national_id
from adapters.sdk import Adapter, param


@dataclass(frozen=True, slots=True)
class StatusQuery:
    national_id: str = param(
        check=valid_national_id,
        message="a national ID is nine digits whose last is a Luhn check digit",
        error="invalid_national_id",
        pattern="^[0-9]{9}$",
        example="123456782",
    )


def create_adapter(db_path: Path | str, *, today: Callable[[], dt.date] = dt.date.today) -> Adapter:
    """The insurance status service over the SQLite file ``db_path``."""
    adapter = Adapter(
        "Health insurance",
        description="The Ministry of Health's insurance register: whether a resident is "
        "covered, under which scheme and until when.",
        health=lambda: {"policies": store.value.count()},
    )
    store = adapter.resource(lambda: InsuranceStore(Path(db_path)), lambda _: None)

    @adapter.operation(rest="GET /status/{national_id}", input_error="invalid_national_id")
    def get_status(query: StatusQuery) -> InsuranceStatus:
        """A person's health insurance today."""
        return store.value.status(query.national_id, today())

    return adapter


def create_app(db_path: Path | str) -> web.Application:
    return create_adapter(db_path).app()
