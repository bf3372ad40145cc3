"""The central service catalogue: security servers declare what they provide, signed with their
authentication key; the central server stores only what it can verify and browses it as JSON.
Forged declarations are refused with their exact codes and change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import pytest_asyncio
from cryptography import x509

from exchange.central.catalogue import (
    MAX_BODY_BYTES,
    DeclaredService,
    new_declaration,
    sign_declaration,
)
from exchange.identifiers import SecurityServerId, parse_subsystem
from exchange.protocol.canonical import b64url, canonical_bytes
from exchange.protocol.jws import Signer
from exchange.server.core import SecurityServer
from exchange.server.declare import declaration_url
from exchange.trust.keys import generate_key, load_certificate, load_private_key
from tests.integration.conftest import MOI, REGISTRY_SUB, Net
from tests.integration.support import foreign_ca, launch, publish

pytestmark = pytest.mark.asyncio(loop_scope="session")

LICENCES = parse_subsystem("PS/GOV/MOI/licences")
PERMITS = parse_subsystem("PS/GOV/MOI/permits")
CAT_ID = SecurityServerId(*MOI.parts, "ss-cat")


@dataclass
class Cat:
    server: SecurityServer
    central: str

    def auth(self) -> Signer:
        cfg = self.server.config
        return Signer(load_private_key(cfg.auth_key, None), load_certificate(cfg.auth_cert))


def _services() -> list[dict[str, Any]]:
    return [
        {
            "id": f"{LICENCES}/driving",
            "url": "http://127.0.0.1:9/driving",
            "openapi_url": "http://127.0.0.1:9/openapi.json",
            "title": "Driving licences",
            "description": "Validity and categories of a driving licence.",
        },
        {"id": f"{LICENCES}/trade", "url": "http://127.0.0.1:9/trade"},
        {
            "id": f"{LICENCES}/getLicence",
            "type": "soap",
            "url": "http://127.0.0.1:9/soap",
            "title": "Licence (SOAP)",
        },
        {"id": f"{PERMITS}/building", "url": "http://127.0.0.1:9/building"},
    ]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def cat(net: Net) -> AsyncIterator[Cat]:
    server = await launch(
        net, "moi-cat", CAT_ID, clients=[LICENCES, PERMITS], extra={"services": _services()}
    )
    await asyncio.wait_for(server.declarer.accepted.wait(), 30)
    url = declaration_url(server.anchor.download_url).removesuffix("/declarations")
    yield Cat(server, url)


async def _get(net: Net, url: str) -> tuple[int, Any]:
    assert net.session is not None
    async with net.session.get(url) as response:
        return response.status, orjson.loads(await response.read())


async def _post(net: Net, cat: Cat, body: bytes) -> tuple[int, Any]:
    assert net.session is not None
    async with net.session.post(f"{cat.central}/declarations", data=body) as response:
        return response.status, orjson.loads(await response.read())


def _entry(catalogue: dict[str, Any], subsystem: Any) -> dict[str, Any] | None:
    return next((e for e in catalogue["subsystems"] if e["subsystem"] == str(subsystem)), None)


# --- declared on start, browsable ---------------------------------------------------------------


async def test_servers_declare_on_start(net: Net, cat: Cat) -> None:
    status, catalogue = await _get(net, cat.central)
    assert status == 200
    assert catalogue["instance"] == "PS"
    licences = _entry(catalogue, LICENCES)
    assert licences is not None
    assert licences["member"] == "PS/GOV/MOI" and licences["member_name"] == "Interior"
    assert licences["servers"] == [str(CAT_ID)]
    assert licences["services"] == [
        {
            "id": f"{LICENCES}/driving",
            "service_code": "driving",
            "service_type": "OPENAPI",
            "title": "Driving licences",
            "description": "Validity and categories of a driving licence.",
            "description_service": "getOpenAPI",
        },
        {
            "id": f"{LICENCES}/getLicence",
            "service_code": "getLicence",
            "service_type": "WSDL",
            "title": "Licence (SOAP)",
            "description": None,
            "description_service": "getWsdl",
        },
        {
            "id": f"{LICENCES}/trade",
            "service_code": "trade",
            "service_type": "REST",
            "title": None,
            "description": None,
            "description_service": None,
        },
    ]
    assert cat.server.health()["catalogue"] == {"declared": True, "last_error": None}
    # the shared federation's registry server declared too
    await asyncio.wait_for(net.servers["moi"].declarer.accepted.wait(), 30)
    _, catalogue = await _get(net, cat.central)
    registry = _entry(catalogue, REGISTRY_SUB)
    assert registry is not None
    assert [s["service_code"] for s in registry["services"]] == ["echo", "misc", "persons", "text"]


@pytest.mark.parametrize(
    ("path", "status", "expect"),
    [
        pytest.param("/PS/GOV/MOI/licences", 200, [str(LICENCES)], id="one-subsystem"),
        pytest.param("/PS/GOV/MOF", 200, [], id="member-without-services"),
        pytest.param("/PS/GOV/NOPE", 404, "Client.UnknownMember", id="unknown-member"),
        pytest.param("/PS/GOV/MOI/nope", 404, "Client.UnknownSubsystem", id="unknown-subsystem"),
        pytest.param("/P%20S/GOV/MOI", 400, "Client.InvalidIdentifier", id="bad-identifier"),
        pytest.param("/PS/GOV", 400, "Client.InvalidIdentifier", id="too-few-parts"),
    ],
)
async def test_catalogue_filters(
    net: Net, cat: Cat, path: str, status: int, expect: list[str] | str
) -> None:
    got, body = await _get(net, cat.central + path)
    assert got == status, body
    if isinstance(expect, str):
        assert body["type"] == expect
    else:
        assert [e["subsystem"] for e in body["subsystems"]] == expect


async def test_member_filter(net: Net, cat: Cat) -> None:
    _, body = await _get(net, f"{cat.central}/PS/GOV/MOI")
    subsystems = {e["subsystem"] for e in body["subsystems"]}
    assert {str(LICENCES), str(PERMITS), str(REGISTRY_SUB)} <= subsystems
    assert all(e["member"] == "PS/GOV/MOI" for e in body["subsystems"])


# --- forged declarations ------------------------------------------------------------------------

Forge = Callable[[Net, Cat], bytes]


def _declare(
    cat: Cat,
    auth: Signer | None = None,
    subsystems: list[tuple[Any, list[DeclaredService]]] | None = None,
    server: SecurityServerId = CAT_ID,
    now_ms: int | None = None,
) -> bytes:
    signer = auth or cat.auth()
    declaration = new_declaration(
        server,
        signer.cert,
        subsystems if subsystems is not None else [(LICENCES, [DeclaredService("x", "rest")])],
        now_ms if now_ms is not None else int(cat.server.clock() * 1000),
    )
    return sign_declaration(declaration, signer)


def _issued(issue: Callable[[Any], x509.Certificate]) -> Signer:
    key = generate_key()
    return Signer(key, issue(key.public_key()))


def _other_servers_key(net: Net, cat: Cat) -> bytes:
    cfg = net.servers["palpost"].config
    signer = Signer(load_private_key(cfg.auth_key, None), load_certificate(cfg.auth_cert))
    return _declare(cat, auth=signer)


def _unregistered_cert(net: Net, cat: Cat) -> bytes:
    return _declare(cat, auth=_issued(lambda pub: net.ca.issue_auth_cert(pub, CAT_ID)))


def _foreign_ca(net: Net, cat: Cat) -> bytes:
    ca = foreign_ca(net.root)
    return _declare(cat, auth=_issued(lambda pub: ca.issue_auth_cert(pub, CAT_ID)))


def _signing_key(net: Net, cat: Cat) -> bytes:
    item = cat.server.config.signing[0]
    return _declare(cat, auth=Signer(load_private_key(item.key, None), load_certificate(item.cert)))


def _tampered(net: Net, cat: Cat) -> bytes:
    token = orjson.loads(_declare(cat))["signature"]
    header, _, signature = token.split(".")
    forged = new_declaration(
        CAT_ID, cat.auth().cert, [(REGISTRY_SUB, [DeclaredService("persons", "rest")])], 0
    )
    payload = b64url(canonical_bytes(forged.document()))
    return canonical_bytes({"signature": f"{header}.{payload}.{signature}"})


def _stale(net: Net, cat: Cat) -> bytes:
    return _declare(cat, now_ms=int((cat.server.clock() - 3600) * 1000))


def _reserved(net: Net, cat: Cat) -> bytes:
    return _declare(cat, subsystems=[(LICENCES, [DeclaredService("listMethods", "rest")])])


@pytest.mark.parametrize(
    ("forge", "status", "code", "reason"),
    [
        pytest.param(
            lambda net, cat: _declare(
                cat, subsystems=[(REGISTRY_SUB, [DeclaredService("persons", "rest")])]
            ),
            403,
            "Client.ServiceDeclarationForbidden",
            "does not host subsystem PS/GOV/MOI/population-registry",
            id="subsystem-not-hosted",
        ),
        pytest.param(
            lambda net, cat: _declare(
                cat, subsystems=[(parse_subsystem("PS/GOV/MOH/health-records"), [])]
            ),
            403,
            "Client.ServiceDeclarationForbidden",
            "does not host subsystem",
            id="another-members-subsystem",
        ),
        pytest.param(
            _other_servers_key,
            403,
            "Client.ServiceDeclarationForbidden",
            "is issued to",
            id="another-servers-key",
        ),
        pytest.param(
            _unregistered_cert,
            403,
            "Client.ServiceDeclarationForbidden",
            "not registered",
            id="cert-not-registered",
        ),
        pytest.param(
            _foreign_ca,
            400,
            "Client.InvalidServiceDeclaration",
            "authentication certificate",
            id="foreign-ca",
        ),
        pytest.param(
            _signing_key,
            400,
            "Client.InvalidServiceDeclaration",
            "authentication certificate",
            id="signing-cert-not-auth",
        ),
        pytest.param(
            _tampered,
            400,
            "Client.InvalidServiceDeclaration",
            "signature",
            id="tampered-payload",
        ),
        pytest.param(_stale, 400, "Client.InvalidServiceDeclaration", "declared_at", id="stale"),
        pytest.param(
            _reserved, 400, "Client.InvalidServiceDeclaration", "reserved", id="reserved-code"
        ),
        pytest.param(
            lambda net, cat: b" " * (600 * 1024),
            400,
            "Client.InvalidServiceDeclaration",
            "larger than",
            id="oversize",
        ),
        pytest.param(
            lambda net, cat: b"not json",
            400,
            "Client.InvalidServiceDeclaration",
            "not JSON",
            id="not-json",
        ),
        pytest.param(
            lambda net, cat: b'{"signature": "a.b.c", "more": 1}',
            400,
            "Client.InvalidServiceDeclaration",
            "exactly 'signature'",
            id="extra-field",
        ),
    ],
)
async def test_forged_declarations_are_refused(
    net: Net, cat: Cat, forge: Forge, status: int, code: str, reason: str
) -> None:
    _, before = await _get(net, cat.central)
    got, body = await _post(net, cat, forge(net, cat))
    assert (got, body["type"]) == (status, code), body
    assert reason in body["message"]
    _, after = await _get(net, cat.central)
    assert after == before


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


@pytest.mark.parametrize(
    ("announced", "size"),
    [
        (True, MAX_BODY_BYTES + 1),
        (False, MAX_BODY_BYTES + 1),
        (False, 2 * 1024 * 1024),
    ],
    ids=["content-length", "chunked", "chunked-beyond-aiohttp-limit"],
)
async def test_an_oversize_declaration_is_refused_in_the_same_words(
    net: Net, cat: Cat, announced: bool, size: int
) -> None:
    """Refused before it is read when its length is announced, as soon as it passes the limit
    when sent in chunks (also beyond aiohttp's own 1 MiB limit, which answered with a plain-text
    413 before): the same code and words either way, and the server keeps serving."""
    assert net.session is not None
    body = b" " * size
    data = body if announced else _chunks(body)
    async with net.session.post(f"{cat.central}/declarations", data=data) as response:
        status, answer = response.status, orjson.loads(await response.read())
    assert (status, answer["type"], answer["message"]) == (
        400,
        "Client.InvalidServiceDeclaration",
        f"the declaration is larger than {MAX_BODY_BYTES} bytes",
    )
    assert (await _get(net, cat.central))[0] == 200


async def test_replayed_declaration_is_refused(net: Net, cat: Cat) -> None:
    body = _declare(cat, subsystems=[(LICENCES, [DeclaredService("driving", "rest")])])
    assert (await _post(net, cat, body))[0] == 200
    status, answer = await _post(net, cat, body)
    assert (status, answer["type"]) == (400, "Client.InvalidServiceDeclaration")
    assert "at least as recent" in answer["message"]
    # the server's own declaration restores the full list
    cat.server.declarer.start()
    await asyncio.wait_for(cat.server.declarer.accepted.wait(), 30)
    _, catalogue = await _get(net, f"{cat.central}/PS/GOV/MOI/licences")
    assert len(catalogue["subsystems"][0]["services"]) == 3


async def test_a_new_declaration_replaces_the_old(net: Net, cat: Cat) -> None:
    body = _declare(cat, subsystems=[(PERMITS, [DeclaredService("building", "rest", "Permits")])])
    status, answer = await _post(net, cat, body)
    assert status == 200, answer
    assert answer == {"server": str(CAT_ID), "subsystems": 1, "services": 1}
    _, catalogue = await _get(net, f"{cat.central}/PS/GOV/MOI")
    assert _entry(catalogue, LICENCES) is None
    permits = _entry(catalogue, PERMITS)
    assert permits is not None and permits["services"][0]["title"] == "Permits"
    cat.server.declarer.start()
    await asyncio.wait_for(cat.server.declarer.accepted.wait(), 30)
    _, catalogue = await _get(net, f"{cat.central}/PS/GOV/MOI")
    assert _entry(catalogue, LICENCES) is not None


async def test_subsystem_moved_off_the_server_drops_out(net: Net, cat: Cat) -> None:
    """The catalogue joins declarations with the registry when it is read."""
    with net.registry() as reg:
        reg.remove_server_client(CAT_ID, PERMITS)
    try:
        _, catalogue = await _get(net, cat.central)
        assert _entry(catalogue, PERMITS) is None
        assert _entry(catalogue, LICENCES) is not None
    finally:
        with net.registry() as reg:
            reg.add_server_client(CAT_ID, PERMITS)
        await publish(net)


async def test_a_declaration_by_a_key_removed_from_the_registry_drops_out(
    net: Net, cat: Cat
) -> None:
    """Red team: a second authentication key of the server (as during a rotation) is stolen and
    declares a fake service; the operator removes its fingerprint. Before the fix, the catalogue
    kept showing what the removed key declared until the server declared again (the catalogue
    re-checked the server and its subsystems at read time, not the key), and a declaration it
    dated ahead blocked the server's own until that time."""
    from exchange.trust.keys import fingerprint

    stolen = _issued(lambda pub: net.ca.issue_auth_cert(pub, CAT_ID))
    with net.registry() as reg:
        reg.add_auth_cert(CAT_ID, fingerprint(stolen.cert))
    try:
        fake = [(LICENCES, [DeclaredService("phishing", "rest", "Renew your licence here")])]
        # dated ahead (within the allowed skew), so that it would block the server's own
        ahead = int((cat.server.clock() + 590) * 1000)
        forged = _declare(cat, auth=stolen, subsystems=fake, now_ms=ahead)
        status, answer = await _post(net, cat, forged)
        assert status == 200, answer
        _, catalogue = await _get(net, cat.central)
        licences = _entry(catalogue, LICENCES)
        assert licences is not None and licences["services"][0]["service_code"] == "phishing"
    finally:
        with net.registry() as reg:
            reg.remove_auth_cert(CAT_ID, fingerprint(stolen.cert))
        await publish(net)
    _, catalogue = await _get(net, cat.central)
    assert _entry(catalogue, LICENCES) is None, catalogue
    # the server's own declaration is not blocked by the removed key's one dated ahead
    # (before the second fix: "a declaration at least as recent is already held")
    status, answer = await _post(net, cat, _declare(cat))
    assert status == 200, answer
    # the server's own declaration (its registered key) brings the real services back
    cat.server.declarer.start()
    await asyncio.wait_for(cat.server.declarer.accepted.wait(), 30)
    _, catalogue = await _get(net, cat.central)
    licences = _entry(catalogue, LICENCES)
    assert licences is not None and "phishing" not in str(licences["services"])
