"""What the SIM registry answers (its OpenAPI schemas)."""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

from adapters.sdk import Schema

Msisdn = Annotated[
    str,
    Schema(name="Msisdn", pattern=r"^\+9705[69][0-9]{7}$", example="+970599123456",
           description="A Palestinian mobile number in E.164 form."),
]  # fmt: skip
Operator = Literal["Jawwal", "Ooredoo"]


class SimRegistration(TypedDict):
    """A SIM card registered to a citizen, and the clerk who checked their identity."""

    registration_id: str
    national_id: str
    msisdn: Msisdn
    operator: Operator
    registered_at: Annotated[str, Schema(format="date-time", example="2026-12-06T09:30:00Z")]
    registered_by: str
