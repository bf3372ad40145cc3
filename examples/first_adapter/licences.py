"""Driving licences of the Ministry of Transport, as an X-Road service (REST and SOAP)."""

from dataclasses import dataclass
from typing import TypedDict

from adapters.sdk import Adapter, Context, NotFound, param

adapter = Adapter("Driving licences", namespace="http://licences.mot.gov.ps/v1")
LICENCES = {"401409669": (["B", "C1"], "2029-03-31")}  # your database goes here


@dataclass(frozen=True)
class LicenceQuery:
    national_id: str = param(pattern="^[0-9]{9}$", soap="nationalId")


class Licence(TypedDict):
    national_id: str
    categories: list[str]
    valid_until: str
    checked_for: str | None


@adapter.operation(rest="GET /licences/{national_id}", soap="getLicence")
async def get_licence(query: LicenceQuery, ctx: Context) -> Licence:
    if query.national_id not in LICENCES:
        raise NotFound(f"no licence for {query.national_id}")
    categories, valid_until = LICENCES[query.national_id]
    return {"national_id": query.national_id, "categories": categories,
            "valid_until": valid_until, "checked_for": ctx.client}  # fmt: skip
