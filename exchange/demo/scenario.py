"""The scripted exchanges of the example federation, and what each must show.

Every step goes through real security servers: the caller's consumer port, mutual TLS to
Interior's provider port, signature checks, Interior's policy, the population registry, and
durable logging on both sides. A step passes when the status and X-Road error code (or its
absence) are as expected; the summary also shows which fields each client received.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from lxml import etree

from adapters.population.app import NAMESPACE as REGISTRY_NS
from exchange.demo.federation import GET_PERSON, MINISTRIES, PERSONS, Federation, Ministry
from exchange.identifiers import parse_subsystem
from exchange.protocol import soap

_BY_CODE = {m.member.member_code: m for m in MINISTRIES}


@dataclass(frozen=True, slots=True)
class Step:
    title: str
    caller: str
    path: str
    expect_status: int
    expect_error: str | None
    purpose: str | None = None
    as_client: str | None = None
    user_id: str | None = None
    # up to this many requests before the one shown, stopping at the first that gets
    # expect_status (e.g. to use up a quota: how many get through depends on the pace)
    repeat_until_expected: int = 0
    soap_national_id: str | None = None  # a SOAP getPerson request (X-Road 4.0) for this person


@dataclass(frozen=True, slots=True)
class Outcome:
    step: Step
    message_id: str
    status: int
    error: str | None
    fields: tuple[str, ...]
    body: Any

    @property
    def passed(self) -> bool:
        return self.status == self.step.expect_status and self.error == self.step.expect_error


def steps(federation: Federation) -> list[Step]:
    nid = federation.sample_ids[0]
    other = federation.sample_ids[1] if len(federation.sample_ids) > 1 else nid
    persons = "/r1/" + PERSONS.encoded()
    return [
        Step(
            "post-office window identifies a citizen at the counter",
            "PALPOST",
            f"{persons}/{nid}",
            200,
            None,
            "citizen-service",
            user_id="PS-clerk-biddu-01",
        ),
        Step(
            "post-office window confirms the citizen's address",
            "PALPOST",
            f"{persons}/{nid}/address",
            200,
            None,
            "citizen-service",
            user_id="PS-clerk-biddu-01",
        ),
        Step(
            "Health reads a patient's record",
            "MOH",
            f"{persons}/{other}",
            200,
            None,
            "patient-care",
        ),
        Step(
            "Health reads a patient's family",
            "MOH",
            f"{persons}/{other}/family",
            200,
            None,
            "patient-care",
        ),
        Step(
            "Health reads a patient's record over SOAP (getPerson, a stock X-Road 4.0 client)",
            "MOH",
            "/ (SOAP getPerson)",
            200,
            None,
            "patient-care",
            soap_national_id=other,
        ),
        Step(
            "Finance asks for a person over SOAP (no getPerson grant)",
            "MOF",
            "/ (SOAP getPerson)",
            500,
            "Server.ServerProxy.AccessDenied",
            "fee-collection",
            soap_national_id=nid,
        ),
        Step(
            "Telecom checks a name for a SIM registration",
            "MTIT",
            f"{persons}/{nid}",
            200,
            None,
            "sim-registration",
        ),
        Step(
            "Telecom goes past its quota of 100 requests per minute",
            "MTIT",
            f"{persons}/{nid}",
            429,
            "Server.ServerProxy.RateLimited",
            "sim-registration",
            repeat_until_expected=300,
        ),
        Step(
            "Finance's agreement for fee collection ended yesterday",
            "MOF",
            f"{persons}/{nid}",
            403,
            "Server.ServerProxy.AccessDenied.GrantExpired",
            "fee-collection",
        ),
        Step(
            "post-office window asks for a family (not granted)",
            "PALPOST",
            f"{persons}/{nid}/family",
            403,
            "Server.ServerProxy.AccessDenied",
            "citizen-service",
        ),
        Step(
            "post-office window without a purpose of use",
            "PALPOST",
            f"{persons}/{nid}",
            403,
            "Server.ServerProxy.AccessDenied.PurposeNotAllowed",
        ),
        Step(
            "unknown service",
            "PALPOST",
            "/r1/PS/GOV/MOI/population-registry/vehicles/1",
            404,
            "Server.ServerProxy.UnknownService",
            "citizen-service",
        ),
        Step(
            "person not in the registry (the registry's own 404)",
            "PALPOST",
            f"{persons}/{federation.unknown_id}",
            404,
            None,
            "citizen-service",
        ),
        Step(
            "malformed national ID (the registry's own 400)",
            "PALPOST",
            f"{persons}/12345",
            400,
            None,
            "citizen-service",
        ),
        Step(
            "Health's server asked to act for the post office",
            "MOH",
            f"{persons}/{nid}",
            403,
            "Client.UnknownClient",
            "patient-care",
            as_client="PS/GOV/PALPOST/unified-window",
        ),
        Step(
            "malformed service identifier",
            "PALPOST",
            "/r1/PS/GOV/MOI/population registry/persons",
            400,
            "Client.InvalidServiceIdentifier",
        ),
    ]


def _client_of(ministry: Ministry, step: Step) -> str:
    return step.as_client or str(ministry.subsystem)


def _soap_envelope(ministry: Ministry, step: Step, message_id: str) -> bytes:
    header = soap.XRoadHeader(
        client=parse_subsystem(_client_of(ministry, step)),
        service=GET_PERSON,
        service_version=None,
        message_id=message_id,
        user_id=step.user_id,
        issue=None,
        protocol_version=soap.PROTOCOL_VERSION,
        represented_party=None,
        security_server=None,
        purpose=step.purpose,
    )
    body = etree.Element(f"{{{REGISTRY_NS}}}getPerson", nsmap={"reg": REGISTRY_NS})
    etree.SubElement(body, f"{{{REGISTRY_NS}}}nationalId").text = step.soap_national_id
    return soap.request_envelope(header, body)


def _soap_fields(raw: bytes) -> tuple[str, ...]:
    """The child element names of the response's ``<getPersonResponse>``."""
    root = soap.parse_xml(raw)
    body = root.find(f"{{{soap.SOAP_ENV_NS}}}Body")
    answer = next(iter(body), None) if body is not None else None
    if answer is None or not str(answer.tag).endswith("getPersonResponse"):
        return ()
    return tuple(etree.QName(child).localname for child in answer)


async def run_soap_step(
    session: aiohttp.ClientSession, federation: Federation, step: Step
) -> Outcome:
    ministry = _BY_CODE[step.caller]
    message_id = str(uuid.uuid4())
    envelope = _soap_envelope(ministry, step, message_id)
    headers = {"Content-Type": soap.SOAP_CONTENT_TYPE, "SOAPAction": '""'}
    url = federation.consumer_url(ministry.member) + "/"
    async with session.post(url, data=envelope, headers=headers) as resp:
        raw = await resp.read()
        error = resp.headers.get("X-Road-Error")
        status = resp.status
    fields = _soap_fields(raw) if status == 200 else ()
    return Outcome(step, message_id, status, error, fields, raw.decode(errors="replace"))


async def run_step(session: aiohttp.ClientSession, federation: Federation, step: Step) -> Outcome:
    if step.soap_national_id is not None:
        return await run_soap_step(session, federation, step)
    ministry = _BY_CODE[step.caller]
    headers = {"X-Road-Client": _client_of(ministry, step)}
    if step.purpose:
        headers["X-Road-Purpose"] = step.purpose
    if step.user_id:
        headers["X-Road-UserId"] = step.user_id
    url = federation.consumer_url(ministry.member) + step.path
    for _ in range(step.repeat_until_expected + 1):
        message_id = str(uuid.uuid4())
        async with session.get(url, headers=dict(headers, **{"X-Road-Id": message_id})) as resp:
            raw = await resp.read()
            error = resp.headers.get("X-Road-Error")
            status = resp.status
        if status == step.expect_status:
            break
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = raw.decode(errors="replace")
    fields = tuple(body) if isinstance(body, dict) and status == 200 else ()
    return Outcome(step, message_id, status, error, fields, body)


async def run_scenario(federation: Federation) -> list[Outcome]:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return [await run_step(session, federation, step) for step in steps(federation)]
