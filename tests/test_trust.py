"""The PKI: CA, certificate profiles, chain validation, the certificate cache, mutual TLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.errors import ConfigurationError, ExchangeError
from exchange.identifiers import MemberId, SecurityServerId, parse_member, parse_security_server
from exchange.protocol.jws import cert_thumbprint
from exchange.trust import keys
from exchange.trust.ca import CERT_FILE, KEY_FILE, CertificateAuthority, InvalidCertificateRequest
from exchange.trust.profiles import (
    DOCUMENT_SIGNING,
    CertificateTemplate,
    auth_template,
    check_auth_profile,
    check_sign_profile,
    key_usage,
    member_id_of_signing_cert,
    member_urn,
    parse_member_urn,
    parse_server_urn,
    profile_of,
    server_id_of_auth_cert,
    server_urn,
    sign_template,
)
from exchange.trust.validation import (
    CertificateCache,
    CertificateError,
    CertificateProfileError,
    verify_chain,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
"""Real time: the TLS tests need certificates OpenSSL accepts against its own clock."""
MOI_SS1 = parse_security_server("PS/GOV/MOI/ss1")
MOF_SS1 = parse_security_server("PS/GOV/MOF/ss1")
MOI = parse_member("PS/GOV/MOI")
INVALID_CERT = "Server.ServerProxy.InvalidCertificate"


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    foreign_ca: CertificateAuthority
    moi_auth: Issued
    mof_auth: Issued
    moi_sign: Issued


def _auth(ca: CertificateAuthority, server: SecurityServerId, **kw: object) -> Issued:
    key = keys.generate_key()
    return Issued(key, ca.issue_auth_cert(key.public_key(), server, **kw))  # type: ignore[arg-type]


def _sign(ca: CertificateAuthority, member: MemberId, **kw: object) -> Issued:
    key = keys.generate_key()
    return Issued(key, ca.issue_sign_cert(key.public_key(), member, **kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = CertificateAuthority.create(tmp_path_factory.mktemp("ca"), now=NOW)
    foreign = CertificateAuthority.create(tmp_path_factory.mktemp("foreign"), "Foreign CA")
    return Pki(
        ca=ca,
        foreign_ca=foreign,
        moi_auth=_auth(ca, MOI_SS1, now=NOW),
        mof_auth=_auth(ca, MOF_SS1, now=NOW),
        moi_sign=_sign(ca, MOI, now=NOW),
    )


_E = TypeVar("_E", bound=x509.ExtensionType)


def _ext(cert: x509.Certificate, kind: type[_E]) -> x509.Extension[_E]:
    return cert.extensions.get_extension_for_class(kind)


# --- the CA --------------------------------------------------------------------------------------


def test_root_certificate_is_a_ca(pki: Pki) -> None:
    root = pki.ca.cert
    constraints = _ext(root, x509.BasicConstraints)
    assert constraints.critical and constraints.value == x509.BasicConstraints(True, 0)
    usage = _ext(root, x509.KeyUsage)
    assert usage.critical and usage.value == key_usage("keyCertSign", "cRLSign")
    assert _ext(root, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        pki.ca.key.public_key()
    )
    root.verify_directly_issued_by(root)
    assert root.subject == root.issuer
    assert profile_of(root) == "ca"


def test_ca_files_and_modes(tmp_path: Path) -> None:
    CertificateAuthority.create(tmp_path)
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert keys.load_certificate(tmp_path / CERT_FILE).subject.rfc4514_string() == (
        "CN=Exchange Test CA"
    )


def test_ca_refuses_to_overwrite(tmp_path: Path) -> None:
    CertificateAuthority.create(tmp_path)
    with pytest.raises(ConfigurationError, match="already exists"):
        CertificateAuthority.create(tmp_path)


def test_encrypted_ca_key_round_trip(tmp_path: Path) -> None:
    created = CertificateAuthority.create(tmp_path, passphrase=b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / KEY_FILE).read_bytes()
    loaded = CertificateAuthority.load(tmp_path, b"correct horse")
    assert loaded.cert == created.cert
    assert loaded.key.private_numbers() == created.key.private_numbers()


@pytest.mark.parametrize(
    ("passphrase", "reason"),
    [
        pytest.param(b"wrong", "wrong passphrase", id="wrong-passphrase"),
        pytest.param(None, "is encrypted", id="no-passphrase"),
    ],
)
def test_encrypted_ca_key_refused(tmp_path: Path, passphrase: bytes | None, reason: str) -> None:
    CertificateAuthority.create(tmp_path, passphrase=b"correct horse")
    with pytest.raises(ConfigurationError, match=reason):
        CertificateAuthority.load(tmp_path, passphrase)


def test_load_refuses_key_of_another_ca(tmp_path: Path) -> None:
    CertificateAuthority.create(tmp_path / "a")
    CertificateAuthority.create(tmp_path / "b")
    (tmp_path / "a" / CERT_FILE).write_bytes((tmp_path / "b" / CERT_FILE).read_bytes())
    with pytest.raises(ConfigurationError, match="is not the key of"):
        CertificateAuthority.load(tmp_path / "a")


def test_load_refuses_readable_key(tmp_path: Path) -> None:
    CertificateAuthority.create(tmp_path)
    (tmp_path / KEY_FILE).chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by others"):
        CertificateAuthority.load(tmp_path)


def test_issued_certificates_identify_their_ca_and_have_random_serials(pki: Pki) -> None:
    ca_ski = _ext(pki.ca.cert, x509.SubjectKeyIdentifier).value
    for issued in (pki.moi_auth, pki.mof_auth, pki.moi_sign):
        aki = _ext(issued.cert, x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ca_ski.digest
        assert _ext(issued.cert, x509.SubjectKeyIdentifier).value.digest == (
            x509.SubjectKeyIdentifier.from_public_key(issued.key.public_key()).digest
        )
        assert issued.cert.issuer == pki.ca.cert.subject
        assert issued.cert.signature_hash_algorithm is not None
        assert issued.cert.signature_hash_algorithm.name == "sha256"
    serials = {i.cert.serial_number for i in (pki.moi_auth, pki.mof_auth, pki.moi_sign)}
    assert len(serials) == 3 and min(serials) > 2**63


def test_validity_is_backdated_and_never_outlives_the_ca(pki: Pki) -> None:
    cert = pki.moi_auth.cert
    assert cert.not_valid_before_utc == NOW - dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=365)
    long_lived = _auth(pki.ca, MOI_SS1, days=100_000).cert
    assert long_lived.not_valid_after_utc == pki.ca.cert.not_valid_after_utc


# --- profiles ------------------------------------------------------------------------------------


def test_auth_profile_exactly(pki: Pki) -> None:
    cert = pki.moi_auth.cert
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value == key_usage("digitalSignature")
    eku = _ext(cert, x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:x-road:server:PS/GOV/MOI/ss1"
    ]
    assert cert.subject.rfc4514_string({NameOID.SERIAL_NUMBER: "serialNumber"}) == (
        "CN=ss1,O=MOI,OU=GOV,serialNumber=PS"
    )
    check_auth_profile(cert)
    assert server_id_of_auth_cert(cert) == MOI_SS1
    assert profile_of(cert) == "auth"


def test_auth_profile_names(pki: Pki) -> None:
    cert = _auth(pki.ca, MOI_SS1, dns_names=["ss1.moi.example", "ss1"], ip_addresses=["::1"]).cert
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ss1.moi.example", "ss1"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]


def test_sign_profile_exactly(pki: Pki) -> None:
    cert = pki.moi_sign.cert
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value == key_usage("digitalSignature", "contentCommitment")
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [DOCUMENT_SIGNING]
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert [g.value for g in san] == ["urn:x-road:member:PS/GOV/MOI"]
    assert cert.subject.rfc4514_string({NameOID.SERIAL_NUMBER: "serialNumber"}) == (
        "CN=MOI,O=MOI,OU=GOV,serialNumber=PS"
    )
    check_sign_profile(cert)
    assert member_id_of_signing_cert(cert) == MOI
    assert profile_of(cert) == "sign"


def test_sign_cert_needs_p256_key(pki: Pki) -> None:
    with pytest.raises(ValueError, match="P-256"):
        pki.ca.issue_sign_cert(ec.generate_private_key(ec.SECP384R1()).public_key(), MOI)


def _custom(
    pki: Pki, *extensions: tuple[x509.ExtensionType, bool], key: object = None
) -> x509.Certificate:
    public_key = key if key is not None else keys.generate_key().public_key()
    template = CertificateTemplate(
        profile=sign_template(MOI).profile,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "custom")]),
        extensions=extensions,
    )
    return pki.ca.issue(public_key, template, now=NOW)  # type: ignore[arg-type]


_EE = (x509.BasicConstraints(ca=False, path_length=None), True)
_AUTH_KU = (key_usage("digitalSignature"), True)
_SIGN_KU = (key_usage("digitalSignature", "contentCommitment"), True)
_TLS = (
    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
    False,
)


def _uris(*uris: str) -> tuple[x509.ExtensionType, bool]:
    return (x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), False)


_SERVER_URI = _uris("urn:x-road:server:PS/GOV/MOI/ss1")
_MEMBER_URI = _uris("urn:x-road:member:PS/GOV/MOI")

WrongUse = Callable[[Pki], tuple[x509.Certificate, Callable[[x509.Certificate], object], str]]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            lambda p: (
                p.moi_sign.cert,
                check_auth_profile,
                "key usage contentCommitment not allowed",
            ),
            id="signing-cert-as-auth-cert",
        ),
        pytest.param(
            lambda p: (p.moi_auth.cert, check_sign_profile, "key usage lacks contentCommitment"),
            id="auth-cert-as-signing-cert",
        ),
        pytest.param(
            lambda p: (p.ca.cert, check_auth_profile, "it is a CA certificate"), id="ca-as-auth"
        ),
        pytest.param(
            lambda p: (p.ca.cert, check_sign_profile, "it is a CA certificate"), id="ca-as-sign"
        ),
        pytest.param(
            lambda p: (
                p.moi_auth.cert,
                member_id_of_signing_cert,
                "expected one urn:x-road:member",
            ),
            id="member-of-auth-cert",
        ),
        pytest.param(
            lambda p: (p.moi_sign.cert, server_id_of_auth_cert, "expected one urn:x-road:server"),
            id="server-of-signing-cert",
        ),
        pytest.param(
            lambda p: (
                _custom(p, _EE, _TLS, _SERVER_URI),
                check_auth_profile,
                "it has no key usage extension",
            ),
            id="no-key-usage",
        ),
        pytest.param(
            lambda p: (
                _custom(
                    p,
                    _EE,
                    _AUTH_KU,
                    (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
                    _SERVER_URI,
                ),
                check_auth_profile,
                "extended key usage lacks clientAuth",
            ),
            id="auth-without-client-auth",
        ),
        pytest.param(
            lambda p: (
                _custom(p, _EE, _AUTH_KU, _SERVER_URI),
                check_auth_profile,
                "extended key usage lacks clientAuth, serverAuth",
            ),
            id="auth-without-eku",
        ),
        pytest.param(
            lambda p: (
                _custom(
                    p,
                    _EE,
                    _AUTH_KU,
                    (
                        x509.ExtendedKeyUsage(
                            [
                                ExtendedKeyUsageOID.SERVER_AUTH,
                                ExtendedKeyUsageOID.CLIENT_AUTH,
                                DOCUMENT_SIGNING,
                            ]
                        ),
                        False,
                    ),
                    _SERVER_URI,
                ),
                check_auth_profile,
                "extended key usage documentSigning not allowed",
            ),
            id="auth-with-document-signing",
        ),
        pytest.param(
            lambda p: (
                _custom(p, _EE, _SIGN_KU, _TLS, _MEMBER_URI),
                check_sign_profile,
                "extended key usage clientAuth, serverAuth not allowed",
            ),
            id="sign-with-tls-eku",
        ),
        pytest.param(
            lambda p: (
                _custom(
                    p,
                    _EE,
                    (key_usage("digitalSignature", "contentCommitment", "keyCertSign"), True),
                    _MEMBER_URI,
                ),
                check_sign_profile,
                "key usage keyCertSign not allowed",
            ),
            id="sign-with-key-cert-sign",
        ),
        pytest.param(
            lambda p: (
                _custom(
                    p,
                    _EE,
                    _SIGN_KU,
                    _MEMBER_URI,
                    key=ec.generate_private_key(ec.SECP384R1()).public_key(),
                ),
                check_sign_profile,
                "its key is not a P-256 key",
            ),
            id="sign-with-p384-key",
        ),
        pytest.param(
            lambda p: (
                _custom(p, _EE, _AUTH_KU, _TLS),
                check_auth_profile,
                "found none",
            ),
            id="auth-without-san",
        ),
        pytest.param(
            lambda p: (
                _custom(
                    p,
                    _EE,
                    _AUTH_KU,
                    _TLS,
                    _uris("urn:x-road:server:PS/GOV/MOI/ss1", "urn:x-road:server:PS/GOV/MOF/ss1"),
                ),
                check_auth_profile,
                "expected one urn:x-road:server",
            ),
            id="auth-with-two-servers",
        ),
        pytest.param(
            lambda p: (
                _custom(p, _EE, _AUTH_KU, _TLS, _uris("urn:x-road:server:PS/GOV/MOI")),
                check_auth_profile,
                "malformed security server URI",
            ),
            id="auth-with-three-part-server",
        ),
        pytest.param(
            lambda p: (
                _custom(p, _EE, _AUTH_KU, _TLS, _uris("urn:x-road:server:PS/GOV/MOI/s%2Fs")),
                server_id_of_auth_cert,
                "malformed security server URI",
            ),
            id="auth-with-encoded-slash",
        ),
        pytest.param(
            lambda p: (
                _custom(
                    p,
                    _EE,
                    _SIGN_KU,
                    _uris("urn:x-road:member:PS/GOV/MOI", "urn:x-road:server:PS/GOV/MOI/ss1"),
                ),
                check_sign_profile,
                "expected one urn:x-road:member",
            ),
            id="sign-with-server-uri-too",
        ),
    ],
)
def test_wrong_profile_refused(pki: Pki, case: WrongUse) -> None:
    cert, check, reason = case(pki)
    with pytest.raises(CertificateProfileError, match=re.escape(reason)) as info:
        check(cert)
    assert info.value.code == INVALID_CERT and info.value.status == 403
    assert isinstance(info.value, ExchangeError)


# --- identifiers in the SAN URI ------------------------------------------------------------------

_PART = st.from_regex(r"[A-Za-z0-9'()+,\-.=?_]{1,30}", fullmatch=True)


@given(st.tuples(_PART, _PART, _PART, _PART))
def test_server_urn_round_trip(parts: tuple[str, str, str, str]) -> None:
    server = SecurityServerId(*parts)
    urn = server_urn(server)
    assert urn.isascii() and "?" not in urn
    assert parse_server_urn(urn) == server


@given(st.tuples(_PART, _PART, _PART))
def test_member_urn_round_trip(parts: tuple[str, str, str]) -> None:
    assert parse_member_urn(member_urn(MemberId(*parts))) == MemberId(*parts)


@given(
    st.one_of(st.text(max_size=80), st.text(max_size=60).map(lambda t: "urn:x-road:member:" + t))
)
def test_member_urn_parser_contract(text: str) -> None:
    with contextlib.suppress(CertificateProfileError):
        assert isinstance(parse_member_urn(text), MemberId)


@settings(max_examples=20, deadline=None)
@given(st.tuples(_PART, _PART, _PART, _PART))
def test_any_identifier_survives_a_certificate(pki: Pki, parts: tuple[str, str, str, str]) -> None:
    ca = pki.ca
    key = keys.generate_key().public_key()
    server = SecurityServerId(*parts)
    assert server_id_of_auth_cert(ca.issue(key, auth_template(server))) == server
    member = server.owner
    assert member_id_of_signing_cert(ca.issue_sign_cert(key, member)) == member


def test_long_parts_truncate_the_subject_not_the_identifier(pki: Pki) -> None:
    server = SecurityServerId("P_S", "GOV", "M" * 255, "s" * 255)
    cert = _auth(pki.ca, server).cert
    assert server_id_of_auth_cert(cert) == server
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "s" * 64
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "P_S"


# --- chain validation ----------------------------------------------------------------------------


def test_verify_chain_returns_the_issuing_ca(pki: Pki) -> None:
    assert verify_chain(pki.moi_auth.cert, [pki.foreign_ca.cert, pki.ca.cert], NOW) == pki.ca.cert


def _twin_root(ca: CertificateAuthority, start: dt.datetime, end: dt.datetime) -> x509.Certificate:
    """The same CA name and key in a root certificate with another validity period."""
    return (
        x509.CertificateBuilder()
        .subject_name(ca.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(ca.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage("keyCertSign", "cRLSign"), critical=True)
        .sign(ca.key, hashes.SHA256())
    )


def _expired(p: Pki) -> x509.Certificate:
    return _auth(p.ca, MOI_SS1, not_before=NOW - dt.timedelta(days=10), days=1).cert


def _not_yet_valid(p: Pki) -> x509.Certificate:
    return _auth(p.ca, MOI_SS1, not_before=NOW + dt.timedelta(days=1), days=30).cert


def _impostor(p: Pki, tmp: Path) -> x509.Certificate:
    """Issued by a CA that has the approved CA's name but another key."""
    impostor = CertificateAuthority.create(tmp, "Exchange Test CA")
    return _auth(impostor, MOI_SS1, now=NOW).cert


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(
            lambda p, t: _expired(p),
            f"certificate expired at {(NOW - dt.timedelta(days=9)).isoformat()}",
            id="expired-auth-cert",
        ),
        pytest.param(
            lambda p, t: _not_yet_valid(p),
            f"certificate not yet valid (valid from {(NOW + dt.timedelta(days=1)).isoformat()})",
            id="not-yet-valid-auth-cert",
        ),
        pytest.param(
            lambda p, t: _auth(p.foreign_ca, MOI_SS1, now=NOW).cert,
            "certificate not issued by an approved CA",
            id="foreign-ca",
        ),
        pytest.param(
            lambda p, t: _impostor(p, t),
            "certificate not issued by an approved CA",
            id="same-ca-name-other-key",
        ),
        pytest.param(
            lambda p, t: keys.self_signed_certificate(keys.generate_key(), "ss1"),
            "certificate not issued by an approved CA",
            id="self-signed",
        ),
    ],
)
def test_verify_chain_refuses(
    pki: Pki,
    tmp_path: Path,
    make: Callable[[Pki, Path], x509.Certificate],
    reason: str,
) -> None:
    cert = make(pki, tmp_path)
    with pytest.raises(CertificateError) as info:
        verify_chain(cert, [pki.ca.cert], NOW)
    assert info.value.message == reason
    assert info.value.code == INVALID_CERT and info.value.status == 403


def test_verify_chain_refuses_expired_ca(pki: Pki) -> None:
    short_root = _twin_root(pki.ca, NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=1))
    expected = f"issuing CA certificate expired at {(NOW - dt.timedelta(days=1)).isoformat()}"
    with pytest.raises(CertificateError) as info:
        verify_chain(pki.moi_auth.cert, [short_root], NOW)
    assert info.value.message == expected


def test_validity_period_is_inclusive(pki: Pki) -> None:
    cert = pki.moi_auth.cert
    verify_chain(cert, [pki.ca.cert], cert.not_valid_before_utc)
    verify_chain(cert, [pki.ca.cert], cert.not_valid_after_utc)
    with pytest.raises(CertificateError, match="not yet valid"):
        verify_chain(cert, [pki.ca.cert], cert.not_valid_before_utc - dt.timedelta(microseconds=1))
    # certificate times have whole seconds (RFC 5280 §4.1.2.5.1-2) and cryptography's path
    # validation compares whole seconds: the next second is past notAfter
    with pytest.raises(CertificateError, match="expired"):
        verify_chain(cert, [pki.ca.cert], cert.not_valid_after_utc + dt.timedelta(seconds=1))


def test_verify_chain_across_ca_key_rollover(pki: Pki, tmp_path: Path) -> None:
    successor = CertificateAuthority.create(tmp_path, "Exchange Test CA", now=NOW)
    cert = _auth(successor, MOI_SS1, now=NOW).cert
    assert verify_chain(cert, [pki.ca.cert, successor.cert], NOW) == successor.cert


# --- the certificate cache -----------------------------------------------------------------------


def test_cache_keeps_validated_certificates(pki: Pki) -> None:
    cache = CertificateCache([pki.ca.cert])
    entry = cache.validate(pki.moi_sign.cert, NOW)
    assert entry.thumbprint == cert_thumbprint(pki.moi_sign.cert)
    assert entry.ca == pki.ca.cert
    assert cache.validate(pki.moi_sign.cert, NOW) is entry
    assert cache.get(entry.thumbprint, NOW) is entry
    assert cache.get("unknown", NOW) is None


def test_cache_rechecks_validity_on_every_lookup(pki: Pki) -> None:
    cache = CertificateCache([pki.ca.cert])
    entry = cache.validate(pki.moi_sign.cert, NOW)
    later = pki.moi_sign.cert.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(CertificateError, match="certificate expired at "):
        cache.get(entry.thumbprint, later)
    assert len(cache) == 0
    with pytest.raises(CertificateError, match="certificate expired at "):
        cache.validate(pki.moi_sign.cert, later)


def test_cache_rechecks_the_ca_validity(pki: Pki) -> None:
    short_root = _twin_root(pki.ca, NOW - dt.timedelta(days=30), NOW + dt.timedelta(days=1))
    cache = CertificateCache([short_root])
    entry = cache.validate(pki.moi_sign.cert, NOW)
    with pytest.raises(CertificateError, match="issuing CA certificate expired"):
        cache.get(entry.thumbprint, NOW + dt.timedelta(days=2))


def test_cache_forgets_when_the_ca_set_changes(pki: Pki) -> None:
    cache = CertificateCache([pki.ca.cert])
    entry = cache.validate(pki.moi_sign.cert, NOW)
    cache.set_trusted_cas([keys.cert_from_pem(keys.cert_pem(pki.ca.cert))])
    assert cache.get(entry.thumbprint, NOW) is entry
    cache.set_trusted_cas([pki.ca.cert, pki.foreign_ca.cert])
    assert cache.get(entry.thumbprint, NOW) is None
    cache.set_trusted_cas([pki.foreign_ca.cert])
    with pytest.raises(CertificateError, match="not issued by an approved CA"):
        cache.validate(pki.moi_sign.cert, NOW)


def test_cache_runs_the_profile_check_before_caching(pki: Pki) -> None:
    cache = CertificateCache([pki.ca.cert], profile_check=check_sign_profile)
    cache.validate(pki.moi_sign.cert, NOW)
    with pytest.raises(CertificateProfileError, match="not a signing certificate"):
        cache.validate(pki.moi_auth.cert, NOW)
    assert cache.get(cert_thumbprint(pki.moi_auth.cert), NOW) is None


def test_cache_is_bounded_least_recently_used_first(pki: Pki) -> None:
    cache = CertificateCache([pki.ca.cert], max_entries=2)
    a, b, c = pki.moi_auth.cert, pki.mof_auth.cert, pki.moi_sign.cert
    cache.validate(a, NOW)
    cache.validate(b, NOW)
    cache.get(cert_thumbprint(a), NOW)
    cache.validate(c, NOW)
    assert len(cache) == 2
    assert cache.get(cert_thumbprint(b), NOW) is None
    assert cache.get(cert_thumbprint(a), NOW) is not None


# --- issuing from a certificate signing request (RFC 2986) ---------------------------------------


def _csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, cn: str = "whatever") -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("urn:x-road:server:PS/GOV/MOF/ss1")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def test_issue_from_csr_takes_only_the_key(pki: Pki) -> None:
    key = keys.generate_key()
    cert = pki.ca.issue_from_csr(_csr(key, "ss-evil"), "auth", MOI_SS1, now=NOW)
    assert cert.public_key() == key.public_key()
    assert server_id_of_auth_cert(cert) == MOI_SS1
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ss1"
    check_auth_profile(cert)
    verify_chain(cert, [pki.ca.cert], NOW)
    sign = pki.ca.issue_from_csr(_csr(key), "sign", MOI, now=NOW)
    check_sign_profile(sign)
    assert member_id_of_signing_cert(sign) == MOI


def _tampered(pem: bytes) -> bytes:
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("make", "profile", "reason"),
    [
        pytest.param(
            lambda: b"garbage", "auth", "not a PEM certificate signing request", id="garbage"
        ),
        pytest.param(
            lambda: _tampered(_csr(keys.generate_key())),
            "auth",
            "signature does not verify",
            id="bad-self-signature",
        ),
        pytest.param(
            lambda: _csr(rsa.generate_private_key(65537, 2048)),
            "auth",
            "must be an EC key",
            id="rsa-key",
        ),
        pytest.param(
            lambda: _csr(ec.generate_private_key(ec.SECP384R1())),
            "sign",
            "P-256",
            id="p384-signing-key",
        ),
    ],
)
def test_issue_from_csr_refuses(
    pki: Pki, make: Callable[[], bytes], profile: str, reason: str
) -> None:
    identifier = MOI_SS1 if profile == "auth" else MOI
    with pytest.raises(InvalidCertificateRequest, match=reason) as info:
        pki.ca.issue_from_csr(make(), profile, identifier)  # type: ignore[arg-type]
    assert info.value.code == "Client.InvalidCertificateRequest" and info.value.status == 400


def test_issue_from_csr_needs_the_matching_identifier(pki: Pki) -> None:
    with pytest.raises(TypeError, match="cannot be issued"):
        pki.ca.issue_from_csr(_csr(keys.generate_key()), "auth", MOI)


# --- mutual TLS between security servers with these certificates ---------------------------------


def _write(tmp: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    key_path = keys.save_private_key(tmp / f"{name}.key.pem", issued.key)
    return key_path, keys.save_certificate(tmp / f"{name}.cert.pem", issued.cert)


def _context(
    side: ssl._SSLMethod, ca: x509.Certificate, chain: tuple[Path, Path], maximum: ssl.TLSVersion
) -> ssl.SSLContext:
    """What a security server uses on either side: mutual, TLS 1.2 minimum, strict X.509."""
    context = ssl.SSLContext(side)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = maximum
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(cadata=keys.cert_pem(ca))
    key_path, cert_path = chain
    context.load_cert_chain(cert_path, key_path)
    return context


@dataclass(frozen=True)
class Outcome:
    client: bytes | Exception
    server: SecurityServerId | Exception


async def _exchange(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> Outcome:
    """One connection that sends a line; what the client got back and whom the server saw."""
    seen: asyncio.Future[SecurityServerId | Exception] = asyncio.Future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await writer.start_tls(server_ctx)
        except (ssl.SSLError, ConnectionError) as exc:
            seen.set_result(exc)
            writer.close()
            return
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        seen.set_result(server_id_of_auth_cert(x509.load_der_x509_certificate(der)))
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await _client(port, client_ctx)
        return Outcome(client=client, server=await seen)
    finally:
        server.close()
        await server.wait_closed()


async def _client(port: int, context: ssl.SSLContext) -> bytes | Exception:
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
        )
    except (ssl.SSLError, ConnectionError) as exc:
        return exc
    try:
        writer.write(b"hello\n")
        await writer.drain()
        return await reader.readline()
    except (ssl.SSLError, ConnectionError) as exc:
        return exc
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


_VERSIONS = [
    pytest.param(ssl.TLSVersion.TLSv1_2, id="tls1.2"),
    pytest.param(ssl.TLSVersion.TLSv1_3, id="tls1.3"),
]


def _contexts(
    pki: Pki, tmp: Path, server: Issued, client: Issued, maximum: ssl.TLSVersion
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return (
        _context(ssl.PROTOCOL_TLS_SERVER, pki.ca.cert, _write(tmp, "server", server), maximum),
        _context(ssl.PROTOCOL_TLS_CLIENT, pki.ca.cert, _write(tmp, "client", client), maximum),
    )


@pytest.mark.parametrize("maximum", _VERSIONS)
async def test_mutual_tls_with_auth_certs(
    pki: Pki, tmp_path: Path, maximum: ssl.TLSVersion
) -> None:
    server_ctx, client_ctx = _contexts(pki, tmp_path, pki.moi_auth, pki.mof_auth, maximum)
    outcome = await asyncio.wait_for(_exchange(server_ctx, client_ctx), 10)
    assert outcome.client == b"hello\n"
    assert outcome.server == MOF_SS1


def _expired_now(p: Pki) -> Issued:
    """Expired by the clock OpenSSL reads, which is the real one."""
    now = dt.datetime.now(dt.UTC)
    return _auth(p.ca, MOF_SS1, not_before=now - dt.timedelta(days=10), days=1)


@pytest.mark.parametrize("maximum", _VERSIONS)
@pytest.mark.parametrize(
    ("make_client", "reason"),
    [
        pytest.param(_expired_now, "certificate has expired", id="expired-client-auth-cert"),
        pytest.param(
            lambda p: p.moi_sign, "unsuitable certificate purpose", id="signing-cert-as-client"
        ),
        pytest.param(
            lambda p: _auth(p.foreign_ca, MOF_SS1),
            "unable to get local issuer certificate",
            id="foreign-ca-client-cert",
        ),
    ],
)
async def test_mutual_tls_refuses_client(
    pki: Pki,
    tmp_path: Path,
    maximum: ssl.TLSVersion,
    make_client: Callable[[Pki], Issued],
    reason: str,
) -> None:
    server_ctx, client_ctx = _contexts(pki, tmp_path, pki.moi_auth, make_client(pki), maximum)
    outcome = await asyncio.wait_for(_exchange(server_ctx, client_ctx), 10)
    assert isinstance(outcome.server, ssl.SSLCertVerificationError)
    assert outcome.server.verify_message == reason
    assert outcome.client != b"hello\n"


@pytest.mark.parametrize("maximum", _VERSIONS)
async def test_mutual_tls_refuses_signing_cert_as_server_cert(
    pki: Pki, tmp_path: Path, maximum: ssl.TLSVersion
) -> None:
    server_ctx, client_ctx = _contexts(pki, tmp_path, pki.moi_sign, pki.mof_auth, maximum)
    outcome = await asyncio.wait_for(_exchange(server_ctx, client_ctx), 10)
    assert isinstance(outcome.client, ssl.SSLCertVerificationError)
    assert outcome.client.verify_message == "unsuitable certificate purpose"
    assert isinstance(outcome.server, ssl.SSLError | ConnectionError)
