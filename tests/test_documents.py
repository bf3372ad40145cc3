"""Signed documents (receipts, refunds, certificates of residence) verified offline: what a
forger, another ministry or a changed byte cannot get past, with standard tools agreeing."""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.identifiers import parse_member, parse_security_server
from exchange.protocol.canonical import b64url, canonical_bytes
from exchange.protocol.jws import Signer, sign_compact
from exchange.trust.ca import CertificateAuthority
from exchange.trust.documents import (
    RECEIPT,
    RESIDENCE_CERTIFICATE,
    DocumentError,
    DocumentSigner,
    verify_document,
)
from exchange.trust.keys import cert_pem, generate_key

# a moment after the test CA is made (documents are checked against certificates valid then)
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=5)
MOF = parse_member("PS/GOV/MOF")
MOI = parse_member("PS/GOV/MOI")
RECEIPT_CLAIMS = {"receipt_number": "MOF-2026-000001", "amount": "10.00", "currency": "ILS"}


@dataclass
class Pki:
    ca: CertificateAuthority
    foreign: CertificateAuthority
    finance: DocumentSigner
    interior: DocumentSigner


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("documents")
    ca = CertificateAuthority.create(root / "ca", "PS Test CA")
    foreign = CertificateAuthority.create(root / "foreign", "PS Test CA")  # same name, other key

    def signer(member: Any, by: CertificateAuthority = ca) -> DocumentSigner:
        key = generate_key()
        start = NOW - dt.timedelta(days=10)
        cert = by.issue_sign_cert(key.public_key(), member, not_before=start, days=365)
        return DocumentSigner(key, (cert, by.cert))

    return Pki(ca, foreign, signer(MOF), signer(MOI))


def _x5c(*certs: Any) -> list[str]:
    return [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in certs]


def _forge(
    key: ec.EllipticCurvePrivateKey,
    chain: tuple[Any, ...],
    payload: dict[str, Any],
    **header: Any,
) -> str:
    from exchange.protocol.jws import cert_thumbprint

    fields = {"alg": "ES256", "typ": RECEIPT, "x5c": _x5c(*chain),
              "x5t#S256": cert_thumbprint(chain[0]), **header}  # fmt: skip
    return sign_compact(key, fields, canonical_bytes(payload))


def _payload(**extra: Any) -> dict[str, Any]:
    return {**RECEIPT_CLAIMS, "iss": "PS/GOV/MOF", "iat": int(NOW.timestamp()), **extra}


def test_a_receipt_verifies_with_the_approved_ca(pki: Pki) -> None:
    token = pki.finance.sign(RECEIPT, RECEIPT_CLAIMS, NOW)
    verified = verify_document(token, [pki.ca.cert], typ=RECEIPT, issuer=MOF)
    assert verified.claims == RECEIPT_CLAIMS
    assert (verified.typ, verified.issuer, verified.issued_at) == (RECEIPT, MOF, NOW)
    assert verified.ca.subject == pki.ca.cert.subject


def test_any_jose_library_verifies_the_signature_with_the_x5c_key(pki: Pki) -> None:
    """PyJWT (a stock JOSE library) with the key of x5c[0] reads the same claims."""
    signed_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    token = pki.finance.sign(RECEIPT, RECEIPT_CLAIMS, signed_at)
    header = jwt.get_unverified_header(token)
    leaf = base64.b64decode(header["x5c"][0])
    from cryptography import x509

    key = x509.load_der_x509_certificate(leaf).public_key()
    claims = jwt.decode(token, key=key, algorithms=["ES256"])  # type: ignore[arg-type]
    assert claims == {**RECEIPT_CLAIMS, "iss": "PS/GOV/MOF", "iat": int(signed_at.timestamp())}
    assert header["typ"] == RECEIPT


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_verifies_the_signers_certificate_against_the_trust_bundle(
    pki: Pki, tmp_path: Path
) -> None:
    token = pki.finance.sign(RECEIPT, RECEIPT_CLAIMS, NOW)
    leaf = base64.b64decode(jwt.get_unverified_header(token)["x5c"][0])
    (tmp_path / "signer.der").write_bytes(leaf)
    (tmp_path / "bundle.pem").write_text(cert_pem(pki.ca.cert))
    pem = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(tmp_path / "signer.der")],
                         capture_output=True, check=True).stdout  # fmt: skip
    (tmp_path / "signer.pem").write_bytes(pem)
    at = str(int(NOW.timestamp()))
    command = ["openssl", "verify", "-attime", at, "-CAfile", str(tmp_path / "bundle.pem")]
    ok = subprocess.run([*command, str(tmp_path / "signer.pem")], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stdout + ok.stderr


def _changed_amount(pki: Pki) -> str:
    head, _, sig = pki.finance.sign(RECEIPT, RECEIPT_CLAIMS, NOW).split(".")
    return f"{head}.{b64url(canonical_bytes(_payload(amount='1.00')))}.{sig}"


def _other_ministry_claims_finance(pki: Pki) -> str:
    """Interior's genuine key signs a receipt that says Finance issued it."""
    return _forge(pki.interior.key, pki.interior.chain, _payload())


def _foreign_ca(pki: Pki) -> str:
    """A forger's own CA (same name as the approved one) certifies a key for Finance."""
    key = generate_key()
    cert = pki.foreign.issue_sign_cert(key.public_key(), MOF, not_before=NOW, days=30)
    return _forge(key, (cert, pki.ca.cert), _payload())


def _auth_certificate(pki: Pki) -> str:
    """A security server's TLS key signs a receipt."""
    key = generate_key()
    server = parse_security_server("PS/GOV/MOF/ss1")
    cert = pki.ca.issue_auth_cert(key.public_key(), server, not_before=NOW, days=30)
    return _forge(key, (cert,), _payload())


def _expired_when_signed(pki: Pki) -> str:
    key = generate_key()
    start = NOW - dt.timedelta(days=100)
    cert = pki.ca.issue_sign_cert(key.public_key(), MOF, not_before=start, days=30)
    return _forge(key, (cert,), _payload())


def _exchange_message(pki: Pki) -> str:
    """A signed exchange message (no typ) offered as a document."""
    return Signer(pki.finance.key, pki.finance.chain[0]).sign(canonical_bytes(_payload()))


def _alg_none(pki: Pki) -> str:
    token = _forge(pki.finance.key, pki.finance.chain, _payload())
    header = {"alg": "none", "typ": RECEIPT, "x5c": _x5c(pki.finance.chain[0])}
    return f"{b64url(orjson.dumps(header))}.{token.split('.')[1]}."


CASES: list[Any] = [
    pytest.param(_changed_amount, "signature does not verify", id="amount-changed"),
    pytest.param(
        _other_ministry_claims_finance,
        "iss 'PS/GOV/MOF' is not the signer, PS/GOV/MOI",
        id="interior-signs-as-finance",
    ),
    pytest.param(_foreign_ca, "not issued by an approved CA", id="forger-ca-same-name"),
    pytest.param(_auth_certificate, "is not a signing certificate", id="tls-key"),
    pytest.param(_expired_when_signed, "expired at", id="expired-when-signed"),
    pytest.param(_exchange_message, "not a signed document: typ is 'None'", id="exchange-message"),
    pytest.param(_alg_none, "unsupported JWS algorithm 'none'", id="alg-none"),
    pytest.param(
        lambda p: _forge(p.finance.key, p.finance.chain, _payload(), x5c=["bm90IGEgY2VydA=="]),
        "x5c[0] is not a base64 DER certificate",
        id="x5c-garbage",
    ),
    pytest.param(
        lambda p: _forge(p.finance.key, p.finance.chain, _payload(), x5c=[]),
        "the header carries no x5c certificate chain",
        id="x5c-empty",
    ),
    pytest.param(
        lambda p: _forge(p.finance.key, p.finance.chain, {**RECEIPT_CLAIMS, "iss": "PS/GOV/MOF"}),
        "iat is not a time in seconds",
        id="no-iat",
    ),
    pytest.param(
        lambda p: _forge(p.finance.key, p.finance.chain, _payload(), typ="JWT"),
        "not a signed document: typ is 'JWT'",
        id="plain-jwt",
    ),
    pytest.param(lambda p: "a.b", "expected three dot-separated segments", id="not-a-jws"),
]


@pytest.mark.parametrize(("make", "reason"), CASES)
def test_forged_or_changed_documents_are_refused(
    pki: Pki, make: Callable[[Pki], str], reason: str
) -> None:
    with pytest.raises(DocumentError) as refused:
        verify_document(make(pki), [pki.ca.cert])
    assert reason in refused.value.message


def test_the_verifier_says_what_it_expected(pki: Pki) -> None:
    certificate = pki.interior.sign(RESIDENCE_CERTIFICATE, {"certificate_number": "1"}, NOW)
    with pytest.raises(DocumentError, match="signed by PS/GOV/MOI, not PS/GOV/MOF"):
        verify_document(certificate, [pki.ca.cert], issuer=MOF)
    with pytest.raises(DocumentError, match="a exchange-residence-certificate"):
        verify_document(certificate, [pki.ca.cert], typ=RECEIPT)
    # the x5c's own CA certificate is never trusted: only the verifier's are
    with pytest.raises(DocumentError, match="not issued by an approved CA"):
        verify_document(certificate, [pki.foreign.cert])


def test_a_signer_refuses_a_key_that_is_not_its_certificates(pki: Pki) -> None:
    with pytest.raises(ValueError, match="not the key of the signing certificate"):
        DocumentSigner(generate_key(), pki.finance.chain)
    with pytest.raises(ValueError, match="set by the signer"):
        pki.finance.sign(RECEIPT, {"iss": "PS/GOV/MOI"}, NOW)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exchange", "audit", "document", "verify", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_cli_verifies_a_saved_answer_and_refuses_a_changed_one(pki: Pki, tmp_path: Path) -> None:
    token = pki.finance.sign(RECEIPT, RECEIPT_CLAIMS, NOW)
    answer = tmp_path / "receipt.json"
    answer.write_bytes(orjson.dumps({**RECEIPT_CLAIMS, "document": token}))
    bundle = tmp_path / "trust-bundle.pem"
    bundle.write_text(cert_pem(pki.ca.cert))
    ok = _cli(str(answer), "--trust", str(bundle), "--issuer", "PS/GOV/MOF", "--type", "receipt")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"exchange-receipt+jwt signed by PS/GOV/MOF at {NOW.isoformat()}" in ok.stdout
    assert "  amount: 10.00" in ok.stdout and ok.stdout.rstrip().endswith("verified")
    changed = tmp_path / "changed.jws"
    changed.write_text(_changed_amount(pki))
    refused = _cli(str(changed), "--trust", str(bundle))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "signature does not verify" in refused.stdout + refused.stderr
    # the signature is intact, but the printed amount is not the signed one
    printed = tmp_path / "printed.json"
    printed.write_bytes(orjson.dumps({**RECEIPT_CLAIMS, "amount": "1.00", "document": token}))
    altered = _cli(str(printed), "--trust", str(bundle))
    assert altered.returncode == 1, altered.stdout + altered.stderr
    assert 'the answer states amount = "1.00", but the signed document says "10.00"' in (
        altered.stdout + altered.stderr)  # fmt: skip
    usage = _cli(str(answer), "--trust", str(bundle), "--type", "invoice")
    assert usage.returncode == 2 and "--type is one of" in usage.stdout + usage.stderr
    # the same for programs: the verified fields, or the error, as one JSON document
    as_json = _cli(str(answer), "--trust", str(bundle), "--issuer", "PS/GOV/MOF", "--json")
    assert as_json.returncode == 0, as_json.stderr
    verified = orjson.loads(as_json.stdout)
    assert verified["issuer"] == "PS/GOV/MOF" and verified["fields"]["amount"] == "10.00"
    refused = _cli(str(printed), "--trust", str(bundle), "--json")
    assert refused.returncode == 1 and orjson.loads(refused.stdout)["error"]["exit_code"] == 1
