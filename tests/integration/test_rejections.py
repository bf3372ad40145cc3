"""Attacks between security servers (docs/design.md §5, §6): each must be refused with its exact
code.

Every test here tries to break one guarantee over real mutual TLS: peers with the wrong
authentication certificate (on either side), requests whose signed document was forged, altered,
replayed, stale or addressed elsewhere, responses not bound to their request, and global
configurations that are rolled back or expired. Each asserts the X-Road error code and status,
that the refusal is in the message log of the server that refused it (or, where the refusal
happens in the TLS handshake, of the consumer that saw it), and that the servers keep serving.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography import x509

from exchange.globalconf.client import GlobalConfPoller
from exchange.globalconf.verifier import (
    GlobalConfRollback,
    GlobalConfSignatureError,
)
from exchange.identifiers import (
    MemberId,
    SecurityServerId,
    parse_member,
    parse_security_server,
    parse_service,
    parse_subsystem,
)
from exchange.messagelog.query import query_records
from exchange.protocol.canonical import b64url, b64url_decode
from exchange.protocol.frames import FrameKind, encode_frame
from exchange.protocol.jws import Signer
from exchange.protocol.messages import SignedRequest
from exchange.server.config import ServerConfig
from exchange.trust.keys import (
    fingerprint,
    generate_key,
    save_certificate,
    save_private_key,
)
from tests.integration.conftest import HEALTH, MOH, MOI, PALPOST, WINDOW, Net, service
from tests.integration.rogue import (
    Incoming,
    RogueClient,
    RogueProvider,
    hello_frame,
    read_signed_response,
    sign_request,
    sign_response,
    tamper_signature,
)
from tests.integration.support import (
    PERSONS,
    Clock,
    assert_serving,
    assert_xroad_error,
    expired,
    foreign_ca,
    launch,
    logged,
    new_id,
    publish,
    record_of_response,
    records,
    replace_auth_cert,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

MOI_SS = parse_security_server(f"{MOI}/ss1")
MOH_SS = parse_security_server(f"{MOH}/ss1")
PALPOST_SS = parse_security_server(f"{PALPOST}/ss1")
PERSONS_SERVICE = service("persons")

# --- authentication certificates ---------------------------------------------------------------

AuthIssue = Callable[[Net, SecurityServerId], Callable[[Any], x509.Certificate]]


def _unregistered(net: Net, sid: SecurityServerId) -> Callable[[Any], x509.Certificate]:
    return lambda public: net.ca.issue_auth_cert(public, sid)


def _foreign(net: Net, sid: SecurityServerId) -> Callable[[Any], x509.Certificate]:
    ca = foreign_ca(net.root)
    return lambda public: ca.issue_auth_cert(public, sid)


def _expired(net: Net, sid: SecurityServerId) -> Callable[[Any], x509.Certificate]:
    return lambda public: net.ca.issue_auth_cert(public, sid, not_before=expired(), days=1)


def _signing_profile(net: Net, sid: SecurityServerId) -> Callable[[Any], x509.Certificate]:
    return lambda public: net.ca.issue_sign_cert(public, sid.owner)


def _no_server_identifier(net: Net, sid: SecurityServerId) -> Callable[[Any], x509.Certificate]:
    """Server and client authentication, which OpenSSL accepts for TLS, from an approved CA,
    but without the X-Road server identifier our authentication profile requires."""
    from exchange.trust.profiles import AUTH_PROFILE, CertificateTemplate, auth_template

    usual = auth_template(sid)
    san = x509.SubjectAlternativeName([x509.DNSName("localhost")])
    extensions = tuple(
        (san, critical) if isinstance(ext, x509.SubjectAlternativeName) else (ext, critical)
        for ext, critical in usual.extensions
    )
    template = CertificateTemplate(AUTH_PROFILE, usual.subject, extensions)
    return lambda public: net.ca.issue(public, template)


def _swap_auth_cert(
    net: Net, issue: AuthIssue, *, register: bool
) -> Callable[[ServerConfig], None]:
    """Before the server loads: a new auth key and cert; registered in its place if asked."""

    def prepare(config: ServerConfig) -> None:
        sid = config.server_id
        old, new = replace_auth_cert(config, issue(net, sid))
        if register:
            with net.registry() as reg:
                reg.add_auth_cert(sid, new)
                reg.remove_auth_cert(sid, old)

    return prepare


AUTH_CASES = [
    # A CA-issued cert whose fingerprint the central server never registered: TLS succeeds and
    # the provider refuses the connection with an (unsigned) EXM/1 ERROR frame.
    pytest.param(
        _unregistered, False, "Server.ServerProxy.SslAuthenticationFailed", 403, id="unregistered"
    ),
    # The rest fail in the TLS handshake itself, which the consumer reports as its own.
    pytest.param(
        _foreign, True, "Server.ClientProxy.SslAuthenticationFailed", 502, id="foreign-ca"
    ),
    pytest.param(_expired, True, "Server.ClientProxy.SslAuthenticationFailed", 502, id="expired"),
    pytest.param(
        _signing_profile,
        True,
        "Server.ClientProxy.SslAuthenticationFailed",
        502,
        id="signing-profile-as-auth-cert",
    ),
    # passes the TLS handshake; the provider's peer trust refuses the profile
    pytest.param(
        _no_server_identifier,
        True,
        "Server.ServerProxy.SslAuthenticationFailed",
        403,
        id="no-server-identifier",
    ),
]


def _label(issue: AuthIssue) -> str:
    return issue.__name__.strip("_").replace("_", "-")


@pytest.mark.parametrize(("issue", "register", "code", "status"), AUTH_CASES)
async def test_provider_refuses_consumer_auth_cert(
    net: Net,
    caplog: pytest.LogCaptureFixture,
    issue: AuthIssue,
    register: bool,
    code: str,
    status: int,
) -> None:
    """A consumer server with a bad authentication certificate cannot reach the provider."""
    name = f"bad-consumer-{_label(issue)}"
    sid = parse_security_server(f"{PALPOST}/ss-{name}")
    server = await launch(
        net,
        name,
        sid,
        clients=[WINDOW],
        prepare=_swap_auth_cert(net, issue, register=register),
    )
    try:
        mid = new_id(name)
        with caplog.at_level(logging.WARNING, logger="exchange.server.provider"):
            result = await net.call(name, f"{PERSONS}/123456782", headers={"X-Road-Id": mid})
        assert_xroad_error(*result, code, status)
        logged(server, mid, "consumer", code)
        assert query_records(net.servers["moi"].config.log_path, message_id=mid) == []
        if code.startswith("Server.ServerProxy."):
            # refused after the handshake, by the application: the operator's log says why
            assert any("refused peer" in r.getMessage() for r in caplog.records)
    finally:
        await _retire(net, name)
    await assert_serving(net)


async def test_a_consumer_whose_ca_is_removed_is_dropped_and_refused_in_the_handshake(
    net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    """After a CA is removed from the configuration, the provider drops the connections of peers
    whose certificates it issued (``recheck``, ``SslAuthenticationFailed``), and refuses their
    new ones in the TLS handshake itself: it builds a new TLS context without the CA (OpenSSL
    cannot unload one from the old). The consumer reports the failed handshake as its own
    ``Server.ClientProxy.SslAuthenticationFailed`` (502), and the provider serves on. Before,
    the old context kept the CA, and only the peer trust refused after the handshake."""
    from exchange.trust.ca import CertificateAuthority
    from exchange.trust.keys import cert_pem

    ca_name = "Auth CA (removed in a test)"
    ca = CertificateAuthority.create(net.root / "removed-auth-ca", ca_name)
    with net.registry() as reg:
        reg.add_ca(ca_name, cert_pem(ca.cert))
    await publish(net)  # every server loads the CA into its TLS store

    def issue(net: Net, sid: SecurityServerId) -> Callable[[Any], x509.Certificate]:
        return lambda public: ca.issue_auth_cert(public, sid)

    name = "consumer-of-a-removed-ca"
    sid = parse_security_server(f"{PALPOST}/ss-{name}")
    moi = net.servers["moi"]
    server = await launch(
        net, name, sid, clients=[WINDOW], prepare=_swap_auth_cert(net, issue, register=True)
    )
    try:
        status, _, body = await net.call(name, f"{PERSONS}/123456782")
        assert status == 200, body[:300]
        held = [c for c in moi.provider_connections if c.peer_id == sid]
        assert held
        with net.registry() as reg:
            reg.remove_ca(ca_name)
        failed = moi.handshakes.failed
        with caplog.at_level(logging.WARNING, logger="exchange.server.provider"):
            await publish(net)
            assert all(c.transport is None or c.transport.is_closing() for c in held)
            assert any("dropping peer" in r.getMessage() for r in caplog.records)
            mid = new_id(name)
            result = await net.call(name, f"{PERSONS}/123456782", headers={"X-Road-Id": mid})
        assert_xroad_error(*result, "Server.ClientProxy.SslAuthenticationFailed", 502)
        logged(server, mid, "consumer", "Server.ClientProxy.SslAuthenticationFailed")
        assert query_records(moi.config.log_path, message_id=mid) == []
        assert moi.handshakes.failed > failed  # refused in the handshake, not after it
    finally:
        await _retire(net, name)
        with net.registry() as reg:
            if any(c.name == ca_name for c in reg.build_globalconf(0).approved_cas):
                reg.remove_ca(ca_name)
        await publish(net)
    await assert_serving(net)


@pytest.mark.parametrize(
    ("issue", "register"),
    [
        pytest.param(_unregistered, False, id="unregistered"),
        pytest.param(_foreign, True, id="foreign-ca"),
        pytest.param(_expired, True, id="expired"),
        pytest.param(_signing_profile, True, id="signing-profile-as-auth-cert"),
        # passes the TLS handshake; before, the consumer checked only the fingerprint and sent
        # the request (item 8 of issue 13): now the same peer trust as the provider's refuses it
        pytest.param(_no_server_identifier, True, id="no-server-identifier"),
    ],
)
async def test_consumer_refuses_provider_auth_cert(
    net: Net, issue: AuthIssue, register: bool
) -> None:
    """A provider server with a bad authentication certificate is never sent the request."""
    label = _label(issue)
    name = f"bad-provider-{label}"
    sid = parse_security_server(f"{MOI}/ss-{name}")
    subsystem = parse_subsystem(f"{MOI}/bad-{label}")
    server = await launch(
        net,
        name,
        sid,
        clients=[subsystem],
        services=[(parse_service(f"{subsystem}/persons"), f"{net.backend_url}/persons")],
        prepare=_swap_auth_cert(net, issue, register=register),
    )
    try:
        mid = new_id(name)
        path = f"/r1/{subsystem}/persons/123456782"
        result = await net.call("palpost", path, headers={"X-Road-Id": mid})
        assert_xroad_error(*result, "Server.ClientProxy.SslAuthenticationFailed", 502)
        logged(
            net.servers["palpost"], mid, "consumer", "Server.ClientProxy.SslAuthenticationFailed"
        )
        assert server.log.size == 0, "the bad provider never received a request"
    finally:
        await _retire(net, name)
    await assert_serving(net)


async def test_consumer_closes_its_connections_when_the_provider_loses_its_registration(
    net: Net,
) -> None:
    """The consumer side of a configuration change: once the configuration no longer registers
    the provider's authentication certificate, the consumer closes the connections it holds to
    that provider at once and refuses to open new ones; re-registered, it connects again."""
    name = "pool-provider"
    sid = parse_security_server(f"{MOI}/ss-{name}")
    subsystem = parse_subsystem(f"{MOI}/pool")
    server = await launch(
        net,
        name,
        sid,
        clients=[subsystem],
        services=[(parse_service(f"{subsystem}/persons"), f"{net.backend_url}/persons")],
        policy=f"""
provider = "{MOI}"
[[grant]]
id = "window"
client = "{WINDOW}"
service = "{subsystem}/persons"
methods = ["GET"]
""",
    )
    palpost = net.servers["palpost"]
    path = f"/r1/{subsystem}/persons/123456782"
    fp = fingerprint(x509.load_pem_x509_certificate(server.config.auth_cert.read_bytes()))
    try:
        status, _, body = await net.call("palpost", path)
        assert status == 200, body
        held = [c for c in palpost.pools[sid].connections if c is not None]
        assert held and not any(c.closed for c in held)
        with net.registry() as reg:
            reg.remove_auth_cert(sid, fp)
        try:
            await publish(net)
            assert sid not in palpost.pools
            for conn in held:
                assert conn.transport is None or conn.transport.is_closing()
            mid = new_id(name)
            result = await net.call("palpost", path, headers={"X-Road-Id": mid})
            assert_xroad_error(*result, "Server.ClientProxy.SslAuthenticationFailed", 502)
            logged(palpost, mid, "consumer", "Server.ClientProxy.SslAuthenticationFailed")
        finally:
            with net.registry() as reg:
                reg.add_auth_cert(sid, fp)
            await publish(net)
        status, _, body = await net.call("palpost", path)
        assert status == 200, body
    finally:
        await _retire(net, name)
    await assert_serving(net)


async def _retire(net: Net, name: str) -> None:
    server = net.servers.pop(name)
    await server.stop()


# --- forged, altered, replayed and misaddressed requests (an attacker holding a peer's keys) ----


@dataclass
class Attacker:
    """Holds PALPOST's server's auth key (a registered server) and some signing keys."""

    client: RogueClient
    cas: list[x509.Certificate]
    palpost: Signer
    moh: Signer
    unpresented: Signer
    auth_profile: Signer
    foreign: Signer
    expired: Signer


def _new_signer(issue: Callable[[Any], x509.Certificate]) -> Signer:
    key = generate_key()
    return Signer(key, issue(key.public_key()))


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def attacker(net: Net) -> AsyncIterator[Attacker]:
    palpost = net.servers["palpost"]
    moi = net.servers["moi"]
    conf = moi.trusted.current
    assert conf is not None
    ca = foreign_ca(net.root)
    signers = {
        "palpost": palpost.signers[PALPOST],
        "moh": net.servers["moh"].signers[MOH],
        "unpresented": _new_signer(lambda p: net.ca.issue_sign_cert(p, PALPOST)),
        "auth_profile": _new_signer(lambda p: net.ca.issue_auth_cert(p, palpost.config.server_id)),
        "foreign": _new_signer(lambda p: ca.issue_sign_cert(p, PALPOST)),
        "expired": _new_signer(
            lambda p: net.ca.issue_sign_cert(p, PALPOST, not_before=expired(), days=1)
        ),
    }
    presented = [s.cert for k, s in signers.items() if k != "unpresented"]
    client = RogueClient(
        moi,
        auth_cert=palpost.config.auth_cert,
        auth_key=palpost.config.auth_key,
        cas=conf.ca_certs(),
        presented=presented,
        claimed_server=palpost.config.server_id,
    )
    try:
        yield Attacker(client=client, cas=conf.ca_certs(), **signers)
    finally:
        client.close()


def _window_request(a: Attacker, signer: Signer | None = None, **kw: Any) -> str:
    fields: dict[str, Any] = {
        "client": WINDOW,
        "service": PERSONS_SERVICE,
        "security_server": MOI_SS,
    }
    fields.update(kw)
    token, _ = sign_request(signer or a.palpost, **fields)
    return token


@dataclass(frozen=True)
class Forgery:
    """What the attacker sends: REQUEST frame meta and body."""

    meta: dict[str, Any]
    body: bytes = b""


def _bad_signature(a: Attacker) -> Forgery:
    return Forgery({"jws": tamper_signature(_window_request(a))})


def _other_member(a: Attacker) -> Forgery:
    return Forgery({"jws": _window_request(a, a.moh)})


def _signer(name: str) -> Callable[[Attacker], Forgery]:
    return lambda a: Forgery({"jws": _window_request(a, getattr(a, name))})


def _tampered_body(a: Attacker) -> Forgery:
    token = _window_request(a, method="GET", body=b'{"amount": 10}')
    return Forgery({"jws": token}, b'{"amount": 99}')


def _truncated_body(a: Attacker) -> Forgery:
    token = _window_request(a, body=b'{"amount": 10}')
    return Forgery({"jws": token}, b'{"amount": 1')


def _stale(offset_s: int) -> Callable[[Attacker], Forgery]:
    def make(a: Attacker) -> Forgery:
        ts = int((time.time() + offset_s) * 1000)
        return Forgery({"jws": _window_request(a, timestamp_ms=ts)})

    return make


def _addressed_elsewhere(a: Attacker) -> Forgery:
    return Forgery({"jws": _window_request(a, security_server=MOH_SS)})


def _client_not_hosted(a: Attacker) -> Forgery:
    # everything else about it is what MOI's policy grants HEALTH
    return Forgery({"jws": _window_request(a, a.moh, client=HEALTH, purpose="patient-care")})


def _own_member_client_not_hosted(a: Attacker) -> Forgery:
    other = parse_subsystem(f"{PALPOST}/not-hosted-here")
    return Forgery({"jws": _window_request(a, client=other)})


def _sent_by_another_server(a: Attacker) -> Forgery:
    """PALPOST's member signed the request to be sent by another of its servers (a request
    captured off that server's connection, replayed over this one)."""
    other = parse_security_server(f"{PALPOST}/ss2")
    return Forgery({"jws": _window_request(a, client_server=other)})


def _signed_garbage(a: Attacker) -> Forgery:
    return Forgery({"jws": a.palpost.sign(b"[1,2,3]")})


def _signed_response_as_request(a: Attacker) -> Forgery:
    doc = {"v": 1, "type": "response", "id": "x"}
    return Forgery({"jws": a.palpost.sign(orjson.dumps(doc))})


def _alg_none(a: Attacker) -> Forgery:
    token = _window_request(a)
    _, payload, _ = token.split(".")
    header = b64url(b'{"alg":"none","x5t#S256":"' + a.palpost.thumbprint.encode() + b'"}')
    return Forgery({"jws": f"{header}.{payload}."})


def _injected(**fields: Any) -> Callable[[Attacker], Forgery]:
    """A validly signed request whose method, path, query or headers would split or bend the
    request the provider writes to its backend (CR LF, '#', spaces)."""

    def forge(a: Attacker) -> Forgery:
        request = SignedRequest(
            message_id=f"inject-{time.time_ns()}",
            client=WINDOW,
            service=PERSONS_SERVICE,
            method=fields.get("method", "GET"),
            path=fields.get("path", "/123456782"),
            query=fields.get("query", ""),
            headers=fields.get("headers", ()),
            body_sha256=b64url(hashlib.sha256(b"").digest()),
            body_length=0,
            user_id=None,
            purpose=None,
            issue=None,
            represented_party=None,
            security_server=MOI_SS,
            client_server=PALPOST_SS,
            timestamp_ms=int(time.time() * 1000),
        )
        return Forgery({"jws": a.palpost.sign(request.canonical())})

    return forge


INJECTIONS = [
    pytest.param(_injected(method="GET /admin HTTP/1.1\r\nX: y\r\n\r\nGET"), id="method-crlf"),
    pytest.param(_injected(method="GE T"), id="method-not-a-token"),
    pytest.param(_injected(path="/123456782#/address"), id="fragment-in-path"),
    pytest.param(_injected(path="/123 HTTP/1.1\r\nX: y"), id="path-crlf"),
    pytest.param(_injected(query="a=1\r\nHost: evil"), id="query-crlf"),
    pytest.param(_injected(headers=(("x-a\r\nhost", "evil"),)), id="header-name-crlf"),
    pytest.param(_injected(headers=(("x-a", "1\r\nHost: evil"),)), id="header-value-crlf"),
]


@pytest.mark.parametrize("forge", INJECTIONS)
async def test_provider_refuses_requests_that_would_split_the_backend_request(
    net: Net, attacker: Attacker, forge: Callable[[Attacker], Forgery]
) -> None:
    """A peer holding valid keys still cannot smuggle a second request or a fragment past the
    policy: the signed request must be plain HTTP syntax."""
    forgery = forge(attacker)
    frame, conn = await attacker.client.send_meta(forgery.meta, forgery.body)
    response, body = read_signed_response(frame, conn)
    code = "Server.ServerProxy.InvalidMessage"
    assert (response.error_type, response.status, body["type"]) == (code, 400, code)
    record = record_of_response(net.servers["moi"], frame.meta["jws"])
    assert record["error"]["type"] == code
    await assert_serving(net)


FORGERIES = [
    pytest.param(
        _bad_signature, "Server.ServerProxy.InvalidSignatureValue", 400, id="bad-signature"
    ),
    pytest.param(_alg_none, "Server.ServerProxy.InvalidSignatureValue", 400, id="alg-none"),
    pytest.param(
        _other_member, "Server.ServerProxy.InvalidSignatureValue", 400, id="signed-by-other-member"
    ),
    pytest.param(
        _signer("unpresented"),
        "Server.ServerProxy.InvalidSignatureValue",
        400,
        id="signing-cert-not-presented",
    ),
    pytest.param(
        _signer("auth_profile"),
        "Server.ServerProxy.InvalidSignatureValue",
        400,
        id="signing-cert-of-auth-profile",
    ),
    pytest.param(
        _signer("foreign"),
        "Server.ServerProxy.InvalidSignatureValue",
        400,
        id="signing-cert-from-foreign-ca",
    ),
    pytest.param(
        _signer("expired"),
        "Server.ServerProxy.InvalidSignatureValue",
        400,
        id="expired-signing-cert",
    ),
    pytest.param(_tampered_body, "Server.ServerProxy.InvalidMessage", 400, id="tampered-body"),
    pytest.param(_truncated_body, "Server.ServerProxy.InvalidMessage", 400, id="truncated-body"),
    pytest.param(_stale(-120), "Server.ServerProxy.StaleMessage", 400, id="stale-past"),
    pytest.param(_stale(+120), "Server.ServerProxy.StaleMessage", 400, id="stale-future"),
    pytest.param(
        _addressed_elsewhere, "Server.ServerProxy.InvalidMessage", 400, id="other-security-server"
    ),
    pytest.param(
        _client_not_hosted,
        "Server.ServerProxy.SslAuthenticationFailed",
        403,
        id="client-not-hosted-by-peer",
    ),
    pytest.param(
        _own_member_client_not_hosted,
        "Server.ServerProxy.SslAuthenticationFailed",
        403,
        id="own-member-client-not-hosted",
    ),
    pytest.param(
        _sent_by_another_server,
        "Server.ServerProxy.SslAuthenticationFailed",
        403,
        id="sender-not-the-connecting-server",
    ),
    pytest.param(
        _signed_garbage, "Server.ServerProxy.InvalidMessage", 400, id="signed-non-request"
    ),
    pytest.param(
        _signed_response_as_request,
        "Server.ServerProxy.InvalidMessage",
        400,
        id="signed-response-as-request",
    ),
    pytest.param(
        lambda a: Forgery({"jws": "not.a.jws"}),
        "Server.ServerProxy.InvalidSignatureValue",
        400,
        id="malformed-jws",
    ),
    pytest.param(
        lambda a: Forgery({"jws": "é.é.é"}),
        "Server.ServerProxy.InvalidMessage",
        400,
        id="non-ascii-jws",
    ),
    pytest.param(lambda a: Forgery({}), "Server.ServerProxy.InvalidMessage", 400, id="no-jws"),
    pytest.param(
        lambda a: Forgery({"jws": 42}),
        "Server.ServerProxy.InvalidMessage",
        400,
        id="jws-not-a-string",
    ),
]


@pytest.mark.parametrize(("forge", "code", "status"), FORGERIES)
async def test_provider_refuses_forged_request(
    net: Net, attacker: Attacker, forge: Callable[[Attacker], Forgery], code: str, status: int
) -> None:
    forgery = forge(attacker)
    frame, conn = await attacker.client.send_meta(forgery.meta, forgery.body)
    response, body = read_signed_response(frame, conn)
    assert (response.error_type, response.status) == (code, status)
    assert body["type"] == code
    record = record_of_response(net.servers["moi"], frame.meta["jws"])
    assert record["error"]["type"] == code
    assert record["status"] == "error"
    # the connection survives a refused request, and so does the server
    ok_frame, _ = await attacker.client.send(_window_request(attacker))
    assert read_signed_response(ok_frame, conn)[0].status == 200
    await assert_serving(net)


async def test_hello_claim_does_not_change_the_authenticated_server(
    net: Net, attacker: Attacker
) -> None:
    """An attacker with PALPOST's server's auth key says HELLO as MOH's server and asks for MOH's
    client, signed with MOH's key: the provider goes by the certificate, not by the claim."""
    palpost, moi = net.servers["palpost"], net.servers["moi"]
    claimant = RogueClient(
        moi,
        auth_cert=palpost.config.auth_cert,
        auth_key=palpost.config.auth_key,
        cas=attacker.cas,
        presented=[attacker.moh.cert],
        claimed_server=MOH_SS,
    )
    try:
        token = _window_request(attacker, attacker.moh, client=HEALTH, purpose="patient-care")
        frame, conn = await claimant.send(token)
        response, body = read_signed_response(frame, conn)
    finally:
        claimant.close()
    code = "Server.ServerProxy.SslAuthenticationFailed"
    assert (response.error_type, response.status, body["type"]) == (code, 403, code)
    record = record_of_response(moi, frame.meta["jws"])
    assert record["peer_server"] == str(palpost.config.server_id)
    assert record["error"]["type"] == code
    await assert_serving(net)


async def test_replayed_request_frame_is_refused(net: Net, attacker: Attacker) -> None:
    """An attacker who captured a valid signed request cannot have it answered twice."""
    token = _window_request(attacker)
    first, conn = await attacker.client.send(token)
    assert read_signed_response(first, conn)[0].status == 200
    again, _ = await attacker.client.send(token)
    response, body = read_signed_response(again, conn)
    assert (response.error_type, response.status) == ("Server.ServerProxy.ReplayedMessage", 409)
    assert body["type"] == "Server.ServerProxy.ReplayedMessage"
    record = record_of_response(net.servers["moi"], again.meta["jws"])
    assert record["error"]["type"] == "Server.ServerProxy.ReplayedMessage"
    assert record["message_id"] == response.message_id


async def test_replayed_message_id_through_the_consumer(net: Net) -> None:
    mid = new_id("replay")
    status, _, body = await net.call("palpost", f"{PERSONS}/123456782", headers={"X-Road-Id": mid})
    assert status == 200, body
    result = await net.call("palpost", f"{PERSONS}/123456782", headers={"X-Road-Id": mid})
    assert_xroad_error(*result, "Server.ServerProxy.ReplayedMessage", 409)
    assert result[1]["X-Road-Id"] == mid
    for name, side in (("palpost", "consumer"), ("moi", "provider")):
        views = records(net.servers[name], mid, side)
        assert [v.status for v in views] == ["ok", "error"]
        assert views[1].entry["error"]["type"] == "Server.ServerProxy.ReplayedMessage"
    await assert_serving(net)


# --- responses not bound to their request (a rogue provider) ------------------------------------

ROGUE = parse_member("PS/GOV/ROGUE")
ROGUE_SS = parse_security_server(f"{ROGUE}/ss1")
ROGUE_API = parse_subsystem("PS/GOV/ROGUE/api")
ROGUE_PATH = "/r1/PS/GOV/ROGUE/api/data"
HONEST_BODY = b'{"answer":"the real one"}'


@dataclass
class RogueSide:
    provider: RogueProvider
    signer: Signer
    moh: Signer
    unpresented: Signer


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def rogue_provider(net: Net) -> AsyncIterator[RogueSide]:
    """A provider registered in the global configuration that answers as each test says."""
    directory = net.root / "rogue-provider"
    auth_key = generate_key()
    auth_cert = net.ca.issue_auth_cert(auth_key.public_key(), ROGUE_SS)
    save_private_key(directory / "auth.key.pem", auth_key)
    save_certificate(directory / "auth.cert.pem", auth_cert)
    signer = _new_signer(lambda p: net.ca.issue_sign_cert(p, ROGUE))
    moh = net.servers["moh"].signers[MOH]
    unpresented = _new_signer(lambda p: net.ca.issue_sign_cert(p, ROGUE))
    conf = net.servers["palpost"].trusted.current
    assert conf is not None
    provider = RogueProvider(
        ROGUE_SS,
        auth_cert=directory / "auth.cert.pem",
        auth_key=directory / "auth.key.pem",
        cas=conf.ca_certs(),
        presented=[signer.cert, moh.cert],
    )
    port = await provider.start()
    with net.registry() as reg:
        reg.add_member(ROGUE, "Rogue")
        reg.add_subsystem(ROGUE_API)
        reg.add_server(ROGUE_SS, f"127.0.0.1:{port}", [fingerprint(auth_cert)])
        reg.add_server_client(ROGUE_SS, ROGUE_API)
    await publish(net)
    try:
        yield RogueSide(provider, signer, moh, unpresented)
    finally:
        await provider.close()


Reply = Callable[[RogueSide, Incoming], None]


def _honest(r: RogueSide, inc: Incoming) -> None:
    inc.reply(sign_response(r.signer, inc, HONEST_BODY), HONEST_BODY)


def _bound_to_other_request(r: RogueSide, inc: Incoming) -> None:
    other = base64.b64encode(hashlib.sha512(b"another request").digest()).decode()
    inc.reply(sign_response(r.signer, inc, HONEST_BODY, request_hash_value=other), HONEST_BODY)


def _bad_response_signature(r: RogueSide, inc: Incoming) -> None:
    inc.reply(tamper_signature(sign_response(r.signer, inc, HONEST_BODY)), HONEST_BODY)


def _response_by_other_member(r: RogueSide, inc: Incoming) -> None:
    inc.reply(sign_response(r.moh, inc, HONEST_BODY), HONEST_BODY)


def _response_cert_not_presented(r: RogueSide, inc: Incoming) -> None:
    inc.reply(sign_response(r.unpresented, inc, HONEST_BODY), HONEST_BODY)


def _altered_body(r: RogueSide, inc: Incoming) -> None:
    forged = HONEST_BODY.replace(b"real", b"fake")  # same length: only the digest can tell
    inc.reply(sign_response(r.signer, inc, HONEST_BODY), forged)


def _extended_body(r: RogueSide, inc: Incoming) -> None:
    inc.reply(sign_response(r.signer, inc, HONEST_BODY), HONEST_BODY + b" ")


def _unsigned_response(r: RogueSide, inc: Incoming) -> None:
    inc.transport.write(encode_frame(inc.frame.stream_id, FrameKind.RESPONSE, {}, HONEST_BODY))


async def test_rogue_provider_honest_answer_is_accepted(
    net: Net, rogue_provider: RogueSide
) -> None:
    """The control: the rogue provider's setup is valid, so the refusals below are about what
    each test alters."""
    rogue_provider.provider.answer = lambda inc: _honest(rogue_provider, inc)
    mid = new_id("honest")
    status, headers, body = await net.call("palpost", ROGUE_PATH, headers={"X-Road-Id": mid})
    assert (status, body) == (200, HONEST_BODY)
    assert "X-Road-Error" not in headers
    logged(net.servers["palpost"], mid, "consumer")


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        pytest.param(
            _bound_to_other_request,
            "Server.ClientProxy.InconsistentResponse",
            id="bound-to-other-request",
        ),
        pytest.param(
            _bad_response_signature,
            "Server.ClientProxy.InvalidSignatureValue",
            id="bad-response-signature",
        ),
        pytest.param(
            _response_by_other_member,
            "Server.ClientProxy.InvalidSignatureValue",
            id="signed-by-other-member",
        ),
        pytest.param(
            _response_cert_not_presented,
            "Server.ClientProxy.InvalidSignatureValue",
            id="signing-cert-not-presented",
        ),
        pytest.param(_altered_body, "Server.ClientProxy.InconsistentResponse", id="altered-body"),
        pytest.param(_extended_body, "Server.ClientProxy.InconsistentResponse", id="extended-body"),
        pytest.param(
            _unsigned_response, "Server.ClientProxy.InconsistentResponse", id="unsigned-response"
        ),
    ],
)
async def test_consumer_refuses_unbound_response(
    net: Net, rogue_provider: RogueSide, reply: Reply, code: str
) -> None:
    rogue_provider.provider.answer = lambda inc: reply(rogue_provider, inc)
    mid = new_id("unbound")
    async with asyncio.timeout(10):
        result = await net.call("palpost", ROGUE_PATH, headers={"X-Road-Id": mid})
    assert_xroad_error(*result, code, 502)
    assert b"fake" not in result[2]
    logged(net.servers["palpost"], mid, "consumer", code)
    await assert_serving(net)


async def test_one_bad_signing_certificate_in_a_providers_hello_is_skipped(
    net: Net, rogue_provider: RogueSide, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider whose HELLO presents a signing certificate of a CA the configuration does not
    approve next to its good one: the consumer skips that one certificate and keeps the
    connection, as a provider does with a consumer's HELLO (item 8 of issue 13: before, the
    consumer dropped the whole connection and every exchange with the provider failed)."""
    palpost = net.servers["palpost"]
    stranger = _new_signer(lambda p: foreign_ca(net.root).issue_sign_cert(p, ROGUE))
    usual = rogue_provider.provider.hello
    rogue_provider.provider.hello = hello_frame(
        ROGUE_SS, [stranger.cert, rogue_provider.signer.cert, rogue_provider.moh.cert]
    )
    rogue_provider.provider.answer = lambda inc: _honest(rogue_provider, inc)
    pool = palpost.pools.pop(ROGUE_SS, None)  # a new connection, which gets the new HELLO
    if pool is not None:  # (an earlier test of the module may have opened one)
        pool.close()
    try:
        with caplog.at_level(logging.WARNING, logger="exchange.server.peer"):
            mid = new_id("hello-one-bad")
            status, _, body = await net.call("palpost", ROGUE_PATH, headers={"X-Road-Id": mid})
        assert (status, body) == (200, HONEST_BODY)
        logged(palpost, mid, "consumer")
        assert any("signing certificate refused" in r.getMessage() for r in caplog.records)
        # an answer signed with the skipped certificate is refused, the connection stays
        rogue_provider.provider.answer = lambda inc: inc.reply(
            sign_response(stranger, inc, HONEST_BODY), HONEST_BODY
        )
        mid = new_id("hello-one-bad-signed")
        result = await net.call("palpost", ROGUE_PATH, headers={"X-Road-Id": mid})
        assert_xroad_error(*result, "Server.ClientProxy.InvalidSignatureValue", 502)
        assert not any(c.closed for c in palpost.pools[ROGUE_SS].connections if c is not None)
    finally:
        rogue_provider.provider.hello = usual
        if ROGUE_SS in palpost.pools:
            palpost.pools.pop(ROGUE_SS).close()


async def test_consumer_refuses_swapped_responses(net: Net, rogue_provider: RogueSide) -> None:
    """Two concurrent requests; the rogue answers each with the other's (validly signed)
    response."""
    waiting: list[Incoming] = []

    def swap(inc: Incoming) -> None:
        waiting.append(inc)
        if len(waiting) == 2:
            first, second = waiting
            body_1, body_2 = b'{"for":"first"}', b'{"for":"second"}'
            first.reply(sign_response(rogue_provider.signer, second, body_2), body_2)
            second.reply(sign_response(rogue_provider.signer, first, body_1), body_1)

    rogue_provider.provider.answer = swap
    mids = [new_id("swap-a"), new_id("swap-b")]
    async with asyncio.timeout(10):
        results = await asyncio.gather(
            *(net.call("palpost", ROGUE_PATH, headers={"X-Road-Id": m}) for m in mids)
        )
    for mid, result in zip(mids, results, strict=True):
        assert_xroad_error(*result, "Server.ClientProxy.InconsistentResponse", 502)
        logged(net.servers["palpost"], mid, "consumer", "Server.ClientProxy.InconsistentResponse")
    await assert_serving(net)


# --- the global configuration: rollback and expiry ----------------------------------------------


async def _serve_bytes(data: bytes) -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=data, content_type="application/jose")

    app = web.Application()
    app.router.add_get("/globalconf", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/globalconf"


def _rolled_back(old: bytes, net: Net) -> bytes:
    return old


def _foreign_signature(old: bytes, net: Net) -> bytes:
    current = net.servers["moi"].trusted.current_bytes
    assert current is not None
    _, payload, _ = current.decode().split(".")
    key = generate_key()
    signer = Signer(key, foreign_ca(net.root).issue_sign_cert(key.public_key(), MOI))
    return signer.sign(b64url_decode(payload)).encode()


def _tampered_conf(old: bytes, net: Net) -> bytes:
    current = net.servers["moi"].trusted.current_bytes
    assert current is not None
    header, payload, sig = current.decode().split(".")
    doc = orjson.loads(b64url_decode(payload))
    doc["version"] += 1000
    return f"{header}.{b64url(orjson.dumps(doc))}.{sig}".encode()


@pytest.mark.parametrize(
    ("offer", "error"),
    [
        pytest.param(_rolled_back, GlobalConfRollback, id="rollback"),
        pytest.param(_foreign_signature, GlobalConfSignatureError, id="foreign-signature"),
        pytest.param(_tampered_conf, GlobalConfSignatureError, id="tampered"),
    ],
)
async def test_refused_global_configuration_keeps_the_held_one(
    net: Net,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    offer: Callable[[bytes, Net], bytes],
    error: type[Exception],
) -> None:
    moi = net.servers["moi"]
    old = moi.trusted.current_bytes
    assert old is not None
    with net.registry() as reg:
        reg.add_member(MemberId("PS", "GOV", f"NEWER{time.monotonic_ns()}"), "Newer")
    await publish(net)
    held = moi.trusted.current
    assert held is not None
    runner, url = await _serve_bytes(offer(old, net))
    poller = GlobalConfPoller(moi.trusted, url, tmp_path / "state.jws")
    try:
        with (
            caplog.at_level(logging.ERROR, logger="exchange.globalconf.client"),
            pytest.raises(error),
        ):
            await poller.fetch_once()
    finally:
        await poller.close()
        await runner.cleanup()
    assert moi.trusted.current is held
    assert not (tmp_path / "state.jws").exists()
    assert any("refused" in r.getMessage() for r in caplog.records)
    await assert_serving(net)


EXPIRY_JUMP = 700.0  # past the 600 s expiry of a fresh configuration (docs/design.md §6)


async def test_consumer_with_expired_global_configuration(net: Net) -> None:
    clock = Clock()
    name = "palpost-clock"
    server = await launch(
        net, name, parse_security_server(f"{PALPOST}/ss-clock"), clients=[WINDOW], clock=clock
    )
    await assert_serving(net, name)
    clock.offset = EXPIRY_JUMP
    try:
        mid = new_id("expired-conf")
        result = await net.call(name, f"{PERSONS}/123456782", headers={"X-Road-Id": mid})
        assert_xroad_error(*result, "Server.ClientProxy.OutdatedGlobalConf", 500)
        logged(server, mid, "consumer", "Server.ClientProxy.OutdatedGlobalConf")
        assert query_records(net.servers["moi"].config.log_path, message_id=mid) == []
    finally:
        clock.offset = 0.0
    await assert_serving(net, name)


async def test_provider_with_expired_global_configuration(net: Net) -> None:
    clock = Clock()
    name = "moi-clock"
    subsystem = parse_subsystem(f"{MOI}/clock-tests")
    policy = f"""
provider = "PS/GOV/MOI"

[[grant]]
id = "window-clock"
client = "{WINDOW}"
service = "{subsystem}/echo"
methods = ["GET"]
"""
    server = await launch(
        net,
        name,
        parse_security_server(f"{MOI}/ss-clock"),
        clients=[subsystem],
        services=[(parse_service(f"{subsystem}/echo"), f"{net.backend_url}/echo")],
        policy=policy,
        clock=clock,
    )
    path = f"/r1/{subsystem}/echo"
    for _ in range(2):  # open both pooled connections while the configuration is fresh
        status, _, body = await net.call("palpost", path)
        assert status == 200, body
    clock.offset = EXPIRY_JUMP
    try:
        mid = new_id("expired-provider-conf")
        result = await net.call("palpost", path, headers={"X-Road-Id": mid})
        assert_xroad_error(*result, "Server.ServerProxy.OutdatedGlobalConf", 500)
        logged(server, mid, "provider", "Server.ServerProxy.OutdatedGlobalConf")
        logged(net.servers["palpost"], mid, "consumer", "Server.ServerProxy.OutdatedGlobalConf")
    finally:
        clock.offset = 0.0
    status, _, body = await net.call("palpost", path)
    assert status == 200, body


async def test_configuration_change_drops_connections_of_deregistered_peers(
    net: Net, attacker: Attacker
) -> None:
    """An open connection does not outlive its peer's registration: when the global
    configuration no longer lists the peer's authentication certificate, the provider drops it."""
    palpost, moi = net.servers["palpost"], net.servers["moi"]
    first, conn = await attacker.client.send(_window_request(attacker))
    assert read_signed_response(first, conn)[0].status == 200
    fp = fingerprint(x509.load_pem_x509_certificate(palpost.config.auth_cert.read_bytes()))
    with net.registry() as reg:
        reg.remove_auth_cert(palpost.config.server_id, fp)
    try:
        await publish(net)
        for _ in range(500):  # the close reaches both ends within a few loop iterations
            if conn.closed and not any(
                c.peer_id == palpost.config.server_id for c in moi.provider_connections
            ):
                break
            await asyncio.sleep(0.01)
        assert conn.closed
        assert all(c.peer_id != palpost.config.server_id for c in moi.provider_connections)
    finally:
        with net.registry() as reg:
            reg.add_auth_cert(palpost.config.server_id, fp)
        await publish(net)
    await assert_serving(net)
