"""The registration workflow: a security server asks, the central server's operator decides."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

import exchange.cli.registration as registration_cli
from exchange.central.app import PUBLISHER_KEY, CentralConfig, create_app
from exchange.central.registration import (
    MAX_BODY_BYTES,
    InvalidRegistrationRequest,
    RegistrationRequest,
    new_request,
    sign_registration,
    verify_registration,
)
from exchange.central.registration_app import add_registration_routes
from exchange.central.registry import Registry
from exchange.central.setup import init_central
from exchange.cli.central import group as central_group
from exchange.cli.server import group as server_group
from exchange.errors import ClientError
from exchange.identifiers import (
    MemberId,
    SecurityServerId,
    SubsystemId,
    parse_member,
    parse_security_server,
    parse_subsystem,
)
from exchange.protocol.canonical import b64url, b64url_decode, canonical_bytes, loads
from exchange.protocol.jws import Signer
from exchange.server.config import load_server_config
from exchange.server.setup import init_server
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import cert_pem, fingerprint, generate_key

MOI = parse_member("PS/GOV/MOI")
MOF = parse_member("PS/GOV/MOF")
MOH = parse_member("PS/GOV/MOH")
SS1 = parse_security_server("PS/GOV/MOI/ss1")
SS2 = parse_security_server("PS/GOV/MOI/ss2")
POPULATION = parse_subsystem("PS/GOV/MOI/population-registry")
BUDGET = parse_subsystem("PS/GOV/MOF/budget")


@dataclass(frozen=True, slots=True)
class Central:
    url: str
    config: CentralConfig
    toml: Path
    ca: CertificateAuthority
    foreign_ca: CertificateAuthority
    app: web.Application
    tmp: Path


def _prepare(tmp_path: Path) -> tuple[CentralConfig, CertificateAuthority]:
    config = init_central(tmp_path / "central", "PS", port=0)
    config = dataclasses.replace(config, change_check_seconds=0.05)
    ca = CertificateAuthority.create(tmp_path / "ca", "PS Test CA")
    with Registry.open(config.db_path) as registry:
        registry.add_ca("PS Test CA", cert_pem(ca.cert))
        registry.add_member(MOI, "Ministry of Interior")
        registry.add_member(MOF, "Ministry of Finance")
        registry.add_subsystem(BUDGET)
    return config, ca


def _app(config: CentralConfig) -> web.Application:
    app = create_app(config)

    def ca_certs() -> list[x509.Certificate]:
        latest = app[PUBLISHER_KEY].latest
        return latest.conf.ca_certs() if latest is not None else []

    add_registration_routes(app, config.db_path, ca_certs)
    return app


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def central(tmp_path: Path) -> AsyncIterator[Central]:
    config, ca = _prepare(tmp_path)
    foreign = CertificateAuthority.create(tmp_path / "foreign-ca", "Foreign CA")
    app = _app(config)
    runner, url = await _start(app)
    try:
        yield Central(
            url=url,
            config=config,
            toml=tmp_path / "central" / "central.toml",
            ca=ca,
            foreign_ca=foreign,
            app=app,
            tmp=tmp_path,
        )
    finally:
        await runner.cleanup()


async def _post(central: Central, body: bytes) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{central.url}/registration", data=body) as response,
    ):
        return response.status, await response.json()


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(central_group, ["registration", *args], catch_exceptions=False)
    return result


# --- the workflow end to end ---------------------------------------------------------------------


async def test_register_approve_and_the_next_globalconf_has_the_server(central: Central) -> None:
    result = init_server(
        central.tmp / "ss1", SS1, central.config.anchor_path, clients=[POPULATION], ca=central.ca
    )
    config = load_server_config(result.config)
    request, body = registration_cli.build_registration(
        config, "10.0.0.5:8443", None, int(time.time())
    )
    answer = await registration_cli.submit_registration(central.url, body)
    assert answer["status"] == "pending" and re.fullmatch(r"[0-9a-f]{8}", answer["id"])
    request_id = answer["id"]

    listed = _cli("list", "--config", str(central.toml), "--json")
    assert listed.exit_code == 0
    [pending] = json.loads(listed.output)
    assert pending["id"] == request_id and pending["server"] == str(SS1)
    assert pending["clients"] == [str(POPULATION)]
    assert pending["auth_fingerprint"] == fingerprint(request.auth_cert)

    approved = _cli("approve", "--config", str(central.toml), request_id)
    assert approved.exit_code == 0, approved.output
    assert f"approved {request_id}: {SS1} at 10.0.0.5:8443" in approved.output

    with Registry.open(central.config.db_path) as registry:
        version = registry.version()
        conf = registry.build_globalconf(int(time.time()))
    server = conf.server(SS1)
    assert server is not None
    assert server.address == "10.0.0.5:8443"
    assert server.auth_cert_fingerprints == (fingerprint(request.auth_cert),)
    assert server.clients == (POPULATION,)
    assert conf.has_subsystem(POPULATION)
    published = await central.app[PUBLISHER_KEY].wait_for_version(version)
    assert published.conf.server(SS1) == server

    status = await registration_cli.registration_status(central.url, request_id)
    assert status == {"id": request_id, "status": "approved", "reason": None}
    assert json.loads(_cli("list", "--config", str(central.toml), "--json").output) == []
    again = CliRunner().invoke(
        central_group, ["registration", "approve", "--config", str(central.toml), request_id]
    )
    assert again.exit_code == 2 and "already approved" in again.output


async def test_a_new_auth_key_of_a_registered_server_is_added_next_to_the_old(
    central: Central,
) -> None:
    now = int(time.time())
    first, first_body = _request(central, clients=(POPULATION,), address="127.0.0.1:8443")
    second, second_body = _request(central, clients=(POPULATION,), address="127.0.0.1:9443")
    ids = []
    for body in (first_body, second_body):
        status, answer = await _post(central, body)
        assert status == 202
        ids.append(answer["id"])
    for request_id in ids:
        assert _cli("approve", "--config", str(central.toml), request_id).exit_code == 0
    with Registry.open(central.config.db_path) as registry:
        server = registry.build_globalconf(now).server(SS1)
    assert server is not None and server.address == "127.0.0.1:9443"
    expected = sorted(fingerprint(r.auth_cert) for r in (first, second))
    assert list(server.auth_cert_fingerprints) == expected
    assert server.clients == (POPULATION,)


async def test_rejected_request_registers_nothing(central: Central) -> None:
    _, body = _request(central)
    status, answer = await _post(central, body)
    assert status == 202
    result = _cli(
        "reject", "--config", str(central.toml), answer["id"], "--reason", "not our server"
    )
    assert result.exit_code == 0 and "rejected" in result.output
    with Registry.open(central.config.db_path) as registry:
        assert registry.build_globalconf(int(time.time())).server(SS1) is None
    listed = json.loads(_cli("list", "--config", str(central.toml), "--json", "--all").output)
    assert [(r["status"], r["reason"]) for r in listed] == [("rejected", "not our server")]
    status_answer = await registration_cli.registration_status(central.url, answer["id"])
    assert status_answer["status"] == "rejected"
    table = _cli("list", "--config", str(central.toml), "--all")
    assert answer["id"] in table.output and "not our server" in table.output


async def test_unknown_request_id(central: Central) -> None:
    result = CliRunner().invoke(
        central_group, ["registration", "approve", "--config", str(central.toml), "deadbeef"]
    )
    assert result.exit_code == 2 and "no registration request 'deadbeef'" in result.output
    with pytest.raises(ClientError, match=r"Client\.UnknownRegistrationRequest"):
        await registration_cli.registration_status(central.url, "deadbeef")


# --- refusals ------------------------------------------------------------------------------------


def _request(
    central: Central,
    *,
    server: SecurityServerId = SS1,
    auth_for: SecurityServerId | None = None,
    sign_for: MemberId | None = None,
    clients: tuple[SubsystemId, ...] = (),
    address: str = "127.0.0.1:8443",
    requested_at: int | None = None,
    auth_ca: CertificateAuthority | None = None,
    auth_cert: Callable[[CertificateAuthority, Any], x509.Certificate] | None = None,
    sign_cert: Callable[[CertificateAuthority, Any], x509.Certificate] | None = None,
) -> tuple[RegistrationRequest, bytes]:
    ca = central.ca
    auth_key, sign_key = generate_key(), generate_key()
    auth = (
        auth_cert(ca, auth_key.public_key())
        if auth_cert
        else (auth_ca or ca).issue_auth_cert(auth_key.public_key(), auth_for or server)
    )
    sign = (
        sign_cert(ca, sign_key.public_key())
        if sign_cert
        else ca.issue_sign_cert(sign_key.public_key(), sign_for or server.owner)
    )
    request = new_request(server, address, clients, auth, sign, int(time.time()))
    if requested_at is not None:
        request = dataclasses.replace(request, requested_at=requested_at)
    return request, sign_registration(request, Signer(auth_key, auth), Signer(sign_key, sign))


def _signed_over_different_documents(central: Central) -> bytes:
    """Each signature valid over its own document, but the two documents differ."""
    first = loads(_request(central, address="127.0.0.1:8443")[1])
    second = loads(_request(central, address="203.0.113.9:8443")[1])
    return canonical_bytes(
        {"auth_signature": first["auth_signature"], "member_signature": second["member_signature"]}
    )


def _thumbprint_of_another_certificate(central: Central) -> bytes:
    """The auth key really signed the document, but the JWS header names another certificate
    (here the member's signing certificate) than the one the document carries."""
    ca = central.ca
    auth_key, sign_key = generate_key(), generate_key()
    auth = ca.issue_auth_cert(auth_key.public_key(), SS1)
    sign = ca.issue_sign_cert(sign_key.public_key(), SS1.owner)
    request = new_request(SS1, "127.0.0.1:8443", (), auth, sign, int(time.time()))
    return sign_registration(request, Signer(auth_key, sign), Signer(sign_key, sign))


def _tampered(body: bytes) -> bytes:
    envelope = loads(body)
    out = {}
    for name, token in envelope.items():
        header, payload, signature = token.split(".")
        doc = loads(b64url_decode(payload))
        doc["address"] = "203.0.113.9:8443"
        out[name] = f"{header}.{b64url(canonical_bytes(doc))}.{signature}"
    return canonical_bytes(out)


def _expired_auth(ca: CertificateAuthority, key: Any) -> x509.Certificate:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    return ca.issue_auth_cert(key, SS1, not_before=start, days=30)


REFUSALS = [
    pytest.param(
        lambda c: _request(c, auth_for=SS2)[1],
        "the authentication certificate is issued to PS/GOV/MOI/ss2, not PS/GOV/MOI/ss1",
        id="auth-cert-of-another-server",
    ),
    pytest.param(
        lambda c: _request(c, sign_for=MOF)[1],
        "the signing certificate is issued to PS/GOV/MOF, not to the server's owner PS/GOV/MOI",
        id="sign-cert-of-another-member",
    ),
    pytest.param(
        lambda c: _request(c, auth_cert=lambda ca, key: ca.issue_sign_cert(key, MOI))[1],
        "authentication certificate: not an authentication certificate: "
        "key usage contentCommitment not allowed",
        id="sign-cert-as-auth-cert",
    ),
    pytest.param(
        lambda c: _request(c, sign_cert=lambda ca, key: ca.issue_auth_cert(key, SS1))[1],
        "signing certificate: not a signing certificate: key usage lacks contentCommitment",
        id="auth-cert-as-sign-cert",
    ),
    pytest.param(
        lambda c: _request(c, auth_ca=c.foreign_ca)[1],
        "authentication certificate: certificate not issued by an approved CA",
        id="auth-cert-from-foreign-ca",
    ),
    pytest.param(
        lambda c: _request(c, auth_cert=_expired_auth)[1],
        re.compile(r"authentication certificate: certificate expired at \d{4}-.*"),
        id="expired-auth-cert",
    ),
    pytest.param(
        lambda c: _tampered(_request(c)[1]),
        "authentication signature: signature does not verify",
        id="tampered-document",
    ),
    pytest.param(
        _signed_over_different_documents,
        "auth_signature and member_signature sign different documents",
        id="signatures-over-different-documents",
    ),
    pytest.param(
        _thumbprint_of_another_certificate,
        re.compile(
            r"authentication signature: x5t#S256 '[A-Za-z0-9_-]+' is not the thumbprint of "
            r"the certificate"
        ),
        id="thumbprint-of-another-certificate",
    ),
    pytest.param(
        lambda c: _request(c, requested_at=int(time.time()) - 601)[1],
        re.compile(r"requested_at \d+ is more than 600 s from the central server's time \d+; .*"),
        id="stale-requested-at",
    ),
    pytest.param(
        lambda c: _request(c, clients=(POPULATION, BUDGET))[1],
        "client PS/GOV/MOF/budget belongs to PS/GOV/MOF, not to the server's owner PS/GOV/MOI; "
        "that member must register it",
        id="client-of-another-member",
    ),
    pytest.param(
        lambda c: _request(c, server=parse_security_server("PS/GOV/MOH/ss1"))[1],
        "member PS/GOV/MOH is not registered at the central server; "
        "its operator must add the member first",
        id="unknown-owner-member",
    ),
    pytest.param(
        lambda c: b'{"auth_signature": "a.b.c"}',
        "the request body must hold exactly auth_signature and member_signature",
        id="one-signature-only",
    ),
]


@pytest.mark.parametrize(("make_body", "reason"), REFUSALS)
async def test_refused(
    central: Central, make_body: Callable[[Central], bytes], reason: str | re.Pattern[str]
) -> None:
    status, answer = await _post(central, make_body(central))
    assert status == 400
    assert answer["type"] == "Client.InvalidRegistrationRequest"
    if isinstance(reason, str):
        assert answer["message"] == reason
    else:
        assert reason.fullmatch(answer["message"]), answer["message"]
    assert json.loads(_cli("list", "--config", str(central.toml), "--json", "--all").output) == []


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 16 * 1024):
        yield body[start : start + 16 * 1024]


async def test_an_oversize_request_is_refused_in_the_same_words(central: Central) -> None:
    """Refused before it is read when its length is announced, as soon as it passes the limit
    when sent in chunks (also beyond aiohttp's own 1 MiB limit, which answered with a plain-text
    413 before): the same code and words either way, nothing stored, and the server keeps
    serving."""
    body = b" " * (MAX_BODY_BYTES + 1)
    beyond = b" " * (2 * 1024 * 1024)
    expected = (
        400,
        "Client.InvalidRegistrationRequest",
        f"the request is larger than {MAX_BODY_BYTES} bytes",
    )
    async with aiohttp.ClientSession() as session:
        for data in (body, _chunks(body), _chunks(beyond)):
            async with session.post(f"{central.url}/registration", data=data) as response:
                answer = await response.json()
                assert (response.status, answer["type"], answer["message"]) == expected
    assert json.loads(_cli("list", "--config", str(central.toml), "--json", "--all").output) == []
    _, valid = _request(central)
    assert (await _post(central, valid))[0] == 202


async def test_the_same_request_is_stored_once(central: Central) -> None:
    _, body = _request(central)
    assert (await _post(central, body))[0] == 202
    status, answer = await _post(central, body)
    assert (status, answer["message"]) == (400, "this request (nonce) was received before")
    listed = json.loads(_cli("list", "--config", str(central.toml), "--json").output)
    assert len(listed) == 1


async def test_refusal_reaches_the_security_server_operator(central: Central) -> None:
    _, body = _request(central, auth_for=SS2)
    with pytest.raises(ClientError, match="the central server refused") as caught:
        await registration_cli.submit_registration(central.url, body)
    assert caught.value.code == "Client.InvalidRegistrationRequest"


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["auth_signature", "member_signature", "x"]),
            st.one_of(st.text(max_size=40), st.integers(), st.none()),
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_any_body_is_refused_with_the_documented_error(body: bytes) -> None:
    with pytest.raises(InvalidRegistrationRequest):
        verify_registration(body, trusted_cas=[], members=[MOI], now=0)


def test_requested_at_may_be_600_s_away_either_way(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", "CA")
    auth_key, sign_key = generate_key(), generate_key()
    auth = Signer(auth_key, ca.issue_auth_cert(auth_key.public_key(), SS1))
    sign = Signer(sign_key, ca.issue_sign_cert(sign_key.public_key(), MOI))
    now = int(time.time())

    def verified(at: int) -> RegistrationRequest:
        request = new_request(SS1, "127.0.0.1:8443", (), auth.cert, sign.cert, at)
        body = sign_registration(request, auth, sign)
        return verify_registration(body, trusted_cas=[ca.cert], members=[MOI], now=now)

    for at in (now - 600, now + 600):
        assert verified(at).requested_at == at
    for at in (now - 601, now + 601):
        with pytest.raises(InvalidRegistrationRequest) as refused:
            verified(at)
        assert refused.value.message == (
            f"requested_at {at} is more than 600 s from the central server's time {now}; "
            "check the security server's clock and send it again"
        )


@given(
    st.dictionaries(
        st.sampled_from(["type", "server", "address", "clients", "requested_at", "nonce"]),
        st.one_of(st.text(max_size=30), st.integers(), st.lists(st.text(max_size=30))),
    )
)
def test_any_document_parses_or_is_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(InvalidRegistrationRequest):
        RegistrationRequest.from_document({**doc, "type": "register-server"})


# --- the security server's commands --------------------------------------------------------------


@contextlib.contextmanager
def _central_in_thread(config: CentralConfig) -> Iterator[str]:
    """The central server on its own event loop thread, for commands that run their own loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="central-test")
    thread.start()
    try:
        runner, url = asyncio.run_coroutine_threadsafe(_start(_app(config)), loop).result(10)
        try:
            yield url
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_server_register_command_then_approve(tmp_path: Path) -> None:
    config, ca = _prepare(tmp_path)
    toml = tmp_path / "central" / "central.toml"
    result = init_server(
        tmp_path / "ss1", SS1, config.anchor_path, clients=[POPULATION], ca=ca, provider_port=8555
    )
    with _central_in_thread(config) as url:
        args = ["--config", str(result.config), "--central-url", url]
        sent = CliRunner().invoke(server_group, ["register", *args])
        assert sent.exit_code == 0, sent.output
        match = re.search(r"registration request ([0-9a-f]{8}) for PS/GOV/MOI/ss1", sent.output)
        assert match is not None, sent.output
        request_id = match.group(1)
        assert f"exchange central registration approve --config central.toml {request_id}" in (
            sent.output
        )
        assert _cli("approve", "--config", str(toml), request_id).exit_code == 0
        status = CliRunner().invoke(server_group, ["registration-status", *args, request_id])
        assert status.exit_code == 0 and f"{request_id} is approved" in status.output
        again = CliRunner().invoke(server_group, ["register", *args])
    with Registry.open(config.db_path) as registry:
        server = registry.build_globalconf(int(time.time())).server(SS1)
    assert server is not None and server.address == "127.0.0.1:8555"
    assert again.exit_code == 0, "registering again (e.g. a new key) is a new request"
