"""``exchange log``: verify and read a security server's message log."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from exchange.cli.common import EXIT_CHECK_FAILED, console, handle_errors, print_json
from exchange.errors import ConfigurationError

_CONFIG = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group("log")
def group() -> None:
    """Verify and read a security server's message log (works while the server runs).

    \b
    Example:
      exchange log verify --config state/servers/MOI/server.toml
      exchange log show --config state/servers/MOI/server.toml \\
          --client PS/GOV/PALPOST/unified-window
    """


def _log_path(config_path: Path | None, db: Path | None) -> Path:
    if db is not None:
        return db
    if config_path is None:
        raise ConfigurationError("give --config (the server's TOML file) or --db (a log file)")
    from exchange.server.config import load_server_config

    return load_server_config(config_path).log_path


@group.command("verify")
@click.option("--config", "config_path", type=_CONFIG, help="The security server's server.toml.")
@click.option("--db", type=_CONFIG, help="A message log file (auditors: with --ca).")
@click.option(
    "--ca",
    "ca_files",
    multiple=True,
    type=_CONFIG,
    help="Trusted CA certificate (PEM); default: the CAs of the server's global configuration.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--no-progress", is_flag=True)
@handle_errors
def verify_cmd(
    config_path: Path | None,
    db: Path | None,
    ca_files: tuple[Path, ...],
    as_json: bool,
    no_progress: bool,
) -> None:
    """Check every record, signature, certificate and tree head; name the first bad record.

    Exit status 0 when the log verifies, 1 when it does not.

    \b
    Example:
      exchange log verify --config state/servers/MOI/server.toml
      exchange log verify --db messagelog.sqlite --ca ca.cert.pem --json
    """
    from exchange.messagelog.verify import verify_log
    from exchange.server.logcheck import exchange_entry_checker, trusted_cas_of
    from exchange.trust.keys import load_certificates

    path = _log_path(config_path, db)
    if ca_files:
        cas = [c for f in ca_files for c in load_certificates(f)]
    elif config_path is not None:
        from exchange.server.config import load_server_config

        cas = trusted_cas_of(load_server_config(config_path))
    else:
        raise ConfigurationError("with --db, give the trusted CA certificates with --ca")
    with Progress(
        TextColumn("verifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=no_progress or as_json,
    ) as bar:
        task = bar.add_task("verify", total=None)
        report = verify_log(
            path,
            trusted_cas=cas,
            entry_checker=exchange_entry_checker,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    if not report.ok:
        raise SystemExit(EXIT_CHECK_FAILED)


def _print_report(report: object) -> None:
    from exchange.messagelog.verify import VerifyReport

    assert isinstance(report, VerifyReport)
    verdict = "[green]OK[/green]" if report.ok else "[red]FAILED[/red]"
    console.print(f"message log {report.path}: {verdict}")
    console.print(
        f"  records: {report.records}, tree heads: "
        f"{report.tree_heads_verified}/{report.tree_heads} verified, "
        f"records not yet under a signed tree head: {report.unsigned_records}"
    )
    if report.first_bad is not None:
        bad = report.first_bad
        where = (
            f"seq {bad.seq}"
            if bad.range is None
            else f"seq {bad.seq} (somewhere in {bad.range[0]}..{bad.range[1] - 1})"
        )
        console.print(
            f"  [red]first bad record:[/red] {where}, message id {bad.message_id}: {bad.reason}"
        )
    for problem in report.problems[:20]:
        d = problem.to_dict()
        where = f"record {d['seq']}" if d["kind"] == "record" else f"tree head of size {d['size']}"
        console.print(f"  - {where}: {d['reason']}")
    if len(report.problems) > 20 or report.problems_omitted:
        console.print(f"  ... {len(report.problems) - 20 + report.problems_omitted} more problems")


def _status(entry: dict[str, Any]) -> str:
    error = entry.get("error")
    code = entry.get("http_status")
    if isinstance(error, dict):
        return f"{code} {error.get('type')}"
    return f"{code} {entry.get('status') or ''}".strip()


def _decision(decision: object) -> str:
    """A short form: the grant that allowed, or that nothing did; the full record has more."""
    if not isinstance(decision, dict):
        return ""
    if decision.get("allowed"):
        return f"allowed by {decision.get('grant')} (policy {decision.get('policy_version')})"
    return f"denied (policy {decision.get('policy_version')})"


def _when(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@group.command("show")
@click.option("--config", "config_path", type=_CONFIG, help="The security server's server.toml.")
@click.option("--db", type=_CONFIG, help="A message log file.")
@click.option("--id", "message_id", help="X-Road-Id of the exchange.")
@click.option("--client", help="Client subsystem, e.g. PS/GOV/PALPOST/unified-window.")
@click.option("--service", help="Service, e.g. PS/GOV/MOI/population-registry/persons.")
@click.option("--side", type=click.Choice(["consumer", "provider"]))
@click.option("--since", help="ISO time (UTC if no zone), inclusive.")
@click.option("--until", help="ISO time (UTC if no zone), exclusive.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Full records as JSON.")
@handle_errors
def show_cmd(
    config_path: Path | None,
    db: Path | None,
    message_id: str | None,
    client: str | None,
    service: str | None,
    side: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List logged exchanges readably, filtered by message id, client, service, side or time.

    \b
    Example:
      exchange log show --config state/servers/MOI/server.toml --since 2026-11-27T10:00
    """
    from exchange.messagelog.query import query_records

    try:
        views = query_records(
            _log_path(config_path, db),
            message_id=message_id,
            client=client,
            service=service,
            side=side,
            since=_when(since),
            until=_when(until),
            limit=limit,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if as_json:
        print_json([v.to_dict() for v in views])
        return
    table = Table(show_lines=False)
    for col in (
        "seq",
        "logged at (UTC)",
        "side",
        "message id",
        "client",
        "purpose",
        "service",
        "status",
        "decision",
        "released fields",
    ):
        table.add_column(col, overflow="fold")
    for v in views:
        table.add_row(
            str(v.seq),
            v.logged_at.replace("+00:00", "")[:23],
            v.side or "",
            v.message_id or "",
            v.client or "",
            str(v.entry.get("purpose") or ""),
            v.service or "",
            _status(v.entry),
            _decision(v.entry.get("decision")),
            ", ".join(v.released_fields or ()),
        )
    console.print(table)
    console.print(f"{len(views)} record(s)")
