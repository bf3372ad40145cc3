"""The shapes the population registry answers (its OpenAPI schemas and WSDL types).

Field names are what access policies' ``fields`` lists name, for REST (JSON members) and SOAP
(child elements of ``<getPersonResponse>``) alike. Plain ``TypedDict`` values: the store builds
them straight from SQLite rows and the SDK serialises them without copying.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

from adapters.sdk import Schema

NationalId = Annotated[
    str,
    Schema(
        name="NationalId",
        pattern="^[0-9]{9}$",
        description="Nine digits; the last is a Luhn check digit.",
        example="123456782",
    ),
]
IsoDate = Annotated[str, Schema(format="date", example="1984-03-17")]


class Name(TypedDict):
    """Four-part name: own, father's, grandfather's, family name."""

    first: str
    father: str
    grandfather: str
    family: str
    full: str


class Address(TypedDict):
    """A home address."""

    governorate: str
    locality: str
    street: str
    building: str


class Person(TypedDict):
    """A person in the population registry. Parents' and spouse's IDs are null when they are not
    in the registry (or, for spouse, when the person is single or divorced)."""

    national_id: NationalId
    name_ar: Name
    name_en: Name
    sex: Literal["M", "F"]
    date_of_birth: IsoDate
    place_of_birth: str
    governorate: str
    locality: str
    address: Address
    marital_status: Literal["single", "married", "divorced", "widowed"]
    father_id: NationalId | None
    mother_id: NationalId | None
    spouse_id: NationalId | None
    date_of_death: IsoDate | None
    status: Literal["alive", "deceased"]


class Family(TypedDict):
    """A person's father, mother, spouse (null when not in the registry) and children."""

    national_id: NationalId
    father: Person | None
    mother: Person | None
    spouse: Person | None
    children: list[Person]


class AddressResponse(TypedDict):
    """A person's home address."""

    national_id: NationalId
    address: Address


class SearchResult(TypedDict):
    """People matching a search, in no particular order."""

    count: int
    persons: list[Person]


class ResidenceCertificate(TypedDict):
    """A certificate of residence: who lives where, as the registry says on the day it is
    issued, signed by the Ministry of Interior in ``document`` (a compact JWS; verify it with
    ``exchange audit document verify``)."""

    certificate_number: str
    national_id: NationalId
    name_ar: Name
    name_en: Name
    address: Address
    issued_at: Annotated[str, Schema(format="date-time", example="2026-12-06T09:30:00Z")]
    valid_until: IsoDate
    document: str
