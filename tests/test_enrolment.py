"""Enrolment tokens: the CA service issues a certificate only against a token the CA's operator
issued for exactly that profile and identifier, once, for one key. Attacks over real HTTP on
127.0.0.1 and through ``exchange server request-certs``; the ``exchange ca token`` commands on a
real CA directory."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from exchange.cli.ca import PASSPHRASE_ENV
from exchange.cli.ca import group as ca_group
from exchange.cli.ca_service import TOKEN_ENV
from exchange.cli.common import EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE
from exchange.cli.server import group as server_group
from exchange.identifiers import parse_member, parse_security_server
from exchange.server.setup import InitResult, init_server
from exchange.trust import keys
from exchange.trust.ca import CertificateAuthority
from exchange.trust.ca_service import (
    CertificateRequest,
    CertificateRequestRefused,
    create_ca_app,
    issue_enrolled,
    request_certificate,
    running_ca_service,
)
from exchange.trust.enrolment import (
    ENROLMENT_FILE,
    EnrolmentStore,
    EnrolmentTokenUsed,
    Identifier,
)
from exchange.trust.profiles import ProfileName, server_id_of_auth_cert
from exchange.trust.revocation import REVOCATIONS_FILE, RevocationStore
from tests.test_ca_service import ServiceThread, _anchor, _csr

SS1 = parse_security_server("PS/GOV/MOI/ss1")
SS2 = parse_security_server("PS/GOV/MOI/ss2")
MOI = parse_member("PS/GOV/MOI")
MOF = parse_member("PS/GOV/MOF")
NOW = dt.datetime.now(dt.UTC)

Grants = tuple[tuple[ProfileName, Identifier], ...]


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    CertificateAuthority.create(tmp_path / "ca", "PS Test CA")
    return tmp_path / "ca"


@pytest.fixture
async def url(ca_dir: Path) -> AsyncIterator[str]:
    async with running_ca_service(create_ca_app(CertificateAuthority.load(ca_dir), ca_dir)) as port:
        yield f"http://127.0.0.1:{port}/"


def issue(
    ca_dir: Path,
    *grants: tuple[ProfileName, Identifier],
    now: dt.datetime = NOW,
    valid_for: dt.timedelta = dt.timedelta(days=1),
) -> str:
    with EnrolmentStore.of_ca_dir(ca_dir) as store:
        return store.issue(grants, now=now, valid_for=valid_for).text


def issued_serials(ca_dir: Path) -> list[int]:
    with RevocationStore(ca_dir / REVOCATIONS_FILE) as store:
        return [c.serial for c in store.issued()]


def _revoked(ca_dir: Path) -> str:
    token = issue(ca_dir, ("auth", SS1))
    with EnrolmentStore.of_ca_dir(ca_dir) as store:
        store.revoke(token.split(".")[1], now=NOW)
    return token


def _forged(ca_dir: Path) -> str:
    """A genuine token's id with a secret of the attacker's own."""
    prefix, token_id, _ = issue(ca_dir, ("auth", SS1)).split(".")
    return f"{prefix}.{token_id}.{'A' * 43}"


TOKENS: dict[str, Callable[[Path], str | None]] = {
    "no-token": lambda ca_dir: None,
    "malformed": lambda ca_dir: "let-me-in",
    "made-up": lambda ca_dir: "exe1.0123456789abcdef." + "B" * 43,
    "forged-secret": _forged,
    "other-server": lambda ca_dir: issue(ca_dir, ("auth", SS2)),
    "other-member-only": lambda ca_dir: issue(ca_dir, ("sign", MOF)),
    "sign-token-for-auth": lambda ca_dir: issue(ca_dir, ("sign", MOI)),
    "expired": lambda ca_dir: issue(
        ca_dir, ("auth", SS1), now=NOW - dt.timedelta(hours=2), valid_for=dt.timedelta(hours=1)
    ),
    "revoked": _revoked,
}

REFUSALS = [
    pytest.param("no-token", "Client.EnrolmentTokenRequired", "token is required", id="no-token"),
    pytest.param("malformed", "Client.InvalidEnrolmentToken", "malformed", id="malformed"),
    pytest.param("made-up", "Client.InvalidEnrolmentToken", "not one this CA", id="made-up"),
    pytest.param(
        "forged-secret", "Client.InvalidEnrolmentToken", "not one this CA", id="forged-secret"
    ),
    pytest.param(
        "other-server",
        "Client.EnrolmentTokenMismatch",
        "does not grant an authentication certificate for PS/GOV/MOI/ss1",
        id="token-for-another-server",
    ),
    pytest.param(
        "other-member-only",
        "Client.EnrolmentTokenMismatch",
        "it grants: signing certificate for PS/GOV/MOF",
        id="token-for-another-member",
    ),
    pytest.param(
        "sign-token-for-auth",
        "Client.EnrolmentTokenMismatch",
        "it grants: signing certificate for PS/GOV/MOI",
        id="signing-token-used-for-auth-cert",
    ),
    pytest.param("expired", "Client.EnrolmentTokenExpired", "expired at", id="expired"),
    pytest.param("revoked", "Client.EnrolmentTokenRevoked", "was revoked", id="revoked"),
]


@pytest.mark.parametrize(("case", "error_type", "reason"), REFUSALS)
async def test_the_ca_service_refuses_without_a_valid_token(
    url: str, ca_dir: Path, case: str, error_type: str, reason: str
) -> None:
    token = TOKENS[case](ca_dir)
    with pytest.raises(CertificateRequestRefused) as refused:
        await request_certificate(url, "auth", SS1, _csr(keys.generate_key()), token=token)
    assert refused.value.remote_type == error_type
    assert reason in refused.value.message
    assert issued_serials(ca_dir) == []


async def test_a_token_issues_each_granted_certificate_once_for_one_key(
    url: str, ca_dir: Path
) -> None:
    token = issue(ca_dir, ("auth", SS1), ("sign", MOI))
    key, other_key = keys.generate_key(), keys.generate_key()
    auth = await request_certificate(url, "auth", SS1, _csr(key), token=token)
    assert server_id_of_auth_cert(auth) == SS1
    # the same key again (an answer lost on the way): the same certificate, nothing new issued
    again = await request_certificate(url, "auth", SS1, _csr(key), token=token)
    assert again == auth
    # another key: refused, the token was used
    with pytest.raises(CertificateRequestRefused) as refused:
        await request_certificate(url, "auth", SS1, _csr(other_key), token=token)
    assert refused.value.remote_type == "Client.EnrolmentTokenUsed"
    assert "already used" in refused.value.message
    # the other grant of the token is still good, once
    sign = await request_certificate(url, "sign", MOI, _csr(other_key), token=token)
    assert sorted(issued_serials(ca_dir)) == sorted([auth.serial_number, sign.serial_number])


def test_racing_requests_with_one_token_get_one_certificate(ca_dir: Path) -> None:
    """Two CA service processes on one CA directory (each its own connection), eight
    requests with one token and eight different keys at once: one certificate, seven refusals."""
    token = issue(ca_dir, ("auth", SS1))
    ca = CertificateAuthority.load(ca_dir)

    def attempt(n: int) -> str:
        request = CertificateRequest("auth", SS1, _csr(keys.generate_key()), token)
        try:
            issue_enrolled(ca, ca_dir, request, days=30, now=NOW)
        except EnrolmentTokenUsed:
            return "refused"
        return "issued"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(attempt, range(8)))
    assert outcomes == ["issued"] + ["refused"] * 7
    assert len(issued_serials(ca_dir)) == 1


def test_the_store_keeps_no_secret(ca_dir: Path) -> None:
    """An insider with a copy of the CA's files finds no usable token in them."""
    token = issue(ca_dir, ("auth", SS1))
    secret = token.split(".")[2]
    for path in ca_dir.iterdir():
        if path.name.startswith(ENROLMENT_FILE):
            assert secret.encode() not in path.read_bytes()


def test_a_bad_csr_does_not_use_up_the_token(ca_dir: Path) -> None:
    token = issue(ca_dir, ("sign", MOI))
    ca = CertificateAuthority.load(ca_dir)
    from cryptography.hazmat.primitives.asymmetric import ec

    from exchange.trust.ca import InvalidCertificateRequest

    p384 = CertificateRequest("sign", MOI, _csr(ec.generate_private_key(ec.SECP384R1())), token)
    with pytest.raises(InvalidCertificateRequest):
        issue_enrolled(ca, ca_dir, p384, days=30, now=NOW)
    good = CertificateRequest("sign", MOI, _csr(keys.generate_key()), token)
    assert issue_enrolled(ca, ca_dir, good, days=30, now=NOW)


# --- the commands ------------------------------------------------------------------------------


def run(group: click.Group, *args: str | Path) -> Result:
    env = {PASSPHRASE_ENV: None, TOKEN_ENV: None}
    return CliRunner().invoke(group, [str(a) for a in args], env=env)


def said(result: Result) -> str:
    return " ".join(result.output.split())


@pytest.fixture
def ca_url(ca_dir: Path) -> Iterator[str]:
    with ServiceThread(create_ca_app(CertificateAuthority.load(ca_dir), ca_dir)) as base:
        yield base


@pytest.fixture
def new_server(tmp_path: Path) -> InitResult:
    return init_server(tmp_path / "ss1", SS1, _anchor(tmp_path), ca=None)


def test_token_issue_list_revoke(ca_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "moi.token"
    result = run(
        ca_group, "token", "issue", "--ca-dir", ca_dir, "--auth", SS1, "--sign", MOI,
        "--valid", "12h", "--note", "Interior", "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == EXIT_OK, result.output
    shown = json.loads(result.output)
    assert "token" not in shown and shown["token_file"] == str(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text().startswith(f"exe1.{shown['id']}.")
    assert [(g["profile"], g["identifier"]) for g in shown["grants"]] == [
        ("auth", str(SS1)),
        ("sign", str(MOI)),
    ]
    listed = run(ca_group, "token", "list", "--ca-dir", ca_dir)
    assert listed.exit_code == EXIT_OK
    assert f"{shown['id']} active" in said(listed) and "(Interior)" in said(listed)
    assert out.read_text().split(".")[2].strip() not in listed.output
    revoked = run(ca_group, "token", "revoke", "--ca-dir", ca_dir, shown["id"])
    assert revoked.exit_code == EXIT_OK, revoked.output
    again = run(ca_group, "token", "revoke", "--ca-dir", ca_dir, shown["id"])
    assert again.exit_code == EXIT_USAGE and "already revoked" in said(again)
    listed = run(ca_group, "token", "list", "--ca-dir", ca_dir, "--json")
    assert json.loads(listed.output)[0]["state"] == "revoked"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="nothing-granted"),
        pytest.param(["--auth", "PS/GOV/MOI"], id="auth-for-a-member"),
        pytest.param(["--sign", "PS/GOV/MOI/ss1"], id="sign-for-a-server"),
        pytest.param(["--auth", str(SS1), "--valid", "31d"], id="too-long"),
        pytest.param(["--auth", str(SS1), "--valid", "10"], id="no-unit"),
    ],
)
def test_token_issue_refuses_usage_errors(ca_dir: Path, args: list[str]) -> None:
    result = run(ca_group, "token", "issue", "--ca-dir", ca_dir, *args)
    assert result.exit_code == EXIT_USAGE, result.output
    with EnrolmentStore.of_ca_dir(ca_dir) as store:
        assert store.tokens() == []


def test_token_revoke_of_an_unknown_id(ca_dir: Path) -> None:
    issue(ca_dir, ("auth", SS1))
    result = run(ca_group, "token", "revoke", "--ca-dir", ca_dir, "0123456789abcdef")
    assert result.exit_code == EXIT_USAGE
    assert "no enrolment token 0123456789abcdef" in said(result)


@pytest.mark.parametrize(("case", "error_type", "reason"), REFUSALS)
def test_request_certs_reports_a_refused_token_and_installs_nothing(
    new_server: InitResult,
    ca_url: str,
    ca_dir: Path,
    tmp_path: Path,
    case: str,
    error_type: str,
    reason: str,
) -> None:
    token = TOKENS[case](ca_dir)
    args: list[str | Path] = ["--config", new_server.config, "--ca-url", ca_url]
    if token is not None:
        (tmp_path / "t").write_text(token)
        (tmp_path / "t").chmod(0o600)
        args += ["--token-file", tmp_path / "t"]
    result = run(server_group, "request-certs", *args)
    if token is None:
        assert result.exit_code == EXIT_USAGE
        assert "needs an enrolment token" in said(result)
    else:
        assert result.exit_code == EXIT_CHECK_FAILED, result.output
        assert error_type in said(result) and reason in said(result)
    assert not new_server.auth_cert.exists()
    assert issued_serials(ca_dir) == []


def test_request_certs_reads_the_token_from_the_environment(
    new_server: InitResult, ca_url: str, ca_dir: Path
) -> None:
    token = issue(ca_dir, ("auth", SS1), ("sign", MOI))
    result = CliRunner().invoke(
        server_group,
        ["request-certs", "--config", str(new_server.config), "--ca-url", ca_url],
        env={PASSPHRASE_ENV: None, TOKEN_ENV: token},
    )
    assert result.exit_code == EXIT_OK, result.output
    assert new_server.auth_cert.exists() and new_server.signing_certs[MOI].exists()
