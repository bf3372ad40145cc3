"""What the vaccination service answers (its OpenAPI schemas and WSDL types)."""

from __future__ import annotations

from typing import Annotated, TypedDict

from adapters.sdk import Schema

IsoDate = Annotated[str, Schema(format="date", example="2019-05-02")]


class Vaccination(TypedDict):
    """One dose given."""

    vaccine: str
    dose: int
    date: IsoDate
    facility: str
    lot: str


class VaccinationRecord(TypedDict):
    """A person's vaccinations, oldest first."""

    national_id: str
    count: int
    vaccinations: list[Vaccination]


class Recorded(TypedDict):
    """A dose that was added, and who recorded it (the X-Road user id)."""

    national_id: str
    vaccination: Vaccination
    recorded_by: str | None
