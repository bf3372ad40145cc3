"""The population registry as an adapter (on :mod:`adapters.sdk`), the backend of Interior's
services.

REST routes, under an optional ``base_path``:

- ``GET /persons/{national_id}``: one person;
- ``GET /persons/{national_id}/family``: father, mother, spouse and children;
- ``GET /persons/{national_id}/address``: the home address;
- ``GET /persons?name=...&date_of_birth=YYYY-MM-DD&limit=N``: search (at least one criterion);
- ``POST /residence-certificates`` ``{"national_id"}``: a signed certificate of residence (201;
  only when the adapter has a certificate issuer, see :mod:`adapters.population.certificates`);
- ``GET /openapi.json`` and ``GET /health``.

The provider security server calls it at the service's base URL plus the path after the service
code, so the service ``persons`` with base URL ``http://127.0.0.1:PORT/persons`` maps
``/r1/PS/GOV/MOI/population-registry/persons/123456782`` to ``/persons/123456782``.

Every error is JSON ``{"error": code, "message": text}``: ``invalid_national_id`` and
``invalid_query`` (400), ``not_found`` (404), ``method_not_allowed`` (405), ``internal_error``
(500). Point lookups (tens of microseconds) run on the event loop; family and search queries,
which read many rows, are plain functions the SDK runs in its thread pool. The service only
reads, but for the certificates it issues; it does not check who is asking (the security server
in front of it does that).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from adapters.population.certificates import CertificateIssuer
from adapters.population.generator import valid_national_id
from adapters.population.model import (
    AddressResponse,
    Family,
    Person,
    ResidenceCertificate,
    SearchResult,
)
from adapters.population.store import MAX_NAME_LENGTH, MAX_SEARCH_LIMIT, PopulationStore
from adapters.sdk import Adapter, BadRequest, Context, NotFound, Reply, Resource, param, serving
from adapters.sdk.idempotency import idempotent
from exchange.trust.documents import DocumentSigner

NAMESPACE: Final = "http://population.moi.gov.ps/v1"
_WORKERS: Final = 2
_BAD_ID: Final = "a national ID is nine digits whose last is a Luhn check digit"


def _national_id(soap: str | None = None) -> str:
    return param(  # type: ignore[no-any-return]
        soap=soap,
        check=valid_national_id,
        message=_BAD_ID,
        error="invalid_national_id",
        pattern="^[0-9]{9}$",
        description="Nine digits; the last is a Luhn check digit.",
        example="123456782",
    )


@dataclass(frozen=True, slots=True)
class PersonQuery:
    national_id: str = _national_id("nationalId")


@dataclass(frozen=True, slots=True)
class SearchQuery:
    name: str | None = param(
        None,
        max_length=MAX_NAME_LENGTH,
        description="A full four-part name or a family name, Latin (case-insensitive) or Arabic.",
    )
    date_of_birth: dt.date | None = param(None)
    limit: int = param(20, minimum=1, maximum=MAX_SEARCH_LIMIT)


def _not_found(national_id: str) -> NotFound:
    return NotFound(f"no person with national ID {national_id}")


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    national_id: str = _national_id()


@dataclass(frozen=True, slots=True)
class Certificates:
    """Where certificates of residence are recorded and who signs them."""

    db_path: Path
    signer: DocumentSigner


def create_adapter(db_path: Path | str, certificates: Certificates | None = None) -> Adapter:
    """The registry's operations over the SQLite file ``db_path`` (opened when the app starts;
    a missing or foreign file fails the start with :class:`~exchange.errors.ConfigurationError`),
    and certificates of residence when ``certificates`` says where and with which key.
    """
    adapter = Adapter(
        "Population registry",
        namespace=NAMESPACE,
        description="The Ministry of Interior's population registry (civil records), served to "
        "other ministries and unified service windows through the exchange layer.",
        health=lambda: {
            "persons": store.value.count,
            "reference_date": store.value.reference_date.isoformat(),
        },
        workers=_WORKERS,
    )
    store = adapter.resource(lambda: PopulationStore(Path(db_path), connections=_WORKERS + 1))
    not_found = {404: "No person with this national ID (`not_found`)."}

    @adapter.operation(rest="GET /persons/{national_id}", soap="getPerson", responses=not_found)
    async def get_person(query: PersonQuery) -> Person:
        """One person."""
        person = store.value.get_person(query.national_id)
        if person is None:
            raise _not_found(query.national_id)
        return person

    @adapter.operation(rest="GET /persons/{national_id}/address", responses=not_found)
    async def get_address(query: PersonQuery) -> AddressResponse:
        """A person's home address."""
        address = store.value.address(query.national_id)
        if address is None:
            raise _not_found(query.national_id)
        return {"national_id": query.national_id, "address": address}  # type: ignore[typeddict-item]

    @adapter.operation(rest="GET /persons/{national_id}/family", responses=not_found)
    def get_family(query: PersonQuery) -> Family:
        """A person's father, mother, spouse and children."""
        family = store.value.family(query.national_id)
        if family is None:
            raise _not_found(query.national_id)
        parents: dict[str | None, Person] = {p["national_id"]: p for p in family["parents"]}
        person = family["person"]
        return {
            "national_id": query.national_id,
            "father": parents.get(person["father_id"]),
            "mother": parents.get(person["mother_id"]),
            "spouse": family["spouse"],
            "children": family["children"],
        }

    @adapter.operation(rest="GET /persons", input_error="invalid_query")
    def search_persons(query: SearchQuery) -> SearchResult:
        """Search people by name and/or date of birth (at least one is required).

        ``name`` matches a full four-part name or a family name, Latin (case-insensitive) or
        Arabic. Results are in no particular order.
        """
        born = None if query.date_of_birth is None else query.date_of_birth.isoformat()
        try:
            persons = store.value.search(name=query.name, date_of_birth=born, limit=query.limit)
        except ValueError as exc:
            raise BadRequest(str(exc), code="invalid_query") from exc
        return {"count": len(persons), "persons": persons}

    if certificates is not None:
        _certificate_operation(adapter, store, certificates)
    return adapter


def _certificate_operation(
    adapter: Adapter, store: Resource[PopulationStore], certificates: Certificates
) -> None:
    issuer = adapter.resource(lambda: CertificateIssuer(certificates.db_path, certificates.signer),
                              lambda _: None)  # fmt: skip

    @adapter.operation(
        rest="POST /residence-certificates",
        input_error="invalid_national_id",
        status=201,
        success={200: "A retry with the same Idempotency-Key: the certificate issued before."},
        responses={
            404: "No person with this national ID (`not_found`).",
            409: "The person is recorded as deceased (`person_deceased`).",
            422: "The Idempotency-Key was used for another request.",
        },
    )
    def issue_residence_certificate(
        request: CertificateRequest, ctx: Context
    ) -> Reply[ResidenceCertificate]:
        """A certificate of residence, signed by the Ministry of Interior."""
        if not ctx.user_id:
            raise BadRequest("a certificate names the clerk who asked for it: send "
                             "X-Road-UserId", code="user_id_required")  # fmt: skip
        person = store.value.get_person(request.national_id)
        if person is None:
            raise _not_found(request.national_id)
        idem = idempotent(ctx, "residence_certificate", {"national_id": request.national_id},
                          required=False)  # fmt: skip
        status, certificate = issuer.value.issue(
            person, clerk=ctx.user_id, client=ctx.client or "", message_id=ctx.message_id,
            idem=idem,
        )  # fmt: skip
        return Reply(certificate, status)


def create_app(
    db_path: Path | str, *, base_path: str = "", certificates: Certificates | None = None
) -> web.Application:
    """The registry service over the SQLite file ``db_path``, its routes under ``base_path``."""
    return create_adapter(db_path, certificates).app(base_path=base_path)


def run(
    db_path: Path,
    *,
    host: str,
    port: int,
    on_ready: Callable[[str, int], None],
    certificates: Certificates | None = None,
) -> None:
    """Serve the registry until SIGINT or SIGTERM (uvloop where available)."""
    app = create_app(db_path, certificates=certificates)
    serving.run(app, host=host, port=port, on_ready=on_ready)
