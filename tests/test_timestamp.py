"""RFC 3161 time-stamping: the TSA certificate, queries and replies, the HTTP service and client,
verification and its refusals, cross-checked with OpenSSL, and the ``exchange tsa`` commands."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from asn1crypto import tsp
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.cli.common import EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE
from exchange.cli.tsa import PASSPHRASE_ENV, group
from exchange.identifiers import parse_member
from exchange.trust import keys
from exchange.trust.ca import CertificateAuthority
from exchange.trust.profiles import CertificateTemplate, key_usage
from exchange.trust.timestamp import (
    DEFAULT_POLICY,
    TSA_PROFILE,
    TimestampError,
    TimestampInvalid,
    TimestampQueryRejected,
    TimestampRejected,
    build_timestamp_request,
    build_timestamp_response,
    check_tsa_certificate,
    digest_of,
    issue_tsa_cert,
    parse_timestamp_request,
    rejection_response,
    response_status,
    token_of_response,
    tsa_template,
    verify_timestamp_token,
)
from exchange.trust.tsa_service import (
    MAX_QUERY_BYTES,
    QUERY_TYPE,
    REPLY_TYPE,
    SerialStore,
    TimestampClient,
    create_tsa_app,
)

DATA = b"tree head: size 42, root 9f86d081884c7d65\n"
DIGEST = hashlib.sha256(DATA).digest()
NONCE = 0x1234_5678_9ABC_DEF0
NOW = dt.datetime.now(dt.UTC).replace(microsecond=250_000)

needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None,
    reason="the openssl command is not installed, so tokens cannot be cross-checked with OpenSSL",
)

TsaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Signer:
    key: TsaKey
    cert: x509.Certificate
    pem: Path


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: CertificateAuthority
    ca_pem: Path
    other_ca: CertificateAuthority
    tsa: Signer
    signers: dict[str, Signer] = field(default_factory=dict)
    """Certificates that must not be accepted as (approved) TSA certificates, by name."""


def _template(name: str, *, eku_critical: bool = True, eku: bool = True) -> CertificateTemplate:
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (key_usage("digitalSignature", "contentCommitment"), True),
    ]
    if eku:
        extensions.append(
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), eku_critical)
        )
    return CertificateTemplate(
        profile=TSA_PROFILE,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
        extensions=tuple(extensions),
    )


def _signer(directory: Path, name: str, make: Callable[[TsaKey], x509.Certificate]) -> Signer:
    key = keys.generate_key()
    cert = make(key)
    pem = keys.save_certificate(directory / f"{name}.pem", cert)
    return Signer(key=key, cert=cert, pem=pem)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("tsa-pki")
    # valid from NOW (less the CA's backdating), however long after NOW this module starts
    ca = CertificateAuthority.create(d / "ca", "Test Root CA", now=NOW)
    other_ca = CertificateAuthority.create(d / "other-ca", "Other CA", now=NOW)
    tsa = _signer(d, "tsa", lambda k: issue_tsa_cert(ca, k.public_key(), "Test TSA", now=NOW))
    member = parse_member("PS/GOV/MOI")
    signers = {
        "member-signing-cert": _signer(
            d, "sign", lambda k: ca.issue_sign_cert(k.public_key(), member, now=NOW)
        ),
        "eku-not-critical": _signer(
            d,
            "lax",
            lambda k: ca.issue(k.public_key(), _template("Lax TSA", eku_critical=False), now=NOW),
        ),
        "no-eku": _signer(
            d, "no-eku", lambda k: ca.issue(k.public_key(), _template("Plain", eku=False), now=NOW)
        ),
        "expired-tsa": _signer(
            d,
            "expired",
            lambda k: issue_tsa_cert(
                ca, k.public_key(), "Old TSA", not_before=NOW - dt.timedelta(days=60), days=30
            ),
        ),
        "unapproved-tsa": _signer(
            d, "rogue", lambda k: issue_tsa_cert(ca, k.public_key(), "Rogue TSA", now=NOW)
        ),
        "tsa-of-other-ca": _signer(
            d, "foreign", lambda k: issue_tsa_cert(other_ca, k.public_key(), "Foreign TSA", now=NOW)
        ),
    }
    return Pki(d, ca, d / "ca" / "ca.cert.pem", other_ca, tsa, signers)


def _reply(
    signer: Signer,
    *,
    digest: bytes = DIGEST,
    hash_alg: str = "sha256",
    nonce: int | None = NONCE,
    cert_req: bool = True,
    now: dt.datetime = NOW,
    serial: int = 1,
) -> bytes:
    query = build_timestamp_request(digest, hash_alg=hash_alg, nonce=nonce, cert_req=cert_req)
    return build_timestamp_response(
        query, tsa_key=signer.key, tsa_cert=signer.cert, serial=serial, now=now
    )


def _flip_last_byte_of(der: bytes, part: bytes) -> bytes:
    at = der.index(part) + len(part) - 1
    return der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1 :]


def _sha256_of_cert(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def _altered_signature(reply: bytes) -> bytes:
    token = tsp.TimeStampResp.load(reply)["time_stamp_token"]
    return _flip_last_byte_of(reply, token["content"]["signer_infos"][0]["signature"].native)


# --- the TSA certificate -------------------------------------------------------------------------


def test_tsa_certificate_profile(pki: Pki) -> None:
    cert = pki.tsa.cert
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.content_commitment
    assert not usage.value.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.issuer == pki.ca.cert.subject
    cert.verify_directly_issued_by(pki.ca.cert)
    check_tsa_certificate(cert)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        pytest.param("member-signing-cert", "not timeStamping alone", id="document-signing"),
        pytest.param("eku-not-critical", "not critical", id="eku-not-critical"),
        pytest.param("no-eku", "no extended key usage", id="no-eku"),
    ],
)
def test_non_tsa_certificates_refused(pki: Pki, name: str, reason: str) -> None:
    with pytest.raises(TimestampInvalid, match=reason) as caught:
        check_tsa_certificate(pki.signers[name].cert)
    assert caught.value.code == "Server.TimestampInvalid.Signer"


# --- queries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("hash_alg", ["sha256", "sha384", "sha512"])
def test_query_round_trip(hash_alg: str) -> None:
    digest = digest_of(DATA, hash_alg)
    query = parse_timestamp_request(
        build_timestamp_request(digest, hash_alg=hash_alg, nonce=NONCE, policy=DEFAULT_POLICY)
    )
    assert (query.hash_alg, query.digest, query.nonce, query.cert_req) == (
        hash_alg,
        digest,
        NONCE,
        True,
    )


def test_query_builder_refuses_a_wrong_digest() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        build_timestamp_request(DIGEST[:20])
    with pytest.raises(ValueError, match="unsupported"):
        build_timestamp_request(hashlib.sha1(DATA).digest(), hash_alg="sha1")


def _query(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": DIGEST},
    }
    return bytes(tsp.TimeStampReq({**base, **fields}).dump())


def _imprint(algorithm: str, digest: bytes) -> dict[str, Any]:
    return {"hash_algorithm": {"algorithm": algorithm}, "hashed_message": digest}


BAD_QUERIES = [
    pytest.param(b"", "bad_data_format", id="empty"),
    pytest.param(b"\x30\x03\x02\x01\x01", "bad_data_format", id="imprint-missing"),
    pytest.param(b"GET / HTTP/1.1\r\n", "bad_data_format", id="not-der"),
    pytest.param(_query() + b"\x00", "bad_data_format", id="trailing-bytes"),
    pytest.param(_query(version=2), "bad_data_format", id="version-2"),
    pytest.param(
        _query(message_imprint=_imprint("sha1", hashlib.sha1(DATA).digest())),
        "bad_alg",
        id="sha1",
    ),
    pytest.param(
        _query(message_imprint=_imprint("md5", hashlib.md5(DATA).digest())), "bad_alg", id="md5"
    ),
    pytest.param(
        _query().replace(b"\x05\x00", b"\x04\x00", 1),
        "bad_data_format",
        id="hash-parameters-not-null",
    ),
    pytest.param(
        _query(message_imprint=_imprint("sha256", DIGEST[:31])),
        "bad_data_format",
        id="short-digest",
    ),
    pytest.param(_query(req_policy="1.2.3.4"), "unaccepted_policy", id="foreign-policy"),
    pytest.param(
        _query(extensions=[{"extn_id": "1.2.3.4", "extn_value": b"x"}]),
        "unaccepted_extensions",
        id="extension",
    ),
]


@pytest.mark.parametrize(("query", "failure"), BAD_QUERIES)
def test_bad_query_gets_a_rejection(pki: Pki, query: bytes, failure: str) -> None:
    with pytest.raises(TimestampQueryRejected) as caught:
        parse_timestamp_request(query)
    assert caught.value.failure == failure
    reply = build_timestamp_response(
        query, tsa_key=pki.tsa.key, tsa_cert=pki.tsa.cert, serial=1, now=NOW
    )
    status = response_status(reply)
    assert (status.status, status.failures, status.token_der) == ("rejection", {failure}, None)
    with pytest.raises(TimestampRejected, match=failure) as refused:
        verify_timestamp_token(
            reply, digest=DIGEST, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert]
        )
    assert refused.value.code == "Server.TimestampFailed.Rejected"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=st.binary(max_size=300))
def test_any_bytes_as_a_query_get_an_answer(pki: Pki, query: bytes) -> None:
    reply = build_timestamp_response(
        query, tsa_key=pki.tsa.key, tsa_cert=pki.tsa.cert, serial=1, now=NOW
    )
    assert response_status(reply).status in {"granted", "rejection"}


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_queries_get_an_answer(pki: Pki, data: st.DataObject) -> None:
    query = bytearray(build_timestamp_request(DIGEST, nonce=NONCE))
    for _ in range(data.draw(st.integers(1, 3))):
        query[data.draw(st.integers(0, len(query) - 1))] = data.draw(st.integers(0, 255))
    query = query[: data.draw(st.integers(0, len(query)))]
    reply = build_timestamp_response(
        bytes(query), tsa_key=pki.tsa.key, tsa_cert=pki.tsa.cert, serial=1, now=NOW
    )
    status = response_status(reply)
    assert status.status in {"granted", "rejection"}
    if status.granted:
        request = parse_timestamp_request(bytes(query))
        info = verify_timestamp_token(
            reply,
            digest=request.digest,
            hash_alg=request.hash_alg,
            tsa_certs=[pki.tsa.cert],
            ca_certs=[pki.ca.cert],
            nonce=request.nonce,
        )
        assert info.digest == request.digest


# --- replies and their verification ------------------------------------------------------------


def test_reply_verifies(pki: Pki) -> None:
    reply = _reply(pki.tsa, serial=77)
    info = verify_timestamp_token(
        reply, digest=DIGEST, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert], nonce=NONCE
    )
    assert info.gen_time == NOW
    assert (info.serial, info.policy, info.hash_alg, info.digest) == (
        77,
        DEFAULT_POLICY,
        "sha256",
        DIGEST,
    )
    assert info.tsa_cert_fingerprint == keys.fingerprint(pki.tsa.cert)
    token = token_of_response(reply)
    assert (
        verify_timestamp_token(
            token, digest=DIGEST, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert]
        )
        == info
    )


def test_gen_time_keeps_milliseconds_only(pki: Pki) -> None:
    now = NOW.replace(microsecond=123_456)
    info = verify_timestamp_token(
        _reply(pki.tsa, now=now), digest=DIGEST, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert]
    )
    assert info.gen_time == now.replace(microsecond=123_000)


@pytest.mark.parametrize("hash_alg", ["sha384", "sha512"])
def test_other_hash_algorithms(pki: Pki, hash_alg: str) -> None:
    digest = digest_of(DATA, hash_alg)
    reply = _reply(pki.tsa, digest=digest, hash_alg=hash_alg)
    info = verify_timestamp_token(
        reply, digest=digest, hash_alg=hash_alg, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert]
    )
    assert info.hash_alg == hash_alg


def test_token_without_certificate_verifies_with_the_known_tsa_certificate(pki: Pki) -> None:
    reply = _reply(pki.tsa, cert_req=False, nonce=None)
    assert pki.tsa.cert.public_bytes(serialization.Encoding.DER) not in reply
    verify_timestamp_token(reply, digest=DIGEST, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert])


def test_rsa_tsa(pki: Pki, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = issue_tsa_cert(pki.ca, key.public_key(), "RSA TSA", now=NOW)
    reply = _reply(Signer(key, cert, tmp_path / "unused.pem"))
    verify_timestamp_token(reply, digest=DIGEST, tsa_certs=[cert], ca_certs=[pki.ca.cert])


def test_naive_now_refused(pki: Pki) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _reply(pki.tsa, now=dt.datetime(2030, 1, 1))


@dataclass(frozen=True)
class Tamper:
    reply: Callable[[Pki], bytes]
    code: str
    reason: str
    verify: Callable[[Pki], dict[str, Any]] = lambda p: {}


def _approved(p: Pki) -> dict[str, Any]:
    return {"tsa_certs": [p.tsa.cert], "ca_certs": [p.ca.cert]}


def _trusting(name: str) -> Callable[[Pki], dict[str, Any]]:
    return lambda p: {"tsa_certs": [p.signers[name].cert], "ca_certs": [p.ca.cert]}


INVALID = "Server.TimestampInvalid"
TAMPERED = [
    pytest.param(
        Tamper(
            lambda p: _reply(p.tsa, digest=digest_of(b"another head")),
            f"{INVALID}.Imprint",
            "another hash",
        ),
        id="token-over-another-digest",
    ),
    pytest.param(
        Tamper(
            lambda p: _reply(p.tsa, digest=digest_of(DATA, "sha512"), hash_alg="sha512"),
            f"{INVALID}.Imprint",
            "sha512 hash, not sha256",
        ),
        id="token-over-another-hash-algorithm",
    ),
    pytest.param(
        Tamper(
            lambda p: _altered_signature(_reply(p.tsa)),
            f"{INVALID}.Signature",
            "signature does not verify",
        ),
        id="altered-signature",
    ),
    pytest.param(
        Tamper(
            lambda p: _flip_last_byte_of(_reply(p.tsa), NOW.strftime("%Y%m%d%H%M%S").encode()),
            f"{INVALID}.Signature",
            "message-digest does not match",
        ),
        id="altered-gen-time",
    ),
    pytest.param(
        Tamper(lambda p: _reply(p.tsa, nonce=NONCE + 1), f"{INVALID}.Nonce", "nonce"),
        id="wrong-nonce",
    ),
    pytest.param(
        Tamper(lambda p: _reply(p.tsa, nonce=None), f"{INVALID}.Nonce", "nonce"),
        id="nonce-missing",
    ),
    pytest.param(
        Tamper(
            lambda p: _reply(p.signers["member-signing-cert"]),
            f"{INVALID}.Signer",
            "not a TSA certificate: its extended key usage is not timeStamping alone",
            _trusting("member-signing-cert"),
        ),
        id="signed-by-non-tsa-certificate",
    ),
    pytest.param(
        Tamper(
            lambda p: _reply(p.signers["no-eku"]),
            f"{INVALID}.Signer",
            "no extended key usage timeStamping",
            _trusting("no-eku"),
        ),
        id="signer-without-eku",
    ),
    pytest.param(
        Tamper(
            lambda p: _reply(p.signers["eku-not-critical"]),
            f"{INVALID}.Signer",
            "timeStamping is not critical",
            _trusting("eku-not-critical"),
        ),
        id="eku-not-critical",
    ),
    pytest.param(
        Tamper(
            lambda p: _reply(p.signers["expired-tsa"]),
            f"{INVALID}.Time",
            "outside the TSA certificate's validity",
            _trusting("expired-tsa"),
        ),
        id="tsa-certificate-expired-at-gen-time",
    ),
    pytest.param(
        Tamper(
            lambda p: _reply(p.tsa, now=p.tsa.cert.not_valid_before_utc - dt.timedelta(seconds=1)),
            f"{INVALID}.Time",
            "outside the TSA certificate's validity",
        ),
        id="tsa-certificate-not-yet-valid-at-gen-time",
    ),
    pytest.param(
        Tamper(
            lambda p: _flip_last_byte_of(_reply(p.tsa), _sha256_of_cert(p.tsa.cert)),
            f"{INVALID}.Signer",
            "ESS signingCertificate names another certificate",
        ),
        id="ess-certificate-hash-altered",
    ),
    pytest.param(
        Tamper(
            lambda p: _flip_last_byte_of(_reply(p.tsa), b"Test TSA"),
            f"{INVALID}.Signer",
            "TSTInfo names another TSA",
        ),
        id="tsa-name-altered",
    ),
    pytest.param(
        Tamper(
            lambda p: _reply(p.signers["unapproved-tsa"]),
            f"{INVALID}.Signer",
            "not an approved TSA certificate",
        ),
        id="signed-by-unapproved-tsa",
    ),
    pytest.param(
        Tamper(
            lambda p: _reply(p.signers["unapproved-tsa"], cert_req=False),
            f"{INVALID}.Signer",
            "signer is not an approved TSA certificate",
        ),
        id="unknown-signer-without-certificate",
    ),
    pytest.param(
        Tamper(
            lambda p: _reply(p.signers["tsa-of-other-ca"]),
            f"{INVALID}.Signer",
            "not issued by an approved CA",
            lambda p: {"tsa_certs": [p.signers["tsa-of-other-ca"].cert], "ca_certs": [p.ca.cert]},
        ),
        id="tsa-certificate-from-unapproved-ca",
    ),
    pytest.param(
        Tamper(lambda p: b"\x30\x03\x06\x01\x00", f"{INVALID}.Format", "not a CMS SignedData"),
        id="not-a-token",
    ),
    pytest.param(
        Tamper(
            lambda p: rejection_response("system_failure", "disk full"),
            "Server.TimestampFailed.Rejected",
            r"rejection \(system_failure\): disk full",
        ),
        id="rejection-reply",
    ),
]


@pytest.mark.parametrize("tamper", TAMPERED)
def test_tampered_tokens_refused(pki: Pki, tamper: Tamper) -> None:
    kwargs = {**_approved(pki), **tamper.verify(pki)}
    with pytest.raises(TimestampError, match=tamper.reason) as caught:
        verify_timestamp_token(tamper.reply(pki), digest=DIGEST, nonce=NONCE, **kwargs)
    assert caught.value.code == tamper.code


# --- what the maintained verifier (rfc3161-client) checks: paths through intermediate CAs ------


def _under(parent: CertificateAuthority, name: str, *, ca: bool) -> CertificateAuthority:
    """A certificate under ``parent`` for a new key: a CA, or (``ca=False``) an end entity that
    someone uses as if it were one."""
    key = keys.generate_key()
    usage = ("keyCertSign", "cRLSign") if ca else ("digitalSignature",)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(parent.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(key_usage(*usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(parent.key, hashes.SHA256())
    )
    return CertificateAuthority(key=key, cert=cert)


def test_a_tsa_certified_by_an_intermediate_ca_verifies(tmp_path: Path) -> None:
    root = CertificateAuthority.create(tmp_path / "root", "Root", now=NOW, path_length=1)
    issuing = root.create_intermediate(tmp_path / "issuing", "Issuing", now=NOW)
    tsa = _signer(tmp_path, "tsa", lambda k: issue_tsa_cert(issuing, k.public_key(), "T", now=NOW))
    info = verify_timestamp_token(
        _reply(tsa), digest=DIGEST, tsa_certs=[tsa.cert], ca_certs=[root.cert, issuing.cert]
    )
    assert info.tsa_cert_fingerprint == keys.fingerprint(tsa.cert)
    # the intermediate counts only through its root
    with pytest.raises(TimestampInvalid, match="not issued by an approved CA") as refused:
        verify_timestamp_token(
            _reply(tsa), digest=DIGEST, tsa_certs=[tsa.cert], ca_certs=[issuing.cert]
        )
    assert refused.value.code == f"{INVALID}.Signer"


def test_a_tsa_under_an_end_entity_posing_as_a_ca_is_refused(pki: Pki, tmp_path: Path) -> None:
    """The issuer of the TSA certificate is listed with the CAs but is no CA (basic constraints
    CA=false, no keyCertSign): the hand-written check took any listed certificate whose key
    signed the TSA certificate; OpenSSL's path validation under rfc3161-client refuses it."""
    poser = _under(pki.ca, "Not a CA", ca=False)
    tsa = _signer(
        tmp_path, "tsa", lambda k: poser.issue(k.public_key(), tsa_template("T"), now=NOW)
    )
    with pytest.raises(TimestampInvalid) as refused:
        verify_timestamp_token(
            _reply(tsa), digest=DIGEST, tsa_certs=[tsa.cert], ca_certs=[pki.ca.cert, poser.cert]
        )
    assert refused.value.code == f"{INVALID}.Signer"
    assert "path to an approved root CA does not validate" in refused.value.message


def test_approved_cas_are_required(pki: Pki) -> None:
    """Without a root to build the TSA certificate's path to, nothing verifies (rfc3161-client,
    like 'openssl ts -verify', needs the CA; a pinned TSA certificate alone is not enough)."""
    with pytest.raises(TimestampInvalid, match="no approved root CA") as refused:
        verify_timestamp_token(
            _reply(pki.tsa), digest=DIGEST, tsa_certs=[pki.tsa.cert], ca_certs=[]
        )
    assert refused.value.code == f"{INVALID}.Signer"


@pytest.fixture(scope="module")
def sample_reply(pki: Pki) -> bytes:
    return _reply(pki.tsa)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_verifier_contract_on_mutated_replies(
    pki: Pki, sample_reply: bytes, data: st.DataObject
) -> None:
    reply = bytearray(sample_reply)
    at = data.draw(st.integers(0, len(reply) - 1))
    reply[at] = data.draw(st.integers(0, 255).filter(lambda b: b != reply[at]))
    try:
        info = verify_timestamp_token(
            bytes(reply), digest=DIGEST, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert]
        )
    except TimestampError:
        return
    assert (info.digest, info.gen_time) == (DIGEST, NOW)


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=400))
def test_verifier_contract_on_any_bytes(pki: Pki, blob: bytes) -> None:
    with pytest.raises(TimestampError):
        verify_timestamp_token(
            blob, digest=DIGEST, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert]
        )


# --- the HTTP service and the client -----------------------------------------------------------


@contextlib.asynccontextmanager
async def running_tsa(pki: Pki, db: Path, **kwargs: Any) -> AsyncIterator[str]:
    runner = web.AppRunner(create_tsa_app(pki.tsa.key, pki.tsa.cert, serial_db=db, **kwargs))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def test_round_trip_through_http(pki: Pki, tmp_path: Path) -> None:
    async with running_tsa(pki, tmp_path / "serials.sqlite") as url, TimestampClient() as client:
        token, info = await client.request(
            DIGEST, url, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert]
        )
        _, second = await client.request(
            DIGEST, url, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert]
        )
    assert (
        verify_timestamp_token(
            token, digest=DIGEST, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert]
        )
        == info
    )
    assert (info.serial, second.serial) == (1, 2)
    assert abs(info.gen_time - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=30)


async def test_service_stamps_with_its_clock(pki: Pki, tmp_path: Path) -> None:
    fixed = NOW.timestamp()
    db = tmp_path / "serials.sqlite"
    async with (
        running_tsa(pki, db, clock=lambda: fixed) as url,
        TimestampClient(clock=lambda: fixed) as client,
    ):
        _, info = await client.request(
            DIGEST, url, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert]
        )
    assert info.gen_time == NOW


async def test_serials_are_monotonic_across_restarts(pki: Pki, tmp_path: Path) -> None:
    db = tmp_path / "serials.sqlite"
    serials = []
    for _ in range(2):
        async with running_tsa(pki, db) as url, TimestampClient() as client:
            for _ in range(2):
                _, info = await client.request(
                    DIGEST, url, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert]
                )
                serials.append(info.serial)
    assert serials == [1, 2, 3, 4]
    store = SerialStore(db)
    try:
        assert store.last_serial() == 4
    finally:
        store.close()


async def _post(url: str, body: bytes, content_type: str) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"Content-Type": content_type}) as response,
    ):
        return response.status, response.content_type, await response.read()


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        pytest.param(build_timestamp_request(DIGEST), "application/octet-stream", 415, id="415"),
        pytest.param(build_timestamp_request(DIGEST), "text/plain", 415, id="415-text"),
        pytest.param(b"\x30" * (MAX_QUERY_BYTES + 1), QUERY_TYPE, 413, id="413-oversize"),
    ],
)
async def test_http_refusals(
    pki: Pki, tmp_path: Path, body: bytes, content_type: str, status: int
) -> None:
    async with running_tsa(pki, tmp_path / "serials.sqlite") as url:
        assert (await _post(url, body, content_type))[0] == status


async def test_only_post_is_answered(pki: Pki, tmp_path: Path) -> None:
    async with (
        running_tsa(pki, tmp_path / "serials.sqlite") as url,
        aiohttp.ClientSession() as session,
        session.get(url) as response,
    ):
        assert response.status == 405


@pytest.mark.parametrize(("query", "failure"), BAD_QUERIES)
async def test_malformed_query_gets_a_rejection_not_a_500(
    pki: Pki, tmp_path: Path, query: bytes, failure: str
) -> None:
    async with running_tsa(pki, tmp_path / "serials.sqlite") as url:
        status, content_type, body = await _post(url, query, QUERY_TYPE)
    assert (status, content_type) == (200, REPLY_TYPE)
    assert response_status(body).failures == {failure}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_client_reports_an_unreachable_tsa() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/"
    async with TimestampClient() as client:
        with pytest.raises(TimestampError, match="unreachable") as caught:
            await client.request(DIGEST, url, tsa_certs=[], ca_certs=[], timeout=5)
    assert caught.value.code == "Server.TimestampFailed"


async def test_client_reports_http_errors(pki: Pki, tmp_path: Path) -> None:
    async with running_tsa(pki, tmp_path / "serials.sqlite") as url, TimestampClient() as client:
        with pytest.raises(TimestampError, match="HTTP 404") as caught:
            await client.request(
                DIGEST, url + "nowhere", tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert]
            )
    assert caught.value.code == "Server.TimestampFailed"


async def test_client_refuses_a_tsa_it_does_not_trust(pki: Pki, tmp_path: Path) -> None:
    async with running_tsa(pki, tmp_path / "serials.sqlite") as url, TimestampClient() as client:
        with pytest.raises(TimestampInvalid) as caught:
            await client.request(
                DIGEST, url, tsa_certs=[pki.signers["unapproved-tsa"].cert], ca_certs=[pki.ca.cert]
            )
    assert caught.value.code == "Server.TimestampInvalid.Signer"


async def test_client_refuses_a_tsa_clock_off_by_more_than_the_skew(
    pki: Pki, tmp_path: Path
) -> None:
    db = tmp_path / "serials.sqlite"
    late = NOW.timestamp() + 61
    async with (
        running_tsa(pki, db, clock=NOW.timestamp) as url,
        TimestampClient(clock=lambda: late) as client,
    ):
        with pytest.raises(TimestampInvalid, match="differs from ours by -61 s") as caught:
            await client.request(DIGEST, url, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert])
    assert caught.value.code == "Server.TimestampInvalid.Time"


async def test_client_uses_a_given_session_and_leaves_it_open(pki: Pki, tmp_path: Path) -> None:
    async with running_tsa(pki, tmp_path / "s.sqlite") as url, aiohttp.ClientSession() as session:
        async with TimestampClient(session) as client:
            await client.request(DIGEST, url, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert])
        assert not session.closed


# --- cross-checks with OpenSSL -----------------------------------------------------------------


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def _openssl_verify(
    pki: Pki, reply: Path, untrusted: Path, *, data: Path | None = None, **more: Path
) -> subprocess.CompletedProcess[str]:
    source: list[str | Path] = ["-data", data] if data is not None else []
    for option, path in more.items():
        source += [f"-{option}", path]
    return openssl(
        "ts", "-verify", *source, "-in", reply, "-CAfile", pki.ca_pem, "-untrusted", untrusted
    )


@needs_openssl
async def test_openssl_verifies_our_reply(pki: Pki, tmp_path: Path) -> None:
    data = tmp_path / "head.txt"
    data.write_bytes(DATA)
    async with running_tsa(pki, tmp_path / "serials.sqlite") as url, TimestampClient() as client:
        reply = await client.request_reply(
            DIGEST, url, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert]
        )
    resp = tmp_path / "RESP.tsr"
    resp.write_bytes(reply.response_der)
    checked = _openssl_verify(pki, resp, pki.tsa.pem, data=data)
    assert checked.returncode == 0, checked.stderr
    assert "Verification: OK" in checked.stdout

    token = tmp_path / "token.der"
    token.write_bytes(reply.token_der)
    checked = openssl(
        "ts", "-verify", "-data", data, "-in", token, "-token_in",
        "-CAfile", pki.ca_pem, "-untrusted", pki.tsa.pem,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "Verification: OK" in checked.stdout

    shown = openssl("ts", "-reply", "-in", resp, "-text")
    assert shown.returncode == 0, shown.stderr
    assert "Status: Granted." in shown.stdout
    assert f"Policy OID: {DEFAULT_POLICY}" in shown.stdout
    assert f"Serial number: 0x{reply.info.serial:02X}" in shown.stdout
    assert "TSA: DirName:/CN=Test TSA" in shown.stdout


@needs_openssl
async def test_openssl_query_answered_by_our_service(pki: Pki, tmp_path: Path) -> None:
    data = tmp_path / "head.txt"
    data.write_bytes(DATA)
    query = tmp_path / "req.tsq"
    made = openssl("ts", "-query", "-data", data, "-sha256", "-cert", "-out", query)
    assert made.returncode == 0, made.stderr
    request = parse_timestamp_request(query.read_bytes())
    assert request.nonce is not None and request.cert_req
    async with running_tsa(pki, tmp_path / "serials.sqlite") as url, TimestampClient() as client:
        reply = await client.post_query(query.read_bytes(), url)
    info = verify_timestamp_token(
        reply, digest=DIGEST, tsa_certs=[pki.tsa.cert], ca_certs=[pki.ca.cert], nonce=request.nonce
    )
    assert info.digest == DIGEST
    resp = tmp_path / "resp.tsr"
    resp.write_bytes(reply)
    for source in ({"data": data}, {"queryfile": query}):
        checked = _openssl_verify(pki, resp, pki.tsa.pem, **source)
        assert checked.returncode == 0, checked.stderr
        assert "Verification: OK" in checked.stdout


@needs_openssl
@pytest.mark.parametrize(
    "name", ["member-signing-cert", "no-eku", "eku-not-critical", "tsa-of-other-ca"]
)
def test_openssl_agrees_on_refused_signers(pki: Pki, tmp_path: Path, name: str) -> None:
    data = tmp_path / "head.txt"
    data.write_bytes(DATA)
    resp = tmp_path / "resp.tsr"
    resp.write_bytes(_reply(pki.signers[name], now=dt.datetime.now(dt.UTC)))
    checked = _openssl_verify(pki, resp, pki.signers[name].pem, data=data)
    assert checked.returncode != 0
    assert "Verification: OK" not in checked.stdout


@needs_openssl
def test_openssl_refuses_a_tampered_signature(pki: Pki, tmp_path: Path) -> None:
    data = tmp_path / "head.txt"
    data.write_bytes(DATA)
    resp = tmp_path / "resp.tsr"
    resp.write_bytes(_altered_signature(_reply(pki.tsa)))
    assert _openssl_verify(pki, resp, pki.tsa.pem, data=data).returncode != 0


# --- exchange tsa ------------------------------------------------------------------------------


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(group, [str(a) for a in args], env={PASSPHRASE_ENV: None})


@contextlib.contextmanager
def serving(directory: Path, log: Path) -> Iterator[dict[str, Any]]:
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable, "-c", "from exchange.cli.tsa import group; group()",
                "serve", "--dir", str(directory), "--port", "0", "--ready-line",
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY "), f"no READY line: {line!r}, log: {log.read_text()}"
        yield json.loads(line.removeprefix("READY "))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
        assert proc.stdout is not None
        proc.stdout.close()


def test_cli_help_has_examples() -> None:
    for command in ([], ["init"], ["serve"], ["stamp"], ["verify"]):
        result = run(*command, "--help")
        assert result.exit_code == EXIT_OK
        assert "Example:" in result.stdout and "exchange tsa" in result.stdout


def test_cli_init_refuses_to_overwrite(pki: Pki, tmp_path: Path) -> None:
    assert run("init", "--ca-dir", pki.dir / "ca", "--dir", tmp_path / "tsa").exit_code == 0
    again = run("init", "--ca-dir", pki.dir / "ca", "--dir", tmp_path / "tsa")
    assert again.exit_code == EXIT_USAGE
    assert "already exists" in again.stderr


def test_cli_init_serve_stamp_verify(pki: Pki, tmp_path: Path) -> None:
    tsa_dir = tmp_path / "tsa"
    made = run("init", "--ca-dir", pki.dir / "ca", "--dir", tsa_dir, "--name", "CLI TSA")
    assert made.exit_code == EXIT_OK, made.output
    assert (tsa_dir / "tsa.key.pem").stat().st_mode & 0o777 == 0o600
    cert_pem = tsa_dir / "tsa.cert.pem"
    check_tsa_certificate(keys.load_certificate(cert_pem))

    report = tmp_path / "report.pdf"
    report.write_bytes(DATA)
    with serving(tsa_dir, tmp_path / "tsa.log") as ready:
        stamped = run(
            "stamp", "--url", ready["url"], "--tsa-cert", cert_pem, "--ca-cert", pki.ca_pem, report
        )
        assert stamped.exit_code == EXIT_OK, stamped.output
    assert "serial" in stamped.stdout and "time" in stamped.stdout
    reply = Path(f"{report}.tsr")
    assert response_status(reply.read_bytes()).granted

    checked = run(
        "verify", "--tsa-cert", cert_pem, "--ca-cert", pki.ca_pem, "--data", report, "--in", reply
    )
    assert checked.exit_code == EXIT_OK, checked.output
    assert "OK" in checked.stdout

    if shutil.which("openssl"):
        assert _openssl_verify(pki, reply, cert_pem, data=report).returncode == 0

    report.write_bytes(DATA + b"edited")
    refused = run(
        "verify", "--tsa-cert", cert_pem, "--ca-cert", pki.ca_pem, "--data", report, "--in", reply
    )
    assert refused.exit_code == EXIT_CHECK_FAILED
    assert "another hash" in refused.stderr
    # without the CA the TSA certificate chains to, nothing can be verified: a usage error
    unchained = run("verify", "--tsa-cert", cert_pem, "--data", report, "--in", reply)
    assert unchained.exit_code == EXIT_USAGE


def test_cli_stamp_reports_an_unreachable_tsa(pki: Pki, tmp_path: Path) -> None:
    report = tmp_path / "report.pdf"
    report.write_bytes(DATA)
    url = f"http://127.0.0.1:{_closed_port()}/"
    result = run(
        "stamp", "--url", url, "--tsa-cert", pki.tsa.pem, "--ca-cert", pki.ca_pem,
        "--timeout", "5", report,
    )  # fmt: skip
    assert result.exit_code == EXIT_CHECK_FAILED
    assert "unreachable" in result.stderr
    assert not Path(f"{report}.tsr").exists()


def test_cli_serve_refuses_a_readable_key(pki: Pki, tmp_path: Path) -> None:
    tsa_dir = tmp_path / "tsa"
    assert run("init", "--ca-dir", pki.dir / "ca", "--dir", tsa_dir).exit_code == 0
    os.chmod(tsa_dir / "tsa.key.pem", 0o644)
    result = run("serve", "--dir", tsa_dir, "--port", "0")
    assert result.exit_code == EXIT_USAGE
    assert "chmod 600" in result.stderr
