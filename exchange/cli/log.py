"""``exchange log``: verify and read a security server's message log."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from exchange.cli.common import (
    DURATION_UNITS,
    EXIT_CHECK_FAILED,
    ExchangeGroup,
    console,
    err_console,
    markup_text,
    print_json,
    reports,
)
from exchange.errors import ConfigurationError
from exchange.terminal import one_value

if TYPE_CHECKING:
    from collections.abc import Sequence

    from exchange.identifiers import SecurityServerId
    from exchange.messagelog.proofs import Check

_CONFIG = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group("log", cls=ExchangeGroup)
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


def _archive_dir(config_path: Path | None, db: Path | None, given: Path | None) -> Path:
    """--archive-dir, else the server's ``[messagelog] archive_dir``, else ``archives`` next to
    the log file."""
    if given is not None:
        return given
    if db is None and config_path is not None:
        from exchange.server.config import load_server_config

        return load_server_config(config_path).archive_dir
    from exchange.messagelog.archive import default_archive_dir

    return default_archive_dir(_log_path(config_path, db))


_ARCHIVE_DIR = click.option(
    "--archive-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the log's archive files; default: [messagelog] archive_dir of the server, "
    "or 'archives' next to --db.",
)


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
@click.option(
    "--owner",
    help="The security server whose log it is (e.g. PS/GOV/MOI/ss1): only its member's signing "
    "keys may sign the tree heads. Default with --config: that server; required with --db.",
)
@click.option(
    "--crash",
    is_flag=True,
    help="Examining a log after a crash: records past the last signed tree head are reported "
    "but do not fail the check (only an older version could leave them).",
)
@_ARCHIVE_DIR
@click.option("--no-progress", is_flag=True)
@reports
def verify_cmd(
    config_path: Path | None,
    db: Path | None,
    ca_files: tuple[Path, ...],
    tsa_files: tuple[Path, ...],
    owner: str | None,
    crash: bool,
    archive_dir: Path | None,
    as_json: bool,
    no_progress: bool,
) -> None:
    """Check every record, signature, certificate and tree head, in the archives and the live
    database, as the log of its owner; name the first bad record, or the missing or altered
    archive.

    Exit status 0 when the log verifies, 1 when it does not (also when records lie past the last
    signed tree head, unless --crash).

    \b
    Example:
      exchange log verify --config state/servers/MOI/server.toml
      exchange log verify --db messagelog.sqlite --owner PS/GOV/MOI/ss1 \\
          --archive-dir archives --ca ca.cert.pem --tsa-cert tsa.pem --json
    """
    from exchange.messagelog.verify import verify_log
    from exchange.server.logcheck import trusted_cas_of, trusted_tsas_of
    from exchange.trust.keys import load_certificates

    path = _log_path(config_path, db)
    expected, source = _expected_owner(config_path, db, owner)
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
    with _progress("verifying", hidden=no_progress or as_json) as bar:
        task = bar.add_task("verify", total=None)
        report = verify_log(
            path,
            trusted_cas=cas,
            owner=expected,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            tsa_certs=tsas,
            archive_dir=_archive_dir(config_path, db, archive_dir),
            crash=crash,
        )
    if as_json:
        print_json({**report.to_dict(), "owner_from": source})
    else:
        _print_report(report, source, crash=crash)
        if report.records_without_bodies:
            console.print(
                f"  {report.records_without_bodies} record(s) were logged without bodies "
                "(metadata-only logging): their signatures and body digests verify, so who "
                "asked what of whom, when, and the answer's status are proven; but what was sent "
                "and answered cannot be shown from this log, nor checked against a complaint"
            )
    if not report.ok:
        raise SystemExit(EXIT_CHECK_FAILED)


def _expected_owner(
    config_path: Path | None, db: Path | None, given: str | None
) -> tuple[SecurityServerId, str]:
    """The log's owner, from outside the log file: the server's configuration or --owner."""
    from exchange.identifiers import parse_security_server

    owner = None if given is None else parse_security_server(given)
    if db is None and config_path is not None:
        from exchange.server.config import load_server_config

        configured = load_server_config(config_path).server_id
        if owner is not None and owner != configured:
            raise ConfigurationError(
                f"--owner {owner} is not the server of {config_path} ({configured})"
            )
        return configured, "the server's configuration"
    if owner is None:
        raise ConfigurationError(
            "with --db, give the log's owner with --owner (the security server whose log it "
            "is, e.g. PS/GOV/MOI/ss1): only its member's keys may sign the log's tree heads"
        )
    return owner, "--owner"


def _print_report(report: object, source: str, *, crash: bool = False) -> None:
    from exchange.messagelog.verify import VerifyReport

    assert isinstance(report, VerifyReport)
    verdict = "[green]OK[/green]" if report.ok else "[red]FAILED[/red]"
    console.print(f"message log {markup_text(report.path)}: {verdict}", markup=True)
    console.print(
        f"  owner: {report.owner} (from {source}); tree heads must be signed by a signing key "
        f"of its member"
    )
    if report.stated_owner != report.owner:
        console.print(f"  note: the file names owner {report.stated_owner!r}")
    # with heads that fail, the records they cover are under no head an auditor can rely on
    pending = (
        "records past the last signed tree head"
        if report.tree_heads_verified == report.tree_heads
        else "records under no verified tree head"
    )
    if crash and report.unsigned_records:
        pending += " (--crash: reported, not failed)"
    console.print(
        f"  records: {report.records}, tree heads: "
        f"{report.tree_heads_verified}/{report.tree_heads} verified, "
        f"{pending}: {report.unsigned_records}"
    )
    if report.archives:
        console.print(
            f"  archives: {report.archives_verified}/{report.archives} verified "
            f"(records 0..{report.archived_records - 1} archived, the chain of archive digests "
            "intact)"
            if report.archives_verified == report.archives
            else f"  archives: {report.archives_verified}/{report.archives} verified"
        )
    for name in report.unindexed_files:
        console.print(
            f"  note: {name} is not in the archive index (left by an interrupted archiving run; "
            "its records are still in the database; the next run replaces it)"
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
        if bad.reason.startswith("archive "):
            console.print(f"  [red]first bad:[/red] {markup_text(bad.reason)}", markup=True)
        else:
            console.print(
                f"  [red]first bad record:[/red] {where}, message id "
                f"{markup_text(one_value(str(bad.message_id)))}: {markup_text(bad.reason)}",
                markup=True,
            )
    for problem in report.problems[:20]:
        d = problem.to_dict()
        where = {
            "record": f"record {d['seq']}",
            "timestamp": f"time-stamp of the tree head of size {d['size']}",
            "archive": f"archive {d['archive']}",
        }.get(d["kind"], f"tree head of size {d['size']}")
        console.print(f"  - {where}: {d['reason']}")
    if len(report.problems) > 20 or report.problems_omitted:
        console.print(f"  ... {len(report.problems) - 20 + report.problems_omitted} more problems")


def _time(option: str, text: str | None) -> dt.datetime | None:
    from exchange.messagelog.query import parse_time

    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise ConfigurationError(f"{option}: {exc}") from None


def _limit(limit: int) -> int | None:
    if limit < 0:
        raise ConfigurationError("--limit: give a number of records, or 0 for all")
    return limit or None


_SINCE = click.option(
    "--since", help="ISO date or time, inclusive (2026-12-06, 2026-12-06T10:00; UTC if no zone)."
)
_UNTIL = click.option("--until", help="ISO date or time, exclusive (UTC if no zone).")
_LIMIT = click.option(
    "--limit", default=50, show_default=True, help="Stop after this many; 0 lists all."
)
_RECORDS_AS_LOGGED = "as logged (`exchange log verify` checks them)"
_HEADS_AS_LOGGED = "as logged (`exchange log check-proof --trust` checks them)"


@group.command("show")
@click.option("--config", "config_path", type=_CONFIG, help="The security server's server.toml.")
@click.option("--db", type=_CONFIG, help="A message log file.")
@click.option("--id", "message_id", help="X-Road-Id of the exchange.")
@click.option("--client", help="Client subsystem, e.g. PS/GOV/PALPOST/unified-window.")
@click.option("--service", help="Service, e.g. PS/GOV/MOI/population-registry/persons.")
@click.option("--side", type=click.Choice(["consumer", "provider"]))
@click.option("--user-id", help="X-Road-UserId: the person who acted, e.g. a clerk.")
@click.option(
    "--path",
    "path_pattern",
    help="The path after the service code (query included): a prefix such as /408728723, or a "
    "glob such as '*/family' (* also matches /).",
)
@click.option("--method", help="HTTP method, e.g. GET.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    help="HTTP status (403) or class (4xx); repeat for any of several.",
)
@_SINCE
@_UNTIL
@_LIMIT
@_ARCHIVE_DIR
@click.option("--live-only", is_flag=True, help="Search the database only, not the archives.")
@reports
def show_cmd(
    config_path: Path | None,
    db: Path | None,
    message_id: str | None,
    client: str | None,
    service: str | None,
    side: str | None,
    user_id: str | None,
    path_pattern: str | None,
    method: str | None,
    statuses: tuple[str, ...],
    since: str | None,
    until: str | None,
    limit: int,
    archive_dir: Path | None,
    live_only: bool,
    as_json: bool,
) -> None:
    """List logged exchanges, oldest first: time, side, status, method and path, user id,
    client, service, purpose, message id, decision, released fields.

    Filters (all must match): message id, client, service, side, user id, path (prefix or
    glob), method, status (code or class), time. Archived records are searched too. Streams:
    any size of log. What it prints is what the log says; `exchange log verify` and
    `exchange audit verify` check it.

    \b
    Example:
      exchange log show --config state/servers/MOI/server.toml --since 2026-11-27T10:00
      exchange log show --config state/servers/MOI/server.toml --user-id PS-clerk-biddu-01 \\
          --path '*/family' --status 4xx --since 2026-12-06 --until 2026-12-07
    """
    from exchange.cli.listing import footer, record_lines, stream
    from exchange.messagelog.query import RecordFilter, iter_records, parse_status

    try:
        ranges = tuple(parse_status(s) for s in statuses)
    except ValueError as exc:
        raise ConfigurationError(f"--status: {exc}") from None
    where = RecordFilter(
        message_id=message_id,
        client=client,
        service=service,
        side=side,
        since=_time("--since", since),
        until=_time("--until", until),
        method=method,
        path=path_pattern,
        statuses=ranges,
        user_id=user_id,
    )
    records = iter_records(
        _log_path(config_path, db),
        where,
        archive_dir=None if live_only else _archive_dir(config_path, db, archive_dir),
    )
    listed = stream(
        records,
        _limit(limit),
        as_json=as_json,
        to_dict=lambda view: view.to_dict(),
        lines=record_lines,
    )
    footer(listed, "record", limit, as_json=as_json, note=_RECORDS_AS_LOGGED)


@group.command("heads")
@click.option("--config", "config_path", type=_CONFIG, help="The security server's server.toml.")
@click.option("--db", type=_CONFIG, help="A message log file.")
@click.option("--stamped", is_flag=True, help="Only tree heads with an RFC 3161 time-stamp.")
@click.option(
    "--covers",
    type=click.IntRange(min=0),
    help="Only tree heads whose tree holds record SEQ (as `log show` numbers them).",
)
@_SINCE
@_UNTIL
@_LIMIT
@_ARCHIVE_DIR
@reports
def heads_cmd(
    config_path: Path | None,
    db: Path | None,
    stamped: bool,
    covers: int | None,
    since: str | None,
    until: str | None,
    limit: int,
    archive_dir: Path | None,
    as_json: bool,
) -> None:
    """List the signed tree heads a proof can lead to, smallest first: size, root, signing
    time, time-stamp time and signer certificate.

    Every group commit signs a tree head; only a time-stamped one proves when the records
    under it existed. Pick one with --covers SEQ --stamped, then `exchange log prove --size`.
    What it prints is what the log says; `exchange log check-proof --trust` checks the head a
    proof names.

    \b
    Example:
      exchange log heads --config state/servers/MOI/server.toml --covers 112 --stamped
    """
    from exchange.cli.listing import footer, head_lines, stream
    from exchange.messagelog.heads import HeadFilter, iter_heads

    where = HeadFilter(
        stamped=stamped,
        covers=covers,
        since=_time("--since", since),
        until=_time("--until", until),
    )
    heads = iter_heads(
        _log_path(config_path, db), where, archive_dir=_archive_dir(config_path, db, archive_dir)
    )
    listed = stream(
        heads, _limit(limit), as_json=as_json, to_dict=lambda h: h.to_dict(), lines=head_lines
    )
    footer(listed, "tree head", limit, as_json=as_json, note=_HEADS_AS_LOGGED)


def _emit(document: dict[str, Any], as_json: bool, output: Path | None) -> bool:
    """Write ``document`` to ``output`` and/or print it as JSON (with ``output``: and where it
    went); False when people get the text."""
    if output is not None:
        import orjson

        output.write_bytes(
            orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
        if not as_json:
            console.print(f"wrote {output}")
            return True
    if as_json:
        print_json(document if output is None else {**document, "output": output})
        return True
    return False


@group.command("prove")
@click.option("--config", "config_path", type=_CONFIG, help="The security server's server.toml.")
@click.option("--db", type=_CONFIG, help="A message log file.")
@click.option("--id", "message_id", required=True, help="X-Road-Id of the exchange.")
@click.option("--size", type=int, help="Prove against the signed tree head of this size.")
@_ARCHIVE_DIR
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON.")
@reports
def prove_cmd(
    config_path: Path | None,
    db: Path | None,
    message_id: str,
    size: int | None,
    archive_dir: Path | None,
    as_json: bool,
    output: Path | None,
) -> None:
    """Print the RFC 9162 inclusion proof of an exchange's record(s) in a signed tree head.

    Against the latest time-stamped tree head that covers the record(s) (the latest signed one
    while none is), unless --size names another (`exchange log heads` lists them). The proof
    carries the head's time-stamp and signer certificate: `exchange log check-proof --trust`
    verifies the file written with -o as evidence on its own.

    \b
    Example:
      exchange log prove --config state/servers/MOI/server.toml \\
          --id 6f1c2a9e-0d4b-4c1e-9a57-3f2b8e0c7d11 -o proof.json
    """
    from exchange.messagelog.archive import ArchiveReader
    from exchange.messagelog.proofs import inclusion_for_message, stamped_size_covering

    path, folder = _log_path(config_path, db), _archive_dir(config_path, db, archive_dir)
    reader = ArchiveReader(path, folder, message_id=message_id)
    if size is None:
        size = stamped_size_covering(path, message_id, reader)
    proofs = inclusion_for_message(path, message_id, size=size, reader=reader)
    document = {"message_id": message_id, "proofs": [p.to_dict() for p in proofs]}
    if proofs[0].timestamp_token is None:
        err_console.print(
            f"note: the tree head of size {proofs[0].tree_size} is not time-stamped yet, so this "
            "proof shows no time; a running server time-stamps its latest head every "
            "timestamping interval (60 s): prove again then, or export the evidence with "
            "`exchange audit export`, which has one stamped on the spot"
        )
    if _emit(document, as_json, output):
        return
    for p in proofs:
        stamped = "time-stamped" if p.timestamp_token else "not time-stamped yet"
        console.print(f"record seq {p.seq} of {one_value(message_id)}")
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
@_ARCHIVE_DIR
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON.")
@reports
def consistency_cmd(
    config_path: Path | None,
    db: Path | None,
    m: int,
    n: int,
    archive_dir: Path | None,
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

    proof = consistency_between(
        _log_path(config_path, db), m, n, archive_dir=_archive_dir(config_path, db, archive_dir)
    )
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
@click.option(
    "--trust",
    "trust_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Trust folder from `exchange audit trust-export`: also check that each tree head is "
    "signed by the log's owner and time-stamped by an approved TSA.",
)
@click.option(
    "--owner",
    help="With --trust: the security server whose log it is (e.g. PS/GOV/MOI/ss1); default: the "
    "one the trust folder names (owner.txt).",
)
@reports
def check_proof_cmd(
    file: Path, trust_dir: Path | None, owner: str | None, as_json: bool
) -> None:  # fmt: skip
    """Verify a proof file from `log prove` or `log consistency` offline; print each check.

    With --trust, the proof is evidence on its own: the Merkle path leads to the root of a tree
    head signed by a signing key of the log's owner, time-stamped by an approved TSA. Without
    it only the Merkle math is checked, and the output says so. Exit status 0 when every check
    passes, 1 otherwise.

    \b
    Example:
      exchange log check-proof proof.json --trust trust
      exchange log check-proof proof.json --trust trust --owner PS/GOV/MOI/ss1
    """
    from exchange.messagelog.proofs import checks_for, load_proof_file

    document = load_proof_file(file)
    if trust_dir is None:
        if owner is not None:
            raise ConfigurationError("--owner needs --trust (the trust folder to check it with)")
        checks, proves, expected = checks_for(document), "", None
    else:
        from exchange.audit.proofcheck import check_proof_file
        from exchange.audit.trustdir import TrustMaterial, expected_owner

        trust = TrustMaterial.load(trust_dir)
        expected = expected_owner(owner, trust_dir)
        report = check_proof_file(document, trust, expected[0])
        checks, proves = report.checks, report.proves
    ok = all(c.ok for c in checks)
    if as_json:
        print_json(
            {
                "ok": ok,
                "file": str(file),
                "trust_checked": trust_dir is not None,
                "owner": None if expected is None else str(expected[0]),
                "checks": [{"what": c.what, "ok": c.ok, "reason": c.reason} for c in checks],
                "proves": proves if ok else None,
            }
        )
    else:
        _print_proof_checks(file, checks, expected, proves)
    if not ok:
        raise SystemExit(EXIT_CHECK_FAILED)


def _print_proof_checks(
    file: Path,
    checks: Sequence[Check],
    expected: tuple[SecurityServerId, str] | None,
    proves: str,
) -> None:
    if expected is not None:
        console.print(f"log owner: {expected[0]} (from {expected[1]})")
    for check in checks:
        mark = "[green]ok[/green]    " if check.ok else "[red]FAILED[/red]"
        reason = f": {check.reason}" if check.reason and not check.ok else ""
        console.print(f"{mark} {markup_text(check.what)}{markup_text(reason)}", markup=True)
    if not all(c.ok for c in checks):
        console.print(f"{markup_text(file)}: [red]FAILED[/red]", markup=True)
    elif expected is None:
        console.print(
            f"{markup_text(file)}: Merkle math [green]OK[/green]; the tree head's signature and "
            "time-stamp were NOT checked (give --trust DIR from `exchange audit trust-export`)",
            markup=True,
        )
    else:
        console.print(f"{markup_text(file)}: [green]OK[/green]: {markup_text(proves)}", markup=True)


ARCHIVE_WAIT_SECONDS = 300.0
"""How long `log archive` waits for a running server's own archiving run to finish."""


def _seconds(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``; a bare number is days."""
    unit = text[-1:].lower()
    number = text[:-1] if unit in DURATION_UNITS else text
    try:
        value = float(number)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration like 30d, 12h, 90m or 45s") from None
    if value < 0:
        raise click.BadParameter("the age must not be negative")
    return value * DURATION_UNITS.get(unit, 86400.0)


@group.command("archive")
@click.option("--config", "config_path", type=_CONFIG, required=True, help="The server.toml.")
@click.option(
    "--older-than",
    help="Archive records logged longer ago than this (30d, 12h, 90m, 45s; a bare number is "
    "days); default: [messagelog] retention_days.",
)
@click.option(
    "--max-records",
    type=click.IntRange(min=1),
    help="Records per archive file, roughly (default: [messagelog] archive_max_records).",
)
@click.option("--no-progress", is_flag=True)
@reports
def archive_cmd(
    config_path: Path,
    older_than: str | None,
    max_records: int | None,
    as_json: bool,
    no_progress: bool,
) -> None:
    """Move old records out of the live message log into signed, linked archive files.

    Only records covered by a time-stamped tree head move; each archive file ends at one. Works
    while the server runs (it also archives on its own when retention_days is set). `exchange
    log verify` checks the archives together with the database.

    \b
    Example:
      exchange log archive --config state/servers/MOI/server.toml --older-than 30d
    """
    import time

    from exchange.messagelog.archive import archivable, archive_log
    from exchange.server.config import load_server_config
    from exchange.server.ownkeys import load_owner_signer

    config = load_server_config(config_path)
    if older_than is None and config.retention.days is None:
        raise ConfigurationError(
            "give --older-than (e.g. 30d) or set retention_days in the server's [messagelog]"
        )
    age = _seconds(older_than) if older_than is not None else (config.retention.days or 0) * 86400
    cutoff_ms = int((time.time() - age) * 1000)
    start, end = archivable(config.log_path, cutoff_ms)
    with _progress("archiving", hidden=no_progress or as_json or end == start) as bar:
        task = bar.add_task("archive", total=end - start)
        written = archive_log(
            config.log_path,
            config.archive_dir,
            load_owner_signer(config),  # the owner's newest key, as the running server
            older_than_ms=cutoff_ms,
            max_records=max_records or config.retention.max_records,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            wait=ARCHIVE_WAIT_SECONDS,
        )
    if as_json:
        print_json({"archives": [e.to_dict() for e in written]})
        return
    for entry in written:
        console.print(
            f"archived records {entry.first_seq}..{entry.end_seq - 1} to "
            f"{config.archive_dir / entry.file} (sha256 {entry.sha256[:16]}…)",
            highlight=False,
        )
    if not written:
        console.print(
            "nothing to archive: no time-stamped tree head covers records older than that "
            f"beyond seq {start} (a running server time-stamps its tree head on the global "
            "configuration's interval, 60 s by default, and when it stops: run this again "
            "after the next one)",
            highlight=False,
        )


def _progress(label: str, *, hidden: bool) -> Progress:
    """The progress bar of a long log operation (verify, archive); gone once it ends.

    Only in a terminal: written to a pipe or a file, it would leave an empty line behind.
    """
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=hidden or not console.is_terminal,
    )
