"""``exchange ca``: init, issue-auth, issue-sign, show, through click's runner on real files."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from exchange.cli.ca import PASSPHRASE_ENV, group
from exchange.cli.common import EXIT_OK, EXIT_USAGE
from exchange.errors import ConfigurationError
from exchange.identifiers import parse_member, parse_security_server
from exchange.trust import keys
from exchange.trust.profiles import (
    check_auth_profile,
    check_sign_profile,
    member_id_of_signing_cert,
    server_id_of_auth_cert,
)
from exchange.trust.validation import verify_chain


def run(*args: str | Path, env: Mapping[str, str | None] | None = None) -> Result:
    """Invoke ``exchange ca ...``; the caller's passphrase variable never leaks in."""
    return CliRunner().invoke(group, [str(a) for a in args], env=env or {PASSPHRASE_ENV: None})


def said(result: Result) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(result.stderr.split())


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    result = run("init", "--dir", tmp_path / "ca")
    assert result.exit_code == EXIT_OK, result.output
    return tmp_path / "ca"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.mark.parametrize(
    "command", [[], ["init"], ["issue-auth"], ["issue-sign"], ["show"]], ids=lambda c: "-".join(c)
)
def test_help_has_an_example(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == EXIT_OK
    assert "Example:" in result.stdout
    assert "exchange ca" in result.stdout


def test_init_creates_the_ca(tmp_path: Path) -> None:
    result = run("init", "--dir", tmp_path / "ca", "--name", "PS Government CA", "--json")
    assert result.exit_code == EXIT_OK, result.output
    shown = json.loads(result.stdout)
    cert = keys.load_certificate(tmp_path / "ca" / "ca.cert.pem")
    assert shown["sha256_fingerprint"] == keys.fingerprint(cert)
    assert shown["subject"] == "CN=PS Government CA"
    assert shown["profile"] == "ca"
    assert shown["key"] == str(tmp_path / "ca" / "ca.key.pem")
    assert (tmp_path / "ca" / "ca.key.pem").stat().st_mode & 0o777 == 0o600
    assert "not encrypted" in said(result)


def test_init_prints_paths_and_fingerprint(tmp_path: Path) -> None:
    result = run("init", "--dir", tmp_path / "ca")
    fingerprint = keys.fingerprint(keys.load_certificate(tmp_path / "ca" / "ca.cert.pem"))
    assert fingerprint in result.stdout
    assert str(tmp_path / "ca" / "ca.cert.pem") in result.stdout


def test_init_refuses_an_existing_ca(ca_dir: Path) -> None:
    result = run("init", "--dir", ca_dir)
    assert result.exit_code == EXIT_USAGE
    assert "already exists" in said(result)


def test_issue_auth(ca_dir: Path, tmp_path: Path) -> None:
    key_path, cert_path = tmp_path / "moi" / "auth.key.pem", tmp_path / "moi" / "auth.cert.pem"
    result = run(
        "issue-auth", "--ca-dir", ca_dir, "--server", "PS/GOV/MOI/ss1",
        "--out-key", key_path, "--out-cert", cert_path,
        "--dns", "ss1.moi.example", "--dns", "localhost", "--ip", "10.0.0.5", "--days", "30",
    )  # fmt: skip
    assert result.exit_code == EXIT_OK, result.output
    assert key_path.stat().st_mode & 0o777 == 0o600
    cert = keys.load_certificate(cert_path)
    key = keys.load_private_key(key_path)
    assert cert.public_key() == key.public_key()
    check_auth_profile(cert)
    assert server_id_of_auth_cert(cert) == parse_security_server("PS/GOV/MOI/ss1")
    assert verify_chain(cert, [keys.load_certificate(ca_dir / "ca.cert.pem")], _now())
    assert dt.timedelta(days=29) < cert.not_valid_after_utc - _now() <= dt.timedelta(days=30)
    assert "PS/GOV/MOI/ss1" in result.stdout


def test_issue_sign_json(ca_dir: Path, tmp_path: Path) -> None:
    key_path, cert_path = tmp_path / "sign.key.pem", tmp_path / "sign.cert.pem"
    result = run(
        "issue-sign", "--ca-dir", ca_dir, "--member", "PS/GOV/MOI",
        "--out-key", key_path, "--out-cert", cert_path, "--json",
    )  # fmt: skip
    assert result.exit_code == EXIT_OK, result.output
    shown = json.loads(result.stdout)
    assert shown["profile"] == "sign"
    assert shown["identifier"] == "PS/GOV/MOI"
    assert shown["key_usage"] == ["contentCommitment", "digitalSignature"]
    assert shown["extended_key_usage"] == ["documentSigning"]
    cert = keys.load_certificate(cert_path)
    check_sign_profile(cert)
    assert member_id_of_signing_cert(cert) == parse_member("PS/GOV/MOI")
    assert key_path.stat().st_mode & 0o777 == 0o600


def test_encrypted_ca_with_passphrase_file(tmp_path: Path) -> None:
    secret = tmp_path / "ca.pass"
    secret.write_text("correct horse\n")
    assert run("init", "--dir", tmp_path / "ca", "--passphrase-file", secret).exit_code == 0
    issue: list[str | Path] = [
        "issue-sign", "--ca-dir", tmp_path / "ca", "--member", "PS/GOV/MOI",
        "--out-key", tmp_path / "s.key", "--out-cert", tmp_path / "s.pem",
    ]  # fmt: skip
    refused = run(*issue)
    assert refused.exit_code == EXIT_USAGE
    assert "is encrypted" in said(refused)
    assert not (tmp_path / "s.key").exists()
    assert run(*issue, "--passphrase-file", secret).exit_code == EXIT_OK
    assert keys.load_private_key(tmp_path / "s.key")


def test_encrypted_ca_with_passphrase_from_environment(tmp_path: Path) -> None:
    env = {PASSPHRASE_ENV: "from the environment"}
    assert run("init", "--dir", tmp_path / "ca", env=env).exit_code == EXIT_OK
    assert b"ENCRYPTED" in (tmp_path / "ca" / "ca.key.pem").read_bytes()
    issue: list[str | Path] = [
        "issue-auth", "--ca-dir", tmp_path / "ca", "--server", "PS/GOV/MOI/ss1",
        "--out-key", tmp_path / "a.key", "--out-cert", tmp_path / "a.pem",
    ]  # fmt: skip
    wrong = run(*issue, env={PASSPHRASE_ENV: "wrong"})
    assert wrong.exit_code == EXIT_USAGE
    assert "wrong passphrase" in said(wrong)
    assert run(*issue, env=env).exit_code == EXIT_OK


def test_new_key_encrypted_with_out_passphrase_file(ca_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "key.pass"
    secret.write_text("server key secret")
    result = run(
        "issue-auth", "--ca-dir", ca_dir, "--server", "PS/GOV/MOI/ss1",
        "--out-key", tmp_path / "a.key", "--out-cert", tmp_path / "a.pem",
        "--out-passphrase-file", secret,
    )  # fmt: skip
    assert result.exit_code == EXIT_OK, result.output
    with pytest.raises(ConfigurationError, match="wrong passphrase"):
        keys.load_private_key(tmp_path / "a.key", b"nope")
    assert keys.load_private_key(tmp_path / "a.key", b"server key secret")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["issue-auth", "--server", "PS/GOV/MOI"], "expected 4 parts", id="three-part-server"
        ),
        pytest.param(
            ["issue-auth", "--server", "PS/GOV/MOI/ss 1"], "invalid", id="space-in-server"
        ),
        pytest.param(
            ["issue-auth", "--server", "PS/GOV/MOI/ss1", "--ip", "10.0.0.999"],
            "not an IPv4 or IPv6 address",
            id="bad-ip",
        ),
        pytest.param(
            ["issue-auth", "--server", "PS/GOV/MOI/ss1", "--dns", "пример.example"],
            "A-label",
            id="unicode-dns-name",
        ),
        pytest.param(["issue-sign", "--member", "PS/GOV"], "expected 3 parts", id="short-member"),
        pytest.param(
            ["issue-sign", "--member", "PS/GOV/MOI", "--days", "0"], "x>=1", id="zero-days"
        ),
    ],
)
def test_bad_arguments_are_usage_errors(
    ca_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    outputs = ["--out-key", str(tmp_path / "k.pem"), "--out-cert", str(tmp_path / "c.pem")]
    result = run(*args, "--ca-dir", ca_dir, *outputs)
    assert result.exit_code == EXIT_USAGE
    assert message in said(result)
    assert not (tmp_path / "k.pem").exists()


def test_issue_never_overwrites(ca_dir: Path, tmp_path: Path) -> None:
    existing = tmp_path / "existing.key.pem"
    existing.write_text("precious")
    result = run(
        "issue-sign", "--ca-dir", ca_dir, "--member", "PS/GOV/MOI",
        "--out-key", existing, "--out-cert", tmp_path / "new.pem",
    )  # fmt: skip
    assert result.exit_code == EXIT_USAGE
    assert "already exists" in said(result)
    assert existing.read_text() == "precious"
    assert not (tmp_path / "new.pem").exists()


def test_issue_needs_a_ca(tmp_path: Path) -> None:
    result = run(
        "issue-sign", "--ca-dir", tmp_path, "--member", "PS/GOV/MOI",
        "--out-key", tmp_path / "k", "--out-cert", tmp_path / "c",
    )  # fmt: skip
    assert result.exit_code == EXIT_USAGE
    assert "cannot read private key" in said(result)


def test_show(ca_dir: Path, tmp_path: Path) -> None:
    cert_path = tmp_path / "a.pem"
    run(
        "issue-auth", "--ca-dir", ca_dir, "--server", "PS/GOV/MOI/ss1",
        "--out-key", tmp_path / "a.key", "--out-cert", cert_path,
    )  # fmt: skip
    cert = keys.load_certificate(cert_path)
    human = run("show", cert_path)
    assert human.exit_code == EXIT_OK
    for text in ("CN=ss1,O=MOI,OU=GOV,serialNumber=PS", "CN=Exchange Test CA", "PS/GOV/MOI/ss1"):
        assert text in human.stdout
    shown = json.loads(run("show", cert_path, "--json").stdout)
    assert shown == {
        "subject": "CN=ss1,O=MOI,OU=GOV,serialNumber=PS",
        "issuer": "CN=Exchange Test CA",
        "serial": f"{cert.serial_number:x}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key_usage": ["digitalSignature"],
        "extended_key_usage": ["clientAuth", "serverAuth"],
        "sha256_fingerprint": keys.fingerprint(cert),
        "x5t#S256": shown["x5t#S256"],
        "profile": "auth",
        "identifier": "PS/GOV/MOI/ss1",
    }


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        pytest.param("not a certificate", EXIT_USAGE, "holds no PEM certificate", id="not-pem"),
        pytest.param(None, EXIT_USAGE, "does not exist", id="missing-file"),
    ],
)
def test_show_refuses(tmp_path: Path, content: str | None, code: int, message: str) -> None:
    path = tmp_path / "x.pem"
    if content is not None:
        path.write_text(content)
    result = run("show", path)
    assert result.exit_code == code
    assert message in said(result)


def test_show_a_foreign_certificate(tmp_path: Path) -> None:
    path = keys.save_certificate(
        tmp_path / "tls.pem", keys.self_signed_certificate(keys.generate_key(), "is.moi")
    )
    shown = json.loads(run("show", path, "--json").stdout)
    assert shown["profile"] is None and shown["identifier"] is None
