"""Backups and restores through the ``exchange`` commands, and the attacks on a backup file.

Real files throughout: a security server made by ``init_server`` with certificates from a real
CA and a message log written by :class:`MessageLog`, a central server from ``init_central``, a
CA directory with an encrypted key and a revocation register. Backups are attacked as someone
holding the file would (a changed, missing or added member, a truncated file, ``../`` and
absolute names, a symbolic link, a member that lies about its size) and as an insider who also
knows the passphrase and re-authenticates the manifest; each must be refused with its exit
status, leaving nothing behind, least of all outside the target directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import stat
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from exchange.backup.manifest import MANIFEST, MANIFEST_MAC
from exchange.backup.sealing import BackupError, BackupKeys, KdfParams
from exchange.central.registry import Registry
from exchange.central.setup import init_central
from exchange.cli import main
from exchange.identifiers import parse_member, parse_security_server, parse_subsystem
from exchange.messagelog.store import MessageLog
from exchange.messagelog.verify import verify_log
from exchange.protocol.jws import Signer
from exchange.server.config import load_server_config
from exchange.server.setup import init_server
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import generate_key, load_certificate, load_private_key
from exchange.trust.profiles import sign_template
from exchange.trust.revocation import REVOCATIONS_FILE, RevocationStore, record_in_ca_dir

PASSPHRASE = "a long enough backup passphrase"
ENV = "EXCHANGE_TEST_BACKUP_PASSPHRASE"
SERVER = parse_security_server("PS/GOV/MOI/ss1")
POLICY = 'provider = "PS/GOV/MOI"\n'
RECORDS = 12


def run(*args: object, passphrase: str = PASSPHRASE) -> tuple[int, str]:
    result = CliRunner(env={ENV: passphrase}).invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@dataclass(frozen=True)
class Site:
    root: Path
    ca: CertificateAuthority
    server_toml: Path
    central_toml: Path
    backup: Path


def _write_log(config_path: Path) -> None:
    config = load_server_config(config_path)
    signing = config.signing[0]
    signer = Signer(load_private_key(signing.key), load_certificate(signing.cert))

    async def append() -> None:
        with MessageLog(config.log_path, signer, owner=config.server_id) as log:
            await log.append_many(
                [{"message_id": f"m-{i}", "side": "consumer"} for i in range(RECORDS)]
            )
            await log.sign_tree_head()

    asyncio.run(append())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("site")
    ca = CertificateAuthority.create(root / "ca", "Backup Test CA")
    central = init_central(root / "central", "PS")
    policies = root / "policies"  # outside the server's directory, named absolutely
    policies.mkdir()
    (policies / "moi.toml").write_text(POLICY)
    result = init_server(
        root / "ss",
        SERVER,
        central.anchor_path,
        clients=[parse_subsystem("PS/GOV/MOI/registry")],
        ca=ca,
        policy_dir=policies,
    )
    _write_log(result.config)
    backup = root / "ss.zip"
    code, output = run(
        "server", "backup", "--config", result.config, "-o", backup, "--passphrase-env", ENV
    )
    assert code == 0, output
    return Site(root, ca, result.config, root / "central" / "central.toml", backup)


# --- what a backup holds and what a restore gives back ------------------------------------------


def test_restored_server_has_the_same_identity_keys_and_log(site: Site, tmp_path: Path) -> None:
    code, output = run(
        "server", "restore", site.backup, "--into", tmp_path / "r", "--passphrase-env", ENV
    )
    assert code == 0, output
    original = load_server_config(site.server_toml)
    restored = load_server_config(tmp_path / "r" / "server.toml")
    assert restored.server_id == original.server_id
    for old, new in [
        (original.auth_key, restored.auth_key),
        *((a.key, b.key) for a, b in zip(original.signing, restored.signing, strict=True)),
    ]:
        assert load_private_key(new).private_numbers() == load_private_key(old).private_numbers()
        assert stat.S_IMODE(new.stat().st_mode) == 0o600
    assert restored.auth_cert.read_bytes() == original.auth_cert.read_bytes()
    assert restored.policy_dir == tmp_path / "r" / "outside" / "policy-dir"
    assert (restored.policy_dir / "moi.toml").read_text() == POLICY
    report = verify_log(
        restored.log_path,
        trusted_cas=[site.ca.cert],
        owner=original.server_id,
        check_records=False,
    )
    assert report.ok and report.records == RECORDS, report.to_dict()


def test_private_keys_are_never_in_clear_in_the_backup(site: Site) -> None:
    config = load_server_config(site.server_toml)
    secrets = [config.auth_key.read_bytes(), *(s.key.read_bytes() for s in config.signing)]
    bodies = [b"".join(pem.splitlines()[1:-1]) for pem in secrets]
    with zipfile.ZipFile(site.backup) as zf:
        stored = b"".join(zf.read(name) for name in zf.namelist())
        manifest = orjson.loads(zf.read(MANIFEST))
    assert b"PRIVATE KEY" not in stored
    assert not any(body[:40] in stored for body in bodies)
    sealed = {m["path"] for m in manifest["members"] if m["kind"] == "secret"}
    assert sealed == {"keys/auth.key.pem", "keys/sign-MOI.key.pem"}


def test_relative_paths_survive_unchanged(site: Site, tmp_path: Path) -> None:
    """A configuration whose paths are all relative and inside its directory is restored
    byte for byte (comments included)."""
    directory = tmp_path / "plain"
    shutil.copytree(site.server_toml.parent, directory)
    doc = (
        (directory / "server.toml")
        .read_text()
        .replace(f'dir = "{site.root / "policies"}"', 'dir = "policies"')
    )
    (directory / "policies").mkdir()
    (directory / "policies" / "moi.toml").write_text(POLICY)
    (directory / "server.toml").write_text("# the operator's note\n" + doc)
    code, output = run(
        "server", "backup", "--config", directory / "server.toml", "-o", tmp_path / "b.zip",
        "--passphrase-env", ENV, "--json",
    )  # fmt: skip
    assert code == 0, output
    assert orjson.loads(output)["rewrites"] == []
    code, output = run(
        "server", "restore", tmp_path / "b.zip", "--into", tmp_path / "r", "--passphrase-env", ENV
    )
    assert code == 0, output
    assert (tmp_path / "r" / "server.toml").read_bytes() == (directory / "server.toml").read_bytes()


def test_absolute_paths_are_rewritten_into_the_restored_directory(
    site: Site, tmp_path: Path
) -> None:
    directory = tmp_path / "abs"
    shutil.copytree(site.server_toml.parent, directory)
    shared = tmp_path / "shared-anchor.json"
    shutil.copyfile(directory / "anchor.json", shared)
    config = (directory / "server.toml").read_text()
    config = config.replace('anchor = "anchor.json"', f'anchor = "{shared}"')
    config = config.replace(
        'path = "messagelog.sqlite"', f'path = "{directory / "messagelog.sqlite"}"'
    )
    (directory / "server.toml").write_text(config)
    code, output = run(
        "server", "backup", "--config", directory / "server.toml", "-o", tmp_path / "b.zip",
        "--passphrase-env", ENV, "--json",
    )  # fmt: skip
    assert code == 0, output
    rewrites = {r["setting"]: r["now"] for r in orjson.loads(output)["rewrites"]}
    assert rewrites == {
        "anchor": "outside/anchor/shared-anchor.json",
        "messagelog.path": "messagelog.sqlite",
        "policy.dir": "outside/policy-dir",
    }
    code, output = run(
        "server", "restore", tmp_path / "b.zip", "--into", tmp_path / "r", "--passphrase-env", ENV
    )
    assert code == 0, output
    restored = load_server_config(tmp_path / "r" / "server.toml")
    assert restored.anchor.read_bytes() == shared.read_bytes()
    assert restored.log_path == tmp_path / "r" / "messagelog.sqlite"
    assert verify_log(
        restored.log_path, trusted_cas=[site.ca.cert], owner=restored.server_id, check_records=False
    ).ok
    text = (tmp_path / "r" / "server.toml").read_text()
    assert str(tmp_path / "abs") not in text.split("\n\n", 1)[1]


# --- attacks on a backup file --------------------------------------------------------------------

Edit = Callable[[str, bytes], bytes | None]


def rezip(
    source: Path,
    target: Path,
    *,
    edit: Edit | None = None,
    extra: list[tuple[zipfile.ZipInfo, bytes]] | None = None,
    manifest: Callable[[dict[str, Any]], None] | None = None,
    reseal: bool = False,
    sizes: dict[str, int] | None = None,
) -> Path:
    """A copy of a backup with members edited (None drops one), added, its manifest changed
    (re-authenticated with the passphrase when ``reseal``: an insider), or sizes that lie."""
    with zipfile.ZipFile(source) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    doc = orjson.loads(dict((i.filename, d) for i, d in members)[MANIFEST])
    if manifest is not None:
        manifest(doc)
    manifest_bytes = orjson.dumps(doc)
    out: list[tuple[zipfile.ZipInfo, bytes]] = []
    for info, data in members:
        if info.filename == MANIFEST:
            data = manifest_bytes if manifest is not None else data
        elif info.filename == MANIFEST_MAC and reseal:
            keys = BackupKeys(PASSPHRASE.encode(), KdfParams.from_json(doc["kdf"]))
            data = keys.manifest_mac(manifest_bytes).encode()
        elif edit is not None:
            edited = edit(info.filename, data)
            if edited is None:
                continue
            data = edited
        out.append((info, data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a duplicate name is the point of one test
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for info, data in [*out, *(extra or [])]:
                zf.writestr(info, data)
            for info in zf.infolist():
                if sizes and info.filename in sizes:
                    info.file_size = sizes[info.filename]  # what the central directory says
    return target


def _member(doc: dict[str, Any], path: str) -> dict[str, Any]:
    return next(m for m in doc["members"] if m["path"] == path)


def _flip(name: str, data: bytes, target: str = "data/anchor.json") -> bytes:
    return data[:-2] + bytes([data[-2] ^ 1]) + data[-1:] if name == target else data


def _entry(name: str, mode: int = stat.S_IFREG | 0o644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


def _altered_with_hash(doc: dict[str, Any]) -> None:
    _member(doc, "anchor.json")["sha256"] = "0" * 64


def _grow(doc: dict[str, Any]) -> None:
    _member(doc, "anchor.json")["size"] = 2**50


def _traversal_in_manifest(doc: dict[str, Any]) -> None:
    _member(doc, "anchor.json")["path"] = "../evil"


def _lying_size(doc: dict[str, Any]) -> None:
    member = _member(doc, "messagelog.sqlite")
    member["size"] = 16
    member["sha256"] = hashlib.sha256(b"SQLite format 3\x00").hexdigest()  # its first 16 bytes


ATTACKS = [
    pytest.param({"edit": _flip}, 1, "anchor.json was altered", id="member-altered"),
    pytest.param(
        {"edit": _flip, "manifest": _altered_with_hash},
        1,
        "manifest was altered",
        id="member-and-its-hash-altered-without-the-passphrase",
    ),
    pytest.param(
        {"edit": lambda n, d: None if n == "data/keys/auth.cert.pem" else d},
        1,
        "keys/auth.cert.pem is missing",
        id="member-missing",
    ),
    pytest.param(
        {"extra": [(_entry("data/keys/extra.pem"), b"planted")]},
        1,
        "not in the backup's manifest",
        id="member-added",
    ),
    pytest.param(
        {"extra": [(_entry("data/../../evil"), b"x")]},
        1,
        "outside the restored directory",
        id="dot-dot-member",
    ),
    pytest.param(
        {"extra": [(_entry("../evil"), b"x")]}, 1, "which no backup has", id="dot-dot-entry"
    ),
    pytest.param(
        {"extra": [(_entry("data//tmp/evil"), b"x")]},
        1,
        "outside the restored directory",
        id="absolute-member",
    ),
    pytest.param(
        {"extra": [(_entry("data/evil-link", stat.S_IFLNK | 0o777), b"/etc/passwd")]},
        1,
        "not a plain file",
        id="symlink-member",
    ),
    pytest.param(
        {"extra": [(_entry("data/anchor.json"), b"{}")]}, 1, "twice", id="duplicate-member"
    ),
    pytest.param(
        {"manifest": _traversal_in_manifest, "reseal": True},
        1,
        "'../evil' would land outside the restored directory",
        id="insider-dot-dot-manifest",
    ),
    pytest.param(
        {"manifest": _grow, "reseal": True, "sizes": {"data/anchor.json": 2**50}},
        2,
        "restoring needs 1125899906",
        id="insider-huge-member",
    ),
    pytest.param(
        {"manifest": _lying_size, "reseal": True, "sizes": {"data/messagelog.sqlite": 16}},
        1,
        "messagelog.sqlite is damaged",
        id="insider-member-larger-than-it-says",
    ),
]


@pytest.mark.parametrize(("change", "exit_code", "message"), ATTACKS)
def test_a_tampered_backup_is_refused_and_nothing_is_written(
    site: Site, tmp_path: Path, change: dict[str, Any], exit_code: int, message: str
) -> None:
    bad = rezip(site.backup, tmp_path / "bad.zip", **change)
    target = tmp_path / "target"
    code, output = run("server", "restore", bad, "--into", target, "--passphrase-env", ENV)
    assert (code, message in output) == (exit_code, True), output
    assert len(output.strip().splitlines()) == 1, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]
    assert not (tmp_path.parent / "evil").exists()


def test_truncated_backup_is_refused(site: Site, tmp_path: Path) -> None:
    data = site.backup.read_bytes()
    for cut in (len(data) - 10, len(data) // 2, 100):
        truncated = tmp_path / f"cut-{cut}.zip"
        truncated.write_bytes(data[:cut])
        code, output = run(
            "server", "restore", truncated, "--into", tmp_path / "t", "--passphrase-env", ENV
        )
        assert code == 1 and "not a complete backup" in output, output
        assert not (tmp_path / "t").exists()


def test_wrong_passphrase_is_refused(site: Site, tmp_path: Path) -> None:
    code, output = run(
        "server", "restore", site.backup, "--into", tmp_path / "t", "--passphrase-env", ENV,
        passphrase="not the passphrase at all",
    )  # fmt: skip
    assert code == 1 and "wrong passphrase" in output, output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("what", ["non-empty-directory", "file"])
def test_restore_refuses_a_target_that_is_not_new(site: Site, tmp_path: Path, what: str) -> None:
    target = tmp_path / "target"
    if what == "file":
        target.write_text("x")
    else:
        target.mkdir()
        (target / "keep.txt").write_text("mine")
    code, output = run("server", "restore", site.backup, "--into", target, "--passphrase-env", ENV)
    assert code == 2, output
    assert "choose a new directory" in output or "not empty" in output
    assert target.is_file() or sorted(p.name for p in target.iterdir()) == ["keep.txt"]


def test_restore_into_an_empty_directory(site: Site, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, output = run(
        "server", "restore", site.backup, "--into", tmp_path / "empty", "--passphrase-env", ENV
    )
    assert code == 0, output
    assert (tmp_path / "empty" / "server.toml").is_file()


def test_a_backup_of_another_role_is_refused(site: Site, tmp_path: Path) -> None:
    code, output = run(
        "central", "restore", site.backup, "--into", tmp_path / "c", "--passphrase-env", ENV
    )
    assert code == 2 and "exchange server restore" in output, output


def test_json_on_success_and_on_error(site: Site, tmp_path: Path) -> None:
    code, output = run(
        "server",
        "restore",
        site.backup,
        "--into",
        tmp_path / "r",
        "--passphrase-env",
        ENV,
        "--json",
    )
    assert code == 0, output
    done = orjson.loads(output)
    assert done["ok"] and done["role"] == "server" and done["identity"] == str(SERVER)
    assert done["config"] == str(tmp_path / "r" / "server.toml")
    assert done["sealed_keys"] == 2 and "messagelog.sqlite" in done["databases"]
    code, output = run(
        "server",
        "restore",
        site.backup,
        "--into",
        tmp_path / "r",
        "--passphrase-env",
        ENV,
        "--json",
    )
    assert code == 2
    error = orjson.loads(output)["error"]
    assert error["code"] == "Server.ConfigurationError" and error["exit_code"] == 2
    assert "not empty" in error["message"]
    code, output = run(
        "server", "backup", "--config", tmp_path / "nowhere.toml", "-o", tmp_path / "x.zip",
        "--passphrase-env", ENV, "--json",
    )  # fmt: skip
    assert code == 2 and orjson.loads(output)["error"]["exit_code"] == 2


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(["--passphrase-env", ENV], "short", "at least 12", id="short-passphrase"),
        pytest.param(["--passphrase-env", "UNSET_VARIABLE_X"], PASSPHRASE, "not set", id="unset"),
        pytest.param([], PASSPHRASE, "--passphrase-env", id="no-terminal"),
    ],
)
def test_backup_needs_a_real_passphrase(
    site: Site, tmp_path: Path, args: list[str], env: str, message: str
) -> None:
    out = tmp_path / "b.zip"
    code, output = run(
        "server", "backup", "--config", site.server_toml, "-o", out, *args, passphrase=env
    )
    assert code == 2 and message in output, output
    assert list(tmp_path.iterdir()) == []


def test_backup_never_overwrites(site: Site) -> None:
    before = site.backup.read_bytes()
    code, output = run(
        "server", "backup", "--config", site.server_toml, "-o", site.backup, "--passphrase-env", ENV
    )
    assert code == 2 and "already exists" in output
    assert site.backup.read_bytes() == before


# --- the central server and the CA ---------------------------------------------------------------


def test_central_restore_moves_the_version_past_what_servers_hold(
    site: Site, tmp_path: Path
) -> None:
    with Registry.open(site.root / "central" / "central.db") as reg:
        reg.add_member(parse_member("PS/GOV/MOI"), "Interior")
        version = reg.version()
    code, output = run(
        "central", "backup", "--config", site.central_toml, "-o", tmp_path / "c.zip",
        "--passphrase-env", ENV,
    )  # fmt: skip
    assert code == 0 and "sealed" in output, output
    code, output = run(
        "central", "restore", tmp_path / "c.zip", "--into", tmp_path / "same",
        "--passphrase-env", ENV, "--json",
    )  # fmt: skip
    assert code == 0, output
    assert orjson.loads(output)["version_published_next"] == version
    code, output = run(
        "central", "restore", tmp_path / "c.zip", "--into", tmp_path / "later",
        "--passphrase-env", ENV, "--version-above", version + 40, "--json",
    )  # fmt: skip
    assert code == 0, output
    with Registry.open(tmp_path / "later" / "central.db") as reg:
        assert reg.version() == version + 41
        assert reg.build_globalconf(0).member(parse_member("PS/GOV/MOI")) is not None
    key = tmp_path / "later" / "keys" / "globalconf-signing.key"
    assert (
        load_private_key(key).private_numbers()
        == load_private_key(
            site.root / "central" / "keys" / "globalconf-signing.key"
        ).private_numbers()
    )


def test_ca_backup_keeps_its_encrypted_key_and_its_register(tmp_path: Path) -> None:
    secret = b"the CA key's own passphrase"
    ca = CertificateAuthority.create(tmp_path / "ca", "Encrypted CA", passphrase=secret)
    good, revoked = (
        ca.issue(generate_key().public_key(), sign_template(parse_member(f"PS/GOV/M{i}")))
        for i in (1, 2)
    )
    for cert in (good, revoked):
        record_in_ca_dir(tmp_path / "ca", cert, "sign")
    with RevocationStore(tmp_path / "ca" / REVOCATIONS_FILE) as store:
        store.revoke(revoked.serial_number, "keyCompromise")
    code, output = run(
        "ca",
        "backup",
        "--ca-dir",
        tmp_path / "ca",
        "-o",
        tmp_path / "ca.zip",
        "--passphrase-env",
        ENV,
    )
    assert code == 0, output
    code, output = run(
        "ca", "restore", tmp_path / "ca.zip", "--into", tmp_path / "back", "--passphrase-env", ENV
    )
    assert code == 0, output
    restored = CertificateAuthority.load(tmp_path / "back", passphrase=secret)
    assert restored.cert == ca.cert
    with RevocationStore(tmp_path / "back" / REVOCATIONS_FILE, create=False) as store:
        statuses = [store.status(c.serial_number) for c in (good, revoked)]
    assert [s is not None and s.revoked for s in statuses] == [False, True]
    with zipfile.ZipFile(tmp_path / "ca.zip") as zf:
        assert all(b"PRIVATE KEY" not in zf.read(n) for n in zf.namelist())


def test_ca_backup_must_be_written_outside_the_ca_directory(tmp_path: Path) -> None:
    CertificateAuthority.create(tmp_path / "ca", "CA")
    code, output = run(
        "ca",
        "backup",
        "--ca-dir",
        tmp_path / "ca",
        "-o",
        tmp_path / "ca" / "b.zip",
        "--passphrase-env",
        ENV,
    )
    assert code == 2 and "outside the directory" in output, output


def test_a_sealed_key_opens_only_under_its_own_name() -> None:
    keys = BackupKeys(PASSPHRASE.encode(), KdfParams.fresh())
    sealed = keys.seal("keys/auth.key.pem", b"-----BEGIN PRIVATE KEY-----")
    assert keys.open("keys/auth.key.pem", sealed) == b"-----BEGIN PRIVATE KEY-----"
    with pytest.raises(BackupError, match="does not open"):
        keys.open("keys/sign-MOI.key.pem", sealed)
    with pytest.raises(BackupError, match="does not open"):
        keys.open("keys/auth.key.pem", sealed[:-1] + bytes([sealed[-1] ^ 1]))
