"""The scripted exchanges of the example federation, and what each must show.

Every step goes through real security servers: the caller's consumer port, mutual TLS to the
provider's port, signature checks, the provider's policy, its adapter, and durable logging on
both sides. A step passes when the status and X-Road error code (or its absence) are as
expected, and, for a retry, when the answer is the very one given before; the summary also
shows which fields each client received. The post office's window serves one citizen across the
four ministries: Interior's registry and certificate of residence, Health's insurance status,
Telecom's SIM registry, and a fee paid to Finance, retried without a second charge.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

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
    method: str = "GET"
    body: dict[str, Any] | None = None  # sent as JSON
    idempotency_key: str | None = None
    keep: str | None = None  # remember the answer under this name: later paths use {name[field]}
    same_as: str | None = None  # a retry: the answer must be byte for byte the one kept so


@dataclass(frozen=True, slots=True)
class Outcome:
    step: Step
    message_id: str
    status: int
    error: str | None
    fields: tuple[str, ...]
    body: Any
    raw: bytes = b""
    identical: bool | None = None  # for a retry: whether the answer was the one given before

    @property
    def passed(self) -> bool:
        expected = self.status == self.step.expect_status and self.error == self.step.expect_error
        return expected and self.identical is not False


CLERK = "PS-clerk-biddu-01"
"""The X-Road user id of the window's scripted exchanges: the clerk at the counter (the window
sends one with every exchange, `examples/window/xroad.py`)."""


def steps(federation: Federation) -> list[Step]:
    return [*_registry_steps(federation), *_window_steps(federation)]


def _registry_steps(federation: Federation) -> list[Step]:
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
            user_id=CLERK,
        ),
        Step(
            "post-office window confirms the citizen's address",
            "PALPOST",
            f"{persons}/{nid}/address",
            200,
            None,
            "citizen-service",
            user_id=CLERK,
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
            user_id=CLERK,
        ),
        Step(
            "post-office window without a purpose of use",
            "PALPOST",
            f"{persons}/{nid}",
            403,
            "Server.ServerProxy.AccessDenied.PurposeNotAllowed",
            user_id=CLERK,
        ),
        Step(
            "unknown service",
            "PALPOST",
            "/r1/PS/GOV/MOI/population-registry/vehicles/1",
            404,
            "Server.ServerProxy.UnknownService",
            "citizen-service",
            user_id=CLERK,
        ),
        Step(
            "person not in the registry (the registry's own 404)",
            "PALPOST",
            f"{persons}/{federation.unknown_id}",
            404,
            None,
            "citizen-service",
            user_id=CLERK,
        ),
        Step(
            "malformed national ID (the registry's own 400)",
            "PALPOST",
            f"{persons}/12345",
            400,
            None,
            "citizen-service",
            user_id=CLERK,
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
            user_id=CLERK,
        ),
    ]


def _window(title: str, path: str, status: int, **more: Any) -> Step:
    """One exchange of the post office's window for a citizen at the counter."""
    user_id = more.pop("user_id", CLERK)
    return Step(title, "PALPOST", path, status, more.pop("error", None), "citizen-service",
                user_id=user_id, **more)  # fmt: skip


def _window_steps(federation: Federation) -> list[Step]:
    """The window serves one citizen across the four ministries (issue 15)."""
    nid = federation.sample_ids[0]
    name, born = federation.sample_search
    moi, moh = "/r1/PS/GOV/MOI/population-registry", "/r1/PS/GOV/MOH/health-insurance"
    mtit, mof = "/r1/PS/GOV/MTIT/sim-registry", "/r1/PS/GOV/MOF/payments"
    sim = {"national_id": nid, "msisdn": "0599100200", "operator": "Jawwal"}
    fee = {"service": "residence-certificate", "national_id": nid}
    pay = f"{mof}/fees/{{fee[fee_id]}}/payment"
    refund = f"{mof}/receipts/{{receipt[receipt_number]}}/refund"
    key = str(uuid.uuid4())
    return [
        _window("window finds a citizen by name and date of birth (Interior)",
                f"{moi}/persons?name={quote_plus(name)}&date_of_birth={born}", 200),
        _window("Interior issues a signed certificate of residence",
                f"{moi}/residence-certificates", 201, method="POST",
                body={"national_id": nid}, idempotency_key=str(uuid.uuid4()),
                keep="certificate"),
        _window("Health: is the citizen insured? (dependants withheld)",
                f"{moh}/status/{nid}", 200),
        _window("Telecom registers a SIM card to the citizen", f"{mtit}/sims", 201,
                method="POST", body=sim),
        _window("Telecom lists the citizen's SIM cards", f"{mtit}/sims?national_id={nid}", 200),
        _window("Finance's fee schedule", f"{mof}/schedule", 200),
        _window("Finance: the fee of a certificate of residence", f"{mof}/fees", 201,
                method="POST", body=fee, idempotency_key=str(uuid.uuid4()), keep="fee"),
        _window("the citizen pays the fee in cash: Finance's signed receipt", pay, 201,
                method="POST", body={"method": "cash"}, idempotency_key=key, keep="receipt"),
        _window("the window retries the payment (same Idempotency-Key): the same receipt", pay,
                200, method="POST", body={"method": "cash"}, idempotency_key=key,
                same_as="receipt"),
        _window("a second payment of the paid fee is refused: no second charge", pay, 409,
                method="POST", body={"method": "cash"}, idempotency_key=str(uuid.uuid4())),
        _window("Finance refuses a refund of more than was paid", refund, 409, method="POST",
                body={"reason": "overcharged", "amount": "10.01"},
                idempotency_key=str(uuid.uuid4())),
        _window("Telecom refuses the window without the clerk's user id", f"{mtit}/sims", 403,
                method="POST", body=sim, user_id=None,
                error="Server.ServerProxy.AccessDenied.UserIdRequired"),
    ]  # fmt: skip


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


def _request_headers(ministry: Ministry, step: Step) -> dict[str, str]:
    headers = {"X-Road-Client": _client_of(ministry, step)}
    if step.purpose:
        headers["X-Road-Purpose"] = step.purpose
    if step.user_id:
        headers["X-Road-UserId"] = step.user_id
    if step.idempotency_key:
        headers["Idempotency-Key"] = step.idempotency_key
    if step.body is not None:
        headers["Content-Type"] = "application/json"
    return headers


def _fields(body: Any) -> tuple[str, ...]:
    """The members received: an object's, or those of a list's objects."""
    if isinstance(body, dict):
        return tuple(body)
    if isinstance(body, list):
        return tuple(dict.fromkeys(k for item in body if isinstance(item, dict) for k in item))
    return ()


async def run_step(
    session: aiohttp.ClientSession,
    federation: Federation,
    step: Step,
    kept: dict[str, Outcome] | None = None,
) -> Outcome:
    """One step; ``kept`` holds the answers of earlier steps that said ``keep``."""
    if step.soap_national_id is not None:
        return await run_soap_step(session, federation, step)
    kept = {} if kept is None else kept
    ministry = _BY_CODE[step.caller]
    headers = _request_headers(ministry, step)
    try:
        path = step.path.format(**{name: outcome.body for name, outcome in kept.items()})
    except (KeyError, IndexError, TypeError):
        return Outcome(step, "", 0, "not sent", (), "an earlier step it needs failed")
    url = federation.consumer_url(ministry.member) + path
    data = None if step.body is None else orjson.dumps(step.body)
    for _ in range(step.repeat_until_expected + 1):
        message_id = str(uuid.uuid4())
        sent = dict(headers, **{"X-Road-Id": message_id})
        async with session.request(step.method, url, headers=sent, data=data) as resp:
            raw = await resp.read()
            error = resp.headers.get("X-Road-Error")
            status = resp.status
        if status == step.expect_status:
            break
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = raw.decode(errors="replace")
    fields = _fields(body) if 200 <= status < 300 else ()
    identical = None if step.same_as is None else raw == kept[step.same_as].raw
    return Outcome(step, message_id, status, error, fields, body, raw, identical)


async def run_scenario(federation: Federation) -> list[Outcome]:
    timeout = aiohttp.ClientTimeout(total=60)
    outcomes: list[Outcome] = []
    kept: dict[str, Outcome] = {}
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for step in steps(federation):
            outcome = await run_step(session, federation, step, kept)
            outcomes.append(outcome)
            if step.keep is not None and 200 <= outcome.status < 300:
                kept[step.keep] = outcome
    return outcomes
