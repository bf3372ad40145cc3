"""``exchange server status``: what an operator reads about a server without starting it.

It printed nested values as Python dicts (``auth_cert: {'subject': ...}``); it now prints one
indented ``key: value`` line each, and ``--json`` keeps the same content for programs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from exchange.central.setup import init_central
from exchange.cli.server import group as server_group
from exchange.cli.server import status_lines
from exchange.identifiers import parse_member, parse_security_server, parse_subsystem
from exchange.messagelog.store import MessageLog
from exchange.protocol.jws import Signer, cert_thumbprint
from exchange.server.config import load_server_config
from exchange.server.setup import init_server
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import generate_key, load_certificate, load_private_key

SS1 = parse_security_server("PS/GOV/MOI/ss1")


def test_nested_values_are_indented_lines() -> None:
    status = {
        "server": "PS/GOV/MOI/ss1",
        "auth_cert": {"subject": "CN=ss1", "warning": None},
        "signing_certs": {"PS/GOV/MOI": {"days_left": 364}},
        "clients": ["PS/GOV/MOI/a", "PS/GOV/MOI/b"],
        "services": {},
        "globalconf": None,
    }
    assert status_lines(status) == [
        "server: PS/GOV/MOI/ss1",
        "auth_cert:",
        "  subject: CN=ss1",
        "  warning: -",
        "signing_certs:",
        "  PS/GOV/MOI:",
        "    days_left: 364",
        "clients:",
        "  - PS/GOV/MOI/a",
        "  - PS/GOV/MOI/b",
        "services: -",
        "globalconf: -",
    ]


def test_status_of_a_new_server_reads_as_lines_and_as_json(tmp_path: Path) -> None:
    central = init_central(tmp_path / "central", "PS", port=0)
    server = init_server(
        tmp_path / "ss-moi",
        SS1,
        central.anchor_path,
        clients=[parse_subsystem("PS/GOV/MOI/population-registry")],
        ca=CertificateAuthority.create(tmp_path / "ca", "PS Test CA"),
    )
    shown = CliRunner().invoke(server_group, ["status", "--config", str(server.config)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == "server: PS/GOV/MOI/ss1"
    assert "auth_cert:" in lines and "clients:" in lines
    assert "  - PS/GOV/MOI/population-registry" in lines
    assert "globalconf: -" in lines  # never fetched yet
    assert not any("{" in line for line in lines), shown.output
    as_json = CliRunner().invoke(server_group, ["status", "--config", str(server.config), "--json"])
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.output)
    assert doc["clients"] == ["PS/GOV/MOI/population-registry"]
    assert doc["auth_cert"]["subject"] in shown.output


def _ocsp_der(ca: CertificateAuthority, cert: x509.Certificate, this_update: dt.datetime) -> bytes:
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert,
        issuer=ca.cert,
        algorithm=hashes.SHA256(),
        cert_status=ocsp.OCSPCertStatus.GOOD,
        this_update=this_update,
        next_update=this_update + dt.timedelta(hours=1),
        revocation_time=None,
        revocation_reason=None,
    )
    response = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, ca.cert).sign(
        ca.key, hashes.SHA256()
    )
    return response.public_bytes(serialization.Encoding.DER)


def test_status_shows_the_newest_stored_ocsp_response_of_each_own_certificate(
    tmp_path: Path,
) -> None:
    """From the log's table: the newest response per own certificate, none for one without,
    and never a response about another certificate (a peer's, also kept in the log)."""
    central = init_central(tmp_path / "central", "PS", port=0)
    ca = CertificateAuthority.create(tmp_path / "ca", "PS Test CA")
    server = init_server(tmp_path / "ss-moi", SS1, central.anchor_path, ca=ca)
    config = load_server_config(server.config)
    auth = load_certificate(config.auth_cert)
    peer = ca.issue_sign_cert(generate_key().public_key(), parse_member("PS/GOV/MOH"))
    signing = config.signing[0]
    signer = Signer(load_private_key(signing.key), load_certificate(signing.cert))
    with MessageLog(config.log_path, signer, owner=config.server_id):
        pass  # the log's tables
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    older, newer = now - dt.timedelta(minutes=30), now - dt.timedelta(minutes=5)
    rows = [(auth, _ocsp_der(ca, auth, older)), (auth, _ocsp_der(ca, auth, newer))]
    rows.append((peer, _ocsp_der(ca, peer, now)))
    conn = sqlite3.connect(config.log_path)
    with conn:
        conn.executemany(
            "INSERT INTO ocsp_responses VALUES (?, ?, ?)",
            [(cert_thumbprint(c), hashlib.sha256(d).hexdigest(), d) for c, d in rows],
        )
    conn.close()
    shown = CliRunner().invoke(server_group, ["status", "--config", str(server.config), "--json"])
    assert shown.exit_code == 0, shown.output
    own = json.loads(shown.output)["ocsp"]
    assert [entry["usage"] for entry in own] == ["auth", "sign"]
    assert own[0]["this_update"] == newer.isoformat()
    assert own[1]["this_update"] is None  # the signing certificate has none stored
    assert all(peer.subject.rfc4514_string() != entry["certificate"] for entry in own)
