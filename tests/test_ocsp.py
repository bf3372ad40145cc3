"""OCSP (RFC 6960): responder, verification, staple cache, HTTP service, CLI, and OpenSSL's view.

Real parts only: a real CA, a real SQLite register, the real responder on 127.0.0.1 port 0, and
the ``openssl`` binary where it is installed.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from asn1crypto import ocsp as asn1_ocsp
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.cli.ca import PASSPHRASE_ENV
from exchange.cli.common import EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE
from exchange.cli.ocsp import group as ocsp_group
from exchange.errors import ConfigurationError, ExchangeError
from exchange.identifiers import parse_member, parse_security_server
from exchange.trust import keys
from exchange.trust.ca import CertificateAuthority
from exchange.trust.ocsp import (
    CertificateRevoked,
    CertificateStatusUnknown,
    CertStatus,
    OcspError,
    OcspResponseInvalid,
    OcspResponseStale,
    OcspStapleCache,
    OcspStatus,
    build_ocsp_request,
    build_ocsp_response,
    check_responder,
    issue_ocsp_responder_cert,
    verify_ocsp_response,
)
from exchange.trust.ocsp_service import (
    REQUEST_TYPE,
    RESPONSE_TYPE,
    OcspFetcher,
    OcspUnavailable,
    create_ocsp_app,
)
from exchange.trust.revocation import RevocationStore

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
"""Real time: OpenSSL and the HTTP responder judge responses against their own clocks."""
HOUR = dt.timedelta(hours=1)
SHA1 = hashes.SHA1()
MAX_AGE = 3600
REVOKED_AT = NOW - 2 * HOUR
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(
    OPENSSL is None, reason="the openssl binary is not installed, so OpenSSL cannot check"
)


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    foreign: CertificateAuthority
    responder_key: ec.EllipticCurvePrivateKey
    responder_cert: x509.Certificate
    good: x509.Certificate
    other_good: x509.Certificate
    revoked: x509.Certificate
    unrecorded: x509.Certificate
    sign_key: ec.EllipticCurvePrivateKey
    ca_dir: Path
    files: Path
    db: Path

    def lookup(self, serial: int) -> CertStatus | None:
        if serial == self.revoked.serial_number:
            return CertStatus(serial, REVOKED_AT, x509.ReasonFlags.key_compromise)
        if serial in (self.good.serial_number, self.other_good.serial_number):
            return CertStatus(serial)
        return None

    def pem(self, name: str) -> Path:
        return self.files / f"{name}.pem"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("ocsp-pki")
    # valid from NOW (less the CA's backdating), however long after NOW this module starts
    ca = CertificateAuthority.create(base / "ca", "PS Test CA", now=NOW)
    foreign = CertificateAuthority.create(base / "foreign", "Foreign CA", now=NOW)
    responder_key, sign_key = keys.generate_key(), keys.generate_key()
    auth_key = keys.generate_key()
    moi = parse_member("PS/GOV/MOI")
    built = Pki(
        ca=ca,
        foreign=foreign,
        responder_key=responder_key,
        responder_cert=issue_ocsp_responder_cert(ca, responder_key.public_key(), now=NOW),
        good=ca.issue_sign_cert(sign_key.public_key(), moi, now=NOW),
        other_good=ca.issue_sign_cert(
            keys.generate_key().public_key(), parse_member("PS/GOV/MOF"), now=NOW
        ),
        revoked=ca.issue_auth_cert(
            auth_key.public_key(), parse_security_server("PS/GOV/MOI/ss1"), now=NOW
        ),
        unrecorded=ca.issue_sign_cert(keys.generate_key().public_key(), moi, now=NOW),
        sign_key=sign_key,
        ca_dir=base / "ca",
        files=base / "files",
        db=base / "revocations.sqlite",
    )
    for name in ("good", "revoked", "unrecorded"):
        keys.save_certificate(built.pem(name), getattr(built, name))
    keys.save_certificate(built.pem("ca"), ca.cert)
    with RevocationStore(built.db) as store:
        for cert, profile in [(built.good, "sign"), (built.other_good, "sign")]:
            store.record_issued(cert, profile)
        store.record_issued(built.revoked, "auth")
        store.record_issued(built.responder_cert, "ocsp")
        store.revoke(built.revoked, "keyCompromise", REVOKED_AT)
    return built


def respond(
    pki: Pki,
    cert: x509.Certificate,
    *,
    now: dt.datetime = NOW,
    validity: int = 3600,
    by_ca: bool = False,
    algorithm: hashes.HashAlgorithm = SHA1,
) -> bytes:
    """Our responder's answer about ``cert``, from the delegated responder or the CA itself."""
    key, cert_of = (pki.ca.key, pki.ca.cert) if by_ca else (pki.responder_key, pki.responder_cert)
    return build_ocsp_response(
        build_ocsp_request(cert, pki.ca.cert, algorithm=algorithm),
        ca=pki.ca.cert,
        responder_key=key,
        responder_cert=cert_of,
        store_lookup=pki.lookup,
        now=now,
        validity_seconds=validity,
    )


def verify(
    pki: Pki, response: bytes, cert: x509.Certificate, *, now: dt.datetime = NOW
) -> OcspStatus:
    return verify_ocsp_response(
        response, cert=cert, issuer=pki.ca.cert, now=now, max_age_seconds=MAX_AGE
    )


def status_of(response_der: bytes) -> ocsp.OCSPResponseStatus:
    return ocsp.load_der_ocsp_response(response_der).response_status


def hand_made(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    key: ec.EllipticCurvePrivateKey,
    responder: x509.Certificate,
    include: tuple[x509.Certificate, ...] = (),
) -> bytes:
    """A "good" response built outside our responder, to forge what it never would."""
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert, issuer, hashes.SHA1(), ocsp.OCSPCertStatus.GOOD, NOW, NOW + HOUR, None, None
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, responder)
    )
    if include:
        builder = builder.certificates(list(include))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


# --- the sans-IO core: statuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    "by_ca", [pytest.param(False, id="delegated"), pytest.param(True, id="ca")]
)
@pytest.mark.parametrize(
    "algorithm",
    [pytest.param(hashes.SHA1(), id="sha1-certid"), pytest.param(hashes.SHA256(), id="sha256")],
)
def test_good_response_verifies(pki: Pki, by_ca: bool, algorithm: hashes.HashAlgorithm) -> None:
    response = respond(pki, pki.good, by_ca=by_ca, algorithm=algorithm)
    status = verify(pki, response, pki.good)
    assert status.serial == pki.good.serial_number
    assert status.this_update == NOW
    assert status.next_update == NOW + HOUR
    assert status.response_der == response
    assert status.responder == (pki.ca.cert if by_ca else pki.responder_cert)


def test_revoked_is_refused_with_time_and_reason(pki: Pki) -> None:
    with pytest.raises(CertificateRevoked) as caught:
        verify(pki, respond(pki, pki.revoked), pki.revoked)
    assert caught.value.code == "Server.ServerProxy.CertificateRevoked"
    assert caught.value.revoked_at == REVOKED_AT
    assert caught.value.reason == x509.ReasonFlags.key_compromise
    assert "keyCompromise" in caught.value.message


def test_serial_never_issued_is_unknown(pki: Pki) -> None:
    response = respond(pki, pki.unrecorded)
    single = ocsp.load_der_ocsp_response(response)
    assert single.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    with pytest.raises(CertificateStatusUnknown) as caught:
        verify(pki, response, pki.unrecorded)
    assert caught.value.code == "Server.ServerProxy.CertificateStatusUnknown"


@pytest.mark.parametrize(
    ("validity", "checked_at"),
    [
        pytest.param(7200, NOW + dt.timedelta(seconds=MAX_AGE + 1), id="older-than-max-age"),
        pytest.param(60, NOW + dt.timedelta(seconds=61), id="next-update-passed"),
    ],
)
def test_stale_response_is_refused(pki: Pki, validity: int, checked_at: dt.datetime) -> None:
    response = respond(pki, pki.good, validity=validity)
    verify(pki, response, pki.good, now=checked_at - dt.timedelta(seconds=1))
    with pytest.raises(OcspResponseStale) as caught:
        verify(pki, response, pki.good, now=checked_at)
    assert caught.value.code == "Server.ServerProxy.OcspResponseStale"


def test_response_from_the_future_is_refused(pki: Pki) -> None:
    response = respond(pki, pki.good, now=NOW + dt.timedelta(seconds=61))
    verify(pki, respond(pki, pki.good, now=NOW + dt.timedelta(seconds=60)), pki.good)
    with pytest.raises(OcspResponseInvalid, match="not yet valid"):
        verify(pki, response, pki.good)


def _resigned(response_der: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """``response_der`` with its signature replaced by one made with ``key``."""
    response = asn1_ocsp.OCSPResponse.load(response_der)
    basic = response["response_bytes"]["response"].parsed
    tbs = basic["tbs_response_data"].dump()
    basic["signature"] = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return bytes(response.dump(force=True))


def _foreign_key_as_ca(pki: Pki) -> bytes:
    return _resigned(respond(pki, pki.good, by_ca=True), pki.foreign.key)


def _foreign_key_as_delegate(pki: Pki) -> bytes:
    return _resigned(respond(pki, pki.good), pki.foreign.key)


def _foreign_ca(pki: Pki) -> bytes:
    return hand_made(
        pki.good, pki.ca.cert, key=pki.foreign.key, responder=pki.foreign.cert,
        include=(pki.foreign.cert,),
    )  # fmt: skip


def _foreign_delegate(pki: Pki) -> bytes:
    key = keys.generate_key()
    cert = issue_ocsp_responder_cert(pki.foreign, key.public_key())
    return hand_made(pki.good, pki.ca.cert, key=key, responder=cert, include=(cert,))


def _not_ocsp_signing(pki: Pki) -> bytes:
    return hand_made(
        pki.good, pki.ca.cert, key=pki.sign_key, responder=pki.good, include=(pki.good,)
    )


def _expired_delegate(pki: Pki) -> bytes:
    key = keys.generate_key()
    cert = issue_ocsp_responder_cert(pki.ca, key.public_key(), days=1, now=NOW - 3 * 24 * HOUR)
    return hand_made(pki.good, pki.ca.cert, key=key, responder=cert, include=(cert,))


def _tampered_signature(pki: Pki) -> bytes:
    response = bytearray(respond(pki, pki.good, by_ca=True))
    response[-1] ^= 0x01
    return bytes(response)


def _another_certificate(pki: Pki) -> bytes:
    return respond(pki, pki.other_good)


def _same_serial_other_issuer(pki: Pki) -> bytes:
    foreign_name, foreign_key = _certid_hashes(pki.foreign.cert)
    return (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            foreign_name,
            foreign_key,
            pki.good.serial_number,
            hashes.SHA1(),
            ocsp.OCSPCertStatus.GOOD,
            NOW,
            NOW + HOUR,
            None,
            None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, pki.ca.cert)
        .sign(pki.ca.key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


def _certid_hashes(issuer: x509.Certificate) -> tuple[bytes, bytes]:
    request = ocsp.OCSPRequestBuilder().add_certificate(issuer, issuer, hashes.SHA1()).build()
    return request.issuer_name_hash, request.issuer_key_hash


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> Callable[[Pki], bytes]:
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return lambda pki: response.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        pytest.param(_foreign_key_as_ca, "signature does not verify", id="foreign-key-as-ca"),
        pytest.param(
            _foreign_key_as_delegate, "signature does not verify", id="foreign-key-as-delegate"
        ),
        pytest.param(_foreign_ca, "not authorised", id="foreign-ca"),
        pytest.param(_foreign_delegate, "not authorised", id="foreign-ca-delegate"),
        pytest.param(_not_ocsp_signing, "lacks OCSPSigning", id="not-ocsp-signing-cert"),
        pytest.param(_expired_delegate, "expired", id="expired-responder-cert"),
        pytest.param(_tampered_signature, "signature does not verify", id="tampered-signature"),
        pytest.param(_another_certificate, "not about this", id="another-certificate"),
        pytest.param(_same_serial_other_issuer, "not about this", id="same-serial-other-ca"),
        pytest.param(lambda pki: b"\x30\x03\x0a\x01", "malformed", id="truncated"),
        pytest.param(lambda pki: b"hello", "malformed", id="garbage"),
        pytest.param(
            _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
            "malformed_request",
            id="unsuccessful-malformed",
        ),
        pytest.param(
            _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED),
            "unauthorized",
            id="unsuccessful-unauthorized",
        ),
    ],
)
def test_invalid_response_is_refused(pki: Pki, forge: Callable[[Pki], bytes], message: str) -> None:
    with pytest.raises(OcspResponseInvalid, match=message) as caught:
        verify(pki, forge(pki), pki.good)
    assert caught.value.code == "Server.ServerProxy.OcspResponseInvalid"
    assert caught.value.status == 403


@pytest.mark.parametrize(
    ("error", "name"),
    [
        pytest.param(CertificateRevoked, "CertificateRevoked", id="revoked"),
        pytest.param(CertificateStatusUnknown, "CertificateStatusUnknown", id="unknown"),
        pytest.param(OcspResponseStale, "OcspResponseStale", id="stale"),
        pytest.param(OcspResponseInvalid, "OcspResponseInvalid", id="invalid"),
    ],
)
def test_error_codes(error: type[OcspError], name: str) -> None:
    assert issubclass(error, ExchangeError)
    assert error.code == f"Server.ServerProxy.{name}"
    assert error.status == 403


def test_consumer_side_gets_the_client_proxy_code(pki: Pki) -> None:
    with pytest.raises(CertificateRevoked) as caught:
        verify(pki, respond(pki, pki.revoked), pki.revoked)
    provider_side = caught.value
    consumer_side = provider_side.for_consumer()
    assert consumer_side.code == "Server.ClientProxy.CertificateRevoked"
    assert isinstance(consumer_side, CertificateRevoked)
    assert consumer_side.revoked_at == REVOKED_AT
    assert consumer_side.detail == provider_side.detail
    assert provider_side.code == "Server.ServerProxy.CertificateRevoked"
    stale = OcspResponseStale("OCSP response is stale").for_consumer()
    assert stale.body()["type"] == "Server.ClientProxy.OcspResponseStale"


# --- the responder's answers to odd requests --------------------------------------------------


def _answer(pki: Pki, request: bytes) -> bytes:
    return build_ocsp_response(
        request,
        ca=pki.ca.cert,
        responder_key=pki.responder_key,
        responder_cert=pki.responder_cert,
        store_lookup=pki.lookup,
        now=NOW,
    )


def _with_asn1(pki: Pki, change: Callable[[asn1_ocsp.OCSPRequest], None]) -> bytes:
    request = asn1_ocsp.OCSPRequest.load(build_ocsp_request(pki.good, pki.ca.cert))
    change(request)
    return bytes(request.dump(force=True))


def _two_certificates(request: asn1_ocsp.OCSPRequest) -> None:
    requests = request["tbs_request"]["request_list"]
    requests.append(requests[0].copy())


def _md5_cert_id(request: asn1_ocsp.OCSPRequest) -> None:
    request["tbs_request"]["request_list"][0]["req_cert"]["hash_algorithm"]["algorithm"] = "md5"


def _long_nonce(pki: Pki) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(pki.good, pki.ca.cert, hashes.SHA1())
    request = builder.add_extension(x509.OCSPNonce(b"n" * 33), critical=False).build()
    return request.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda pki: b"", id="empty"),
        pytest.param(lambda pki: b"GET / HTTP/1.1\r\n", id="not-der"),
        pytest.param(lambda pki: build_ocsp_request(pki.good, pki.ca.cert)[:-3], id="truncated"),
        pytest.param(lambda pki: _with_asn1(pki, _two_certificates), id="two-certificates"),
        pytest.param(lambda pki: _with_asn1(pki, _md5_cert_id), id="md5-certid"),
        pytest.param(_long_nonce, id="nonce-over-32-octets"),
    ],
)
def test_malformed_request_gets_malformed_request(pki: Pki, make: Callable[[Pki], bytes]) -> None:
    assert status_of(_answer(pki, make(pki))) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_request_about_another_ca_is_unauthorized(pki: Pki) -> None:
    foreign_cert = pki.foreign.issue_sign_cert(
        keys.generate_key().public_key(), parse_member("PS/GOV/MOI")
    )
    request = build_ocsp_request(foreign_cert, pki.foreign.cert)
    assert status_of(_answer(pki, request)) == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_nonce_is_echoed(pki: Pki) -> None:
    """RFC 8954: ``openssl ocsp -url`` sends a nonce and checks it comes back."""
    response = _answer(pki, build_ocsp_request(pki.good, pki.ca.cert, nonce=b"0123456789abcdef"))
    echoed = ocsp.load_der_ocsp_response(response).extensions.get_extension_for_class(
        x509.OCSPNonce
    )
    assert echoed.value.nonce == b"0123456789abcdef"
    verify(pki, response, pki.good)


def test_request_names_the_certificate(pki: Pki) -> None:
    request = ocsp.load_der_ocsp_request(build_ocsp_request(pki.good, pki.ca.cert))
    assert request.serial_number == pki.good.serial_number
    assert isinstance(request.hash_algorithm, hashes.SHA1)
    assert (request.issuer_name_hash, request.issuer_key_hash) == _certid_hashes(pki.ca.cert)
    assert list(request.extensions) == []


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=512))
def test_arbitrary_request_bytes_get_malformed_request(pki: Pki, data: bytes) -> None:
    assert status_of(_answer(pki, data)) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_mutated_requests_never_crash_the_responder(pki: Pki, data: st.DataObject) -> None:
    request = bytearray(build_ocsp_request(pki.good, pki.ca.cert, nonce=b"nonce"))
    position = data.draw(st.integers(0, 2**16)) % len(request)
    request[position] = data.draw(st.integers(0, 255))
    assert status_of(_answer(pki, bytes(request))) in {
        ocsp.OCSPResponseStatus.SUCCESSFUL,
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        ocsp.OCSPResponseStatus.UNAUTHORIZED,
    }


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=1024))
def test_arbitrary_response_bytes_are_invalid(pki: Pki, data: bytes) -> None:
    with pytest.raises(OcspResponseInvalid):
        verify(pki, data, pki.good)


def test_responder_name_of_a_non_string_type_is_invalid(pki: Pki) -> None:
    """Found by Hypothesis: cryptography raises KeyError for such a name attribute."""
    response = bytearray(respond(pki, pki.good))
    at = response.rfind(b"PS Test CA OCSP") - 2
    assert response[at] == 0x0C, "the responder's CN is a UTF8String"
    response[at] = 0x05
    with pytest.raises(OcspResponseInvalid, match="malformed"):
        verify(pki, bytes(response), pki.good)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_mutated_responses_are_good_or_refused(pki: Pki, data: st.DataObject) -> None:
    """Changing one byte never yields anything but the true answer or an OcspError."""
    response = bytearray(respond(pki, pki.good))
    position = data.draw(st.integers(0, 2**16)) % len(response)
    response[position] = data.draw(st.integers(0, 255))
    try:
        status = verify(pki, bytes(response), pki.good)
    except OcspError as exc:
        assert not isinstance(exc, CertificateRevoked)
    else:
        assert status.serial == pki.good.serial_number


# --- the delegated responder certificate ------------------------------------------------------


def test_responder_certificate_profile(pki: Pki) -> None:
    cert = pki.responder_cert
    cert.verify_directly_issued_by(pki.ca.cert)
    assert cert.issuer == pki.ca.cert.subject
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert not eku.critical
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    cert.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=30, minutes=5)


@pytest.mark.parametrize(
    ("pick", "message"),
    [
        pytest.param(lambda pki: (pki.sign_key, pki.responder_cert), "not the key", id="wrong-key"),
        pytest.param(lambda pki: (pki.sign_key, pki.good), "no id-kp-OCSPSigning", id="sign-cert"),
        pytest.param(
            lambda pki: (pki.foreign.key, pki.foreign.cert), "not issued by", id="foreign-ca"
        ),
    ],
)
def test_responder_pair_is_checked(
    pki: Pki,
    pick: Callable[[Pki], tuple[ec.EllipticCurvePrivateKey, x509.Certificate]],
    message: str,
) -> None:
    key, cert = pick(pki)
    with pytest.raises(ConfigurationError, match=message):
        check_responder(pki.ca.cert, key, cert, NOW)
    with (
        pytest.raises(ConfigurationError, match=message),
        RevocationStore(pki.db) as store,
    ):
        create_ocsp_app(pki.ca.cert, key, cert, store)


# --- the staple cache -------------------------------------------------------------------------


def test_staple_cache_holds_the_newest_fresh_response(pki: Pki) -> None:
    cache = OcspStapleCache()
    assert cache.needs_refresh(pki.good, NOW, MAX_AGE)
    assert cache.get(pki.good, NOW, MAX_AGE) is None
    older, newer = respond(pki, pki.good, now=NOW - HOUR / 2), respond(pki, pki.good)
    cache.put(newer, cert=pki.good, issuer=pki.ca.cert, now=NOW, max_age_seconds=MAX_AGE)
    kept = cache.put(older, cert=pki.good, issuer=pki.ca.cert, now=NOW, max_age_seconds=MAX_AGE)
    assert kept.response_der == newer
    assert len(cache) == 1
    assert cache.require(pki.good, NOW, MAX_AGE).response_der == newer
    assert not cache.needs_refresh(pki.good, NOW + HOUR / 2 - dt.timedelta(seconds=1), MAX_AGE)
    assert cache.needs_refresh(pki.good, NOW + HOUR / 2, MAX_AGE)
    assert cache.get(pki.good, NOW + HOUR, MAX_AGE) is not None
    assert cache.get(pki.good, NOW + HOUR + dt.timedelta(seconds=1), MAX_AGE) is None
    with pytest.raises(OcspResponseStale):
        cache.require(pki.good, NOW + 2 * HOUR, MAX_AGE)


def test_staple_cache_refreshes_early_for_a_short_next_update(pki: Pki) -> None:
    cache = OcspStapleCache()
    response = respond(pki, pki.good, validity=600)
    cache.put(response, cert=pki.good, issuer=pki.ca.cert, now=NOW, max_age_seconds=MAX_AGE)
    assert not cache.needs_refresh(pki.good, NOW + dt.timedelta(seconds=299), MAX_AGE)
    assert cache.needs_refresh(pki.good, NOW + dt.timedelta(seconds=300), MAX_AGE)


def test_staple_cache_drops_a_certificate_found_revoked(pki: Pki) -> None:
    cache = OcspStapleCache()
    good = respond(pki, pki.good)
    cache.put(good, cert=pki.good, issuer=pki.ca.cert, now=NOW, max_age_seconds=MAX_AGE)
    revoked_response = hand_made_revoked(pki, pki.good)
    with pytest.raises(CertificateRevoked):
        cache.put(
            revoked_response, cert=pki.good, issuer=pki.ca.cert, now=NOW, max_age_seconds=MAX_AGE
        )
    assert cache.get(pki.good, NOW, MAX_AGE) is None
    with pytest.raises(CertificateStatusUnknown, match="no OCSP response"):
        cache.require(pki.good, NOW, MAX_AGE)


def hand_made_revoked(pki: Pki, cert: x509.Certificate) -> bytes:
    return build_ocsp_response(
        build_ocsp_request(cert, pki.ca.cert),
        ca=pki.ca.cert,
        responder_key=pki.responder_key,
        responder_cert=pki.responder_cert,
        store_lookup=lambda serial: CertStatus(serial, NOW, x509.ReasonFlags.superseded),
        now=NOW,
    )


def test_staple_cache_refuses_what_does_not_verify(pki: Pki) -> None:
    cache = OcspStapleCache()
    with pytest.raises(OcspResponseInvalid):
        cache.put(
            _foreign_key_as_ca(pki),
            cert=pki.good,
            issuer=pki.ca.cert,
            now=NOW,
            max_age_seconds=MAX_AGE,
        )
    assert len(cache) == 0


def test_staple_cache_is_bounded(pki: Pki) -> None:
    cache = OcspStapleCache(max_entries=1)
    for cert in (pki.good, pki.other_good):
        cache.put(
            respond(pki, cert), cert=cert, issuer=pki.ca.cert, now=NOW, max_age_seconds=MAX_AGE
        )
    assert len(cache) == 1
    assert cache.get(pki.good, NOW, MAX_AGE) is None
    assert cache.get(pki.other_good, NOW, MAX_AGE) is not None


# --- over HTTP --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Running:
    url: str
    store: RevocationStore


@pytest.fixture
async def responder(pki: Pki, tmp_path: Path) -> AsyncIterator[Running]:
    db = tmp_path / "revocations.sqlite"
    shutil.copy(pki.db, db)
    with RevocationStore(db) as store:
        app = create_ocsp_app(pki.ca.cert, pki.responder_key, pki.responder_cert, store)
        async with _serving(app) as url:
            yield Running(url, store)


class _serving:
    def __init__(self, app: web.Application) -> None:
        self.runner = web.AppRunner(app)

    async def __aenter__(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def _get(url: str, request: bytes, *, encode: bool) -> bytes:
    b64 = base64.b64encode(request).decode("ascii")
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + (quote(b64, safe="") if encode else b64)) as response,
    ):
        assert response.status == 200
        assert response.content_type == RESPONSE_TYPE
        return await response.read()


async def _post(url: str, request: bytes) -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=request, headers={"Content-Type": REQUEST_TYPE}) as response,
    ):
        assert response.status == 200
        assert response.content_type == RESPONSE_TYPE
        return await response.read()


async def _fetch_over(method: str, url: str, pki: Pki, cert: x509.Certificate) -> bytes:
    request = build_ocsp_request(cert, pki.ca.cert)
    if method == "post":
        return await _post(url, request)
    return await _get(url, request, encode=method == "get-urlencoded")


METHODS = [
    pytest.param("post", id="post"),
    pytest.param("get-urlencoded", id="get"),
    pytest.param("get-raw", id="get-unencoded"),
]


@pytest.mark.parametrize("method", METHODS)
async def test_http_good(pki: Pki, responder: Running, method: str) -> None:
    response = await _fetch_over(method, responder.url, pki, pki.good)
    status = verify(pki, response, pki.good, now=dt.datetime.now(dt.UTC))
    assert status.responder == pki.responder_cert


@pytest.mark.parametrize("method", METHODS)
async def test_http_revoked(pki: Pki, responder: Running, method: str) -> None:
    response = await _fetch_over(method, responder.url, pki, pki.revoked)
    with pytest.raises(CertificateRevoked) as caught:
        verify(pki, response, pki.revoked, now=dt.datetime.now(dt.UTC))
    assert caught.value.reason == x509.ReasonFlags.key_compromise
    assert caught.value.revoked_at == REVOKED_AT


@pytest.mark.parametrize("method", METHODS)
async def test_http_unknown(pki: Pki, responder: Running, method: str) -> None:
    response = await _fetch_over(method, responder.url, pki, pki.unrecorded)
    with pytest.raises(CertificateStatusUnknown):
        verify(pki, response, pki.unrecorded, now=dt.datetime.now(dt.UTC))


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("not base64!", id="not-base64"),
        pytest.param(base64.b64encode(b"\x30\x00").decode(), id="not-a-request"),
    ],
)
async def test_http_get_of_garbage_is_malformed_request(responder: Running, path: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(responder.url + quote(path, safe="")) as response,
    ):
        assert response.status == 200
        body = await response.read()
    assert status_of(body) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        pytest.param(b"\x30\x00", "text/plain", 415, id="wrong-content-type"),
        pytest.param(b"\x30" * 20_000, REQUEST_TYPE, 413, id="too-large"),
    ],
)
async def test_http_post_refusals(
    responder: Running, body: bytes, content_type: str, expected: int
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(responder.url, data=body, headers={"Content-Type": content_type}) as response,
    ):
        assert response.status == expected


async def test_revocation_reaches_the_next_refresh(pki: Pki, responder: Running) -> None:
    """A revoked certificate's staple is dropped at the first refresh after the revocation."""
    cache = OcspStapleCache()
    async with OcspFetcher() as fetcher:
        status = await fetcher.refresh(
            cache, pki.good, pki.ca.cert, [responder.url], max_age_seconds=MAX_AGE
        )
        assert cache.get(pki.good, status.this_update, MAX_AGE) == status
        responder.store.revoke(pki.good, "keyCompromise")
        with pytest.raises(CertificateRevoked):
            await fetcher.refresh(
                cache, pki.good, pki.ca.cert, [responder.url], max_age_seconds=MAX_AGE
            )
    assert cache.get(pki.good, status.this_update, MAX_AGE) is None


async def test_refresh_moves_on_to_the_next_url(pki: Pki, responder: Running) -> None:
    dead = await _closed_port_url()
    cache = OcspStapleCache()
    async with OcspFetcher(timeout_seconds=5) as fetcher:
        status = await fetcher.refresh(
            cache, pki.good, pki.ca.cert, [dead, responder.url], max_age_seconds=MAX_AGE
        )
        with pytest.raises(OcspUnavailable):
            await fetcher.refresh(cache, pki.good, pki.ca.cert, [dead], max_age_seconds=MAX_AGE)
        with pytest.raises(OcspUnavailable, match="no OCSP responder"):
            await fetcher.refresh(cache, pki.good, pki.ca.cert, [], max_age_seconds=MAX_AGE)
    assert status.serial == pki.good.serial_number


async def _closed_port_url() -> str:
    """A URL nothing listens on: bind a port, then close it."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return f"http://127.0.0.1:{port}/"


def _fake_responder(
    body: bytes, content_type: str, status: int = 200, hold: asyncio.Event | None = None
) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        if hold is not None:
            await hold.wait()
        return web.Response(body=body, content_type=content_type, status=status)

    app = web.Application()
    app.router.add_post("/", handle)
    return app


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        pytest.param(b"<html/>", "text/html", 200, "HTTP 200 text/html", id="not-ocsp"),
        pytest.param(b"", RESPONSE_TYPE, 503, "HTTP 503", id="http-error"),
        pytest.param(b"\x30" * 70_000, RESPONSE_TYPE, 200, "more than", id="too-large"),
    ],
)
async def test_fetcher_refuses_what_is_not_an_ocsp_response(
    pki: Pki, body: bytes, content_type: str, status: int, message: str
) -> None:
    async with (
        _serving(_fake_responder(body, content_type, status)) as url,
        OcspFetcher() as fetcher,
    ):
        with pytest.raises(OcspUnavailable) as caught:
            await fetcher.fetch(pki.good, pki.ca.cert, url)
    assert message in caught.value.internal


async def test_fetcher_times_out(pki: Pki) -> None:
    hold = asyncio.Event()
    try:
        async with (
            _serving(_fake_responder(b"", RESPONSE_TYPE, hold=hold)) as url,
            OcspFetcher(timeout_seconds=0.2) as fetcher,
        ):
            with pytest.raises(OcspUnavailable, match="unavailable") as caught:
                await fetcher.fetch(pki.good, pki.ca.cert, url)
            hold.set()
    finally:
        hold.set()
    assert "Timeout" in caught.value.internal


async def test_responder_with_a_broken_register_answers_internal_error(
    pki: Pki, tmp_path: Path
) -> None:
    store = RevocationStore(tmp_path / "r.sqlite")
    app = create_ocsp_app(pki.ca.cert, pki.responder_key, pki.responder_cert, store)
    store.close()
    async with _serving(app) as url:
        body = await _post(url, build_ocsp_request(pki.good, pki.ca.cert))
    assert status_of(body) == ocsp.OCSPResponseStatus.INTERNAL_ERROR


# --- OpenSSL's view ---------------------------------------------------------------------------


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )


@needs_openssl
@pytest.mark.parametrize(
    "by_ca", [pytest.param(False, id="delegated"), pytest.param(True, id="ca")]
)
@pytest.mark.parametrize(
    ("name", "said"),
    [pytest.param("good", ": good", id="good"), pytest.param("revoked", ": revoked", id="revoked")],
)
def test_openssl_verifies_our_responses(
    pki: Pki, tmp_path: Path, by_ca: bool, name: str, said: str
) -> None:
    response = tmp_path / "resp.der"
    response.write_bytes(respond(pki, getattr(pki, name), by_ca=by_ca))
    ca = pki.pem("ca")
    result = _openssl(
        "ocsp", "-respin", response, "-issuer", ca, "-CAfile", ca, "-cert", pki.pem(name)
    )
    assert result.returncode == 0, result.stderr
    assert said in result.stdout
    assert "Response verify OK" in result.stderr
    if name == "revoked":
        assert "Reason: keyCompromise" in result.stdout


@needs_openssl
def test_openssl_refuses_a_forged_response(pki: Pki, tmp_path: Path) -> None:
    response = tmp_path / "resp.der"
    response.write_bytes(_foreign_key_as_ca(pki))
    ca = pki.pem("ca")
    result = _openssl(
        "ocsp", "-respin", response, "-issuer", ca, "-CAfile", ca, "-cert", pki.pem("good")
    )
    assert result.returncode != 0
    assert "Response Verify Failure" in result.stderr


@needs_openssl
def test_openssl_reads_our_request(pki: Pki, tmp_path: Path) -> None:
    request = tmp_path / "req.der"
    request.write_bytes(build_ocsp_request(pki.good, pki.ca.cert, nonce=b"abc"))
    result = _openssl("ocsp", "-reqin", request, "-req_text")
    assert result.returncode == 0, result.stderr
    serial = pki.good.serial_number
    shown = serial.to_bytes((serial.bit_length() + 7) // 8, "big").hex().upper()
    assert f"Serial Number: {shown}" in result.stdout
    assert "Hash Algorithm: sha1" in result.stdout
    assert "OCSP Nonce" in result.stdout


@needs_openssl
async def test_openssl_client_against_our_responder(pki: Pki, responder: Running) -> None:
    """``openssl ocsp -url``: POST, nonce sent and checked, signature checked against the CA."""
    assert OPENSSL is not None
    ca = pki.pem("ca")
    process = await asyncio.create_subprocess_exec(
        OPENSSL, "ocsp", "-issuer", str(ca), "-CAfile", str(ca), "-cert", str(pki.pem("good")),
        "-cert", str(pki.pem("revoked")), "-url", responder.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    # two certificates in one request: our responder answers malformedRequest, as documented
    assert b"malformedrequest" in (stdout + stderr).lower().replace(b" ", b"")
    process = await asyncio.create_subprocess_exec(
        OPENSSL, "ocsp", "-issuer", str(ca), "-CAfile", str(ca), "-cert", str(pki.pem("good")),
        "-url", responder.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr
    assert b": good" in stdout
    assert b"Response verify OK" in stderr
    assert b"nonce" not in stderr.lower()


# --- the CLI ----------------------------------------------------------------------------------


def _run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(ocsp_group, [str(a) for a in args], env={PASSPHRASE_ENV: None})
    return result.exit_code, result.stdout, " ".join(result.stderr.split())


@pytest.fixture
def served(pki: Pki, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``exchange ocsp serve`` in its own process, on a port it picks."""
    db = tmp_path / "revocations.sqlite"
    shutil.copy(pki.db, db)
    env = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
    with (tmp_path / "serve.log").open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-c",
                "from exchange.cli.ocsp import group; group(prog_name='exchange ocsp')",
                "serve", "--ca-dir", str(pki.ca_dir), "--db", str(db), "--port", "0",
                "--ready-line",
            ],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env,
        )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("READY "), (tmp_path / "serve.log").read_text()
        yield json.loads(line.removeprefix("READY "))["url"], db
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()  # type: ignore[union-attr]
    assert process.returncode == 0, (tmp_path / "serve.log").read_text()


def test_cli_serve_and_check(pki: Pki, served: tuple[str, Path], tmp_path: Path) -> None:
    url, db = served
    saved = tmp_path / "good.der"
    code, out, err = _run(
        "check", "--cert", pki.pem("good"), "--issuer", pki.pem("ca"), "--url", url,
        "--save", saved, "--json",
    )  # fmt: skip
    assert code == EXIT_OK, err
    assert json.loads(out)["status"] == "good"
    assert verify(pki, saved.read_bytes(), pki.good, now=dt.datetime.now(dt.UTC))

    code, out, err = _run(
        "check", "--cert", pki.pem("revoked"), "--issuer", pki.pem("ca"), "--url", url
    )
    assert code == EXIT_CHECK_FAILED
    assert "revoked" in err and "keyCompromise" in err

    code, out, err = _run(
        "check", "--cert", pki.pem("unrecorded"), "--issuer", pki.pem("ca"), "--url", url
    )
    assert code == EXIT_CHECK_FAILED
    assert "unknown" in err

    with RevocationStore(db) as store:
        served_by = [r for r in store.issued() if r.profile == "ocsp"]
        store.revoke(pki.good, "superseded")
    assert len(served_by) == 2, "the pki's responder and the one serve issued at start"
    code, out, err = _run(
        "check", "--cert", pki.pem("good"), "--issuer", pki.pem("ca"), "--url", url
    )
    assert code == EXIT_CHECK_FAILED
    assert "superseded" in err


def test_cli_check_of_a_dead_responder(pki: Pki) -> None:
    url = asyncio.run(_closed_port_url())
    code, _, err = _run("check", "--cert", pki.pem("good"), "--issuer", pki.pem("ca"), "--url", url)
    assert code == EXIT_CHECK_FAILED
    assert "unavailable" in err


def test_cli_serve_wants_both_responder_files(pki: Pki, tmp_path: Path) -> None:
    code, _, err = _run(
        "serve", "--ca-dir", pki.ca_dir, "--db", tmp_path / "r.sqlite",
        "--responder-key", pki.pem("ca"),
    )  # fmt: skip
    assert code == EXIT_USAGE
    assert (
        "Error: --responder-key: a delegated responder needs both its key and its certificate: "
        "give both, or neither" in " ".join(err.split())
    )


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["check"]], ids=lambda c: "-".join(c) or "group"
)
def test_cli_help_has_an_example(command: list[str]) -> None:
    code, out, _ = _run(*command, "--help")
    assert code == EXIT_OK
    assert "Example:" in out and "exchange ocsp" in out
