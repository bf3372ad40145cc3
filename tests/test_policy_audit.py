"""The signed, hash-chained audit trail of policy changes (issue 6 item 7)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.cli.policy import group as policy_cli
from exchange.identifiers import parse_member
from exchange.policy import PolicyError, PolicyStore
from exchange.policy.audit import (
    ACCEPTED,
    REFUSED,
    TRAIL_FILE,
    KeyFor,
    PolicyAuditTrail,
    read_trail,
    record_reload,
    record_startup,
    verify_trail,
)
from exchange.protocol.canonical import b64url, canonical_bytes, loads
from exchange.protocol.jws import JwsError, Signer, unverified_payload
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import generate_key, save_certificate, self_signed_certificate

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)

V1 = """\
provider = "PS/GOV/MOI"

[[grant]]
id = "window"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOI/population-registry/persons"
methods = ["GET"]
fields = ["national_id", "name_ar"]
"""
V2 = V1.replace('"name_ar"]', '"name_ar", "address"]')
BROKEN = V1.replace('methods = ["GET"]', 'methods = ["FETCH"]')


def _signer(name: str) -> Signer:
    key = generate_key()
    return Signer(key, self_signed_certificate(key, name, now=NOW))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"), "Test CA", now=NOW)


def _issued(ca: CertificateAuthority, member: str) -> Signer:
    """A signing key of ``member`` with its certificate from ``ca``."""
    key = generate_key()
    return Signer(key, ca.issue_sign_cert(key.public_key(), parse_member(member), now=NOW))


@pytest.fixture(scope="module")
def signer(ca: CertificateAuthority) -> Signer:
    """The signing key of MOI, the owner of the server PS/GOV/MOI/ss1 that signs the trail."""
    return _issued(ca, "PS/GOV/MOI")


def key_for(signer: Signer) -> KeyFor:
    def lookup(thumbprint: str) -> ec.EllipticCurvePublicKey:
        if thumbprint != signer.thumbprint:
            raise JwsError("unknown signer")
        public = signer.cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        return public

    return lookup


def _rows(path: Path) -> list[tuple[int, str]]:
    with closing(sqlite3.connect(path)) as db:
        return [(int(s), str(j)) for s, j in db.execute("SELECT seq, jws FROM policy_audit")]


def _execute(path: Path, sql: str, *args: object) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(sql, args)


def _history(tmp_path: Path, signer: Signer, policies: Path) -> Path:
    """A store with a trail that saw: start (v1), change (v2), refused (broken), change (v1)."""
    trail = PolicyAuditTrail(tmp_path / TRAIL_FILE, signer)
    store = PolicyStore(policies, on_reload=partial(record_reload, trail, by="alice", now=NOW))
    assert record_startup(trail, store.files, store.current, by="ops", now=NOW) is not None
    (policies / "moi.toml").write_text(V2)
    assert store.reload()
    (policies / "moi.toml").write_text(BROKEN)
    with pytest.raises(PolicyError):
        store.reload()
    (policies / "moi.toml").write_text(V1)
    assert store.reload()
    return trail.path


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "moi.toml").write_text(V1)
    return directory


def test_changes_and_refusals_are_recorded_with_diffs(
    tmp_path: Path, signer: Signer, policies: Path
) -> None:
    records = read_trail(_history(tmp_path, signer, policies))
    assert [(r.seq, r.by, r.outcome) for r in records] == [
        (1, "ops", ACCEPTED),
        (2, "alice", ACCEPTED),
        (3, "alice", REFUSED),
        (4, "alice", ACCEPTED),
    ]
    start, change, refused, back = records
    assert start.old_version is None and "+++ b/moi.toml" in start.diff
    assert change.old_version == start.new_version != change.new_version
    assert '-fields = ["national_id", "name_ar"]\n' in change.diff
    assert '+fields = ["national_id", "name_ar", "address"]\n' in change.diff
    assert refused.error is not None and "moi.toml:7" in refused.error and "FETCH" in refused.error
    assert refused.old_version == change.new_version and '+methods = ["FETCH"]' in refused.diff
    assert back.old_version == change.new_version and back.new_version == start.new_version
    assert start.at == "2026-06-01T12:00:00+00:00"


def test_an_intact_trail_verifies(tmp_path: Path, signer: Signer, policies: Path) -> None:
    assert verify_trail(_history(tmp_path, signer, policies), key_for(signer)) == []


def _edit_payload(token: str, signer: Signer | None, **changes: object) -> str:
    body = loads(unverified_payload(token))
    body.update(changes)
    payload = canonical_bytes(body)
    if signer is not None:
        return signer.sign(payload)
    header, _, signature = token.split(".")
    return f"{header}.{b64url(payload)}.{signature}"


TAMPERING = [
    pytest.param("edit-payload", "record 2: signature or payload does not verify", id="edited"),
    pytest.param("resign-other-key", "record 2: signature or payload does not verify",
                 id="re-signed-by-another-key"),
    pytest.param("remove-middle", "record 2: missing", id="removed-record"),
    pytest.param("remove-and-renumber", "record 2: does not chain", id="removed-and-renumbered"),
    pytest.param("rewrite-files", "record 2: stored policy files do not match",
                 id="stored-files-swapped"),
]  # fmt: skip


@pytest.mark.parametrize(("how", "problem"), TAMPERING)
def test_tampering_is_detected(
    tmp_path: Path, signer: Signer, policies: Path, how: str, problem: str
) -> None:
    path = _history(tmp_path, signer, policies)
    token = dict(_rows(path))[2]
    if how == "edit-payload":
        edited = _edit_payload(token, None, by="mallory")
        _execute(path, "UPDATE policy_audit SET jws = ? WHERE seq = 2", edited)
    elif how == "resign-other-key":
        forged = _edit_payload(token, _signer("mallory"), by="mallory")
        _execute(path, "UPDATE policy_audit SET jws = ? WHERE seq = 2", forged)
    elif how == "remove-middle":
        _execute(path, "DELETE FROM policy_audit WHERE seq = 2")
    elif how == "remove-and-renumber":
        _execute(path, "DELETE FROM policy_audit WHERE seq = 2")
        _execute(path, "UPDATE policy_audit SET seq = seq - 1 WHERE seq > 2")
    else:
        files = json.dumps({"moi.toml": b64url(BROKEN.encode())})
        _execute(path, "UPDATE policy_audit SET files = ? WHERE seq = 2", files)
    problems = verify_trail(path, key_for(signer))
    assert any(p.startswith(problem) for p in problems), problems


def test_startup_records_only_a_new_version(tmp_path: Path, signer: Signer, policies: Path) -> None:
    trail = PolicyAuditTrail(tmp_path / TRAIL_FILE, signer)
    store = PolicyStore(policies)
    assert record_startup(trail, store.files, store.current, now=NOW) is not None
    assert record_startup(trail, store.files, store.current, now=NOW) is None
    (policies / "moi.toml").write_text(V2)
    offline = PolicyStore(policies)
    record = record_startup(trail, offline.files, offline.current, by="ops", now=NOW)
    assert record is not None and record.seq == 2 and '+fields = ["national_id"' in record.diff


class _SignerThatFails(Signer):
    def sign(self, payload: bytes) -> str:
        raise RuntimeError("the signing key is unavailable")


def test_a_failed_append_leaves_no_record(tmp_path: Path, signer: Signer, policies: Path) -> None:
    """Signing fails inside the write transaction: the error is raised, nothing is written, and
    the next record follows the last one written."""
    path = tmp_path / TRAIL_FILE
    store = PolicyStore(policies)
    assert record_startup(PolicyAuditTrail(path, signer), store.files, store.current, now=NOW)
    (policies / "moi.toml").write_text(V2)
    changed = PolicyStore(policies)
    failing = PolicyAuditTrail(path, _SignerThatFails(signer.key, signer.cert))
    with pytest.raises(RuntimeError, match="the signing key is unavailable"):
        record_startup(failing, changed.files, changed.current, now=NOW)
    assert [seq for seq, _ in _rows(path)] == [1]
    record = record_startup(PolicyAuditTrail(path, signer), changed.files, changed.current, now=NOW)
    assert record is not None and record.seq == 2
    assert verify_trail(path, key_for(signer)) == []


def test_a_failing_hook_keeps_the_old_policy(policies: Path) -> None:
    calls: list[str] = []

    def hook(old: object, new: object, outcome: object) -> None:
        calls.append(type(outcome).__name__)
        if len(calls) == 1:
            raise OSError("disk full")

    store = PolicyStore(policies, on_reload=hook)
    version = store.current.version
    (policies / "moi.toml").write_text(V2)
    with pytest.raises(PolicyError, match=r"recording it failed \(OSError: disk full\)"):
        store.maybe_reload()
    assert store.current.version == version
    assert store.maybe_reload() and store.current.version != version
    assert calls == ["PolicySet", "PolicySet"]


def _server_toml(tmp_path: Path, signer: Signer, member: str = "PS/GOV/MOI") -> Path:
    save_certificate(tmp_path / "sign.pem", signer.cert)
    config = tmp_path / "server.toml"
    config.write_text(
        'server_id = "PS/GOV/MOI/ss1"\n[keys]\nauth_key = "a.pem"\nauth_cert = "a.pem"\n'
        f'signing = [{{ member = "{member}", key = "s.pem", cert = "sign.pem" }}]\n'
    )
    return config


def _ca_file(tmp_path: Path, ca: CertificateAuthority) -> str:
    save_certificate(tmp_path / "ca.pem", ca.cert)
    return str(tmp_path / "ca.pem")


def test_cli_history_lists_and_verifies(
    tmp_path: Path, ca: CertificateAuthority, signer: Signer, policies: Path
) -> None:
    path = _history(tmp_path, signer, policies)
    config = _server_toml(tmp_path, signer)
    runner = CliRunner()
    trust = ["--ca", _ca_file(tmp_path, ca)]
    result = runner.invoke(policy_cli, ["history", "--config", str(config), "--diff", *trust])
    assert result.exit_code == 0, result.output
    assert "#3  2026-06-01T12:00:00+00:00  alice  refused" in result.output
    assert "4 record(s); the trail verifies" in result.output and "+++ b/moi.toml" in result.output
    _execute(path, "DELETE FROM policy_audit WHERE seq = 3")
    result = runner.invoke(policy_cli, ["history", "--config", str(config), "--json", *trust])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert [r["seq"] for r in document["records"]] == [1, 2, 4]
    assert any("record 3: missing" in p for p in document["problems"])


def test_cli_history_refuses_a_trail_signed_by_another_server(
    tmp_path: Path, ca: CertificateAuthority, signer: Signer, policies: Path
) -> None:
    _history(tmp_path, _issued(ca, "PS/GOV/MOF"), policies)
    config = _server_toml(tmp_path, signer)
    result = CliRunner().invoke(
        policy_cli, ["history", "--config", str(config), "--ca", _ca_file(tmp_path, ca)]
    )
    assert result.exit_code == 1 and "does NOT verify" in result.output


@pytest.mark.parametrize(
    "forger",
    [
        pytest.param(lambda ca: _signer("forger"), id="self-signed"),
        pytest.param(lambda ca: _issued(ca, "PS/GOV/MOF"), id="another-members-key"),
    ],
)
def test_cli_history_refuses_a_trail_resigned_with_a_key_listed_in_server_toml(
    tmp_path: Path, ca: CertificateAuthority, policies: Path, forger: object
) -> None:
    """Red team, an insider who can edit server.toml and the trail but has not the server's
    signing key: a key of their own listed as the server's signing certificate, the trail
    re-signed with it. Before, ``policy history`` trusted whatever server.toml listed and said
    the trail verifies; now the certificate must come from a trusted CA, with the signing
    profile, to the server's owner."""
    assert callable(forger)
    key: Signer = forger(ca)
    _history(tmp_path, key, policies)
    config = _server_toml(tmp_path, key, member="PS/GOV/MOF")
    result = CliRunner().invoke(
        policy_cli, ["history", "--config", str(config), "--ca", _ca_file(tmp_path, ca)]
    )
    assert result.exit_code == 1 and "does NOT verify" in result.output, result.output


def test_cli_history_without_a_trail_is_a_usage_error(tmp_path: Path, signer: Signer) -> None:
    result = CliRunner().invoke(
        policy_cli, ["history", "--config", str(_server_toml(tmp_path, signer))]
    )
    assert result.exit_code == 2 and "no policy audit trail" in result.output
