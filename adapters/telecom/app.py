"""Telecom's SIM registry service (``PS/GOV/MTIT/sim-registry/sims``), on :mod:`adapters.sdk`.

- ``POST /sims`` ``{"national_id", "msisdn", "operator"}``: register a SIM card to a citizen
  (201); ``registered_by`` is the ``X-Road-UserId`` (required), an optional ``Idempotency-Key``
  makes a retry answer the same registration (200). The number must belong to the operator
  (Jawwal 059, Ooredoo 056); ``+970 59 …`` and ``059 …`` are both accepted, kept as E.164.
- ``GET /sims?national_id=…``: the SIM cards registered to a person (a JSON list).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from adapters.population.generator import valid_national_id
from adapters.sdk import Adapter, BadRequest, Context, Reply, param
from adapters.sdk.idempotency import idempotent
from adapters.telecom.model import Operator, SimRegistration
from adapters.telecom.store import SimStore

_PREFIXES: Final[dict[str, Operator]] = {"59": "Jawwal", "56": "Ooredoo"}
_MSISDN: Final = re.compile(r"(?:\+970|0)(5[69][0-9]{7})")


def _national_id() -> str:
    return param(  # type: ignore[no-any-return]
        check=valid_national_id,
        message="a national ID is nine digits whose last is a Luhn check digit",
        error="invalid_national_id",
        pattern="^[0-9]{9}$",
    )


def normalise_msisdn(text: str, operator: Operator) -> str:
    """``+9705XXXXXXXX`` for a Palestinian mobile number of ``operator``, else BadRequest."""
    match = _MSISDN.fullmatch(text.replace(" ", ""))
    if match is None:
        raise BadRequest(f"{text!r} is not a Palestinian mobile number (059…, 056…)",
                         code="invalid_msisdn")  # fmt: skip
    number = match.group(1)
    if _PREFIXES[number[:2]] != operator:
        raise BadRequest(f"0{number} is a {_PREFIXES[number[:2]]} number, not {operator}'s",
                         code="msisdn_operator_mismatch")  # fmt: skip
    return f"+970{number}"


@dataclass(frozen=True, slots=True)
class NewSim:
    national_id: str = _national_id()
    msisdn: str = param(max_length=20, example="+970599123456")
    operator: Operator = param(description="Jawwal (059) or Ooredoo (056).")


@dataclass(frozen=True, slots=True)
class SimQuery:
    national_id: str = _national_id()


def create_adapter(db_path: Path | str) -> Adapter:
    """The SIM registry service over the SQLite file ``db_path``."""
    adapter = Adapter(
        "SIM registry",
        description="The Ministry of Telecommunications and IT's register of SIM cards and "
        "the people they are registered to.",
        health=lambda: {"sims": store.value.count()},
    )
    store = adapter.resource(lambda: SimStore(Path(db_path)), lambda _: None)

    @adapter.operation(
        rest="POST /sims",
        status=201,
        success={200: "A retry with the same Idempotency-Key: the registration made before."},
        responses={
            409: "The number is registered (`msisdn_taken`), or the person holds the most "
            "SIM cards allowed (`too_many_sims`).",
            422: "The Idempotency-Key was used for another request.",
        },
    )
    def register_sim(new: NewSim, ctx: Context) -> Reply[SimRegistration]:
        """Register a SIM card to a citizen whose identity the clerk checked."""
        msisdn = normalise_msisdn(new.msisdn, new.operator)
        if not ctx.user_id:
            raise BadRequest("a registration names the clerk who checked the identity: send "
                             "X-Road-UserId", code="user_id_required")  # fmt: skip
        request = {**dataclasses.asdict(new), "msisdn": msisdn}
        idem = idempotent(ctx, "register_sim", request, required=False)
        status, registration = store.value.register(
            new.national_id, msisdn, new.operator, clerk=ctx.user_id,
            client=ctx.client or "", message_id=ctx.message_id, idem=idem,
        )  # fmt: skip
        return Reply(registration, status)

    @adapter.operation(rest="GET /sims")
    def list_sims(query: SimQuery) -> list[SimRegistration]:
        """The SIM cards registered to a person, oldest first."""
        return store.value.of_person(query.national_id)

    return adapter


def create_app(db_path: Path | str) -> web.Application:
    return create_adapter(db_path).app()
