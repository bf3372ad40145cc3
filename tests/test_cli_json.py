"""``--json`` on every command that reports something, errors included.

The click tree is walked: every command but the long-running servers must take ``--json``
through :func:`exchange.cli.common.reports`. Then each command runs for real against one CA
directory, one central server and one security server made once for the module with the
library's set-up functions: its stdout must be one JSON document carrying the facts the human
output states, and its failures (the command's own, and click's usage errors) must be one JSON
error document with the exit status people get (1 a check failed, 2 usage or configuration).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import selectors
import shlex
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from adapters.population.store import build_registry
from exchange.central.app import load_central_config
from exchange.central.registry import Registry
from exchange.central.setup import init_central
from exchange.cli import main
from exchange.cli.common import ExchangeCommand, ExchangeGroup, is_reporting
from exchange.identifiers import (
    parse_client,
    parse_global_group,
    parse_member,
    parse_security_server,
    parse_subsystem,
)
from exchange.messagelog.store import MessageLog
from exchange.protocol.jws import Signer
from exchange.server.config import load_server_config, pid_file_of
from exchange.server.setup import init_server
from exchange.trust import keys
from exchange.trust.ca import CertificateAuthority
from exchange.trust.enrolment import EnrolmentStore
from exchange.trust.revocation import record_in_ca_dir
from exchange.trust.timestamp import issue_tsa_cert

ROOT = Path(__file__).resolve().parents[1]
MOI = parse_member("PS/GOV/MOI")
SS1 = parse_security_server("PS/GOV/MOI/ss1")
POPULATION = parse_subsystem("PS/GOV/MOI/population-registry")
PASSPHRASE_ENV = "EXCHANGE_TEST_BACKUP_PASSPHRASE"

SERVERS = {
    # Long-running servers print a READY line and then logs until they are stopped: a stream,
    # not one document, so --json would promise what they cannot keep. Programs take
    # `--ready-line` (one `READY {json}` line with the bound ports, checked below) and
    # systemd's readiness notification; `[logging] format = "json"` makes their logs JSON lines.
    "central run",
    "server run",
    "ca serve",
    "ocsp serve",
    "tsa serve",
    # Interior's registry adapter prints `READY url=... port=...` as every adapter does
    # (adapters/sdk/serving.py); `--ready-line` gives the JSON form as well.
    "registry serve",
}


def _commands(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            assert isinstance(command, ExchangeGroup), " ".join((*path, name))
            yield from _commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


COMMANDS = dict(_commands(main))


def test_every_reporting_command_takes_json() -> None:
    assert isinstance(main, ExchangeGroup)
    assert COMMANDS.keys() >= SERVERS, "an exempted server no longer exists"
    lacking = [
        name
        for name, command in COMMANDS.items()
        if name not in SERVERS
        and not (isinstance(command, ExchangeCommand) and is_reporting(command))
    ]
    assert lacking == [], f"commands without --json (use @reports): {lacking}"
    for name in SERVERS:
        options = {opt for p in COMMANDS[name].params for opt in p.opts}
        assert "--json" not in options and "--ready-line" in options, name


# --- the module's world: a CA, a central server, a security server, a TSA, a registry, a log ---


@dataclass(frozen=True)
class World:
    root: Path
    ca_dir: Path
    central: Path
    """central.toml"""
    server: Path
    """server.toml of PS/GOV/MOI/ss1, certificates issued by the CA"""
    policies: Path
    tsa_dir: Path
    registry_db: Path
    log: Path
    """the server's message log: records in three batches, one signed tree head each"""

    def ca(self) -> CertificateAuthority:
        return CertificateAuthority.load(self.ca_dir)


LOG_BATCHES = (2, 3, 4)


def _entry(i: int) -> dict[str, Any]:
    return {
        "message_id": f"msg-{i}",
        "client": "PS/GOV/MOF/tax",
        "service": "PS/GOV/MOI/population-registry/persons",
        "side": "provider",
        "status": "200",
    }


async def _write_log(server: Path) -> Path:
    config = load_server_config(server)
    signing = config.signing[0]
    signer = Signer(keys.load_private_key(signing.key), keys.load_certificate(signing.cert))
    with MessageLog(config.log_path, signer, owner=config.server_id) as log:
        done = 0
        for count in LOG_BATCHES:
            await log.append_many([_entry(done + i) for i in range(count)])
            done += count
    return config.log_path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("json")
    ca_dir = root / "ca"
    ca = CertificateAuthority.create(ca_dir, "PS Test CA")
    central = init_central(root / "central", "PS", port=0)
    with Registry.open(central.db_path) as registry:
        registry.add_member(MOI, "Ministry of Interior")
        registry.add_subsystem(POPULATION)
        registry.add_server(SS1, "127.0.0.1:8443", [])
        registry.add_ca("PS Test CA", keys.cert_pem(ca.cert), ())
    policies = root / "policies"
    shutil.copytree(ROOT / "exchange" / "demo" / "policies" / "MOI", policies)
    server = init_server(
        root / "ss-moi",
        SS1,
        central.anchor_path,
        clients=[POPULATION],
        ca=ca,
        policy_dir=policies,
        record=lambda cert, profile: record_in_ca_dir(ca_dir, cert, profile),
    )
    tsa_dir = root / "tsa"
    tsa_dir.mkdir()
    tsa_key = keys.generate_key()
    keys.save_private_key(tsa_dir / "tsa.key.pem", tsa_key)
    keys.save_certificate(tsa_dir / "tsa.cert.pem", issue_tsa_cert(ca, tsa_key.public_key(), "TSA"))
    registry_db = root / "registry.db"
    build_registry(registry_db, 400, seed=4)
    log = asyncio.run(_write_log(server.config))
    return World(
        root,
        ca_dir,
        root / "central" / "central.toml",
        server.config,
        policies,
        tsa_dir,
        registry_db,
        log,
    )


def run(*args: object, env: dict[str, str] | None = None) -> Result:
    result = CliRunner(env=env).invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def document(result: Result) -> Any:
    """stdout as one JSON document (json.loads refuses anything around it)."""
    return json.loads(result.stdout)


# --- what each command prints under --json ------------------------------------------------------

Places = dict[str, object]
Setup = Callable[[World, Path], Places]


@dataclass(frozen=True)
class Case:
    """A command line with ``{placeholders}`` (the world's paths, ``{tmp}``, and what ``setup``
    made first), the facts its JSON document must state (each a key and its value, formatted
    the same way, or a check of the whole document and the places), and its exit status (None:
    either)."""

    command: str
    facts: dict[str, Any] | Callable[[Any, Places], object]
    setup: Setup | None = None
    exit_code: int | None = 0


def places(world: World, tmp: Path) -> Places:
    return {
        "ca": world.ca_dir,
        "central": world.central,
        "anchor": load_central_config(world.central).anchor_path,
        "server": world.server,
        "keys": world.server.parent / "keys",
        "policies": world.policies,
        "tsa": world.tsa_dir,
        "registry": world.registry_db,
        "log": world.log,
        "tmp": tmp,
        "moi": MOI,
        "ss1": SS1,
        "population": POPULATION,
        "env": PASSPHRASE_ENV,
    }


def _formatted(value: Any, where: Places) -> Any:
    if isinstance(value, str):
        return value.format(**where)
    if isinstance(value, list):
        return [_formatted(item, where) for item in value]
    return value


def _registry_change(change: Callable[[Registry], object]) -> Setup:
    def setup(world: World, tmp: Path) -> Places:
        with Registry.open(load_central_config(world.central).db_path) as registry:
            change(registry)
        return {}

    return setup


def _member(code: str, *subsystems: str, server: bool = False, client: bool = True) -> Setup:
    """A member (``PS/GOV/code``) with subsystems, and a security server ``ss1`` hosting them."""

    def change(registry: Registry) -> None:
        member = parse_member(f"PS/GOV/{code}")
        registry.add_member(member, code)
        for name in subsystems:
            registry.add_subsystem(parse_subsystem(f"{member}/{name}"))
        if server:
            server_id = parse_security_server(f"{member}/ss1")
            registry.add_server(server_id, "127.0.0.1:9443", [_fingerprint_for(code)])
            for name in subsystems if client else ():
                registry.add_server_client(server_id, parse_subsystem(f"{member}/{name}"))

    return _registry_change(change)


def _fingerprint_for(code: str) -> str:
    """The (made-up) authentication certificate fingerprint of member ``code``'s server."""
    return hashlib.sha256(code.encode()).hexdigest()


def _group(code: str, *clients: str) -> Setup:
    def change(registry: Registry) -> None:
        registry.add_group(parse_global_group(f"PS/{code}"), "JSON test group")
        for client in clients:
            registry.add_group_member(parse_global_group(f"PS/{code}"), parse_client(client))

    return _registry_change(change)


def _approved(kind: str, name: str) -> Setup:
    def setup(world: World, tmp: Path) -> Places:
        pem = keys.cert_pem(keys.load_certificate(world.ca_dir / "ca.cert.pem"))
        with Registry.open(load_central_config(world.central).db_path) as registry:
            if kind == "ca":
                registry.add_ca(name, pem, ())
            else:
                registry.add_tsa(name, "http://127.0.0.1:1/", pem)
        return {}

    return setup


def _signing_cert(world: World, tmp: Path) -> Places:
    key = keys.generate_key()
    cert = world.ca().issue_sign_cert(key.public_key(), MOI)
    record_in_ca_dir(world.ca_dir, cert, "sign")
    keys.save_certificate(tmp / "sign.pem", cert)
    return {"serial": f"{cert.serial_number:x}"}


def _csr(world: World, tmp: Path) -> Places:
    key = keys.generate_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MOI")]))
        .sign(key, hashes.SHA256())
    )
    (tmp / "sign.csr.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return {}


def _token(world: World, tmp: Path) -> Places:
    import datetime as dt

    with EnrolmentStore.of_ca_dir(world.ca_dir) as store:
        issued = store.issue([("sign", MOI)], now=dt.datetime.now(dt.UTC), note="JSON")
    return {"token": issued.info.id}


def _toml(name: str, text: str) -> Setup:
    def setup(world: World, tmp: Path) -> Places:
        (tmp / name).write_text(text.format(**places(world, tmp)), encoding="utf-8")
        return {}

    return setup


def _backup(role: str, source: str) -> Setup:
    def setup(world: World, tmp: Path) -> Places:
        where = places(world, tmp)
        args = [a.format(**where) for a in source.split()]
        out = tmp / f"{role}.zip"
        done = run(role, "backup", *args, "-o", out, "--passphrase-env", PASSPHRASE_ENV,
                   env={PASSPHRASE_ENV: PASSPHRASE})  # fmt: skip
        assert done.exit_code == 0, done.output
        return {"backup": out}

    return setup


def _fresh_server(world: World, tmp: Path, *, ca: bool = True) -> Places:
    result = init_server(
        tmp / "ss",
        SS1,
        load_central_config(world.central).anchor_path,
        clients=[POPULATION],
        ca=world.ca() if ca else None,
        record=lambda cert, profile: record_in_ca_dir(world.ca_dir, cert, profile),
    )
    return {"fresh": result.config}


def _second_signing_key(world: World, tmp: Path) -> Places:
    """A fresh server with a second signing key for its member, so that the first can go."""
    fresh = _fresh_server(world, tmp)
    added = run("server", "keys", "new-sign", "--config", fresh["fresh"], "--member", MOI,
                "--ca-dir", world.ca_dir)  # fmt: skip
    assert added.exit_code == 0, added.output
    return fresh


def _certificate_for_csr(world: World, tmp: Path) -> Places:
    """A fresh server that wrote CSRs, and the CA's certificate for its authentication CSR."""
    import datetime as dt

    from exchange.trust.ca_service import CertificateRequest, issue_requested

    fresh = _fresh_server(world, tmp, ca=False)
    request = CertificateRequest("auth", SS1, (tmp / "ss" / "keys" / "auth.csr.pem").read_bytes())
    cert = issue_requested(world.ca(), world.ca_dir, request, days=30, now=dt.datetime.now(dt.UTC))
    keys.save_certificate(tmp / "auth.pem", cert)
    return fresh


def _fingerprint_of(document: dict[str, Any], where: Places) -> bool:
    """The document's fingerprint is that of the certificate it names (under the fresh server)."""
    fresh = where["fresh"]
    assert isinstance(fresh, Path)
    cert = keys.load_certificate(fresh.parent / document["cert"])
    assert document["sha256_fingerprint"] == keys.fingerprint(cert), document
    return True


def _fingerprint(folder: object, name: str) -> str:
    assert isinstance(folder, Path)
    return keys.fingerprint(keys.load_certificate(folder / name))


PASSPHRASE = "correct horse battery staple"
REGISTRY_EDITS = {"registry_version": int, "change": str}
"""Besides its identifiers, what every registry edit states."""

CASES: dict[str, Case] = {
    # the CA
    "ca init": Case(
        "ca init --dir {tmp}/ca2 --name 'Second CA'",
        {"certificate": "{tmp}/ca2/ca.cert.pem", "key": "{tmp}/ca2/ca.key.pem"},
    ),
    "ca issue-auth": Case(
        "ca issue-auth --ca-dir {ca} --server PS/GOV/MOI/ss9 --out-key {tmp}/a.key "
        "--out-cert {tmp}/a.pem",
        {"profile": "auth", "identifier": "PS/GOV/MOI/ss9", "certificate": "{tmp}/a.pem"},
    ),
    "ca issue-sign": Case(
        "ca issue-sign --ca-dir {ca} --member {moi} --out-key {tmp}/s.key --out-cert {tmp}/s.pem",
        {"profile": "sign", "identifier": "{moi}", "key": "{tmp}/s.key"},
    ),
    "ca revoke": Case(
        "ca revoke --ca-dir {ca} --cert {tmp}/sign.pem --reason keyCompromise",
        {"serial": "{serial}", "reason": "keyCompromise"},
        _signing_cert,
    ),
    "ca show": Case("ca show {keys}/auth.cert.pem", {"profile": "auth", "identifier": "{ss1}"}),
    "ca sign-csr": Case(
        "ca sign-csr --ca-dir {ca} --csr {tmp}/sign.csr.pem --profile sign --identifier {moi} "
        "-o {tmp}/c.pem",
        {"profile": "sign", "identifier": "{moi}", "certificate": "{tmp}/c.pem"},
        _csr,
    ),
    "ca token issue": Case(
        "ca token issue --ca-dir {ca} --auth PS/GOV/MOI/ss7 --note JSON",
        lambda d, p: d["token"] and d["grants"][0]["identifier"] == "PS/GOV/MOI/ss7",
    ),
    "ca token list": Case(
        "ca token list --ca-dir {ca}",
        lambda d, p: d and all(t["id"] and "token" not in t for t in d),
        _token,
    ),
    "ca token revoke": Case(
        "ca token revoke --ca-dir {ca} {token}", {"id": "{token}", "state": "revoked"}, _token
    ),
    "ca backup": Case(
        "ca backup --ca-dir {ca} -o {tmp}/ca.zip --passphrase-env {env}",
        {"role": "ca", "backup": "{tmp}/ca.zip"},
    ),
    "ca restore": Case(
        "ca restore {backup} --into {tmp}/r --passphrase-env {env}",
        {"role": "ca", "restored": "{tmp}/r"},
        _backup("ca", "--ca-dir {ca}"),
    ),
    "ca check-config": Case(
        "ca check-config --config {tmp}/ca.toml",
        {"ok": True, "problems": [], "file": "{tmp}/ca.toml"},
        _toml("ca.toml", 'ca_dir = "{ca}"\n'),
    ),
    # the central server
    "central init": Case(
        "central init --dir {tmp}/c --instance XX",
        {"instance": "XX", "config": "{tmp}/c/central.toml", "anchor": "{tmp}/c/anchor.json"},
    ),
    "central show": Case(
        "central show --config {central}",
        lambda d, p: d["instance"] == "PS" and str(MOI) in {m["id"] for m in d["members"]},
    ),
    "central anchor": Case(
        "central anchor --config {central} -o {tmp}/anchor.json",
        {"instance": "PS", "output": "{tmp}/anchor.json"},
    ),
    "central member add": Case(
        "central member add --config {central} PS/GOV/JM1 --name 'J one'",
        {"member": "PS/GOV/JM1", "name": "J one", **REGISTRY_EDITS},
    ),
    "central member remove": Case(
        "central member remove --config {central} PS/GOV/JM2",
        {"member": "PS/GOV/JM2", **REGISTRY_EDITS},
        _member("JM2"),
    ),
    "central subsystem add": Case(
        "central subsystem add --config {central} PS/GOV/JM3/desk",
        {"subsystem": "PS/GOV/JM3/desk", **REGISTRY_EDITS},
        _member("JM3"),
    ),
    "central subsystem remove": Case(
        "central subsystem remove --config {central} PS/GOV/JM4/desk",
        {"subsystem": "PS/GOV/JM4/desk", **REGISTRY_EDITS},
        _member("JM4", "desk"),
    ),
    "central server add": Case(
        "central server add --config {central} PS/GOV/JM5/ss1 --address 127.0.0.1:9443 "
        "--auth-cert {keys}/auth.cert.pem",
        lambda d, p: (
            d["server"] == "PS/GOV/JM5/ss1"
            and d["auth_cert_fingerprints"] == [_fingerprint(p["keys"], "auth.cert.pem")]
            and isinstance(d["registry_version"], int)
        ),
        _member("JM5"),
    ),
    "central server remove": Case(
        "central server remove --config {central} PS/GOV/JM6/ss1",
        {"server": "PS/GOV/JM6/ss1", **REGISTRY_EDITS},
        _member("JM6", server=True),
    ),
    "central server set-address": Case(
        "central server set-address --config {central} PS/GOV/JM7/ss1 10.0.0.7:8443",
        {"server": "PS/GOV/JM7/ss1", "address": "10.0.0.7:8443", **REGISTRY_EDITS},
        _member("JM7", server=True),
    ),
    "central server add-auth-cert": Case(
        "central server add-auth-cert --config {central} PS/GOV/JM8/ss1 "
        f"--fingerprint {'cd' * 32}",
        {"server": "PS/GOV/JM8/ss1", "auth_cert_fingerprint": "cd" * 32, **REGISTRY_EDITS},
        _member("JM8", server=True),
    ),
    "central server remove-auth-cert": Case(
        "central server remove-auth-cert --config {central} PS/GOV/JM9/ss1 "
        f"--fingerprint {_fingerprint_for('JM9')}",
        {
            "server": "PS/GOV/JM9/ss1",
            "auth_cert_fingerprint": _fingerprint_for("JM9"),
            **REGISTRY_EDITS,
        },
        _member("JM9", server=True),
    ),
    "central server add-client": Case(
        "central server add-client --config {central} PS/GOV/JM10/ss1 PS/GOV/JM10/desk",
        {"server": "PS/GOV/JM10/ss1", "subsystem": "PS/GOV/JM10/desk", **REGISTRY_EDITS},
        _member("JM10", "desk", server=True, client=False),
    ),
    "central server remove-client": Case(
        "central server remove-client --config {central} PS/GOV/JM11/ss1 PS/GOV/JM11/desk",
        {"server": "PS/GOV/JM11/ss1", "subsystem": "PS/GOV/JM11/desk", **REGISTRY_EDITS},
        _member("JM11", "desk", server=True),
    ),
    "central group add": Case(
        "central group add --config {central} PS/j-group-1 --description windows",
        {"group": "PS/j-group-1", "description": "windows", **REGISTRY_EDITS},
    ),
    "central group remove": Case(
        "central group remove --config {central} PS/j-group-2",
        {"group": "PS/j-group-2", **REGISTRY_EDITS},
        _group("j-group-2"),
    ),
    "central group add-member": Case(
        "central group add-member --config {central} PS/j-group-3 {population}",
        {"group": "PS/j-group-3", "client": "{population}", **REGISTRY_EDITS},
        _group("j-group-3"),
    ),
    "central group remove-member": Case(
        "central group remove-member --config {central} PS/j-group-4 {population}",
        {"group": "PS/j-group-4", "client": "{population}", **REGISTRY_EDITS},
        _group("j-group-4", str(POPULATION)),
    ),
    "central ca add": Case(
        "central ca add --config {central} --name 'J CA' --cert {ca}/ca.cert.pem "
        "--ocsp-url http://127.0.0.1:4100/",
        {"ca": "J CA", "ocsp_urls": ["http://127.0.0.1:4100/"], **REGISTRY_EDITS},
    ),
    "central ca remove": Case(
        "central ca remove --config {central} --name 'J CA 2'",
        {"ca": "J CA 2", **REGISTRY_EDITS},
        _approved("ca", "J CA 2"),
    ),
    "central tsa add": Case(
        "central tsa add --config {central} --name 'J TSA' --url http://127.0.0.1:4318/ "
        "--cert {tsa}/tsa.cert.pem",
        {"tsa": "J TSA", "url": "http://127.0.0.1:4318/", **REGISTRY_EDITS},
    ),
    "central tsa remove": Case(
        "central tsa remove --config {central} --name 'J TSA 2'",
        {"tsa": "J TSA 2", **REGISTRY_EDITS},
        _approved("tsa", "J TSA 2"),
    ),
    "central registration list": Case(
        "central registration list --config {central} --all", lambda d, p: d == []
    ),
    "central backup": Case(
        "central backup --config {central} -o {tmp}/c.zip --passphrase-env {env}",
        {"role": "central", "identity": "PS", "backup": "{tmp}/c.zip"},
    ),
    "central restore": Case(
        "central restore {backup} --into {tmp}/r --passphrase-env {env}",
        {"role": "central", "restored": "{tmp}/r"},
        _backup("central", "--config {central}"),
    ),
    "central check-config": Case(
        "central check-config --config {central}", {"ok": True, "problems": []}
    ),
    # the security server
    "server init": Case(
        "server init --dir {tmp}/ss --server PS/GOV/MOI/ss5 --anchor {anchor} --ca-dir {ca}",
        {"server": "PS/GOV/MOI/ss5", "config": "{tmp}/ss/server.toml", "certificates_issued": True},
    ),
    "server status": Case("server status --config {server}", {"clients": ["{population}"]}),
    "server maintenance": Case(
        "server maintenance on --config {fresh} --reason drill",
        lambda d, p: d["maintenance"]["reason"] == "drill" and d["running_server"] is None,
        _fresh_server,
    ),
    "server opmon": Case(
        "server opmon --config {server} --since 1h --archives",  # 'log archive' may have run
        lambda d, p: sum(row["count"] for row in d["exchanges"]) == sum(LOG_BATCHES),
    ),
    "server check-config": Case(
        "server check-config --config {server}", {"ok": True, "problems": [], "file": "{server}"}
    ),
    "server keys new-sign": Case(
        "server keys new-sign --config {fresh} --member {moi} --ca-dir {ca}",
        lambda d, p: d["member"] == str(MOI) and _fingerprint_of(d, p),
        _fresh_server,
    ),
    "server keys retire-sign": Case(
        "server keys retire-sign --config {fresh} --cert keys/sign-MOI.cert.pem",
        lambda d, p: d["retired"]["member"] == str(MOI),
        _second_signing_key,
    ),
    "server keys new-auth": Case(
        "server keys new-auth --config {fresh} --ca-dir {ca}",
        lambda d, p: d["server"] == str(SS1) and _fingerprint_of(d, p),
        _fresh_server,
    ),
    "server keys activate-auth": Case(
        "server keys activate-auth --config {fresh} --key keys/auth.key.pem "
        "--cert keys/auth.cert.pem",
        {"auth_key": "keys/auth.key.pem", "auth_cert": "keys/auth.cert.pem"},
        _fresh_server,
    ),
    "server import-cert": Case(
        "server import-cert --config {fresh} --auth {tmp}/auth.pem",
        lambda d, p: (
            d["certificates"][0]["action"] == "installed"
            and d["certificates"][0]["identifier"] == str(SS1)
        ),
        _certificate_for_csr,
    ),
    "server backup": Case(
        "server backup --config {server} -o {tmp}/s.zip --passphrase-env {env}",
        {"role": "server", "identity": "{ss1}", "backup": "{tmp}/s.zip"},
    ),
    "server restore": Case(
        "server restore {backup} --into {tmp}/r --passphrase-env {env}",
        {"role": "server", "config": "{tmp}/r/server.toml"},
        _backup("server", "--config {server}"),
    ),
    # access policies
    "policy check": Case(
        "policy check {policies}", lambda d, p: d["provider"] == str(MOI) and d["grants"]
    ),
    "policy explain": Case(
        "policy explain --dir {policies} --client PS/GOV/PALPOST/unified-window "
        "--service {population}/persons --path /123 --purpose citizen-service",
        {"allowed": True, "grant": "palpost-window"},
    ),
    "policy explain (denied)": Case(
        "policy explain --dir {policies} --client PS/GOV/MOF/nobody --service {population}/persons",
        lambda d, p: d["allowed"] is False and d["reason"],
        exit_code=1,
    ),
    "policy lint": Case("policy lint {policies}", {"findings": []}),
    # the message log
    "log show": Case(
        "log show --db {log} --id msg-4", lambda d, p: [r["message_id"] for r in d] == ["msg-4"]
    ),
    "log heads": Case(
        "log heads --db {log} --covers 2",
        lambda d, p: (
            [h["size"] for h in d] == [LOG_BATCHES[0] + LOG_BATCHES[1], sum(LOG_BATCHES)]
            and all(h["root_hex"] and h["signer"] for h in d)
        ),
    ),
    "log verify": Case(
        "log verify --db {log} --ca {ca}/ca.cert.pem --owner {ss1}",
        {"records": sum(LOG_BATCHES), "tree_heads": len(LOG_BATCHES)},
        exit_code=None,  # its records are not real exchanges: whether they verify is not the point
    ),
    "log prove": Case(
        "log prove --db {log} --id msg-3",
        lambda d, p: d["message_id"] == "msg-3" and d["proofs"][0]["tree_size"] == sum(LOG_BATCHES),
    ),
    "log prove -o": Case(
        "log prove --db {log} --id msg-3 -o {tmp}/proof.json",
        lambda d, p: (
            d["output"].endswith("proof.json")
            and json.loads(Path(d["output"]).read_text())["proofs"] == d["proofs"]
        ),
    ),
    "log consistency": Case(
        f"log consistency --db {{log}} --from {LOG_BATCHES[0]} --to {sum(LOG_BATCHES)}",
        {"m": LOG_BATCHES[0], "n": sum(LOG_BATCHES)},
    ),
    "log archive": Case(
        "log archive --config {server} --older-than 0s",
        {"archives": []},  # no time-stamped tree head yet: nothing moves
    ),
    # Interior's registry, the OCSP responder, the TSA
    "registry generate": Case(
        "registry generate --db {tmp}/r.db --count 20 --seed 2",
        {"db": "{tmp}/r.db", "count": 20, "seed": 2},
    ),
    "registry sample": Case(
        "registry sample --db {registry} -n 2",
        lambda d, p: len(d) == 2 and all(p["national_id"] for p in d),
    ),
    "registry check-config": Case(
        "registry check-config --config {tmp}/registry.toml",
        {"ok": True, "problems": []},
        _toml("registry.toml", 'database = "{registry}"\nport = 8081\n'),
    ),
    "ocsp check-config": Case(
        "ocsp check-config --config {tmp}/ocsp.toml",
        {"ok": True, "problems": []},
        _toml("ocsp.toml", 'ca_dir = "{ca}"\ndatabase = "{ca}/revocations.sqlite"\n'),
    ),
    "tsa init": Case(
        "tsa init --ca-dir {ca} --dir {tmp}/tsa --name 'J TSA'",
        {"certificate": "{tmp}/tsa/tsa.cert.pem", "key": "{tmp}/tsa/tsa.key.pem"},
    ),
    "tsa check-config": Case(
        "tsa check-config --config {tmp}/tsa.toml",
        {"ok": True, "problems": []},
        _toml("tsa.toml", 'dir = "{tsa}"\n'),
    ),
    # auditors
    "audit watch": Case(
        "audit watch --db {log} --state {tmp}/heads.json",
        {"consistent": True, "size": sum(LOG_BATCHES)},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_json_document_carries_the_facts(name: str, world: World, tmp_path: Path) -> None:
    case = CASES[name]
    where = places(world, tmp_path)
    if case.setup is not None:
        where |= case.setup(world, tmp_path)
    args = [arg.format(**where) for arg in shlex.split(case.command)]
    result = run(*args, "--json", env={PASSPHRASE_ENV: PASSPHRASE})
    if case.exit_code is not None:
        assert result.exit_code == case.exit_code, result.output
    doc = document(result)
    if callable(case.facts):
        assert case.facts(doc, where), doc
        return
    for key, value in case.facts.items():
        if isinstance(value, type):
            assert isinstance(doc[key], value), (key, doc)
        else:
            assert doc[key] == _formatted(value, where), (key, doc)


def test_every_reporting_command_is_in_the_table() -> None:
    """The table runs each command with --json, but those run elsewhere: against running
    servers (test_commands_that_talk_to_servers, test_reload_reports_the_process_it_signalled),
    on real exchanges (tests/integration/test_audit_bundle.py::test_cli_json_documents), on a
    signed document (tests/test_documents.py), on a policy audit trail
    (tests/test_policy_audit.py) and the whole demo (tests/test_demo.py)."""
    elsewhere = {
        "server register", "server registration-status", "server request-certs", "server reload",
        "central registration approve", "central registration reject", "ocsp check",
        "tsa stamp", "tsa verify", "audit export", "audit verify", "audit correlate",
        "audit trust-export", "audit document verify", "log check-proof", "policy history",
        "demo",
    }  # fmt: skip
    tried = {name.removesuffix(" (denied)").removesuffix(" -o") for name in CASES}
    assert tried | elsewhere | SERVERS == COMMANDS.keys(), COMMANDS.keys() - tried - elsewhere


# --- errors: one JSON document, the exit status people get --------------------------------------


def _broken_policy(world: World, tmp: Path) -> Places:
    (tmp / "broken").mkdir(exist_ok=True)
    (tmp / "broken" / "moi.toml").write_text('provider = "PS/GOV/MOI"\n[[grant]]\nid = 5\n')
    return {}


def _garbage_document(world: World, tmp: Path) -> Places:
    (tmp / "d.json").write_text('{"document": "a.b.c"}')
    return {}


@dataclass(frozen=True)
class Refusal:
    command: str
    code: str
    exit_code: int
    setup: Setup | None = None


ERRORS: dict[str, Refusal] = {
    "missing option": Refusal("central member add PS/GOV/X", "Usage.MissingParameter", 2),
    "bad identifier": Refusal(
        "central member add --config {central} 'not an id' --name X", "Usage.BadParameter", 2
    ),
    "bad value": Refusal(
        "ca token issue --ca-dir {ca} --valid 5y --sign {moi}", "Usage.BadParameter", 2
    ),
    "identifier parsed by the command": Refusal(
        "server init --dir {tmp}/x --server 'bad id' --anchor {anchor}",
        "Client.InvalidIdentifier",
        2,
    ),
    "no such file": Refusal("server status --config {tmp}/nowhere.toml", "Usage.BadParameter", 2),
    "no such option": Refusal("ca show {keys}/auth.cert.pem --bogus", "Usage.NoSuchOption", 2),
    "no such command": Refusal("central nosuch", "Usage.NoSuchCommand", 2),
    "usage, said by the command": Refusal("policy lint", "Usage", 2),
    "no policy audit trail": Refusal("policy history --config {server}", "Usage", 2),
    "configuration": Refusal(
        "central member add --config {central} {moi} --name again", "Server.ConfigurationError", 2
    ),
    "broken policy file": Refusal(
        "policy check {tmp}/broken", "Server.ConfigurationError", 2, _broken_policy
    ),
    "not a message log": Refusal("log show --db {central}", "Server.ConfigurationError", 2),
    "a check failed": Refusal(
        "audit document verify {tmp}/d.json --trust {ca}/ca.cert.pem",
        "Verification.InvalidDocument",
        1,
        _garbage_document,
    ),
    "the operating system": Refusal(
        "ca init --dir /proc/exchange-json-test", "System.FileNotFoundError", 2
    ),
}


def _refused(name: str, world: World, tmp: Path, *, as_json: bool) -> Result:
    refusal = ERRORS[name]
    where = places(world, tmp)
    if refusal.setup is not None:
        where |= refusal.setup(world, tmp)
    args = [arg.format(**where) for arg in shlex.split(refusal.command)]
    return run(*args, *(["--json"] if as_json else []))


@pytest.mark.parametrize("name", list(ERRORS))
def test_an_error_is_one_json_document_with_the_exit_status(
    name: str, world: World, tmp_path: Path
) -> None:
    refusal = ERRORS[name]
    result = _refused(name, world, tmp_path, as_json=True)
    assert result.exit_code == refusal.exit_code, result.output
    doc = document(result)
    assert doc == {
        "error": {
            "code": refusal.code,
            "message": doc["error"]["message"],
            "exit_code": refusal.exit_code,
        }
    }
    assert doc["error"]["message"] and result.stderr == ""
    # people get the same message on stderr, nothing on stdout, and the same exit status
    human = _refused(name, world, tmp_path, as_json=False)
    assert human.exit_code == refusal.exit_code and human.stdout == "", human.output
    assert " ".join(doc["error"]["message"].split()) in " ".join(human.stderr.split())


def test_failures_of_the_operating_system_and_databases_have_codes() -> None:
    from exchange.cli.common import Failure, failure_of

    assert failure_of(sqlite3.OperationalError("disk I/O error")) == Failure(
        "System.OperationalError", "disk I/O error", 2
    )
    assert failure_of(PermissionError(13, "Permission denied")) == Failure(
        "System.PermissionError", "[Errno 13] Permission denied", 2
    )
    assert failure_of(ValueError("a bug")) is None  # not reported: a traceback says more


def test_with_debug_an_error_is_a_traceback(world: World) -> None:
    args = ["--debug", "central", "member", "add", "--config", world.central, MOI, "--json"]
    result = CliRunner().invoke(main, [*map(str, args), "--name", "again"])
    assert type(result.exception).__name__ == "ConfigurationError"


# --- commands that talk to running servers; the servers' READY lines -----------------------------


@contextlib.contextmanager
def served(*args: object, log: Path) -> Iterator[dict[str, Any]]:
    """``exchange ARGS --ready-line`` in its own process: its READY line's JSON, until stopped."""
    command = [sys.executable, "-m", "exchange", *map(str, args), "--ready-line"]
    with log.open("w") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
    assert process.stdout is not None
    try:
        # a selector, not select.select: that fails for descriptors past 1024, which a long
        # test session's process reaches
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            ready = selector.select(120)
        line = process.stdout.readline() if ready else ""
        assert line.startswith("READY "), f"{args}: {line!r} {log.read_text()}"
        yield json.loads(line.removeprefix("READY "))
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()


def json_of(*args: object) -> tuple[int, Any]:
    result = run(*args, "--json")
    return result.exit_code, document(result)


def _server_with_csrs(world: World, tmp: Path, server: str) -> Path:
    anchor = load_central_config(world.central).anchor_path
    return init_server(
        tmp / server, parse_security_server(server), anchor, clients=[POPULATION]
    ).config


def test_commands_that_talk_to_servers(world: World, tmp_path: Path) -> None:
    import datetime as dt

    logs = tmp_path / "logs"
    logs.mkdir()
    with contextlib.ExitStack() as running:
        central = running.enter_context(
            served("central", "run", "--config", world.central, log=logs / "central.log")
        )
        ca = running.enter_context(
            served("ca", "serve", "--ca-dir", world.ca_dir, "--port", 0, log=logs / "ca.log")
        )
        ocsp = running.enter_context(
            served("ocsp", "serve", "--ca-dir", world.ca_dir, "--db",
                   world.ca_dir / "revocations.sqlite", "--port", 0, log=logs / "ocsp.log")
        )  # fmt: skip
        tsa = running.enter_context(
            served("tsa", "serve", "--dir", world.tsa_dir, "--port", 0, log=logs / "tsa.log")
        )
        registry = running.enter_context(
            served("registry", "serve", "--db", world.registry_db, log=logs / "registry.log")
        )
        for ready in (central, ca, ocsp, tsa, registry):
            assert isinstance(ready["port"], int) and ready["url"].startswith("http://127.0.0.1:")

        # OCSP and time-stamps
        auth_cert = world.server.parent / "keys" / "auth.cert.pem"
        code, checked = json_of("ocsp", "check", "--cert", auth_cert, "--issuer",
                                world.ca_dir / "ca.cert.pem", "--url", ocsp["url"])  # fmt: skip
        assert code == 0 and checked["status"] == "good", checked
        assert checked["serial"] == f"{keys.load_certificate(auth_cert).serial_number:x}"
        report = tmp_path / "report.txt"
        report.write_text("the report")
        trust = [
            "--tsa-cert",
            world.tsa_dir / "tsa.cert.pem",
            "--ca-cert",
            world.ca_dir / "ca.cert.pem",
        ]
        code, stamped = json_of("tsa", "stamp", "--url", tsa["url"], *trust, report)
        assert code == 0 and stamped["reply"] == f"{report}.tsr", stamped
        code, verified = json_of("tsa", "verify", *trust, "--data", report, "--in", f"{report}.tsr")
        assert code == 0 and verified["serial"] == stamped["serial"], verified
        (tmp_path / "other.txt").write_text("another report")
        code, refused = json_of("tsa", "verify", *trust, "--data", tmp_path / "other.txt",
                                "--in", f"{report}.tsr")  # fmt: skip
        assert code == 1 and refused["error"]["exit_code"] == 1, refused

        # certificates from the CA service, then registration at the central server
        ss3 = "PS/GOV/MOI/ss3"
        fresh = _server_with_csrs(world, tmp_path, ss3)
        with EnrolmentStore.of_ca_dir(world.ca_dir) as store:
            grants = [("auth", parse_security_server(ss3)), ("sign", MOI)]
            token = store.issue(grants, now=dt.datetime.now(dt.UTC)).text
        (tmp_path / "token").write_text(token)
        (tmp_path / "token").chmod(0o600)
        code, installed = json_of("server", "request-certs", "--config", fresh, "--ca-url",
                                  ca["url"], "--token-file", tmp_path / "token")  # fmt: skip
        assert code == 0, installed
        assert [(c["profile"], c["action"]) for c in installed["certificates"]] == [
            ("auth", "installed"),
            ("sign", "installed"),
        ]
        for config, server in ((fresh, ss3), (world.server, str(SS1))):
            code, asked = json_of("server", "register", "--config", config, "--central-url",
                                  central["url"])  # fmt: skip
            assert code == 0 and asked["server"] == server and asked["status"] == "pending", asked
            if server == ss3:
                approve = asked["id"]
            else:
                reject = asked["id"]
        code, approved = json_of("central", "registration", "approve", "--config", world.central,
                                 approve)  # fmt: skip
        assert code == 0 and approved["status"] == "approved", approved
        assert isinstance(approved["registry_version"], int)
        code, rejected = json_of("central", "registration", "reject", "--config", world.central,
                                 reject, "--reason", "not this one")  # fmt: skip
        assert code == 0 and rejected["status"] == "rejected", rejected
        code, status = json_of("server", "registration-status", "--config", world.server,
                               "--central-url", central["url"], reject)  # fmt: skip
        assert code == 0 and status == {
            "id": reject,
            "status": "rejected",
            "reason": "not this one",
        }


def test_reload_reports_the_process_it_signalled(world: World, tmp_path: Path) -> None:
    """``server reload`` sends SIGHUP to the process in the server's pid file (here a process
    that waits for it and reports the outcome in ``reload.json``, as the server does)."""
    state_dir = load_server_config(world.server).state_dir
    program = f"""
import pathlib, signal, sys, time
from exchange.server.reload import write_outcome

def reloaded(*_):
    write_outcome(pathlib.Path({str(state_dir)!r}), time.time(), True, ["service X added"])
    sys.exit(3)

signal.signal(signal.SIGHUP, reloaded)
print("ready", flush=True)
signal.pause()
"""
    waiting = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    assert waiting.stdout is not None
    try:
        assert waiting.stdout.readline() == "ready\n"
        pid_file_of(world.server).write_text(f"{waiting.pid}\n")
        code, reloaded = json_of("server", "reload", "--config", world.server)
        assert code == 0, reloaded
        assert reloaded == {
            "pid": waiting.pid,
            "signal": "SIGHUP",
            "config": str(world.server),
            "applied": True,
            "changes": ["service X added"],
        }
        assert waiting.wait(timeout=30) == 3
    finally:
        pid_file_of(world.server).unlink(missing_ok=True)
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
        waiting.stdout.close()
    code, refused = json_of("server", "reload", "--config", world.server)
    assert code == 2 and refused["error"]["code"] == "Server.ConfigurationError", refused
