"""The CA's register of issued and revoked certificates: real SQLite files in a temp dir."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from exchange.errors import ConfigurationError
from exchange.identifiers import parse_member, parse_security_server
from exchange.trust import keys
from exchange.trust.ca import CertificateAuthority
from exchange.trust.ocsp import CertStatus
from exchange.trust.profiles import sign_template
from exchange.trust.revocation import RevocationStore, parse_reason

NOW = dt.datetime(2030, 5, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"), now=NOW)


def _sign_cert(ca: CertificateAuthority, code: str = "MOI") -> x509.Certificate:
    return ca.issue_sign_cert(keys.generate_key().public_key(), parse_member(f"PS/GOV/{code}"))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "revocations.sqlite"


def test_recorded_certificate_is_good(ca: CertificateAuthority, db: Path) -> None:
    cert = _sign_cert(ca)
    with RevocationStore(db) as store:
        row = store.record_issued(cert, "sign")
        assert store.status(cert.serial_number) == CertStatus(serial=cert.serial_number)
        assert store.find(cert) == row
    assert row.status == "good"
    assert row.profile == "sign"
    assert row.subject.startswith("CN=MOI,")
    assert row.not_after == cert.not_valid_after_utc
    assert row.fingerprint == keys.fingerprint(cert)


def test_never_recorded_serial_has_no_status(ca: CertificateAuthority, db: Path) -> None:
    with RevocationStore(db) as store:
        assert store.status(_sign_cert(ca).serial_number) is None
        assert store.get(1) is None


def test_revocation_with_reason_survives_reopening(ca: CertificateAuthority, db: Path) -> None:
    cert = ca.issue_auth_cert(
        keys.generate_key().public_key(), parse_security_server("PS/GOV/MOI/ss1")
    )
    with RevocationStore(db) as store:
        store.record_issued(cert, "auth")
        store.revoke(cert.serial_number, "keyCompromise", NOW)
    with RevocationStore(db, create=False) as reopened:
        status = reopened.status(cert.serial_number)
        row = reopened.get(cert.serial_number)
    assert status == CertStatus(
        serial=cert.serial_number, revoked_at=NOW, reason=x509.ReasonFlags.key_compromise
    )
    assert status.revoked
    assert row is not None and row.status == "revoked" and row.profile == "auth"


def test_revocation_is_seen_by_another_connection_at_once(
    ca: CertificateAuthority, db: Path
) -> None:
    """The CA's CLI revokes from one process while the responder reads from another."""
    cert = _sign_cert(ca)
    with RevocationStore(db) as responder, RevocationStore(db) as cli:
        cli.record_issued(cert, "sign")
        assert responder.status(cert.serial_number) == CertStatus(cert.serial_number)
        cli.revoke(cert, x509.ReasonFlags.superseded, NOW)
        status = responder.status(cert.serial_number)
    assert status is not None and status.reason == x509.ReasonFlags.superseded


def test_revoking_an_unrecorded_certificate_records_it(ca: CertificateAuthority, db: Path) -> None:
    cert = _sign_cert(ca)
    with RevocationStore(db) as store:
        row = store.revoke(cert, "cessationOfOperation")
    assert row.profile == "unrecorded"
    assert row.reason == x509.ReasonFlags.cessation_of_operation
    assert row.revoked_at is not None
    assert abs(row.revoked_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


def test_recording_twice_changes_nothing(ca: CertificateAuthority, db: Path) -> None:
    cert = _sign_cert(ca)
    with RevocationStore(db) as store:
        first = store.record_issued(cert, "sign")
        store.revoke(cert.serial_number, "superseded", NOW)
        again = store.record_issued(cert, "sign")
        assert [r.serial for r in store.issued()] == [cert.serial_number]
    assert again.status == "revoked"
    assert first.fingerprint == again.fingerprint


def test_large_serials_round_trip(ca: CertificateAuthority, db: Path) -> None:
    """RFC 5280 §4.1.2.2 allows 20 octets; SQLite integers hold 8."""
    key = keys.generate_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(ca.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(2**159 - 1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
    )
    with RevocationStore(db) as store:
        store.record_issued(cert, "sign")
        assert store.status(2**159 - 1) == CertStatus(2**159 - 1)


@pytest.mark.parametrize(
    ("target", "reason", "message"),
    [
        pytest.param("unrecorded-serial", "keyCompromise", "not recorded", id="unknown-serial"),
        pytest.param("revoked", "keyCompromise", "already revoked", id="revoked-twice"),
        pytest.param("good", "removeFromCRL", "revocations are final", id="remove-from-crl"),
        pytest.param("good", "stolen", "unknown revocation reason", id="unknown-reason"),
    ],
)
def test_bad_revocations_are_refused(
    ca: CertificateAuthority, db: Path, target: str, reason: str, message: str
) -> None:
    good, revoked = _sign_cert(ca), _sign_cert(ca, "MOF")
    with RevocationStore(db) as store:
        store.record_issued(good, "sign")
        store.record_issued(revoked, "sign")
        store.revoke(revoked, "superseded", NOW)
        serial = {
            "unrecorded-serial": _sign_cert(ca).serial_number,
            "revoked": revoked.serial_number,
            "good": good.serial_number,
        }[target]
        with pytest.raises(ConfigurationError, match=message):
            store.revoke(serial, reason, NOW)
        assert store.status(good.serial_number) == CertStatus(good.serial_number)
        kept = store.status(revoked.serial_number)
    assert kept is not None and kept.reason == x509.ReasonFlags.superseded


def test_another_certificate_with_a_recorded_serial_is_refused(
    ca: CertificateAuthority, db: Path
) -> None:
    cert = _sign_cert(ca)
    twin = ca.issue(keys.generate_key().public_key(), sign_template(parse_member("PS/GOV/MOF")))
    forged = (
        x509.CertificateBuilder()
        .subject_name(twin.subject)
        .issuer_name(twin.issuer)
        .public_key(twin.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(twin.not_valid_before_utc)
        .not_valid_after(twin.not_valid_after_utc)
        .sign(ca.key, hashes.SHA256())
    )
    with RevocationStore(db) as store:
        store.record_issued(cert, "sign")
        with pytest.raises(ConfigurationError, match="another certificate"):
            store.record_issued(forged, "sign")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"not a database at all, just text" * 10, id="text-file"),
        pytest.param(None, id="other-sqlite-database"),
    ],
)
def test_a_file_that_is_not_a_register_is_refused(db: Path, content: bytes | None) -> None:
    if content is None:
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE other (x)")
        conn.commit()
        conn.close()
    else:
        db.write_bytes(content)
    with pytest.raises(ConfigurationError, match="not a revocation database"):
        RevocationStore(db)


def test_missing_file_is_refused_without_create(db: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        RevocationStore(db, create=False)
    assert not db.exists()


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        pytest.param("keyCompromise", x509.ReasonFlags.key_compromise, id="key-compromise"),
        pytest.param("superseded", x509.ReasonFlags.superseded, id="superseded"),
        pytest.param(x509.ReasonFlags.ca_compromise, x509.ReasonFlags.ca_compromise, id="flag"),
    ],
)
def test_reason_names(name: str | x509.ReasonFlags, flag: x509.ReasonFlags) -> None:
    assert parse_reason(name) == flag
