"""``exchange central ...``: set up and run the central server, and edit its registry.

Each registry command opens the database named by ``--config`` (``central.toml``), makes one
change (which bumps the registry version) and closes it; a running central server notices the new
version within a second and publishes a new signed global configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from rich.table import Table

from exchange import sdnotify
from exchange.central.app import DEFAULT_PORT, CentralConfig, load_central_config, run_central
from exchange.central.registry import Registry
from exchange.central.setup import init_central
from exchange.cli.checkconfig import add_check_config
from exchange.cli.common import (
    ExchangeGroup,
    cancel_on_sigterm,
    console,
    echo,
    handle_errors,
    print_json,
    reports,
)
from exchange.errors import InvalidIdentifier
from exchange.globalconf.anchor import Anchor
from exchange.globalconf.document import GlobalConf
from exchange.identifiers import (
    GlobalGroupId,
    MemberId,
    SecurityServerId,
    SubsystemId,
    parse_client,
    parse_global_group,
    parse_member,
    parse_security_server,
    parse_subsystem,
)
from exchange.oplog import configure_logging
from exchange.terminal import json_text
from exchange.trust.keys import (
    cert_pem,
    fingerprint,
    load_certificate,
)

T = TypeVar("T")


class IdentifierType(click.ParamType[T]):
    """A click argument parsed as an X-Road identifier; a bad one is a usage error (exit 2)."""

    def __init__(self, name: str, parse: Callable[[str], T]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> T:
        try:
            return self._parse(value)
        except InvalidIdentifier as exc:
            self.fail(exc.message, param, ctx)


MEMBER = IdentifierType("MEMBER", parse_member)
SUBSYSTEM = IdentifierType("SUBSYSTEM", parse_subsystem)
SERVER = IdentifierType("SERVER", parse_security_server)
GROUP = IdentifierType("GROUP", parse_global_group)
CLIENT = IdentifierType("CLIENT", parse_client)

config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The central server's central.toml.",
)
_PEM = click.Path(path_type=Path, dir_okay=False, exists=True)


@contextlib.contextmanager
def _open_registry(config_path: Path) -> Iterator[Registry]:
    config = load_central_config(config_path)
    with Registry.open(config.db_path) as registry:
        yield registry


def _edit(
    config_path: Path,
    change: Callable[[Registry], int],
    done: str,
    as_json: bool,
    facts: dict[str, Any],
) -> None:
    """Make one change; print what changed and the new registry version (as JSON: ``facts``, the
    change in words and ``registry_version``)."""
    with _open_registry(config_path) as registry:
        version = change(registry)
    if as_json:
        print_json({**facts, "change": done, "registry_version": version})
    else:
        console.print(f"{done} (registry version {version})")


def _edit_command(
    parent: click.Group,
    name: str,
    arguments: tuple[tuple[str, IdentifierType[Any]], ...],
    change: Callable[..., int],
    done: str,
    help_text: str,
) -> click.Command:
    """Add ``parent name --config FILE ID...``: the identifiers parsed in order, one
    ``change(registry, *ids)``, and ``done`` (formatted with the identifiers by name) printed with
    the new registry version."""

    @reports
    def edit(config_path: Path, as_json: bool, **ids: Any) -> None:
        values = [ids[param] for param, _ in arguments]
        facts = {param.removesuffix("_id"): str(ids[param]) for param, _ in arguments}
        _edit(config_path, lambda r: change(r, *values), done.format(**ids), as_json, facts)

    for param, kind in reversed(arguments):
        edit = click.argument(param, type=kind)(edit)
    return parent.command(name, help=help_text)(config_option(edit))


@click.group("central", cls=ExchangeGroup)
def group() -> None:
    """The central server: registry of members, subsystems and security servers; publishes the
    signed global configuration.

    \b
    Example:
      exchange central init --dir central --instance PS
      exchange central member add --config central/central.toml PS/GOV/MOI \\
          --name "Ministry of Interior"
      exchange central run --config central/central.toml
    """


# --- setting up and running --------------------------------------------------------------------


@group.command("init")
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--instance", required=True, help="The instance identifier, e.g. PS.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--download-url",
    help="URL security servers download from (default http://HOST:PORT/globalconf).",
)
@reports
def init(
    directory: Path,
    instance: str,
    host: str,
    port: int,
    download_url: str | None,
    as_json: bool,
) -> None:
    """Create a central server in DIR: registry database, configuration signing key (mode 0600)
    and self-signed certificate, central.toml and the anchor.json security servers install.

    \b
    Example:
      exchange central init --dir central --instance PS --port 4000
    """
    config = init_central(directory, instance, host=host, port=port, download_url=download_url)
    directory = directory.resolve()
    toml_path = directory / "central.toml"
    if as_json:
        anchor = Anchor.load(config.anchor_path)
        print_json(
            {
                "instance": instance,
                "directory": directory,
                "config": toml_path,
                "anchor": config.anchor_path,
                "download_url": anchor.download_url,
                "next": [f"exchange central run --config {toml_path}"],
            }
        )
        return
    console.print(f"central server for instance {instance} created in {directory}")
    console.print(f"  config:  {toml_path}")
    console.print(f"  anchor:  {config.anchor_path}  (install it on every security server)")
    console.print(f"next: exchange central run --config {toml_path}")


@group.command("run")
@config_option
@click.option(
    "--ready-line", is_flag=True, help="Print one JSON line with the bound port when serving."
)
@handle_errors
def run(config_path: Path, ready_line: bool) -> None:
    """Run the central server until interrupted (Ctrl-C).

    \b
    Example:
      exchange central run --config central/central.toml
    """
    config = load_central_config(config_path)
    configure_logging(config.logging)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, ready_line))


async def _serve(config: CentralConfig, ready_line: bool = False) -> None:
    """Run until SIGTERM or Ctrl-C, closing the registry and the listener cleanly."""
    cancel_on_sigterm()

    def bound(port: int) -> None:
        url = f"http://{config.host}:{port}"
        if ready_line:
            print("READY " + json.dumps({"port": port, "url": url}), flush=True)
        else:
            console.print(f"central server for {config.instance} serving on {url}")
        sdnotify.ready(f"central server for {config.instance} serving on {url}")

    with contextlib.suppress(asyncio.CancelledError):
        await run_central(config, on_bound=bound)


@group.command("show")
@config_option
@reports
def show(config_path: Path, as_json: bool) -> None:
    """Show the registry: the global configuration the central server would publish now.

    \b
    Example:
      exchange central show --config central/central.toml --json
    """
    with _open_registry(config_path) as registry:
        conf = registry.build_globalconf(int(time.time()))
    if as_json:
        print_json(conf.to_dict())
    else:
        _print_conf(conf)


def _print_conf(conf: GlobalConf) -> None:
    console.print(f"instance {conf.instance}, registry version {conf.version}")
    members = Table("member", "name", "subsystems", title="Members")
    for m in conf.members:
        members.add_row(str(m.id), m.name, "\n".join(str(s) for s in m.subsystems))
    servers = Table("security server", "address", "auth certs (sha256)", "clients", title="Servers")
    for s in conf.security_servers:
        servers.add_row(
            str(s.id),
            s.address,
            "\n".join(s.auth_cert_fingerprints),
            "\n".join(str(c) for c in s.clients),
        )
    groups = Table("global group", "description", "members", title="Global groups")
    for g in conf.global_groups:
        groups.add_row(str(g.id), g.description, "\n".join(str(c) for c in g.members))
    trust = Table("kind", "name", "URLs", title="Approved trust services")
    for ca in conf.approved_cas:
        trust.add_row("CA", ca.name, "\n".join(ca.ocsp_urls))
    for tsa in conf.approved_tsas:
        trust.add_row("TSA", tsa.name, tsa.url)
    for table in (members, servers, groups, trust):
        console.print(table)


@group.command("anchor")
@config_option
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the anchor here (default: print it).",
)
@reports
def anchor(config_path: Path, output: Path | None, as_json: bool) -> None:
    """Export the anchor (instance, download URL, verification certificates) that security
    servers install out of band.

    \b
    Example:
      exchange central anchor --config central/central.toml -o anchor.json
    """
    config = load_central_config(config_path)
    loaded = Anchor.load(config.anchor_path)
    if output is not None:
        loaded.save(output)
    if as_json:
        document = orjson.loads(loaded.to_json())
        print_json({"instance": loaded.instance, "output": output, "anchor": document})
    elif output is None:
        echo(json_text(loaded.to_json().decode()))
    else:
        console.print(f"anchor for {loaded.instance} written to {output}")


# --- members and subsystems --------------------------------------------------------------------


@group.group("member")
def member() -> None:
    """Add or remove members: organisations such as ministries.

    \b
    Example:
      exchange central member add --config central.toml PS/GOV/MOI --name "Ministry of Interior"
    """


@member.command("add")
@config_option
@click.argument("member_id", type=MEMBER)
@click.option("--name", required=True, help="The member's full name.")
@reports
def member_add(config_path: Path, member_id: MemberId, name: str, as_json: bool) -> None:
    """Register a member.

    \b
    Example:
      exchange central member add --config central.toml PS/GOV/MOI --name "Ministry of Interior"
    """
    _edit(
        config_path,
        lambda r: r.add_member(member_id, name),
        f"added member {member_id}",
        as_json,
        {"member": str(member_id), "name": name},
    )


@member.command("remove")
@config_option
@click.argument("member_id", type=MEMBER)
@reports
def member_remove(config_path: Path, member_id: MemberId, as_json: bool) -> None:
    """Remove a member that no longer owns subsystems or security servers.

    \b
    Example:
      exchange central member remove --config central.toml PS/GOV/MOI
    """
    _edit(
        config_path,
        lambda r: r.remove_member(member_id),
        f"removed member {member_id}",
        as_json,
        {"member": str(member_id)},
    )


@group.group("subsystem")
def subsystem() -> None:
    """Add or remove subsystems (a member's information systems, the usual client unit).

    \b
    Example:
      exchange central subsystem add --config central.toml PS/GOV/MOI/population-registry
    """


@subsystem.command("add")
@config_option
@click.argument("subsystem_id", type=SUBSYSTEM)
@reports
def subsystem_add(config_path: Path, subsystem_id: SubsystemId, as_json: bool) -> None:
    """Register a subsystem of an existing member.

    \b
    Example:
      exchange central subsystem add --config central.toml PS/GOV/MOI/population-registry
    """
    _edit(
        config_path,
        lambda r: r.add_subsystem(subsystem_id),
        f"added {subsystem_id}",
        as_json,
        {"subsystem": str(subsystem_id)},
    )


@subsystem.command("remove")
@config_option
@click.argument("subsystem_id", type=SUBSYSTEM)
@reports
def subsystem_remove(config_path: Path, subsystem_id: SubsystemId, as_json: bool) -> None:
    """Remove a subsystem (also from server client lists and global groups).

    \b
    Example:
      exchange central subsystem remove --config central.toml PS/GOV/MOI/population-registry
    """
    _edit(
        config_path,
        lambda r: r.remove_subsystem(subsystem_id),
        f"removed {subsystem_id}",
        as_json,
        {"subsystem": str(subsystem_id)},
    )


# --- security servers --------------------------------------------------------------------------


@group.group("server")
def server() -> None:
    """Register security servers, their auth certificates and the subsystems they host.

    \b
    Example:
      exchange central server add --config central.toml PS/GOV/MOI/ss1 \\
          --address 127.0.0.1:8443 --auth-cert moi-auth.pem
    """


@server.command("add")
@config_option
@click.argument("server_id", type=SERVER)
@click.option("--address", required=True, help="host:port of its provider (mTLS) port.")
@click.option("--auth-cert", "auth_certs", multiple=True, type=_PEM, help="Auth cert PEM.")
@reports
def server_add(
    config_path: Path,
    server_id: SecurityServerId,
    address: str,
    auth_certs: tuple[Path],
    as_json: bool,
) -> None:
    """Register a security server owned by an existing member.

    \b
    Example:
      exchange central server add --config central.toml PS/GOV/MOI/ss1 \\
          --address 127.0.0.1:8443 --auth-cert moi-auth.pem
    """
    fingerprints = [fingerprint(load_certificate(p)) for p in auth_certs]
    _edit(
        config_path,
        lambda r: r.add_server(server_id, address, fingerprints),
        f"added security server {server_id} at {address}",
        as_json,
        {"server": str(server_id), "address": address, "auth_cert_fingerprints": fingerprints},
    )


@server.command("remove")
@config_option
@click.argument("server_id", type=SERVER)
@reports
def server_remove(config_path: Path, server_id: SecurityServerId, as_json: bool) -> None:
    """Remove a security server with its auth certificates and client registrations.

    \b
    Example:
      exchange central server remove --config central.toml PS/GOV/MOI/ss1
    """
    _edit(
        config_path,
        lambda r: r.remove_server(server_id),
        f"removed {server_id}",
        as_json,
        {"server": str(server_id)},
    )


@server.command("set-address")
@config_option
@click.argument("server_id", type=SERVER)
@click.argument("address")
@reports
def server_set_address(
    config_path: Path, server_id: SecurityServerId, address: str, as_json: bool
) -> None:
    """Change the provider address of a security server.

    \b
    Example:
      exchange central server set-address --config central.toml PS/GOV/MOI/ss1 10.0.0.5:8443
    """
    _edit(
        config_path,
        lambda r: r.set_server_address(server_id, address),
        f"{server_id} now at {address}",
        as_json,
        {"server": str(server_id), "address": address},
    )


def _cert_fingerprint(cert: Path | None, fp: str | None) -> str:
    if (cert is None) == (fp is None):
        raise click.UsageError("give exactly one of --cert and --fingerprint")
    return fingerprint(load_certificate(cert)) if cert is not None else str(fp)


@server.command("add-auth-cert")
@config_option
@click.argument("server_id", type=SERVER)
@click.option("--cert", type=_PEM, help="The authentication certificate (PEM).")
@click.option("--fingerprint", "fp", help="Or its SHA-256 fingerprint (hex).")
@reports
def server_add_auth_cert(
    config_path: Path, server_id: SecurityServerId, cert: Path | None, fp: str | None, as_json: bool
) -> None:
    """Register another authentication certificate for a server (e.g. during a rotation).

    \b
    Example:
      exchange central server add-auth-cert --config central.toml PS/GOV/MOI/ss1 --cert new.pem
    """
    value = _cert_fingerprint(cert, fp)
    _edit(
        config_path,
        lambda r: r.add_auth_cert(server_id, value),
        f"auth cert added to {server_id}",
        as_json,
        {"server": str(server_id), "auth_cert_fingerprint": value},
    )


@server.command("remove-auth-cert")
@config_option
@click.argument("server_id", type=SERVER)
@click.option("--cert", type=_PEM, help="The authentication certificate (PEM).")
@click.option("--fingerprint", "fp", help="Or its SHA-256 fingerprint (hex).")
@reports
def server_remove_auth_cert(
    config_path: Path, server_id: SecurityServerId, cert: Path | None, fp: str | None, as_json: bool
) -> None:
    """Unregister an authentication certificate of a server.

    \b
    Example:
      exchange central server remove-auth-cert --config central.toml PS/GOV/MOI/ss1 --cert old.pem
    """
    value = _cert_fingerprint(cert, fp)
    _edit(
        config_path,
        lambda r: r.remove_auth_cert(server_id, value),
        f"auth cert removed from {server_id}",
        as_json,
        {"server": str(server_id), "auth_cert_fingerprint": value},
    )


server_add_client = _edit_command(
    server,
    "add-client",
    (("server_id", SERVER), ("subsystem_id", SUBSYSTEM)),
    Registry.add_server_client,
    "{server_id} now hosts {subsystem_id}",
    """Record that a security server hosts a client subsystem.

    \b
    Example:
      exchange central server add-client --config central.toml PS/GOV/MOI/ss1 \\
          PS/GOV/MOI/population-registry
    """,
)

server_remove_client = _edit_command(
    server,
    "remove-client",
    (("server_id", SERVER), ("subsystem_id", SUBSYSTEM)),
    Registry.remove_server_client,
    "{server_id} no longer hosts {subsystem_id}",
    """Record that a security server no longer hosts a client subsystem.

    \b
    Example:
      exchange central server remove-client --config central.toml PS/GOV/MOI/ss1 \\
          PS/GOV/MOI/population-registry
    """,
)


# --- global groups -----------------------------------------------------------------------------


@group.group("group")
def global_group() -> None:
    """Global groups: named sets of clients that access policies can grant to.

    \b
    Example:
      exchange central group add --config central.toml PS/unified-windows \\
          --description "Post offices"
    """


@global_group.command("add")
@config_option
@click.argument("group_id", type=GROUP)
@click.option("--description", required=True)
@reports
def group_add(config_path: Path, group_id: GlobalGroupId, description: str, as_json: bool) -> None:
    """Create a global group.

    \b
    Example:
      exchange central group add --config central.toml PS/unified-windows \\
          --description "Post offices"
    """
    _edit(
        config_path,
        lambda r: r.add_group(group_id, description),
        f"added group {group_id}",
        as_json,
        {"group": str(group_id), "description": description},
    )


@global_group.command("remove")
@config_option
@click.argument("group_id", type=GROUP)
@reports
def group_remove(config_path: Path, group_id: GlobalGroupId, as_json: bool) -> None:
    """Delete a global group.

    \b
    Example:
      exchange central group remove --config central.toml PS/unified-windows
    """
    _edit(
        config_path,
        lambda r: r.remove_group(group_id),
        f"removed group {group_id}",
        as_json,
        {"group": str(group_id)},
    )


group_add_member = _edit_command(
    global_group,
    "add-member",
    (("group_id", GROUP), ("client", CLIENT)),
    Registry.add_group_member,
    "{client} added to {group_id}",
    """Add a subsystem (or a member) to a global group.

    \b
    Example:
      exchange central group add-member --config central.toml PS/unified-windows \\
          PS/GOV/POST/biddu-window
    """,
)

group_remove_member = _edit_command(
    global_group,
    "remove-member",
    (("group_id", GROUP), ("client", CLIENT)),
    Registry.remove_group_member,
    "{client} removed from {group_id}",
    """Remove a client from a global group.

    \b
    Example:
      exchange central group remove-member --config central.toml PS/unified-windows \\
          PS/GOV/POST/biddu-window
    """,
)


# --- trust services ----------------------------------------------------------------------------


@group.group("ca")
def ca() -> None:
    """Approved certification authorities (issuers of auth and signing certificates).

    \b
    Example:
      exchange central ca add --config central.toml --name "PS Root CA" --cert ca.pem \\
          --ocsp-url http://127.0.0.1:8888/ocsp
    """


@ca.command("add")
@config_option
@click.option("--name", required=True)
@click.option("--cert", required=True, type=_PEM, help="The CA certificate (PEM).")
@click.option("--ocsp-url", "ocsp_urls", multiple=True, help="OCSP responder URL (repeatable).")
@reports
def ca_add(
    config_path: Path, name: str, cert: Path, ocsp_urls: tuple[str, ...], as_json: bool
) -> None:
    """Approve a CA.

    \b
    Example:
      exchange central ca add --config central.toml --name "PS Root CA" --cert ca.pem \\
          --ocsp-url http://127.0.0.1:8888/ocsp
    """
    pem = cert_pem(load_certificate(cert))
    _edit(
        config_path,
        lambda r: r.add_ca(name, pem, ocsp_urls),
        f"approved CA {name!r}",
        as_json,
        {"ca": name, "ocsp_urls": list(ocsp_urls)},
    )


@ca.command("remove")
@config_option
@click.option("--name", required=True)
@reports
def ca_remove(config_path: Path, name: str, as_json: bool) -> None:
    """Withdraw the approval of a CA.

    \b
    Example:
      exchange central ca remove --config central.toml --name "PS Root CA"
    """
    _edit(
        config_path,
        lambda r: r.remove_ca(name),
        f"removed CA {name!r}",
        as_json,
        {"ca": name},
    )


@group.group("tsa")
def tsa() -> None:
    """Approved time-stamping authorities (RFC 3161).

    \b
    Example:
      exchange central tsa add --config central.toml --name "PS TSA" \\
          --url http://127.0.0.1:8889/tsa --cert tsa.pem
    """


@tsa.command("add")
@config_option
@click.option("--name", required=True)
@click.option("--url", required=True, help="The TSA's RFC 3161 HTTP endpoint.")
@click.option("--cert", required=True, type=_PEM, help="The TSA certificate (PEM).")
@reports
def tsa_add(config_path: Path, name: str, url: str, cert: Path, as_json: bool) -> None:
    """Approve a TSA.

    \b
    Example:
      exchange central tsa add --config central.toml --name "PS TSA" \\
          --url http://127.0.0.1:8889/tsa --cert tsa.pem
    """
    pem = cert_pem(load_certificate(cert))
    _edit(
        config_path,
        lambda r: r.add_tsa(name, url, pem),
        f"approved TSA {name!r}",
        as_json,
        {"tsa": name, "url": url},
    )


@tsa.command("remove")
@config_option
@click.option("--name", required=True)
@reports
def tsa_remove(config_path: Path, name: str, as_json: bool) -> None:
    """Withdraw the approval of a TSA.

    \b
    Example:
      exchange central tsa remove --config central.toml --name "PS TSA"
    """
    _edit(
        config_path,
        lambda r: r.remove_tsa(name),
        f"removed TSA {name!r}",
        as_json,
        {"tsa": name},
    )


add_check_config(
    group,
    load_central_config,
    "central server",
    lambda c: [
        (("database",), c.db_path, "file"),
        (("signing_key",), c.signing_key_path, "file"),
        (("signing_cert",), c.signing_cert_path, "file"),
        (("anchor",), c.anchor_path, "file"),
    ],
)
