"""The central server: registry, publishing app, the security server's poller, and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import click
import pytest
from aiohttp import web
from click.testing import CliRunner

from exchange.central.app import (
    PUBLISHER_KEY,
    CentralConfig,
    Publisher,
    create_app,
    load_central_config,
    run_central,
)
from exchange.central.registry import Registry
from exchange.cli.central import group
from exchange.errors import ConfigurationError
from exchange.globalconf import (
    Anchor,
    GlobalConfRollback,
    Settings,
    TrustedGlobalConf,
)
from exchange.globalconf.client import GlobalConfDownloadError, GlobalConfPoller
from exchange.identifiers import (
    parse_global_group,
    parse_member,
    parse_security_server,
    parse_subsystem,
)
from exchange.trust.keys import (
    cert_pem,
    fingerprint,
    generate_key,
    save_certificate,
    self_signed_certificate,
)

MOI = parse_member("PS/GOV/MOI")
MOF = parse_member("PS/GOV/MOF")
REGISTRY_SUB = parse_subsystem("PS/GOV/MOI/population-registry")
SS1 = parse_security_server("PS/GOV/MOI/ss1")
WINDOWS = parse_global_group("PS/unified-windows")
FP = "ab" * 32


def _cert_pem(cn: str) -> str:
    return cert_pem(self_signed_certificate(generate_key(), cn))


def _now() -> int:
    return int(time.time())


# --- the registry --------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry.create(tmp_path / "central.db", "PS") as reg:
        yield reg


def _populate(reg: Registry) -> None:
    reg.add_member(MOI, "Ministry of Interior")
    reg.add_subsystem(REGISTRY_SUB)
    reg.add_server(SS1, "127.0.0.1:8443", [":".join(["AB"] * 32)])
    reg.add_server_client(SS1, REGISTRY_SUB)
    reg.add_group(WINDOWS, "Post office windows")
    reg.add_group_member(WINDOWS, REGISTRY_SUB)


def test_every_change_bumps_the_version_and_shows_in_the_conf(registry: Registry) -> None:
    assert registry.version() == 1
    _populate(registry)
    ca = _cert_pem("PS Root CA")
    registry.add_ca("PS Root CA", ca, ["http://127.0.0.1:8888/ocsp"])
    registry.add_tsa("PS TSA", "http://127.0.0.1:8889/tsa", ca)
    assert registry.version() == 9
    conf = registry.build_globalconf(1000)
    assert (conf.instance, conf.version, conf.generated_at, conf.expires_at) == (
        "PS",
        9,
        1000,
        1600,
    )
    assert conf.member(MOI) is not None and conf.member(MOI).subsystems == (REGISTRY_SUB,)  # type: ignore[union-attr]
    assert conf.server_by_fingerprint(FP) == conf.server(SS1)
    assert [s.id for s in conf.servers_hosting(REGISTRY_SUB)] == [SS1]
    assert conf.groups_of(REGISTRY_SUB) == {WINDOWS}
    assert conf.approved_cas[0].ocsp_urls == ("http://127.0.0.1:8888/ocsp",)
    assert conf.approved_tsas[0].url == "http://127.0.0.1:8889/tsa"
    assert len(conf.ca_certs()) == 1


def test_build_is_stable_between_regenerations(registry: Registry) -> None:
    _populate(registry)
    assert registry.build_globalconf(1000).same_content(registry.build_globalconf(1060))


def _fails(change: Callable[[Registry], Any]) -> Callable[[Registry], Any]:
    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(lambda r: r.add_member(MOI, "again"), "already registered", id="dup-member"),
        pytest.param(
            lambda r: r.add_member(parse_member("XX/GOV/MOI"), "x"), "not in instance", id="inst"
        ),
        pytest.param(lambda r: r.add_member(MOF, " "), "non-empty", id="blank-name"),
        pytest.param(lambda r: r.remove_member(MOF), "unknown member", id="remove-unknown"),
        pytest.param(lambda r: r.remove_member(MOI), "still owns", id="remove-owner"),
        pytest.param(
            lambda r: r.add_subsystem(parse_subsystem("PS/GOV/MOF/x")),
            "unknown member",
            id="subsystem-of-unknown-member",
        ),
        pytest.param(
            lambda r: r.add_subsystem(REGISTRY_SUB), "already registered", id="dup-subsystem"
        ),
        pytest.param(
            lambda r: r.add_server(parse_security_server("PS/GOV/MOF/ss1"), "h:1"),
            "unknown member",
            id="server-of-unknown-member",
        ),
        pytest.param(lambda r: r.add_server(SS1, "h:1"), "already registered", id="dup-server"),
        pytest.param(
            lambda r: r.add_server(parse_security_server("PS/GOV/MOI/ss2"), "h"),
            "host:port",
            id="address-without-port",
        ),
        pytest.param(
            lambda r: r.add_server(parse_security_server("PS/GOV/MOI/ss2"), "h:1", [FP]),
            "already registered for PS/GOV/MOI/ss1",
            id="auth-cert-of-another-server",
        ),
        pytest.param(lambda r: r.add_auth_cert(SS1, "xyz"), "64 hex", id="bad-fingerprint"),
        pytest.param(lambda r: r.remove_auth_cert(SS1, "cd" * 32), "not registered", id="rm-fp"),
        pytest.param(
            lambda r: r.set_server_address(parse_security_server("PS/GOV/MOI/nope"), "h:1"),
            "unknown security server",
            id="address-of-unknown-server",
        ),
        pytest.param(
            lambda r: r.add_server_client(SS1, REGISTRY_SUB), "already a client", id="dup-client"
        ),
        pytest.param(
            lambda r: r.add_server_client(SS1, parse_subsystem("PS/GOV/MOI/nope")),
            "unknown subsystem",
            id="client-unknown",
        ),
        pytest.param(
            lambda r: r.remove_server_client(SS1, parse_subsystem("PS/GOV/MOI/nope")),
            "is not a client",
            id="remove-client-unknown",
        ),
        pytest.param(lambda r: r.add_group(WINDOWS, "x"), "already registered", id="dup-group"),
        pytest.param(
            lambda r: r.add_group_member(WINDOWS, REGISTRY_SUB), "already in", id="dup-in-group"
        ),
        pytest.param(
            lambda r: r.add_group_member(WINDOWS, MOF), "unknown member", id="group-unknown-member"
        ),
        pytest.param(
            lambda r: r.add_group_member(parse_global_group("PS/nope"), MOI),
            "unknown global group",
            id="unknown-group",
        ),
        pytest.param(
            lambda r: r.remove_group_member(WINDOWS, MOI), "is not in", id="remove-non-member"
        ),
        pytest.param(lambda r: r.add_ca("CA", "junk"), "not a PEM", id="ca-not-pem"),
        pytest.param(
            lambda r: r.add_ca("CA", _cert_pem("CA"), ["ldap://x"]), "OCSP URL", id="ocsp-url"
        ),
        pytest.param(lambda r: r.remove_ca("nope"), "unknown approved CA", id="remove-ca"),
        pytest.param(lambda r: r.add_tsa("TSA", "x", _cert_pem("TSA")), "TSA URL", id="tsa-url"),
        pytest.param(lambda r: r.remove_tsa("nope"), "unknown approved TSA", id="remove-tsa"),
    ],
)
def test_bad_changes_are_refused_and_change_nothing(
    registry: Registry, change: Callable[[Registry], Any], message: str
) -> None:
    _populate(registry)
    before = registry.build_globalconf(1000)
    with pytest.raises(ConfigurationError, match=message):
        change(registry)
    assert registry.build_globalconf(1000) == before


def test_removals_cascade_to_references(registry: Registry) -> None:
    _populate(registry)
    registry.remove_subsystem(REGISTRY_SUB)
    conf = registry.build_globalconf(1000)
    assert conf.servers_hosting(REGISTRY_SUB) == ()
    assert conf.groups_of(REGISTRY_SUB) == frozenset()
    registry.remove_server(SS1)
    assert registry.build_globalconf(1000).server_by_fingerprint(FP) is None
    registry.remove_member(MOI)
    assert registry.build_globalconf(1000).members == ()


def test_auth_cert_rotation(registry: Registry) -> None:
    _populate(registry)
    registry.add_auth_cert(SS1, "cd" * 32)
    assert registry.build_globalconf(1).server(SS1).auth_cert_fingerprints == (FP, "cd" * 32)  # type: ignore[union-attr]
    registry.remove_auth_cert(SS1, FP.upper())
    assert registry.build_globalconf(1).server(SS1).auth_cert_fingerprints == ("cd" * 32,)  # type: ignore[union-attr]


def test_settings_change_bumps_only_when_different(registry: Registry) -> None:
    assert registry.set_settings(Settings()) is False
    assert registry.version() == 1
    assert registry.set_settings(Settings(globalconf_expiry_seconds=900)) is True
    assert registry.version() == 2
    assert registry.build_globalconf(0).expires_at == 900


def test_a_second_connection_sees_changes(tmp_path: Path, registry: Registry) -> None:
    with Registry.open(tmp_path / "central.db") as other:
        other.add_member(MOF, "Ministry of Finance")
    assert registry.version() == 2
    assert registry.build_globalconf(0).has_member(MOF)


def test_opening_what_is_not_a_registry(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        Registry.open(tmp_path / "missing.db")
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(ConfigurationError, match="not a central registry"):
        Registry.open(tmp_path / "other.db")
    (tmp_path / "text.db").write_text("hello")
    with pytest.raises(ConfigurationError, match="not a central registry"):
        Registry.open(tmp_path / "text.db")
    with pytest.raises(ConfigurationError, match="already exists"):
        Registry.create(tmp_path / "other.db", "PS")


# --- the central server and the poller -----------------------------------------------------------


def _init(tmp_path: Path) -> Path:
    result = CliRunner().invoke(
        group, ["init", "--dir", str(tmp_path / "central"), "--instance", "PS"]
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "central" / "central.toml"


@dataclass
class Central:
    config: CentralConfig
    url: str
    publisher: Publisher

    def change(self, change: Callable[[Registry], int]) -> int:
        with Registry.open(self.config.db_path) as reg:
            return change(reg)

    async def published(self, version: int) -> bytes:
        async with asyncio.timeout(10):
            return (await self.publisher.wait_for_version(version)).body


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
def config(tmp_path: Path) -> CentralConfig:
    loaded = load_central_config(_init(tmp_path))
    return dataclasses.replace(loaded, port=0, change_check_seconds=0.05)


@pytest.fixture
async def central(config: CentralConfig) -> AsyncIterator[Central]:
    app = create_app(config)
    async with serving(app) as url:
        yield Central(config, url, app[PUBLISHER_KEY])


def _rogue(responses: list[web.Response | bytes]) -> tuple[web.Application, list[int]]:
    """A server answering with ``responses`` in turn (the last one repeats)."""
    hits: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        hits.append(1)
        answer = responses[min(len(hits), len(responses)) - 1]
        return answer if isinstance(answer, web.Response) else web.Response(body=answer)

    app = web.Application()
    app.router.add_get("/globalconf", handler)
    return app, hits


async def test_globalconf_route_serves_signed_conf_with_etag(central: Central) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(central.url + "/anchor") as resp:
            anchor = Anchor.from_json(await resp.read())
        async with session.get(central.url + "/globalconf") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/jose"
            assert resp.headers["X-Exchange-GlobalConf-Version"] == "1"
            etag = resp.headers["ETag"]
            body = await resp.read()
        async with session.get(
            central.url + "/globalconf", headers={"If-None-Match": etag}
        ) as resp:
            assert resp.status == 304
        async with session.get(central.url + "/health") as resp:
            health = await resp.json()
    trusted = TrustedGlobalConf(anchor, now=_now())
    assert trusted.update(body, _now())
    assert health["status"] == "ok" and health["version"] == 1 and health["instance"] == "PS"


async def test_poller_follows_registry_changes(central: Central, tmp_path: Path) -> None:
    anchor = Anchor.load(central.config.anchor_path)
    trusted = TrustedGlobalConf(anchor, now=_now())
    seen: list[int] = []
    state = tmp_path / "ss" / "globalconf.jws"
    url = central.url + "/globalconf"
    async with GlobalConfPoller(
        trusted, url, state, on_change=lambda c: seen.append(c.version)
    ) as poller:
        assert await poller.fetch_once() is True
        assert state.read_bytes() == trusted.current_bytes
        version = central.change(lambda r: r.add_member(MOF, "Ministry of Finance"))
        await central.published(version)
        assert await poller.fetch_once() is True
        assert await poller.fetch_once() is False
    assert trusted.check_fresh(_now()).has_member(MOF)
    assert seen == [1, version]
    assert state.read_bytes() == trusted.current_bytes


async def test_persisted_state_survives_restart_and_refuses_rollback(
    central: Central, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    anchor = Anchor.load(central.config.anchor_path)
    state = tmp_path / "globalconf.jws"
    old = await central.published(1)
    version = central.change(lambda r: r.add_member(MOF, "Ministry of Finance"))
    await central.published(version)
    async with GlobalConfPoller(
        TrustedGlobalConf(anchor, now=_now()), central.url + "/globalconf", state
    ) as poller:
        await poller.fetch_once()
    persisted = state.read_bytes()

    restarted = TrustedGlobalConf(anchor, now=_now())
    rogue, hits = _rogue([old])
    async with serving(rogue) as rogue_url:
        poller = GlobalConfPoller(restarted, rogue_url + "/globalconf", state)
        async with poller:
            assert poller.load_persisted() is True
            assert restarted.check_fresh(_now()).version == version
            with caplog.at_level(logging.ERROR), pytest.raises(GlobalConfRollback):
                await poller.fetch_once()
    assert hits == [1]
    assert restarted.current_bytes == persisted
    assert state.read_bytes() == persisted
    assert "rollback refused" in caplog.text


async def test_run_loop_survives_errors(
    central: Central, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = await central.published(1)
    rogue, hits = _rogue([web.Response(status=500), b"garbage", good])
    trusted = TrustedGlobalConf(Anchor.load(central.config.anchor_path), now=_now())
    changed = asyncio.Event()
    async with serving(rogue) as url:
        poller = GlobalConfPoller(
            trusted, url + "/globalconf", tmp_path / "gc.jws", 0.01, lambda c: changed.set()
        )
        with caplog.at_level(logging.WARNING):
            task = asyncio.create_task(poller.run())
            async with asyncio.timeout(10):
                await changed.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert len(hits) >= 3
    assert "HTTP 500" in caplog.text
    assert "signature refused" in caplog.text
    assert trusted.current_bytes == good


async def test_unreachable_central_server_is_a_download_error(
    config: CentralConfig, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    trusted = TrustedGlobalConf(Anchor.load(config.anchor_path), now=_now())
    async with GlobalConfPoller(trusted, f"http://127.0.0.1:{port}/", tmp_path / "s") as poller:
        with pytest.raises(GlobalConfDownloadError) as info:
            await poller.fetch_once()
    assert info.value.code == "Server.ClientProxy.NetworkError"
    assert trusted.current is None


def test_corrupt_persisted_state_is_ignored(config: CentralConfig, tmp_path: Path) -> None:
    state = tmp_path / "gc.jws"
    state.write_bytes(b"not a jws")
    trusted = TrustedGlobalConf(Anchor.load(config.anchor_path), now=_now())
    poller = GlobalConfPoller(trusted, "http://127.0.0.1:1/", state)
    assert poller.load_persisted() is False
    assert (
        GlobalConfPoller(trusted, "http://127.0.0.1:1/", tmp_path / "no").load_persisted() is False
    )


async def test_run_central_binds_port_zero(config: CentralConfig) -> None:
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_central(config, on_bound=bound.set_result))
    try:
        async with asyncio.timeout(10):
            port = await bound
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/health") as resp,
        ):
            assert resp.status == 200
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_central_refuses_an_anchor_without_its_signing_cert(config: CentralConfig) -> None:
    Anchor("PS", "http://x/globalconf", 0, (_cert_pem("someone else"),)).save(config.anchor_path)
    runner = web.AppRunner(create_app(config))
    try:
        with pytest.raises(ConfigurationError, match="does not hold the signing certificate"):
            await runner.setup()
    finally:
        await runner.cleanup()


_PATHS = 'database = "d"\nsigning_key = "k"\nsigning_cert = "c"\nanchor = "a"\n'


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        pytest.param(
            "instance = ",
            "1: not valid TOML: Invalid value (at the end)",
            id="bad-toml",
        ),
        pytest.param(
            f'instance = "PS"\n{_PATHS}colour = "red"',
            "6: colour: unknown key (known here: instance, database, signing_key, signing_cert, "
            "anchor, host, port, regenerate_interval_seconds, expiry_seconds, "
            "change_check_seconds, logging)",
            id="unknown-key",
        ),
        pytest.param(
            'instance = "PS"\nsigning_key = "k"\nsigning_cert = "c"\nanchor = "a"',
            "1: database: required, but missing",
            id="missing-paths",
        ),
        pytest.param(
            f'instance = "PS"\n{_PATHS}port = "80"',
            '6: port: must be an integer, not the string "80"',
            id="port-text",
        ),
        pytest.param(
            f'instance = "PS"\n{_PATHS}regenerate_interval_seconds = 600',
            "6: regenerate_interval_seconds: must be shorter than expiry_seconds (600), or "
            "configurations expire before the next one is published",
            id="interval-not-below-expiry",
        ),
    ],
)
def test_bad_central_config(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "central.toml"
    path.write_text(toml)
    with pytest.raises(ConfigurationError) as refused:
        load_central_config(path)
    assert refused.value.message == f"{path}:{message}"


# --- the CLI -------------------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(group, list(args))


def test_init_creates_keys_config_and_anchor(tmp_path: Path) -> None:
    toml = _init(tmp_path)
    config = load_central_config(toml)
    assert stat.S_IMODE(os.stat(config.signing_key_path).st_mode) == 0o600
    anchor = Anchor.load(config.anchor_path)
    assert anchor.instance == "PS"
    assert anchor.download_url == "http://127.0.0.1:4000/globalconf"
    again = _cli("init", "--dir", str(toml.parent), "--instance", "PS")
    assert again.exit_code == 2
    assert "already exists" in again.output


def test_cli_edits_the_registry(tmp_path: Path) -> None:
    toml = str(_init(tmp_path))
    auth = tmp_path / "auth.pem"
    auth_cert = self_signed_certificate(generate_key(), "ss1 auth")
    save_certificate(auth, auth_cert)
    c = ("--config", toml)
    ids = ("PS/GOV/MOI/ss1", "PS/GOV/MOI/population-registry", "PS/GOV/POST/biddu-window")
    ocsp, tsa = "http://127.0.0.1:8888/ocsp", "http://127.0.0.1:8889/tsa"
    commands = [
        ["member", "add", *c, "PS/GOV/MOI", "--name", "Ministry of Interior"],
        ["member", "add", *c, "PS/GOV/POST", "--name", "Palestine Post"],
        ["subsystem", "add", *c, ids[1]],
        ["subsystem", "add", *c, ids[2]],
        ["server", "add", *c, ids[0], "--address", "127.0.0.1:8443", "--auth-cert", str(auth)],
        ["server", "add-client", *c, ids[0], ids[1]],
        ["server", "set-address", *c, ids[0], "127.0.0.1:9443"],
        ["group", "add", *c, "PS/unified-windows", "--description", "Windows"],
        ["group", "add-member", *c, "PS/unified-windows", ids[2]],
        ["ca", "add", *c, "--name", "Root", "--cert", str(auth), "--ocsp-url", ocsp],
        ["tsa", "add", *c, "--name", "TSA", "--url", tsa, "--cert", str(auth)],
    ]
    for args in commands:
        result = _cli(*args)
        assert result.exit_code == 0, (args, result.output)
    assert "registry version 12" in result.output
    shown = json.loads(_cli("show", "--config", toml, "--json").output)
    assert shown["version"] == 12
    server = shown["security_servers"][0]
    assert server["address"] == "127.0.0.1:9443"
    assert server["auth_cert_fingerprints"] == [fingerprint(auth_cert)]
    assert server["clients"] == ["PS/GOV/MOI/population-registry"]
    assert shown["global_groups"][0]["members"] == ["PS/GOV/POST/biddu-window"]
    human = _cli("show", "--config", toml)
    assert human.exit_code == 0 and "Ministry of Interior" in human.output
    exported = tmp_path / "exported-anchor.json"
    assert _cli("anchor", "--config", toml, "-o", str(exported)).exit_code == 0
    assert Anchor.load(exported) == Anchor.load(load_central_config(toml).anchor_path)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(
            ["member", "add", "--config", "{toml}", "PS/GOV", "--name", "x"],
            2,
            "invalid member identifier",
            id="bad-identifier",
        ),
        pytest.param(
            ["member", "add", "--config", "{toml}", "XX/GOV/MOI", "--name", "x"],
            2,
            "not in instance PS",
            id="other-instance",
        ),
        pytest.param(
            ["subsystem", "add", "--config", "{toml}", "PS/GOV/MOI/x"],
            2,
            "unknown member PS/GOV/MOI",
            id="unknown-member",
        ),
        pytest.param(
            ["member", "remove", "--config", "{dir}/nope.toml", "PS/GOV/MOI"],
            2,
            "cannot read",
            id="missing-config",
        ),
        pytest.param(
            ["server", "add-auth-cert", "--config", "{toml}", "PS/GOV/MOI/ss1"],
            2,
            "exactly one of --cert and --fingerprint",
            id="auth-cert-needs-one",
        ),
        pytest.param(
            [
                "server",
                "add-auth-cert",
                "--config",
                "{toml}",
                "PS/GOV/MOI/ss1",
                "--fingerprint",
                FP,
            ],
            2,
            "unknown security server",
            id="auth-cert-unknown-server",
        ),
    ],
)
def test_cli_errors(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    toml = _init(tmp_path)
    result = _cli(*(a.format(toml=toml, dir=tmp_path) for a in args))
    assert result.exit_code == code
    assert message in result.output


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


@pytest.mark.parametrize("path", list(_commands(group)), ids=lambda p: " ".join(p) or "central")
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    result = _cli(*path, "--help")
    assert result.exit_code == 0
    assert "Example:" in result.output


def test_server_client_and_group_member_commands_say_what_they_did(tmp_path: Path) -> None:
    """The exact output and exit code of each run: done (0), refused by the registry (2, one
    line), a bad or missing argument (2, click's usage error)."""
    c = ("--config", str(_init(tmp_path)))
    ss1, pop = "PS/GOV/MOI/ss1", "PS/GOV/MOI/pop"
    for args in (
        ["member", "add", *c, "PS/GOV/MOI", "--name", "Interior"],
        ["subsystem", "add", *c, pop],
        ["server", "add", *c, ss1, "--address", "127.0.0.1:1"],
        ["group", "add", *c, "PS/win", "--description", "Windows"],
    ):
        assert _cli(*args).exit_code == 0
    usage = "Usage: central {} [OPTIONS] {}\nTry 'central {} --help' for help.\n\nError: {}\n"
    runs = [
        (["server", "add-client", ss1, pop], 0, f"{ss1} now hosts {pop} (registry version 6)\n"),
        (["server", "add-client", ss1, pop], 2, f"error: {pop} is already a client of {ss1}\n"),
        (
            ["server", "add-client", "PS/GOV/MOI/ss9", pop],
            2,
            "error: unknown security server PS/GOV/MOI/ss9: add it first\n",
        ),
        (
            ["server", "add-client", ss1, "PS/GOV/MOI"],
            2,
            usage.format(
                "server add-client",
                "SERVER_ID SUBSYSTEM_ID",
                "server add-client",
                "Invalid value for 'SUBSYSTEM_ID': invalid subsystem identifier 'PS/GOV/MOI': "
                "expected 4 parts separated by '/', got 3",
            ),
        ),
        (
            ["server", "remove-client", ss1, pop],
            0,
            f"{ss1} no longer hosts {pop} (registry version 7)\n",
        ),
        (["server", "remove-client", ss1, pop], 2, f"error: {pop} is not a client of {ss1}\n"),
        (
            ["group", "add-member", "PS/win", pop],
            0,
            f"{pop} added to PS/win (registry version 8)\n",
        ),
        (
            ["group", "add-member", "PS/win", pop],
            2,
            f"error: {pop} is already in global group PS/win\n",
        ),
        (
            ["group", "add-member", "PS/nope", pop],
            2,
            "error: unknown global group PS/nope: add it first\n",
        ),
        (
            ["group", "add-member", "PS/win", "PS/GOV"],
            2,
            usage.format(
                "group add-member",
                "GROUP_ID CLIENT",
                "group add-member",
                "Invalid value for 'CLIENT': invalid subsystem identifier 'PS/GOV': "
                "expected 4 parts separated by '/', got 2",
            ),
        ),
        (
            ["group", "remove-member", "PS/win", pop],
            0,
            f"{pop} removed from PS/win (registry version 9)\n",
        ),
        (
            ["group", "remove-member", "PS/win", pop],
            2,
            f"error: {pop} is not in global group PS/win\n",
        ),
        (
            ["group", "remove-member", "PS/win"],
            2,
            usage.format(
                "group remove-member",
                "GROUP_ID CLIENT",
                "group remove-member",
                "Missing argument 'CLIENT'.",
            ),
        ),
    ]
    for (parent, name, *ids), code, output in runs:
        result = _cli(parent, name, *c, *ids)
        assert (result.exit_code, result.output) == (code, output), (parent, name, *ids)
