"""The catalogue's declaration parser and verifier: any input either verifies or is refused with
the documented error, nothing else (the h11 fuzz invariant); and the catalogue joins
declarations with the registry."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.central.catalogue import (
    Declaration,
    DeclaredService,
    InvalidServiceDeclaration,
    ServiceDeclarationForbidden,
    build_catalogue,
    new_declaration,
    sign_declaration,
    verify_declaration,
)
from exchange.globalconf.document import ApprovedCA, GlobalConf, MemberInfo, SecurityServerInfo
from exchange.identifiers import parse_member, parse_security_server, parse_subsystem
from exchange.protocol.canonical import b64url
from exchange.protocol.jws import Signer
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import cert_pem, fingerprint, generate_key
from exchange.trust.ocsp import CertStatus, build_ocsp_request, build_ocsp_response

REGISTRY = GlobalConf("PS", 1, 0, 600)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["service-declaration", "x"]),
        "server": st.sampled_from(["PS/GOV/MOI/ss1", "bad", "PS/GOV/MOI"]),
        "declared_at": st.integers(-5, 2**40) | st.text(max_size=3),
        "nonce": st.text(max_size=20),
        "auth_cert": st.text(max_size=20),
        "subsystems": json_values,
        "extra": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(doc=documents)
def test_any_document_parses_or_is_refused(doc: dict[str, Any]) -> None:
    with contextlib.suppress(InvalidServiceDeclaration):
        Declaration.from_document(doc)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200) | json_values.map(orjson.dumps))
def test_any_body_is_refused_with_the_documented_error(body: bytes) -> None:
    try:
        verify_declaration(body, registry=REGISTRY, now=1000)
    except (InvalidServiceDeclaration, ServiceDeclarationForbidden):
        return
    raise AssertionError("an arbitrary body verified")


@settings(max_examples=100, deadline=None)
@given(doc=documents)
def test_any_signed_looking_body_is_refused(doc: dict[str, Any]) -> None:
    header = b64url(orjson.dumps({"alg": "ES256", "x5t#S256": "x"}))
    token = f"{header}.{b64url(orjson.dumps(doc))}.AAAA"
    try:
        verify_declaration(orjson.dumps({"signature": token}), registry=REGISTRY, now=1000)
    except (InvalidServiceDeclaration, ServiceDeclarationForbidden):
        return
    raise AssertionError("an unsigned body verified")


def test_catalogue_keeps_only_what_the_registry_places_on_the_server(tmp_path: Any) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", "CA")
    server = parse_security_server("PS/GOV/MOI/ss1")
    kept, moved = parse_subsystem("PS/GOV/MOI/kept"), parse_subsystem("PS/GOV/MOI/moved")
    from exchange.trust.keys import fingerprint, generate_key

    cert = ca.issue_auth_cert(generate_key().public_key(), server)

    def registry_with(key: str) -> GlobalConf:
        return GlobalConf(
            "PS",
            1,
            0,
            600,
            members=(MemberInfo(parse_member("PS/GOV/MOI"), "Interior", (kept, moved)),),
            security_servers=(SecurityServerInfo(server, "127.0.0.1:1", (key,), (kept,)),),
        )

    registry = registry_with(fingerprint(cert))
    declaration = Declaration(
        server,
        5000,
        "n" * 16,
        cert,
        ((kept, (DeclaredService("a", "rest", "A"),)), (moved, (DeclaredService("b", "soap"),))),
    )
    catalogue = build_catalogue(registry, [declaration])
    assert [e["subsystem"] for e in catalogue["subsystems"]] == ["PS/GOV/MOI/kept"]
    assert catalogue["subsystems"][0]["services"][0]["title"] == "A"
    other = parse_member("PS/GOV/MOF")
    assert build_catalogue(registry, [declaration], member=other)["subsystems"] == []
    # signed with a key the registry no longer holds for the server (red team): nothing counts
    assert build_catalogue(registry_with("0" * 64), [declaration])["subsystems"] == []


SS1 = parse_security_server("PS/GOV/MOI/ss1")
SUB = parse_subsystem("PS/GOV/MOI/s")


def _one_server(
    ca: CertificateAuthority, signer: Signer, ocsp_urls: tuple[str, ...] = ()
) -> GlobalConf:
    """A registry with SS1 hosting SUB under ``signer``'s certificate, and ``ca`` approved."""
    return GlobalConf(
        "PS",
        1,
        0,
        600,
        members=(MemberInfo(parse_member("PS/GOV/MOI"), "Interior", (SUB,)),),
        security_servers=(
            SecurityServerInfo(SS1, "127.0.0.1:1", (fingerprint(signer.cert),), (SUB,)),
        ),
        approved_cas=(ApprovedCA("CA", cert_pem(ca.cert), ocsp_urls),),
    )


def test_declared_at_may_be_600_s_away_either_way_to_the_millisecond(tmp_path: Any) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", "CA")
    server, sub = SS1, SUB
    key = generate_key()
    signer = Signer(key, ca.issue_auth_cert(key.public_key(), server))
    registry = _one_server(ca, signer)
    now = int(time.time())

    def declared(at_ms: int) -> bytes:
        declaration = new_declaration(server, signer.cert, [(sub, [])], at_ms)
        return sign_declaration(declaration, signer)

    for at_ms in (now * 1000 - 600_000, now * 1000 + 600_000):
        assert verify_declaration(declared(at_ms), registry=registry, now=now).declared_at == at_ms
    for at_ms in (now * 1000 - 600_001, now * 1000 + 600_001):
        with pytest.raises(InvalidServiceDeclaration) as refused:
            verify_declaration(declared(at_ms), registry=registry, now=now)
        assert refused.value.message == (
            "declared_at is more than 600 s from the central server's time; "
            "check the security server's clock"
        )


# --- revocation: a declaration carries a fresh "good" OCSP response when the CA has a responder


def _ocsp_setup(tmp_path: Any) -> tuple[CertificateAuthority, Signer, Signer, GlobalConf, Any]:
    ca = CertificateAuthority.create(tmp_path / "ca", "CA")
    key, other_key = generate_key(), generate_key()
    signer = Signer(key, ca.issue_auth_cert(key.public_key(), SS1))
    other = Signer(other_key, ca.issue_auth_cert(other_key.public_key(), SS1))
    return ca, signer, other, _one_server(ca, signer, ("http://127.0.0.1:9/",)), SUB


def _ocsp_about(
    ca: CertificateAuthority, cert: Any, *, revoked: bool = False, at: dt.datetime | None = None
) -> bytes:
    def lookup(serial: int) -> CertStatus:
        if revoked:
            return CertStatus(serial, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        return CertStatus(serial)

    return build_ocsp_response(
        build_ocsp_request(cert, ca.cert),
        ca=ca.cert,
        responder_key=ca.key,
        responder_cert=ca.cert,
        store_lookup=lookup,
        now=at or dt.datetime.now(dt.UTC),
    )


def test_a_declaration_with_a_fresh_good_ocsp_response_verifies(tmp_path: Any) -> None:
    ca, signer, _, registry, sub = _ocsp_setup(tmp_path)
    now = int(time.time())
    ocsp = _ocsp_about(ca, signer.cert)
    declaration = new_declaration(SS1, signer.cert, [(sub, [])], now * 1000, ocsp=ocsp)
    verified = verify_declaration(sign_declaration(declaration, signer), registry=registry, now=now)
    assert verified.ocsp == declaration.ocsp


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        (
            "missing",
            InvalidServiceDeclaration,
            "the declaration carries no OCSP response for its authentication certificate, "
            "whose CA publishes an OCSP responder",
        ),
        ("revoked", ServiceDeclarationForbidden, "the authentication certificate is revoked"),
        (
            "stale",
            InvalidServiceDeclaration,
            "the OCSP response for the authentication certificate: OCSP response is stale",
        ),
        (
            "another-certificate",
            InvalidServiceDeclaration,
            "the OCSP response for the authentication certificate: "
            "OCSP response is not about this certificate",
        ),
        (
            "garbage",
            InvalidServiceDeclaration,
            "the OCSP response for the authentication certificate: malformed OCSP response",
        ),
    ],
)
def test_a_declaration_without_a_fresh_good_ocsp_response_is_refused(
    tmp_path: Any, case: str, error: type[Exception], message: str
) -> None:
    ca, signer, other, registry, sub = _ocsp_setup(tmp_path)
    now = int(time.time())
    ocsp = {
        "missing": None,
        "revoked": _ocsp_about(ca, signer.cert, revoked=True),
        "stale": _ocsp_about(ca, signer.cert, at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)),
        "another-certificate": _ocsp_about(ca, other.cert),
        "garbage": b"\x30\x03\x0a\x01\x00",
    }[case]
    declaration = new_declaration(SS1, signer.cert, [(sub, [])], now * 1000, ocsp=ocsp)
    with pytest.raises(error) as refused:
        verify_declaration(sign_declaration(declaration, signer), registry=registry, now=now)
    assert refused.value.message == message  # type: ignore[attr-defined]


def test_an_ocsp_response_for_a_ca_without_responder_is_refused(tmp_path: Any) -> None:
    """Nothing rides along unchecked: a CA without a responder gets no OCSP field (found in
    review: any bytes, even a "revoked" answer, were stored)."""
    ca = CertificateAuthority.create(tmp_path / "ca", "CA")
    key = generate_key()
    signer = Signer(key, ca.issue_auth_cert(key.public_key(), SS1))
    registry = _one_server(ca, signer)  # no responder
    now = int(time.time())
    declaration = new_declaration(
        SS1, signer.cert, [(SUB, [])], now * 1000, ocsp=_ocsp_about(ca, signer.cert, revoked=True)
    )
    with pytest.raises(InvalidServiceDeclaration) as refused:
        verify_declaration(sign_declaration(declaration, signer), registry=registry, now=now)
    assert refused.value.message == (
        "ocsp is given, but the authentication certificate's CA publishes no OCSP responder"
    )
