"""Certificate paths through intermediate CAs (``exchange.trust.validation``, cryptography's
``x509.verification``): an approved root with an approved intermediate under it verifies; every
way of smuggling a certificate in through a CA that is not one, or not approved, is refused."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from exchange.errors import ConfigurationError
from exchange.identifiers import parse_member, parse_security_server
from exchange.trust import keys
from exchange.trust.ca import CertificateAuthority
from exchange.trust.profiles import auth_template, check_auth_profile, key_usage
from exchange.trust.validation import (
    CertificateCache,
    CertificateError,
    find_issuer,
    issuers,
    verify_chain,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SS1 = parse_security_server("PS/GOV/MOI/ss1")
MOI = parse_member("PS/GOV/MOI")


@dataclass(frozen=True)
class Hierarchy:
    root: CertificateAuthority
    issuing: CertificateAuthority
    other_root: CertificateAuthority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Hierarchy:
    base = tmp_path_factory.mktemp("chains")
    root = CertificateAuthority.create(base / "root", "PS Root CA", now=NOW, path_length=1)
    issuing = root.create_intermediate(base / "issuing", "PS Issuing CA", now=NOW)
    other = CertificateAuthority.create(base / "other", "Other Root", now=NOW, path_length=1)
    return Hierarchy(root, issuing, other)


def _leaf(ca: CertificateAuthority) -> x509.Certificate:
    return ca.issue_auth_cert(keys.generate_key().public_key(), SS1, now=NOW)


def _outliving_leaf(ca: CertificateAuthority) -> x509.Certificate:
    """An authentication certificate valid past its CA's end (our CA never issues one)."""
    template = auth_template(SS1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(template.subject)
        .issuer_name(ca.cert.subject)
        .public_key(keys.generate_key().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
    )
    for extension, critical in template.extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(ca.key, hashes.SHA256())


def _ca_under(
    parent: CertificateAuthority,
    name: str,
    *,
    ca: bool = True,
    usage: tuple[str, ...] = ("keyCertSign", "cRLSign"),
    start: dt.datetime = NOW - dt.timedelta(days=1),
    end: dt.datetime = NOW + dt.timedelta(days=30),
) -> CertificateAuthority:
    """A certificate under ``parent`` for a new key, built by hand to break one rule."""
    key = keys.generate_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    parent_ski = parent.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(parent.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(key_usage(*usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(parent_ski.value),
            critical=False,
        )
        .sign(parent.key, hashes.SHA256())
    )
    return CertificateAuthority(key=key, cert=cert)


def test_a_certificate_from_an_intermediate_verifies(pki: Hierarchy) -> None:
    leaf = _leaf(pki.issuing)
    approved = [pki.root.cert, pki.issuing.cert]
    assert verify_chain(leaf, approved, NOW) == pki.issuing.cert
    assert issuers(leaf, approved) == (pki.issuing.cert, pki.root.cert)
    assert find_issuer(leaf, approved) == pki.issuing.cert
    entry = CertificateCache(approved, profile_check=check_auth_profile).validate(leaf, NOW)
    assert entry.cas == (pki.issuing.cert, pki.root.cert)


def test_the_cache_rechecks_the_intermediate_validity(pki: Hierarchy, tmp_path: Path) -> None:
    short = _ca_under(pki.root, "Short Issuing CA", end=NOW + dt.timedelta(days=2))
    leaf = _outliving_leaf(short)
    cache = CertificateCache([pki.root.cert, short.cert])
    entry = cache.validate(leaf, NOW)
    with pytest.raises(CertificateError, match="issuing CA certificate expired"):
        cache.get(entry.thumbprint, NOW + dt.timedelta(days=3))


def _path_length_zero_root(
    p: Hierarchy, tmp: Path
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    root = CertificateAuthority.create(tmp / "flat", "Flat Root", now=NOW)
    issuing = _ca_under(root, "Issuing under a flat root")
    return _leaf(issuing), [root.cert, issuing.cert]


def _no_key_cert_sign(p: Hierarchy, tmp: Path) -> tuple[x509.Certificate, list[x509.Certificate]]:
    issuing = _ca_under(p.root, "Issuing without keyCertSign", usage=("digitalSignature",))
    return _leaf(issuing), [p.root.cert, issuing.cert]


def _end_entity_as_issuer(
    p: Hierarchy, tmp: Path
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """A member's own certificate (CA=false) used to issue an authentication certificate."""
    member = _ca_under(p.root, "MOI", ca=False, usage=("digitalSignature",))
    return _leaf(member), [p.root.cert, member.cert]


def _expired_intermediate(
    p: Hierarchy, tmp: Path
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    old = _ca_under(
        p.root, "Old Issuing CA", start=NOW - dt.timedelta(days=60), end=NOW - dt.timedelta(days=1)
    )
    return _outliving_leaf(old), [p.root.cert, old.cert]


Case = Callable[[Hierarchy, Path], tuple[x509.Certificate, list[x509.Certificate]]]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(
            lambda p, t: (_leaf(p.issuing), [p.issuing.cert]),
            "certificate not issued by an approved CA",
            id="intermediate-approved-without-its-root",
        ),
        pytest.param(
            lambda p, t: (_leaf(p.issuing), [p.root.cert]),
            "certificate not issued by an approved CA",
            id="intermediate-not-approved",
        ),
        pytest.param(
            lambda p, t: (_leaf(p.issuing), [p.other_root.cert, p.issuing.cert]),
            "certificate not issued by an approved CA",
            id="intermediate-of-another-root",
        ),
        pytest.param(
            _path_length_zero_root,
            "certificate chain does not validate",
            id="root-path-length-zero",
        ),
        pytest.param(
            _no_key_cert_sign,
            "certificate chain does not validate",
            id="issuer-without-keyCertSign",
        ),
        pytest.param(
            _end_entity_as_issuer,
            "certificate chain does not validate",
            id="end-entity-certificate-as-issuer",
        ),
        pytest.param(
            _expired_intermediate,
            f"issuing CA certificate expired at {(NOW - dt.timedelta(days=1)).isoformat()}",
            id="expired-intermediate",
        ),
        pytest.param(
            lambda p, t: (p.issuing.cert, [p.root.cert, p.issuing.cert]),
            "certificate chain does not validate",
            id="ca-certificate-as-end-entity",
        ),
        pytest.param(
            lambda p, t: (p.root.cert, [p.root.cert]),
            "certificate chain does not validate",
            id="root-as-end-entity",
        ),
    ],
)
def test_paths_that_are_refused(pki: Hierarchy, tmp_path: Path, make: Case, reason: str) -> None:
    leaf, approved = make(pki, tmp_path)
    with pytest.raises(CertificateError) as refused:
        verify_chain(leaf, approved, NOW)
    assert refused.value.message == reason
    assert refused.value.code == "Server.ServerProxy.InvalidCertificate"


def test_a_root_that_issues_end_entities_only_makes_no_intermediate(
    pki: Hierarchy, tmp_path: Path
) -> None:
    flat = CertificateAuthority.create(tmp_path / "flat", "Flat Root", now=NOW)
    with pytest.raises(ConfigurationError, match="may not certify another CA"):
        flat.create_intermediate(tmp_path / "under", "Under Flat")


def test_an_intermediate_never_outlives_its_root(tmp_path: Path) -> None:
    root = CertificateAuthority.create(tmp_path / "r", "Short Root", days=30, path_length=1)
    issuing = root.create_intermediate(tmp_path / "i", "Issuing", days=3650)
    assert issuing.cert.not_valid_after_utc == root.cert.not_valid_after_utc
    assert isinstance(issuing.cert.public_key(), ec.EllipticCurvePublicKey)
    assert CertificateAuthority.load(tmp_path / "i").cert == issuing.cert
