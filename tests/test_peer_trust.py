"""The peer-trust object (exchange/trustcore/peers.py), without sockets: what a peer security
server must prove, judged alike by both ends of a connection.

Each refusal is tried from both sides; only the X-Road code differs (``Server.ServerProxy.*`` at
the provider, ``Server.ClientProxy.*`` at the consumer). Certificates, OCSP responses and the
global configuration are real (our CA, our responder code, a GlobalConf value).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from exchange.errors import ExchangeError
from exchange.globalconf.document import ApprovedCA, GlobalConf, MemberInfo, SecurityServerInfo
from exchange.identifiers import parse_member, parse_security_server, parse_subsystem
from exchange.protocol.hello import Hello
from exchange.protocol.jws import cert_thumbprint
from exchange.trust import keys
from exchange.trust.ca import CertificateAuthority
from exchange.trust.ocsp import CertStatus, build_ocsp_request, build_ocsp_response
from exchange.trust.profiles import (
    AUTH_PROFILE,
    CertificateTemplate,
    _subject,
)
from exchange.trustcore.peers import PeerTrust, Side

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
"""The tests' reference time: every certificate and OCSP response is made relative to it, so
that they hold however long after the module's import the tests run."""
T = NOW.timestamp()
FRESHNESS = 3600
MOI, MOF = parse_member("PS/GOV/MOI"), parse_member("PS/GOV/MOF")
MOI_SS, MOF_SS = parse_security_server("PS/GOV/MOI/ss1"), parse_security_server("PS/GOV/MOF/ss1")
REGISTRY = parse_subsystem("PS/GOV/MOI/population-registry")
PAYMENTS = parse_subsystem("PS/GOV/MOF/payments")


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    foreign: CertificateAuthority
    moi_auth: x509.Certificate
    mof_auth: x509.Certificate
    moi_sign: x509.Certificate
    moi_sign_revoked: x509.Certificate
    foreign_sign: x509.Certificate
    revoked: frozenset[int]

    def conf(self, *, ocsp: bool = True, registered: tuple[str, ...] | None = None) -> GlobalConf:
        """MOI's and MOF's servers registered, our CA approved (with a responder if ``ocsp``)."""
        moi_fps = registered if registered is not None else (keys.fingerprint(self.moi_auth),)
        return GlobalConf(
            "PS",
            1,
            int(T),
            int(T) + 600,
            members=(
                MemberInfo(MOI, "Interior", (REGISTRY,)),
                MemberInfo(MOF, "Finance", (PAYMENTS,)),
            ),
            security_servers=(
                SecurityServerInfo(MOI_SS, "127.0.0.1:1", moi_fps, (REGISTRY,)),
                SecurityServerInfo(
                    MOF_SS, "127.0.0.1:2", (keys.fingerprint(self.mof_auth),), (PAYMENTS,)
                ),
            ),
            approved_cas=(
                ApprovedCA(
                    "Test CA",
                    keys.cert_pem(self.ca.cert),
                    ("http://127.0.0.1:9/ocsp",) if ocsp else (),
                ),
            ),
        )

    def staple(self, cert: x509.Certificate, *, at: dt.datetime = NOW) -> bytes:
        """Our CA's OCSP answer about ``cert`` at ``at`` (revoked if we revoked it)."""

        def lookup(serial: int) -> CertStatus:
            if serial in self.revoked:
                return CertStatus(serial, NOW - dt.timedelta(hours=1), None)
            return CertStatus(serial)

        return build_ocsp_response(
            build_ocsp_request(cert, self.ca.cert),
            ca=self.ca.cert,
            responder_key=self.ca.key,
            responder_cert=self.ca.cert,
            store_lookup=lookup,
            now=at,
        )

    def hello(
        self, *certs: x509.Certificate, unstapled: tuple[x509.Certificate, ...] = ()
    ) -> Hello:
        """A HELLO presenting ``certs``, with staples for MOI's auth certificate and each of
        ``certs`` but those ``unstapled``."""
        stapled = [c for c in (self.moi_auth, *certs) if c not in unstapled]
        return Hello(certs, {cert_thumbprint(c): self.staple(c) for c in stapled})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base: Path = tmp_path_factory.mktemp("peer-trust")
    ca = CertificateAuthority.create(base / "ca", "Test CA", now=NOW)
    foreign = CertificateAuthority.create(base / "foreign", "Foreign CA", now=NOW)

    def key() -> keys.ec.EllipticCurvePublicKey:
        return keys.generate_key().public_key()

    revoked_sign = ca.issue_sign_cert(key(), MOI, now=NOW)
    return Pki(
        ca=ca,
        foreign=foreign,
        moi_auth=ca.issue_auth_cert(key(), MOI_SS, now=NOW),
        mof_auth=ca.issue_auth_cert(key(), MOF_SS, now=NOW),
        moi_sign=ca.issue_sign_cert(key(), MOI, now=NOW),
        moi_sign_revoked=revoked_sign,
        foreign_sign=foreign.issue_sign_cert(key(), MOI, now=NOW),
        revoked=frozenset({revoked_sign.serial_number}),
    )


SIDES = [
    pytest.param("provider", "Server.ServerProxy.", 403, id="provider"),
    pytest.param("consumer", "Server.ClientProxy.", 502, id="consumer"),
]


# --- the authentication certificate --------------------------------------------------------------


def _foreign(pki: Pki) -> x509.Certificate:
    return pki.foreign.issue_auth_cert(keys.generate_key().public_key(), MOI_SS, now=NOW)


def _expired(pki: Pki) -> x509.Certificate:
    before = NOW - dt.timedelta(days=3)
    return pki.ca.issue_auth_cert(
        keys.generate_key().public_key(), MOI_SS, not_before=before, days=1
    )


def _signing_cert(pki: Pki) -> x509.Certificate:
    return pki.moi_sign


def _no_server_urn(pki: Pki) -> x509.Certificate:
    """Client and server authentication, which OpenSSL accepts for TLS, but no X-Road server
    identifier: not our authentication profile."""
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    template = CertificateTemplate(
        AUTH_PROFILE,
        _subject("ss1", MOI),
        (
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True),
            (x509.ExtendedKeyUsage(list(AUTH_PROFILE.extended_key_usage)), False),
            (x509.SubjectAlternativeName(names), False),
        ),
    )
    return pki.ca.issue(keys.generate_key().public_key(), template, now=NOW)


BAD_AUTH: list[object] = [
    pytest.param(_foreign, id="foreign-ca"),
    pytest.param(_expired, id="expired"),
    pytest.param(_signing_cert, id="signing-certificate-as-auth"),
    pytest.param(_no_server_urn, id="no-server-identifier"),
]


@pytest.mark.parametrize(("side", "prefix", "status"), SIDES)
def test_a_registered_authentication_certificate_names_its_server(
    pki: Pki, side: Side, prefix: str, status: int
) -> None:
    trust = PeerTrust(pki.conf())
    assert trust.authenticate(pki.moi_auth, T, side).id == MOI_SS
    assert trust.authenticate(pki.moi_auth, T, side, expected=MOI_SS).id == MOI_SS


@pytest.mark.parametrize(("side", "prefix", "status"), SIDES)
@pytest.mark.parametrize("make", BAD_AUTH)
def test_an_unacceptable_authentication_certificate_is_refused_by_both_ends(
    pki: Pki, side: Side, prefix: str, status: int, make: Callable[[Pki], x509.Certificate]
) -> None:
    """Chain, validity and profile, on both ends (the consumer checked none of the profile
    before), even when the certificate's fingerprint is the one registered."""
    cert = make(pki)
    trust = PeerTrust(pki.conf(registered=(keys.fingerprint(cert),)))
    with pytest.raises(ExchangeError) as refused:
        trust.authenticate(cert, T, side, expected=MOI_SS if side == "consumer" else None)
    assert (refused.value.code, refused.value.status) == (
        f"{prefix}SslAuthenticationFailed",
        status,
    )


@pytest.mark.parametrize(("side", "prefix", "status"), SIDES)
def test_an_unregistered_or_other_servers_certificate_is_refused(
    pki: Pki, side: Side, prefix: str, status: int
) -> None:
    trust = PeerTrust(pki.conf(registered=()))
    for cert, expected in ((pki.moi_auth, None), (None, None)):
        with pytest.raises(ExchangeError) as refused:
            trust.authenticate(cert, T, side, expected=expected)
        assert refused.value.code == f"{prefix}SslAuthenticationFailed"
    # a consumer that dialled MOI's server and reached MOF's
    with pytest.raises(ExchangeError) as refused:
        PeerTrust(pki.conf()).authenticate(pki.mof_auth, T, side, expected=MOI_SS)
    assert refused.value.code == f"{prefix}SslAuthenticationFailed"
    assert "does not register for it" in refused.value.message


# --- HELLO ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("side", "prefix", "status"), SIDES)
def test_the_authentication_certificate_needs_a_fresh_good_staple(
    pki: Pki, side: Side, prefix: str, status: int
) -> None:
    trust = PeerTrust(pki.conf())
    with pytest.raises(ExchangeError) as refused:
        trust.admit(pki.moi_auth, pki.hello(unstapled=(pki.moi_auth,)), T, side)
    assert refused.value.code == f"{prefix}CertificateStatusUnknown"
    stale = Hello((), {cert_thumbprint(pki.moi_auth): pki.staple(pki.moi_auth, at=NOW)})
    later = T + FRESHNESS + 60
    with pytest.raises(ExchangeError) as refused:
        trust.admit(pki.moi_auth, stale, later, side)
    assert refused.value.code == f"{prefix}OcspResponseStale"
    # without a responder in the configuration, no staple is needed
    assert PeerTrust(pki.conf(ocsp=False)).admit(pki.moi_auth, Hello((), {}), T, side).server


@pytest.mark.parametrize(("side", "prefix", "status"), SIDES)
def test_one_bad_signing_certificate_is_skipped_on_both_ends(
    pki: Pki, side: Side, prefix: str, status: int
) -> None:
    """The rule both ends share (item 8 of issue 13): a HELLO presenting a good signing
    certificate next to a foreign-CA one, a revoked one and an unstapled one keeps the
    connection; signatures by the good one verify, by each other one are refused with its
    reason."""
    trust = PeerTrust(pki.conf())
    unstapled = pki.ca.issue_sign_cert(keys.generate_key().public_key(), MOI, now=NOW)
    hello = pki.hello(
        pki.foreign_sign, pki.moi_sign, pki.moi_sign_revoked, unstapled, unstapled=(unstapled,)
    )
    peer = trust.admit(pki.moi_auth, hello, T, side)
    good = peer.key_for(cert_thumbprint(pki.moi_sign), T)
    assert (good.member, good.cert) == (MOI, pki.moi_sign)
    refusals = {
        pki.foreign_sign: "InvalidSignatureValue",
        pki.moi_sign_revoked: "CertificateRevoked",
        unstapled: "CertificateStatusUnknown",
    }
    for cert, code in refusals.items():
        with pytest.raises(ExchangeError) as refused:
            peer.key_for(cert_thumbprint(cert), T)
        assert refused.value.code == f"{prefix}{code}", cert.subject
    with pytest.raises(ExchangeError) as refused:
        peer.key_for(cert_thumbprint(pki.mof_auth), T)  # never presented
    assert refused.value.code == f"{prefix}InvalidSignatureValue"


@pytest.mark.parametrize(("side", "prefix", "status"), SIDES)
def test_each_message_is_judged_at_its_own_time(
    pki: Pki, side: Side, prefix: str, status: int
) -> None:
    """A key accepted at HELLO is refused once its staples are stale or it has expired."""
    peer = PeerTrust(pki.conf()).admit(pki.moi_auth, pki.hello(pki.moi_sign), T, side)
    thumb = cert_thumbprint(pki.moi_sign)
    assert peer.key_for(thumb, T + FRESHNESS - 60).member == MOI
    with pytest.raises(ExchangeError) as refused:
        peer.key_for(thumb, T + FRESHNESS + 60)
    assert refused.value.code == f"{prefix}OcspResponseStale"
    unchecked = PeerTrust(pki.conf(ocsp=False)).admit(
        pki.moi_auth, Hello((pki.moi_sign,), {}), T, side
    )
    after = pki.moi_sign.not_valid_after_utc.timestamp() + 1
    with pytest.raises(ExchangeError) as refused:
        unchecked.key_for(thumb, after)
    assert refused.value.code == f"{prefix}InvalidSignatureValue"
    assert "expired" in refused.value.message


def test_a_new_configuration_judges_an_open_connection_again(pki: Pki) -> None:
    """What a peer presented is judged again by the next configuration's object: a removed
    registration refuses the connection, a removed CA the signing certificate."""
    hello = pki.hello(pki.moi_sign)
    assert PeerTrust(pki.conf()).admit(pki.moi_auth, hello, T, "provider").signers
    with pytest.raises(ExchangeError) as refused:
        PeerTrust(pki.conf(registered=())).admit(pki.moi_auth, hello, T, "provider")
    assert refused.value.code == "Server.ServerProxy.SslAuthenticationFailed"


def test_hosting_and_evidence(pki: Pki) -> None:
    peer = PeerTrust(pki.conf()).admit(pki.moi_auth, pki.hello(pki.moi_sign), T, "provider")
    assert peer.hosts(REGISTRY) and not peer.hosts(PAYMENTS) and not peer.hosts(MOI)
    kept = dict(peer.evidence())
    assert set(kept) == {pki.moi_auth, pki.moi_sign}
    assert all(response is not None for response in kept.values())
