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
@click.option(
    "--tsa-cert",
    "tsa_files",
    multiple=True,
    type=_CONFIG,
    help="Approved TSA certificate (PEM) for the tree heads' time-stamps; default: the TSAs of "
    "the server's global configuration.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--no-progress", is_flag=True)
@handle_errors
def verify_cmd(
    config_path: Path | None,
    db: Path | None,
    ca_files: tuple[Path, ...],
    tsa_files: tuple[Path, ...],
    as_json: bool,
    no_progress: bool,
) -> None:
    """Check every record, signature, certificate and tree head; name the first bad record.

    Exit status 0 when the log verifies, 1 when it does not.

    \b
    Example:
      exchange log verify --config state/servers/MOI/server.toml
      exchange log verify --db messagelog.sqlite --ca ca.cert.pem --tsa-cert tsa.pem --json
    """
    from exchange.messagelog.verify import verify_log
    from exchange.server.logcheck import exchange_entry_checker, trusted_cas_of, trusted_tsas_of
    from exchange.trust.keys import load_certificates

    path = _log_path(config_path, db)
    if ca_files:
        cas = [c for f in ca_files for c in load_certificates(f)]
    elif config_path is not None:
        from exchange.server.config import load_server_config

        cas = trusted_cas_of(load_server_config(config_path))
    else:
        raise ConfigurationError("with --db, give the trusted CA certificates with --ca")
    if tsa_files:
        tsas = [c for f in tsa_files for c in load_certificates(f)]
    elif config_path is not None:
        from exchange.server.config import load_server_config

        tsas = trusted_tsas_of(load_server_config(config_path))
    else:
        tsas = []
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
            tsa_certs=tsas,
        )
    without_bodies = _records_without_bodies(path)
    if as_json:
        print_json({**report.to_dict(), "records_without_bodies": without_bodies})
    else:
        _print_report(report)
        if without_bodies:
            console.print(
                f"  {without_bodies} record(s) were logged without bodies (metadata-only logging): "
                "their signatures and body digests verify, but what was sent and answered "
                "cannot be shown from this log"
            )
    if not report.ok:
        raise SystemExit(EXIT_CHECK_FAILED)


def _records_without_bodies(path: Path) -> int:
    from exchange.messagelog.store import open_readonly

    conn = open_readonly(path)
    try:
        (count,) = conn.execute(
            "SELECT count(*) FROM records WHERE instr(entry, ?) > 0",
            ('"bodies":"digests-only"',),
        ).fetchone()
    finally:
        conn.close()
    return int(count)


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
    if report.timestamps:
        console.print(
            f"  time-stamps (RFC 3161): {report.timestamps_verified}/{report.timestamps} verified"
            + (
                f", {report.timestamps_unchecked} not checked (give --tsa-cert)"
                if report.timestamps_unchecked
                else ""
            )
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
        where = {
            "record": f"record {d['seq']}",
            "timestamp": f"time-stamp of the tree head of size {d['size']}",
        }.get(d["kind"], f"tree head of size {d['size']}")
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


def _emit(document: dict[str, Any], as_json: bool, output: Path | None) -> bool:
    """Write ``document`` to ``output`` or print it as JSON; False when people get the text."""
    if output is not None:
        import orjson

        output.write_bytes(
            orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
        console.print(f"wrote {output}")
        return True
    if as_json:
        print_json(document)
        return True
    return False


@group.command("prove")
@click.option("--config", "config_path", type=_CONFIG, help="The security server's server.toml.")
@click.option("--db", type=_CONFIG, help="A message log file.")
@click.option("--id", "message_id", required=True, help="X-Road-Id of the exchange.")
@click.option("--size", type=int, help="Prove against the signed tree head of this size.")
@click.option("--json", "as_json", is_flag=True, help="Print the proofs as JSON.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON.")
@handle_errors
def prove_cmd(
    config_path: Path | None,
    db: Path | None,
    message_id: str,
    size: int | None,
    as_json: bool,
    output: Path | None,
) -> None:
    """Print the RFC 9162 inclusion proof of an exchange's record(s) in a signed tree head.

    Against the latest signed tree head unless --size names another. `exchange log check-proof`
    verifies the file written with -o.

    \b
    Example:
      exchange log prove --config state/servers/MOI/server.toml \\
          --id 6f1c2a9e-0d4b-4c1e-9a57-3f2b8e0c7d11 -o proof.json
    """
    from exchange.messagelog.proofs import inclusion_for_message

    proofs = inclusion_for_message(_log_path(config_path, db), message_id, size=size)
    document = {"message_id": message_id, "proofs": [p.to_dict() for p in proofs]}
    if _emit(document, as_json, output):
        return
    for p in proofs:
        stamped = "time-stamped" if p.timestamp_token else "not time-stamped yet"
        console.print(f"record seq {p.seq} of {message_id}")
        console.print(f"  leaf hash:  {p.leaf_hash.hex()}")
        console.print(f"  tree size:  {p.tree_size} (signed tree head, {stamped})")
        console.print(f"  root:       {p.root.hex()}")
        console.print(f"  audit path ({len(p.proof)} hashes, leaf to root):")
        for i, node in enumerate(p.proof, 1):
            console.print(f"    {i:2d}. {node.hex()}")


@group.command("consistency")
@click.option("--config", "config_path", type=_CONFIG, help="The security server's server.toml.")
@click.option("--db", type=_CONFIG, help="A message log file.")
@click.option("--from", "m", type=int, required=True, help="Size of the older signed tree head.")
@click.option("--to", "n", type=int, required=True, help="Size of the newer signed tree head.")
@click.option("--json", "as_json", is_flag=True, help="Print the proof as JSON.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON.")
@handle_errors
def consistency_cmd(
    config_path: Path | None,
    db: Path | None,
    m: int,
    n: int,
    as_json: bool,
    output: Path | None,
) -> None:
    """Print the RFC 9162 consistency proof between two signed tree heads (append-only).

    Both sizes must be those of signed tree heads; the error lists the nearest ones.

    \b
    Example:
      exchange log consistency --config state/servers/MOI/server.toml \\
          --from 120 --to 480 -o consistency.json
    """
    from exchange.messagelog.proofs import consistency_between

    proof = consistency_between(_log_path(config_path, db), m, n)
    if _emit(proof.to_dict(), as_json, output):
        return
    console.print(f"tree of size {proof.m} is a prefix of tree of size {proof.n}")
    console.print(f"  root of size {proof.m}: {proof.root_m.hex()}")
    console.print(f"  root of size {proof.n}: {proof.root_n.hex()}")
    console.print(f"  proof ({len(proof.proof)} hashes):")
    for i, node in enumerate(proof.proof, 1):
        console.print(f"    {i:2d}. {node.hex()}")


@group.command("check-proof")
@click.argument("file", type=_CONFIG)
@handle_errors
def check_proof_cmd(file: Path) -> None:
    """Verify a proof file from `log prove` or `log consistency` offline; print each check.

    Checks the Merkle math and that each root is the one inside its tree head's JWS payload.
    It does not check the tree heads' signatures or time-stamps: `exchange log verify` does,
    over the whole log. Exit status 0 when every check passes, 1 otherwise.

    \b
    Example:
      exchange log check-proof proof.json
    """
    from exchange.messagelog.proofs import checks_for, load_proof_file

    checks = checks_for(load_proof_file(file))
    for check in checks:
        mark = "[green]ok[/green]    " if check.ok else "[red]FAILED[/red]"
        console.print(f"{mark} {check.what}")
    if not all(c.ok for c in checks):
        raise SystemExit(EXIT_CHECK_FAILED)
    console.print(f"{file}: [green]OK[/green] (tree head signatures: see `exchange log verify`)")
