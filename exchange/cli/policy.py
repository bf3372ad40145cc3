"""``exchange policy``: check a provider's access policy files and explain decisions offline.

The commands read a policy directory and print; they send nothing and change nothing. Each command
body is a plain function taking the directory, so a ``--config`` variant only has to find the
directory and call it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_USAGE,
    ExchangeGroup,
    console,
    err_console,
    print_json,
    reports,
)
from exchange.errors import InvalidIdentifier
from exchange.identifiers import (
    ClientId,
    GlobalGroupId,
    MemberId,
    ServiceId,
    parse_client,
    parse_global_group,
    parse_member,
    parse_service,
)
from exchange.policy.audit import TRAIL_FILE, AuditRecord, KeyFor, read_trail, verify_trail
from exchange.policy.evaluate import evaluate, explain
from exchange.policy.lint import UNKNOWN_FIELD, ServiceDescription, lint
from exchange.policy.loader import load_policy_dir
from exchange.policy.model import Grant, PolicyError, PolicyRequest, PolicySet
from exchange.protocol.jws import JwsError, cert_thumbprint

if TYPE_CHECKING:
    from exchange.server.config import ServerConfig

Callback = Callable[[click.Context, click.Parameter, Any], Any]


def _identifier(parse: Callable[[str], object]) -> Callback:
    """A click callback parsing an identifier option (or each of a repeated one)."""

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            if isinstance(value, tuple):
                return tuple(parse(v) for v in value)
            return parse(value)
        except InvalidIdentifier as exc:
            raise click.BadParameter(exc.message) from None

    return convert


def _instant(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date-time") from None
    if at.tzinfo is None:
        raise click.BadParameter("give a time zone, e.g. 2026-05-01T12:00:00Z")
    return at


def resolve_policy_dir(directory: Path | None, config: Path | None = None) -> Path:
    """The policy directory: given with ``--dir``, or the one a server's ``--config`` names."""
    if directory is not None:
        return directory
    if config is None:
        raise click.UsageError("give the policy directory with --dir or a server with --config")
    from exchange.server.config import load_server_config

    server = load_server_config(config)
    if server.policy_dir is None:
        raise click.UsageError(f"{config} names no policy directory ([policy] dir)")
    return server.policy_dir


def _server_groups(config: Path, client: ClientId) -> frozenset[GlobalGroupId]:
    """The client's global groups in the configuration the server last accepted."""
    import time

    from exchange.globalconf.verifier import load_stored
    from exchange.server.config import load_server_config

    server = load_server_config(config)
    conf = load_stored(server.anchor, server.globalconf_state, int(time.time()))
    return conf.groups_of(client) if conf else frozenset()


@click.group("policy", cls=ExchangeGroup, context_settings={"help_option_names": ["-h", "--help"]})
def group() -> None:
    """Access policies: check policy files, explain decisions.

    \b
    Example:
      exchange policy check policies/MOI
    """


# --- check --------------------------------------------------------------------------------------


def _grant_summary(grant: Grant) -> dict[str, object]:
    return {
        "id": grant.id,
        "location": grant.location,
        "client" if not grant.is_group_grant else "group": str(grant.client),
        "service": str(grant.service),
        "methods": sorted(grant.methods),
        "paths": [str(p) for p in grant.paths],
        "fields": list(grant.fields) if grant.fields is not None else None,
        "purposes": sorted(grant.purposes) if grant.purposes is not None else None,
        "require_user_id": grant.require_user_id,
        "valid_from": grant.valid_from.isoformat() if grant.valid_from else None,
        "valid_until": grant.valid_until.isoformat() if grant.valid_until else None,
        "rate": str(grant.rate) if grant.rate else None,
        "query": sorted(grant.query) if grant.query is not None else None,
    }


def _print_policy(policy: PolicySet) -> None:
    provider = policy.provider or "(no files)"
    console.print(
        f"policy of {provider}: version {policy.version}, {len(policy.grants)} grant(s)",
        markup=False,
        soft_wrap=True,
    )
    if not policy.grants:
        console.print("no grants: every request is denied", markup=False, soft_wrap=True)
    for local in policy.groups:
        members = ", ".join(sorted(map(str, local.members))) or "(no members)"
        console.print(
            f"\ngroup {local.id}  ({local.location}): {members}", markup=False, soft_wrap=True
        )
    for grant in policy.grants:
        console.print(f"\n{grant.id}  ({grant.location})", markup=False, soft_wrap=True)
        for key, value in _grant_summary(grant).items():
            if key not in ("id", "location") and value not in (None, False):
                shown = (", ".join(value) or "(none)") if isinstance(value, list) else value
                if key == "methods" and not value:
                    shown = "(none: SOAP requests only)"
                console.print(f"  {key}: {shown}", markup=False, soft_wrap=True)


def load_or_exit(
    directory: Path, provider: MemberId | None = None, *, as_json: bool = False
) -> PolicySet:
    """Load ``directory``; on a broken file print ``file:line: reason`` on one line and exit 2
    (under ``--json`` the error is reported as every command's are)."""
    try:
        return load_policy_dir(directory, provider)
    except PolicyError as exc:
        if as_json:
            raise
        err_console.print(f"error: {exc.message}", markup=False, soft_wrap=True)
        err_console.print(f"fix it and run 'exchange policy check {directory}' again", markup=False)
        sys.exit(EXIT_USAGE)


# --- services' published OpenAPI documents, to check grants' fields with ------------------------

_MAX_DOCUMENT = 10 * 2**20


def _read_document(source: str, base_path: str) -> dict[str, Any]:
    """An OpenAPI document from a file or an http(s) URL (bounded in size and time), made
    relative to the service as ``getOpenAPI`` publishes it (paths under ``base_path``)."""
    import json
    import urllib.request

    from exchange.protocol.metadata import DescriptionError, openapi_description

    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=10) as answer:
            data = answer.read(_MAX_DOCUMENT + 1)
    else:
        data = Path(source).read_bytes()[: _MAX_DOCUMENT + 1]
    if len(data) > _MAX_DOCUMENT:
        raise ValueError(f"larger than {_MAX_DOCUMENT} bytes")
    try:
        published, _ = openapi_description(data, "application/json", base_path)
    except DescriptionError as exc:
        raise ValueError(str(exc)) from None
    document: dict[str, Any] = json.loads(published)
    return document


def _openapi_option(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    given = {}
    for item in value or ():
        service, sep, source = item.partition("=")
        if not sep or not source:
            raise click.BadParameter(f"{item!r}: give SERVICE=FILE_OR_URL", ctx, param)
        try:
            given[parse_service(service)] = source
        except InvalidIdentifier as exc:
            raise click.BadParameter(exc.message, ctx, param) from None
    return given


def service_descriptions(
    given: dict[ServiceId, str], config: Path | None = None
) -> dict[ServiceId, ServiceDescription]:
    """The OpenAPI documents to check ``fields`` with: those ``given`` (SERVICE=FILE_OR_URL), and
    with a server's ``config`` those its REST services publish (``openapi_url``), each made
    relative to its service as ``getOpenAPI`` does (the path of the service's backend URL is the
    base; a document given alone is taken as relative already). One that cannot be read is
    warned about and skipped."""
    from urllib.parse import urlsplit

    sources: dict[ServiceId, tuple[str, str]] = {}
    if config is not None:
        from exchange.server.config import load_server_config

        for service in load_server_config(config).services:
            if service.type == "rest" and service.openapi_url:
                sources[service.id] = (service.openapi_url, urlsplit(service.url).path)
    for service_id, source in given.items():
        base = sources[service_id][1] if service_id in sources else ""
        sources[service_id] = (source, base)
    descriptions: dict[ServiceId, ServiceDescription] = {}
    for service_id, (source, base) in sources.items():
        try:
            descriptions[service_id] = _read_document(source, base)
        except (OSError, ValueError) as exc:
            err_console.print(
                f"warning: the OpenAPI document of {service_id} ({source}) could not be read: "
                f"{exc}; its grants' fields are not checked",
                markup=False,
                soft_wrap=True,
            )
    return descriptions


_OPENAPI_HELP = (
    "SERVICE=FILE_OR_URL: check the fields the grants of SERVICE release against its OpenAPI "
    "document as getOpenAPI publishes it, relative to the service (repeatable)."
)


def check_policy(
    directory: Path,
    provider: MemberId | None,
    as_json: bool,
    descriptions: dict[ServiceId, ServiceDescription] | None = None,
) -> None:
    """Load and check ``directory`` and print its grants, and warnings about fields the services'
    OpenAPI documents (``descriptions``) do not describe."""
    policy = load_or_exit(directory, provider, as_json=as_json)
    warnings = [f for f in lint(policy, datetime.now(UTC), descriptions) if f.kind == UNKNOWN_FIELD]
    if as_json:
        print_json(
            {
                "provider": str(policy.provider) if policy.provider else None,
                "version": policy.version,
                "grants": [_grant_summary(g) for g in policy.grants],
                "groups": {g.name: sorted(map(str, g.members)) for g in policy.groups},
                "warnings": [f.as_dict() for f in warnings],
            }
        )
        return
    _print_policy(policy)
    for finding in warnings:
        err_console.print(
            f"warning: {finding.location}: grant {finding.grant!r} {finding.message}",
            markup=False,
            soft_wrap=True,
        )


@group.command("check")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--provider",
    callback=_identifier(parse_member),
    help="The provider member every file must name (INSTANCE/CLASS/CODE).",
)
@click.option("--openapi", multiple=True, callback=_openapi_option, help=_OPENAPI_HELP)
@reports
def check(
    directory: Path, provider: MemberId | None, openapi: dict[ServiceId, str], as_json: bool
) -> None:
    """Check a policy directory and list its grants; exit 2 naming file:line on a broken file.

    With --openapi, warn about a grant's field that the service's OpenAPI document does not have.

    \b
    Example:
      exchange policy check policies/MOI --provider PS/GOV/MOI
      exchange policy check policies/MOI \\
          --openapi PS/GOV/MOI/population-registry/persons=openapi.json
    """
    check_policy(directory, provider, as_json, service_descriptions(openapi))


# --- explain ------------------------------------------------------------------------------------


def explain_request(
    directory: Path,
    request: PolicyRequest,
    groups: frozenset[GlobalGroupId],
    at: datetime,
    as_json: bool,
) -> bool:
    """Print the decision for a hypothetical ``request`` against ``directory``; True if allowed."""
    policy = load_or_exit(directory, as_json=as_json)
    decision = evaluate(policy, request, groups=groups, now=at)
    if as_json:
        entry = decision.log_entry()
        entry["reason"] = decision.reason
        entry["considered"] = [list(c) for c in decision.considered]
        print_json(entry)
    else:
        console.print(explain(policy, request, groups, at), markup=False, soft_wrap=True)
    return decision.allowed


@group.command("explain")
@click.option(
    "--dir", "directory", type=click.Path(path_type=Path, file_okay=False), help="Policy directory."
)
@click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A provider server's server.toml: its policy directory and global groups.",
)
@click.option(
    "--client",
    required=True,
    callback=_identifier(parse_client),
    help="Client subsystem (INSTANCE/CLASS/CODE/SUBSYSTEM).",
)
@click.option(
    "--service",
    required=True,
    callback=_identifier(parse_service),
    help="Service (INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICECODE).",
)
@click.option("--method", default="GET", show_default=True, help="HTTP method.")
@click.option(
    "--path",
    default="/",
    show_default=True,
    help="Path after the service, percent-encoded as on the wire.",
)
@click.option("--query", default="", help="Query string after '?', percent-encoded as on the wire.")
@click.option("--purpose", help="Purpose of use (X-Road-Purpose).")
@click.option("--user-id", help="End user (X-Road-UserId).")
@click.option(
    "--group",
    "groups",
    multiple=True,
    callback=_identifier(parse_global_group),
    help="A global group the client belongs to (INSTANCE/GROUPCODE); repeatable.",
)
@click.option("--at", callback=_instant, help="Judge at this ISO 8601 time (default: now).")
@reports
def explain_command(
    directory: Path | None,
    config: Path | None,
    client: ClientId,
    service: ServiceId,
    method: str,
    path: str,
    query: str,
    purpose: str | None,
    user_id: str | None,
    groups: tuple[GlobalGroupId, ...],
    at: datetime,
    as_json: bool,
) -> None:
    """Explain the decision for a hypothetical request, without sending it.

    Exit status 0 if allowed, 1 if denied, 2 on a broken policy.

    \b
    Example:
      exchange policy explain --config ss-moi/server.toml \\
        --client PS/GOV/PALPOST/unified-window \\
        --service PS/GOV/MOI/population-registry/persons \\
        --method GET --path /123456789 --purpose citizen-service
    """
    request = PolicyRequest(client, service, method, path, purpose, user_id, query=query)
    member_of = frozenset(groups)
    if config is not None and not groups:
        member_of = _server_groups(config, client)
    allowed = explain_request(
        resolve_policy_dir(directory, config), request, member_of, at, as_json
    )
    if not allowed:
        sys.exit(EXIT_CHECK_FAILED)


# --- lint ---------------------------------------------------------------------------------------


def lint_policy(
    directory: Path,
    at: datetime,
    as_json: bool,
    descriptions: dict[ServiceId, ServiceDescription] | None = None,
) -> bool:
    """Print the lint findings for ``directory`` at ``at``; True if there are none."""
    policy = load_or_exit(directory, as_json=as_json)
    findings = lint(policy, at, descriptions)
    if as_json:
        print_json({"version": policy.version, "findings": [f.as_dict() for f in findings]})
        return not findings
    for finding in findings:
        console.print(
            f"{finding.location}: {finding.kind}: grant {finding.grant!r} {finding.message}",
            markup=False,
            soft_wrap=True,
        )
    summary = f"{len(findings)} finding(s)" if findings else "no findings"
    console.print(f"policy version {policy.version}: {summary}", markup=False, soft_wrap=True)
    return not findings


@group.command("lint")
@click.argument("directory", required=False, type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A provider server's server.toml naming the policy directory.",
)
@click.option("--at", callback=_instant, help="Judge expiry at this ISO 8601 time (default: now).")
@click.option("--openapi", multiple=True, callback=_openapi_option, help=_OPENAPI_HELP)
@reports
def lint_command(
    directory: Path | None,
    config: Path | None,
    at: datetime,
    openapi: dict[ServiceId, str],
    as_json: bool,
) -> None:
    """Find overlapping and dead grants (shadowed, expired, empty local group), and fields the
    services' published OpenAPI documents do not have.

    With --config, each REST service's document is fetched from its openapi_url (the adapter
    must be running); --openapi gives one as a file or URL.
    Exit status 0 when clean, 1 with findings, 2 on a broken policy.

    \b
    Example:
      exchange policy lint policies/MOI
      exchange policy lint --config ss-moi/server.toml
      exchange policy lint policies/MOI \\
          --openapi PS/GOV/MOI/population-registry/persons=openapi.json
    """
    descriptions = service_descriptions(openapi, config)
    if not lint_policy(resolve_policy_dir(directory, config), at, as_json, descriptions):
        sys.exit(EXIT_CHECK_FAILED)


# --- history ------------------------------------------------------------------------------------


def _trusted_signing_keys(server: ServerConfig, ca_files: tuple[Path, ...]) -> KeyFor:
    """A key lookup trusting the server's configured signing certificates only where one of the
    trusted CAs (``ca_files``, else those of the server's global configuration) issued them
    with the signing profile to the server's owner, who signs the trail."""
    from exchange.messagelog.certs import CertLookup
    from exchange.server.logcheck import trusted_cas_of
    from exchange.trust.keys import cert_pem, load_certificate, load_certificates

    if ca_files:
        cas = [c for f in ca_files for c in load_certificates(f)]
    else:
        cas = trusted_cas_of(server)
    pems = {
        cert_thumbprint(c): cert_pem(c)
        for c in map(load_certificate, (i.cert for i in server.signing))
    }
    lookup = CertLookup(pems.get, cas, holder="the server's signing certificates")

    def key_for(thumbprint: str) -> ec.EllipticCurvePublicKey:
        # (1) a configured signing certificate, issued by a trusted CA, with the signing profile
        signer = lookup.signer_key(thumbprint)
        # (2) of the server's owner, who signs the trail
        if signer.member != server.owner:
            raise JwsError(
                f"signed by {thumbprint}, a signing key of {signer.member}, not of the "
                f"server's owner {server.owner}"
            )
        return signer.public_key

    return key_for


def _print_history(records: list[AuditRecord], show_diff: bool) -> None:
    for record in records:
        change = f"{record.old_version or '(none)'} -> {record.new_version}"
        line = f"#{record.seq}  {record.at}  {record.by}  {record.outcome}  {change}"
        console.print(line, markup=False, soft_wrap=True)
        if record.error:
            console.print(f"    error: {record.error}", markup=False, soft_wrap=True)
        if show_diff and record.diff:
            console.print(record.diff.rstrip("\n"), markup=False, soft_wrap=True, highlight=False)


def show_history(trail: Path, key_for: KeyFor, as_json: bool, show_diff: bool) -> bool:
    """Print the trail at ``trail`` and its verification; True if it verifies."""
    if not trail.is_file():
        raise click.UsageError(f"no policy audit trail at {trail}")
    records = read_trail(trail)
    problems = verify_trail(trail, key_for)
    if as_json:
        print_json({"records": [r.summary() for r in records], "problems": problems})
        return not problems
    _print_history(records, show_diff)
    for problem in problems:
        err_console.print(f"problem: {problem}", markup=False, soft_wrap=True)
    verdict = "verifies" if not problems else f"does NOT verify ({len(problems)} problem(s))"
    console.print(f"{len(records)} record(s); the trail {verdict}", markup=False, soft_wrap=True)
    return not problems


@group.command("history")
@click.option(
    "--config",
    "config",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The provider server's server.toml: its state directory and signing certificates.",
)
@click.option(
    "--ca",
    "ca_files",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Trusted CA certificate (PEM); default: the CAs of the server's global configuration.",
)
@click.option("--diff", "show_diff", is_flag=True, help="Show each change's diff.")
@reports
def history_command(
    config: Path, ca_files: tuple[Path, ...], show_diff: bool, as_json: bool
) -> None:
    """List the signed audit trail of policy changes and verify it.

    Exit status 0 when every record verifies and the chain is whole, 1 otherwise.

    \b
    Example:
      exchange policy history --config ss-moi/server.toml --diff
    """
    from exchange.server.config import load_server_config

    server = load_server_config(config)
    trail = server.state_dir / TRAIL_FILE
    if not trail.is_file():
        raise click.UsageError(f"no policy audit trail at {trail}")
    if not show_history(trail, _trusted_signing_keys(server, ca_files), as_json, show_diff):
        sys.exit(EXIT_CHECK_FAILED)
