"""Red team: a forger without the key, against the auditor's tools and the JWS core (issue 13).

What a log, an evidence bundle or the store accepts as a signature must mean the right key at
the record's time, as the live path judges it (``trustcore/peers.py``: the certificate *and* its
CAs valid then). Attacks tried here, each on real certificates and a real SQLite ``certs`` table:

- a signing certificate that outlives its CA, used after the CA expired or before it was valid
  (the log's checker looked at the certificate's own dates only);
- a ``certs`` row (or a bundle's ``certs/<x5t#S256>.pem`` file) holding another certificate of
  the same key under a thumbprint that is not its own;
- ``ES256`` over a P-384 key (refused already: the signature does not fit);
- a signing certificate from an intermediate CA that is not approved.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from exchange.identifiers import SecurityServerId, parse_member
from exchange.messagelog.certs import CertLookup, certificates_of_log
from exchange.messagelog.store import MessageLog
from exchange.messagelog.verify import verify_log
from exchange.protocol.canonical import b64url, canonical_bytes
from exchange.protocol.jws import JwsError, Signer, cert_thumbprint, verify
from exchange.trust import keys
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import cert_pem
from exchange.trust.profiles import key_usage, sign_template

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)
MOI = parse_member("PS/GOV/MOI")
OWNER = SecurityServerId("PS", "GOV", "MOI", "ss1")


def _ca_under(
    parent: CertificateAuthority, name: str, *, start: dt.datetime, end: dt.datetime
) -> CertificateAuthority:
    key = keys.generate_key()
    parent_ski = parent.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(parent.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage("keyCertSign", "cRLSign"), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(parent_ski.value),
            critical=False,
        )
        .sign(parent.key, hashes.SHA256())
    )
    return CertificateAuthority(key=key, cert=cert)


def _signing_cert(
    ca: CertificateAuthority,
    key: ec.EllipticCurvePrivateKey,
    *,
    start: dt.datetime = NOW - DAY,
    end: dt.datetime = NOW + 365 * DAY,
) -> x509.Certificate:
    """A signing certificate of MOI for ``key`` with the dates asked for, whatever its CA's
    (our CA never issues one that outlives it; a forger's tools do)."""
    template = sign_template(MOI)
    builder = (
        x509.CertificateBuilder()
        .subject_name(template.subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    for extension, critical in template.extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(ca.key, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    root: CertificateAuthority
    short: CertificateAuthority
    """An approved intermediate valid from yesterday for two days."""
    later: CertificateAuthority
    """An approved intermediate valid only from tomorrow."""
    unapproved: CertificateAuthority
    """An intermediate under the approved root that the configuration does not approve."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("forger")
    root = CertificateAuthority.create(base / "root", "PS Root CA", now=NOW, path_length=1)
    return Pki(
        root=root,
        short=_ca_under(root, "Short Issuing CA", start=NOW - DAY, end=NOW + 2 * DAY),
        later=_ca_under(root, "Later Issuing CA", start=NOW + DAY, end=NOW + 30 * DAY),
        unapproved=_ca_under(root, "Unapproved Issuing CA", start=NOW - DAY, end=NOW + 30 * DAY),
    )


@pytest.fixture
def certs_table() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE certs (thumbprint TEXT PRIMARY KEY, pem TEXT NOT NULL)")
    try:
        yield conn
    finally:
        conn.close()


def _store(conn: sqlite3.Connection, cert: x509.Certificate, under: str | None = None) -> str:
    thumb = under or cert_thumbprint(cert)
    conn.execute("INSERT INTO certs VALUES (?, ?)", (thumb, cert_pem(cert)))
    return thumb


# --- the CA's validity at the record's time ------------------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "at", "reason"),
    [
        pytest.param("short", NOW + 3 * DAY, "expired", id="issuing-ca-expired-when-it-signed"),
        pytest.param("later", NOW, "not yet valid", id="issuing-ca-not-yet-valid-when-it-signed"),
    ],
)
def test_a_certificate_is_not_trusted_at_a_time_its_ca_was_not_valid(
    pki: Pki, certs_table: sqlite3.Connection, issuer: str, at: dt.datetime, reason: str
) -> None:
    """The live path refuses a signature made while the signer's CA is not valid (``SignerKey``
    spans the certificate and its CA); the auditor's tools checked the certificate's own dates
    only, so a log or a bundle holding such a signature verified."""
    ca: CertificateAuthority = getattr(pki, issuer)
    cert = _signing_cert(ca, keys.generate_key())
    lookup = CertLookup(
        certificates_of_log(certs_table), [pki.root.cert, pki.short.cert, pki.later.cert]
    )
    thumb = _store(certs_table, cert)
    assert cert.not_valid_before_utc <= at <= cert.not_valid_after_utc
    with pytest.raises(JwsError, match=rf"was not valid at .*issuing CA certificate {reason}"):
        lookup.signer_key(thumb, at)
    starts = (c.not_valid_before_utc for c in (cert, ca.cert, pki.root.cert))
    inside = max(starts) + dt.timedelta(hours=1)
    assert lookup.signer_key(thumb, inside).member == MOI


async def test_a_log_whose_heads_were_signed_after_the_ca_expired_fails(
    pki: Pki, tmp_path: Path
) -> None:
    """The same through ``exchange log verify``: a log whose heads a key signed three days from
    now, when its approved intermediate CA has expired, though the certificate has not."""
    key = keys.generate_key()
    signer = Signer(key, _signing_cert(pki.short, key))
    path = tmp_path / "log.db"
    later = (NOW + 3 * DAY).timestamp()
    with MessageLog(path, signer, owner=OWNER, now=lambda: later) as log:
        await log.append({"side": "consumer", "message_id": "m-1", "status": "error"})
    report = verify_log(
        path, trusted_cas=[pki.root.cert, pki.short.cert], owner=OWNER, check_records=False
    )
    assert not report.ok and report.tree_heads_verified == 0, report.to_dict()
    (problem,) = report.problems
    assert "issuing CA certificate expired" in problem.reason
    within = (NOW + DAY).timestamp()
    fresh = tmp_path / "within.db"
    with MessageLog(fresh, signer, owner=OWNER, now=lambda: within) as log:
        await log.append({"side": "consumer", "message_id": "m-1", "status": "error"})
    cas = [pki.root.cert, pki.short.cert]
    assert verify_log(fresh, trusted_cas=cas, owner=OWNER, check_records=False).ok


def test_an_intermediate_that_is_not_approved_issues_nothing(
    pki: Pki, certs_table: sqlite3.Connection
) -> None:
    cert = _signing_cert(pki.unapproved, keys.generate_key())
    thumb = _store(certs_table, cert)
    lookup = CertLookup(certificates_of_log(certs_table), [pki.root.cert, pki.short.cert])
    with pytest.raises(JwsError, match="not issued by a trusted CA"):
        lookup.signer_key(thumb, NOW)


# --- x5t#S256 names one certificate --------------------------------------------------------------


def test_a_certificate_stored_under_another_certificates_thumbprint_is_refused(
    pki: Pki, certs_table: sqlite3.Connection
) -> None:
    """The key signs; the thumbprint says which certificate stood behind the key then. A forger
    (or a bundle's author, who names the ``certs/*.pem`` files) puts a second certificate of the
    same key, valid now, under the thumbprint of the first, expired one: the expired signature
    was taken as made under the second."""
    key = keys.generate_key()
    expired = _signing_cert(pki.root, key, start=NOW - 30 * DAY, end=NOW - 10 * DAY)
    current = _signing_cert(pki.root, key)
    thumb = _store(certs_table, current, under=cert_thumbprint(expired))
    lookup = CertLookup(certificates_of_log(certs_table), [pki.root.cert])
    with pytest.raises(JwsError, match=r"is not the certificate .* names"):
        lookup.signer_key(thumb, NOW)
    with pytest.raises(JwsError, match=r"is not the certificate .* names"):
        lookup.trusted(thumb)
    assert lookup.get(thumb) is None
    assert lookup.signer_key(_store(certs_table, current), NOW).cert == current


# --- algorithm confusion -------------------------------------------------------------------------


def test_es256_over_a_p384_key_is_refused() -> None:
    """``ES256`` is ECDSA over P-256 with SHA-256 (RFC 7518 §3.4). A forger holding a P-384 key
    that some trust decision hands back signs under that name: its signature is 96 bytes, and
    cut to the 64 an ES256 signature has it no longer verifies."""
    key = ec.generate_private_key(ec.SECP384R1())
    signing_input = f"{b64url(canonical_bytes({'alg': 'ES256', 'x5t#S256': 'x'}))}.{b64url(b'{}')}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    raw = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    for signature, reason in (
        (raw, "must be 64 bytes"),
        (raw[16:48] + raw[64:], "does not verify"),
    ):
        with pytest.raises(JwsError, match=reason):
            verify(f"{signing_input}.{b64url(signature)}", lambda thumb: key.public_key())
