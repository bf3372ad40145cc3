"""What Health's services answer (their OpenAPI schemas and WSDL types)."""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

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


class Dependant(TypedDict):
    """Someone covered by a policy holder's insurance."""

    national_id: str
    relation: Literal["spouse", "child"]


class InsuranceStatus(TypedDict):
    """Whether a person is covered by health insurance today, how and until when; a dependant
    is covered by the holder's policy (and has no dependants of their own)."""

    national_id: str
    insured: bool
    scheme: Literal["government", "private", "none"]
    valid_until: IsoDate | None
    dependants: list[Dependant]
