"""The CA service: certificates from CSRs over real HTTP on 127.0.0.1, its refusals, its client,
and the operator commands (``ca serve``, ``ca sign-csr``, ``server request-certs``,
``server import-cert``) on real files."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import click
import pytest
from aiohttp import web
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from exchange.cli.ca import PASSPHRASE_ENV
from exchange.cli.ca import group as ca_group
from exchange.cli.ca_service import TOKEN_ENV  # (importing it registers the commands)
from exchange.cli.common import EXIT_OK, EXIT_USAGE
from exchange.cli.server import group as server_group
from exchange.errors import ClientError
from exchange.globalconf.anchor import Anchor
from exchange.identifiers import parse_member, parse_security_server
from exchange.server.config import load_server_config
from exchange.server.core import SecurityServer
from exchange.server.setup import InitResult, init_server
from exchange.trust import keys
from exchange.trust.ca import CertificateAuthority
from exchange.trust.ca_service import (
    CertificateRequestFailed,
    CertificateRequestRefused,
    create_ca_app,
    parse_certificate_request,
    request_certificate,
    running_ca_service,
)
from exchange.trust.enrolment import EnrolmentStore, Identifier
from exchange.trust.profiles import (
    ProfileName,
    check_auth_profile,
    check_sign_profile,
    member_id_of_signing_cert,
    server_id_of_auth_cert,
)
from exchange.trust.revocation import REVOCATIONS_FILE, RevocationStore

SS1 = parse_security_server("PS/GOV/MOI/ss1")
MOI = parse_member("PS/GOV/MOI")


def _csr(key: CertificateIssuerPrivateKeyTypes, cn: str = "request") -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def _tampered_csr() -> bytes:
    """A well-formed CSR whose self-signature no longer verifies (last signature byte flipped)."""
    der = bytearray(x509.load_pem_x509_csr(_csr(keys.generate_key())).public_bytes(_DER))
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


_DER = serialization.Encoding.DER


def _body(profile: str, identifier: str, csr: bytes, token: str = "") -> bytes:
    fields = {"profile": profile, "identifier": identifier, "csr": csr.decode()}
    return json.dumps({**fields, "token": token} if token else fields).encode()


def token_for(ca_dir: Path, *grants: tuple[ProfileName, Identifier]) -> str:
    """The CA's operator issues an enrolment token for ``grants`` (default: SS1 and MOI)."""
    with EnrolmentStore.of_ca_dir(ca_dir) as store:
        wanted = grants or (("auth", SS1), ("sign", MOI))
        return store.issue(wanted, now=dt.datetime.now(dt.UTC)).text


def _status(ca_dir: Path, cert: x509.Certificate) -> str | None:
    with RevocationStore(ca_dir / REVOCATIONS_FILE) as store:
        found = store.find(cert)
    return None if found is None else found.status


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    CertificateAuthority.create(tmp_path / "ca", "PS Test CA")
    return tmp_path / "ca"


@pytest.fixture
def ca(ca_dir: Path) -> CertificateAuthority:
    return CertificateAuthority.load(ca_dir)


@pytest.fixture
async def url(ca: CertificateAuthority, ca_dir: Path) -> AsyncIterator[str]:
    async with running_ca_service(create_ca_app(ca, ca_dir)) as port:
        yield f"http://127.0.0.1:{port}/"


# --- the service and its client ------------------------------------------------------------------


async def test_auth_csr_gives_a_recorded_auth_certificate(url: str, ca_dir: Path) -> None:
    key = keys.generate_key()
    cert = await request_certificate(url, "auth", SS1, _csr(key), token=token_for(ca_dir))
    check_auth_profile(cert)
    assert server_id_of_auth_cert(cert) == SS1
    assert cert.public_key() == key.public_key()
    assert _status(ca_dir, cert) == "good"


async def test_sign_csr_gives_a_recorded_signing_certificate(url: str, ca_dir: Path) -> None:
    key = keys.generate_key()
    cert = await request_certificate(url, "sign", MOI, _csr(key), token=token_for(ca_dir))
    check_sign_profile(cert)
    assert member_id_of_signing_cert(cert) == MOI
    assert cert.public_key() == key.public_key()
    assert _status(ca_dir, cert) == "good"


async def test_issue_answer_and_ca_endpoints(
    url: str, ca: CertificateAuthority, ca_dir: Path
) -> None:
    async with aiohttp.ClientSession() as session:
        body = _body("sign", "PS/GOV/MOI", _csr(keys.generate_key()), token_for(ca_dir))
        async with session.post(url + "certificates", data=body) as response:
            assert response.status == 201
            issued = await response.json()
        async with session.get(url + "ca.pem") as response:
            assert keys.cert_from_pem(await response.text()) == ca.cert
        async with session.get(url + "health") as response:
            assert (await response.json())["status"] == "ok"
    cert = keys.cert_from_pem(issued["certificate"])
    assert issued["serial"] == f"{cert.serial_number:x}"
    assert dt.datetime.fromisoformat(issued["not_after"]) == cert.not_valid_after_utc


def _bad_requests() -> list[object]:
    good = _csr(keys.generate_key())
    p384 = _csr(ec.generate_private_key(ec.SECP384R1()))
    rsa_csr = _csr(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    bad_csr = "Client.InvalidCertificateRequest"
    # "TOKEN" in a body is replaced by a valid token for SS1's auth and MOI's signing cert
    return [
        pytest.param(b"{", 400, "Client.BadRequest", id="not-json"),
        pytest.param(b"[]", 400, "Client.BadRequest", id="json-array"),
        pytest.param(b'{"profile": "auth"}', 400, "Client.BadRequest", id="missing-fields"),
        pytest.param(
            json.dumps({"profile": "auth", "identifier": "PS/GOV/MOI/ss1", "csr": 1}).encode(),
            400,
            "Client.BadRequest",
            id="csr-not-a-string",
        ),
        pytest.param(
            json.dumps(
                {"profile": "auth", "identifier": "PS/GOV/MOI/ss1", "csr": "x", "dns": "a"}
            ).encode(),
            400,
            "Client.BadRequest",
            id="unknown-field",
        ),
        pytest.param(
            _body("tls", "PS/GOV/MOI/ss1", good, "TOKEN"), 400, bad_csr, id="unknown-profile"
        ),
        pytest.param(
            _body("auth", "PS/GOV/MOI", good), 400, "Client.InvalidIdentifier", id="auth-to-member"
        ),
        pytest.param(
            _body("sign", "PS/GOV/MOI/ss1", good), 400, "Client.InvalidIdentifier", id="sign-to-ss"
        ),
        pytest.param(
            _body("sign", "PS//MOI", good), 400, "Client.InvalidIdentifier", id="empty-part"
        ),
        pytest.param(
            _body("auth", "PS/GOV/MOI/ss1", b"hello", "TOKEN"), 400, bad_csr, id="csr-not-pem"
        ),
        pytest.param(
            _body("auth", "PS/GOV/MOI/ss1", _tampered_csr(), "TOKEN"),
            400,
            bad_csr,
            id="csr-bad-signature",
        ),
        pytest.param(
            _body("sign", "PS/GOV/MOI", p384, "TOKEN"), 400, bad_csr, id="sign-key-not-p256"
        ),
        pytest.param(_body("auth", "PS/GOV/MOI/ss1", rsa_csr, "TOKEN"), 400, bad_csr, id="rsa-key"),
        pytest.param(
            json.dumps(
                {"profile": "auth", "identifier": "PS/GOV/MOI/ss1", "csr": "x", "token": 7}
            ).encode(),
            400,
            "Client.BadRequest",
            id="token-not-a-string",
        ),
        pytest.param(b"x" * (65 * 1024), 413, "Client.RequestTooLarge", id="too-large"),
    ]


@pytest.mark.parametrize(("body", "status", "error_type"), _bad_requests())
async def test_bad_requests_are_refused_and_nothing_issued(
    url: str, ca_dir: Path, body: bytes, status: int, error_type: str
) -> None:
    body = body.replace(b'"TOKEN"', json.dumps(token_for(ca_dir)).encode())
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url + "certificates", data=body, headers={"Content-Type": "application/json"}
        ) as response,
    ):
        assert response.status == status
        answer = await response.json()
    assert answer["type"] == error_type
    assert answer["message"] and answer["detail"]
    with RevocationStore(ca_dir / REVOCATIONS_FILE) as store:
        assert store.issued() == []
    with EnrolmentStore.of_ca_dir(ca_dir) as tokens:
        assert all(g.used_at is None for t in tokens.tokens() for g in t.grants)


async def test_client_reports_a_refusal_with_the_ca_error_type(url: str, ca_dir: Path) -> None:
    with pytest.raises(CertificateRequestRefused) as refused:
        await request_certificate(
            url, "sign", MOI, _csr(ec.generate_private_key(ec.SECP384R1())), token=token_for(ca_dir)
        )
    assert refused.value.remote_type == "Client.InvalidCertificateRequest"
    assert "P-256" in refused.value.message


async def test_client_reports_an_unreachable_ca(ca: CertificateAuthority, ca_dir: Path) -> None:
    async with running_ca_service(create_ca_app(ca, ca_dir)) as port:
        pass
    with pytest.raises(CertificateRequestFailed, match="could not be reached"):
        await request_certificate(
            f"http://127.0.0.1:{port}/", "auth", SS1, _csr(keys.generate_key()), token=None
        )


_FIELD = st.sampled_from(["profile", "identifier", "csr", "token", "dns"])
_VALUE = st.one_of(st.sampled_from(["auth", "sign", "PS/GOV/MOI", "PS/GOV/MOI/ss1"]), st.text())


@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(_FIELD, st.one_of(_VALUE, st.integers(), st.none()), max_size=5),
    )
)
def test_request_parser_parses_or_raises_a_client_error(data: bytes | dict[str, object]) -> None:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    with contextlib.suppress(ClientError):
        parse_certificate_request(body)


# --- the operator commands -----------------------------------------------------------------------


class ServiceThread:
    """The CA service on its own event loop in a thread, for commands that run their own loop."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.stop: asyncio.Event | None = None
        self.port = 0
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ca-service-test")

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:
            self.failure = exc
        finally:
            self.started.set()
            self.loop.close()

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        async with running_ca_service(self.app) as port:
            self.port = port
            self.started.set()
            await self.stop.wait()

    def __enter__(self) -> str:
        self.thread.start()
        assert self.started.wait(30), "CA service did not start"
        assert self.failure is None, self.failure
        return f"http://127.0.0.1:{self.port}/"

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


@pytest.fixture
def ca_url(ca: CertificateAuthority, ca_dir: Path) -> Iterator[str]:
    with ServiceThread(create_ca_app(ca, ca_dir)) as base:
        yield base


def _anchor(tmp_path: Path) -> Path:
    cert = keys.self_signed_certificate(keys.generate_key(), "PS central")
    anchor = Anchor(
        instance="PS",
        download_url="http://127.0.0.1:9/globalconf",
        generated_at=int(time.time()),
        verification_certs=(keys.cert_pem(cert),),
    )
    return anchor.save(tmp_path / "anchor.json")


@pytest.fixture
def new_server(tmp_path: Path) -> InitResult:
    return init_server(tmp_path / "ss1", SS1, _anchor(tmp_path), ca=None)


def run(group: click.Group, *args: str | Path) -> Result:
    return CliRunner().invoke(
        group, [str(a) for a in args], env={PASSPHRASE_ENV: None, TOKEN_ENV: None}
    )


def said(result: Result) -> str:
    return " ".join(result.output.split())


def _loads(config: Path) -> None:
    """The configuration is complete: constructing the server checks its keys and certificates."""
    server = SecurityServer(load_server_config(config))
    asyncio.run(server.stop())


@pytest.mark.parametrize(
    ("group", "command"),
    [
        (ca_group, "serve"),
        (ca_group, "sign-csr"),
        (server_group, "request-certs"),
        (server_group, "import-cert"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_help_has_an_example(group: click.Group, command: str) -> None:
    result = run(group, command, "--help")
    assert result.exit_code == EXIT_OK
    assert "Example:" in result.output


def token_file(ca_dir: Path, path: Path, *grants: tuple[ProfileName, Identifier]) -> Path:
    path.write_text(token_for(ca_dir, *grants) + "\n")
    path.chmod(0o600)
    return path


def test_a_token_file_readable_by_others_is_refused(
    new_server: InitResult, ca_url: str, ca_dir: Path, tmp_path: Path
) -> None:
    """Red team: a token file any local user can read lets the first reader enrol a key of
    theirs under the token's identity. Refused as a private key readable by others is."""
    token = token_file(ca_dir, tmp_path / "ss1.token")
    token.chmod(0o644)
    result = run(
        server_group, "request-certs", "--config", new_server.config, "--ca-url", ca_url,
        "--token-file", token,
    )  # fmt: skip
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"is open to others (mode 0o644); run: chmod 600 {token}" in said(result)
    assert not new_server.auth_cert.exists()


def test_request_certs_installs_certificates_the_server_loads(
    new_server: InitResult, ca_url: str, ca_dir: Path, tmp_path: Path
) -> None:
    assert [p.name for p in new_server.csrs] == ["auth.csr.pem", "sign-MOI.csr.pem"]
    token = token_file(ca_dir, tmp_path / "ss1.token")
    result = run(
        server_group, "request-certs", "--config", new_server.config, "--ca-url", ca_url,
        "--token-file", token,
    )  # fmt: skip
    assert result.exit_code == EXIT_OK, result.output
    assert "next: exchange server register --config" in said(result)
    auth = keys.load_certificate(new_server.auth_cert)
    sign = keys.load_certificate(new_server.signing_certs[MOI])
    assert server_id_of_auth_cert(auth) == SS1
    assert member_id_of_signing_cert(sign) == MOI
    assert _status(ca_dir, auth) == _status(ca_dir, sign) == "good"
    _loads(new_server.config)
    again = run(
        server_group, "request-certs", "--config", new_server.config, "--ca-url", ca_url,
        "--token-file", token,
    )  # fmt: skip
    assert again.exit_code == EXIT_OK, again.output
    assert said(again).count("already installed") == 2
    assert keys.load_certificate(new_server.auth_cert) == auth


def test_request_certs_without_a_csr_says_what_to_do(
    new_server: InitResult, ca_url: str, ca_dir: Path, tmp_path: Path
) -> None:
    new_server.csrs[1].unlink()
    result = run(
        server_group, "request-certs", "--config", new_server.config, "--ca-url", ca_url,
        "--token-file", token_file(ca_dir, tmp_path / "ss1.token"),
    )  # fmt: skip
    assert result.exit_code == EXIT_USAGE
    assert "import-cert" in said(result)


def test_request_certs_reports_an_unreachable_ca(
    new_server: InitResult, ca_dir: Path, tmp_path: Path
) -> None:
    result = run(
        server_group,
        "request-certs",
        "--config",
        new_server.config,
        "--ca-url",
        "http://127.0.0.1:9/",
        "--token-file",
        token_file(ca_dir, tmp_path / "ss1.token"),
    )
    assert result.exit_code != EXIT_OK
    assert "could not be reached" in said(result)
    assert not new_server.auth_cert.exists()


def test_sign_csr_then_import_cert(new_server: InitResult, ca_dir: Path, tmp_path: Path) -> None:
    auth_out, sign_out = tmp_path / "auth.pem", tmp_path / "sign.pem"
    for csr, profile, identifier, out in [
        (new_server.csrs[0], "auth", str(SS1), auth_out),
        (new_server.csrs[1], "sign", str(MOI), sign_out),
    ]:
        result = run(
            ca_group, "sign-csr", "--ca-dir", ca_dir, "--csr", csr,
            "--profile", profile, "--identifier", identifier, "-o", out,
        )  # fmt: skip
        assert result.exit_code == EXIT_OK, result.output
        assert "import-cert" in said(result)
        assert _status(ca_dir, keys.load_certificate(out)) == "good"
    result = run(
        server_group, "import-cert", "--config", new_server.config,
        "--auth", auth_out, "--sign", f"{MOI}={sign_out}",
    )  # fmt: skip
    assert result.exit_code == EXIT_OK, result.output
    assert keys.load_certificate(new_server.auth_cert) == keys.load_certificate(auth_out)
    _loads(new_server.config)


def test_sign_csr_refuses_a_malformed_identifier(
    new_server: InitResult, ca_dir: Path, tmp_path: Path
) -> None:
    result = run(
        ca_group, "sign-csr", "--ca-dir", ca_dir, "--csr", new_server.csrs[0],
        "--profile", "auth", "--identifier", "PS/GOV/MOI", "-o", tmp_path / "x.pem",
    )  # fmt: skip
    assert result.exit_code == EXIT_USAGE
    assert not (tmp_path / "x.pem").exists()


def _wrong_certs(
    ca: CertificateAuthority, result: InitResult
) -> dict[str, tuple[str, x509.Certificate, str]]:
    auth_key = keys.load_private_key(result.config.parent / "keys/auth.key.pem").public_key()
    sign_key = keys.load_private_key(result.config.parent / "keys/sign-MOI.key.pem").public_key()
    other = keys.generate_key().public_key()
    other_ss = parse_security_server("PS/GOV/MOI/ss2")
    expired = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    return {
        "other-key": ("--auth", ca.issue_auth_cert(other, SS1), "another key"),
        "sign-as-auth": (
            "--auth",
            ca.issue_sign_cert(auth_key, MOI),
            "not an authentication certificate",
        ),
        "auth-as-sign": (
            "--sign",
            ca.issue_auth_cert(sign_key, SS1),
            "not a signing certificate",
        ),
        "other-member": (
            "--sign",
            ca.issue_sign_cert(sign_key, parse_member("PS/GOV/MOF")),
            "issued to PS/GOV/MOF",
        ),
        "other-server": (
            "--auth",
            ca.issue_auth_cert(auth_key, other_ss),
            "issued to PS/GOV/MOI/ss2",
        ),
        "expired": (
            "--auth",
            ca.issue_auth_cert(auth_key, SS1, days=1, not_before=expired),
            "expired",
        ),
    }


@pytest.mark.parametrize(
    "case", ["other-key", "sign-as-auth", "auth-as-sign", "other-member", "other-server", "expired"]
)
def test_import_cert_refuses_wrong_certificates(
    case: str, new_server: InitResult, ca: CertificateAuthority, tmp_path: Path
) -> None:
    option, cert, reason = _wrong_certs(ca, new_server)[case]
    path = keys.save_certificate(tmp_path / "wrong.pem", cert)
    value = str(path) if option == "--auth" else f"{MOI}={path}"
    result = run(server_group, "import-cert", "--config", new_server.config, option, value)
    assert result.exit_code == EXIT_USAGE
    assert reason in said(result)
    assert "nothing was installed" in said(result)
    assert not new_server.auth_cert.exists()
    assert not new_server.signing_certs[MOI].exists()


def test_import_cert_refuses_a_member_without_a_signing_key(
    new_server: InitResult, ca: CertificateAuthority, tmp_path: Path
) -> None:
    path = keys.save_certificate(
        tmp_path / "mof.pem", ca.issue_sign_cert(keys.generate_key().public_key(), MOI)
    )
    result = run(
        server_group, "import-cert", "--config", new_server.config, "--sign", f"PS/GOV/MOF={path}"
    )
    assert result.exit_code == EXIT_USAGE
    assert "no signing key for PS/GOV/MOF" in said(result)


# --- exchange ca serve as a process --------------------------------------------------------------


def _serve(ca_dir: Path, *extra: str) -> subprocess.Popen[str]:
    """``exchange ca serve`` on a free port as its own process (the passphrase not inherited)."""
    code = "import sys, exchange.cli.ca_service; from exchange.cli.ca import group; group()"
    env = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
    args = ["serve", "--ca-dir", str(ca_dir), "--port", "0", "--ready-line", *extra]
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


async def _ready(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = await asyncio.to_thread(process.stdout.readline)
    assert line.startswith("READY "), line
    ready: dict[str, Any] = json.loads(line.removeprefix("READY "))
    return ready


async def _stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM, then its stderr; it must exit 0."""
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, stderr
    return stderr


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.communicate()


async def test_serve_prints_ready_and_stops_on_sigterm(ca_dir: Path) -> None:
    process = _serve(ca_dir)
    try:
        ready = await _ready(process)
        cert = await request_certificate(
            ready["url"], "auth", SS1, _csr(keys.generate_key()), token=token_for(ca_dir)
        )
        assert _status(ca_dir, cert) == "good"
        await _stop(process)
    finally:
        _kill(process)


@pytest.mark.skipif(sys.platform != "linux", reason="needs 127.0.0.2 routed to loopback")
@pytest.mark.parametrize(
    ("host", "reachable_elsewhere", "warned"),
    [
        pytest.param(None, False, False, id="default-loopback"),
        pytest.param("0.0.0.0", True, True, id="every-interface-warns"),
    ],
)
async def test_serve_binds_loopback_unless_told_otherwise_and_warns_then(
    ca_dir: Path, host: str | None, reachable_elsewhere: bool, warned: bool
) -> None:
    """The CA service takes enrolment tokens over plain HTTP: by default another address of this
    host (127.0.0.2) cannot connect; told to listen on every interface it can, and the operator
    is warned on stderr that tokens would cross the network in the clear."""
    process = _serve(ca_dir, *(["--host", host] if host is not None else []))
    try:
        port = (await _ready(process))["port"]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
        if reachable_elsewhere:
            _, writer = await asyncio.open_connection("127.0.0.2", port)
            writer.close()
            await writer.wait_closed()
        else:
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.2", port)
        stderr = await _stop(process)
        assert ("enrolment tokens cross the network in the clear" in stderr) is warned
    finally:
        _kill(process)
