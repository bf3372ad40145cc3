"""The vaccination records service of the Ministry of Health, on :mod:`adapters.sdk`.

- ``GET /vaccinations/{national_id}[?vaccine=MMR]`` and SOAP ``getVaccinations``: a person's
  record (an empty list for someone never vaccinated: the ministry answers "none recorded");
- ``POST /vaccinations`` with a JSON body: record a dose; ``recorded_by`` is the X-Road user
  id the provider security server forwarded (who at the client side did it);
- ``GET /openapi.json``, ``GET /soap?wsdl``, ``GET /health``.

Store calls are plain functions, so the SDK runs them in its thread pool.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from adapters.health.model import Recorded, Vaccination, VaccinationRecord
from adapters.health.store import FACILITIES, VACCINES, VaccinationStore
from adapters.population.generator import valid_national_id
from adapters.sdk import Adapter, BadRequest, Context, param

NAMESPACE: Final = "http://health.moh.gov.ps/v1"
_BAD_ID: Final = "a national ID is nine digits whose last is a Luhn check digit"


def _national_id() -> str:
    return param(  # type: ignore[no-any-return]
        soap="nationalId", check=valid_national_id, message=_BAD_ID, error="invalid_national_id"
    )


@dataclass(frozen=True, slots=True)
class RecordQuery:
    national_id: str = _national_id()
    vaccine: str | None = param(None, description="Only this vaccine, e.g. MMR.", max_length=20)


@dataclass(frozen=True, slots=True)
class NewVaccination:
    national_id: str = _national_id()
    vaccine: str = param(description="Vaccine code, e.g. MMR, Hexa, Td, COVID-19.")
    dose: int = param(minimum=1, maximum=10)
    date: dt.date = param(description="When it was given (not in the future).")
    facility: str = param(max_length=200)
    lot: str = param(pattern="^[A-Za-z0-9-]{1,30}$")

    def __post_init__(self) -> None:
        if self.vaccine not in VACCINES:
            raise ValueError(
                f"unknown vaccine {self.vaccine!r}; known: {', '.join(sorted(VACCINES))}"
            )
        if self.date > dt.date.today():
            raise ValueError("a vaccination date cannot be in the future")


def create_adapter(db_path: Path | str) -> Adapter:
    """The service over the SQLite file ``db_path`` (see :mod:`adapters.health.store`)."""
    adapter = Adapter(
        "Health records",
        namespace=NAMESPACE,
        description="The Ministry of Health's vaccination records, keyed by national ID.",
        health=lambda: {"vaccinations": store.value.count()},
    )
    store = adapter.resource(lambda: VaccinationStore(Path(db_path)), lambda _: None)

    @adapter.operation(rest="GET /vaccinations/{national_id}", soap="getVaccinations")
    def get_vaccinations(query: RecordQuery) -> VaccinationRecord:
        """A person's vaccinations, oldest first."""
        records = store.value.of_person(query.national_id, query.vaccine)
        return {"national_id": query.national_id, "count": len(records), "vaccinations": records}

    @adapter.operation(rest="POST /vaccinations", input_error="invalid_vaccination")
    def record_vaccination(new: NewVaccination, ctx: Context) -> Recorded:
        """Record a dose given."""
        if new.facility not in FACILITIES:
            raise BadRequest(f"unknown facility {new.facility!r}", code="unknown_facility")
        vaccination: Vaccination = {
            "vaccine": new.vaccine,
            "dose": new.dose,
            "date": new.date.isoformat(),
            "facility": new.facility,
            "lot": new.lot,
        }
        store.value.add(new.national_id, vaccination, ctx.user_id)
        return {"national_id": new.national_id, "vaccination": vaccination,
                "recorded_by": ctx.user_id}  # fmt: skip

    return adapter


def create_app(db_path: Path | str, *, base_path: str = "") -> web.Application:
    return create_adapter(db_path).app(base_path=base_path)
