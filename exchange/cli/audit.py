"""``exchange audit``: evidence bundles for one exchange, verified offline (docs/design.md §8)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from exchange.cli.common import EXIT_CHECK_FAILED, ExchangeGroup, console, print_json, reports
from exchange.terminal import one_value

if TYPE_CHECKING:
    from exchange.audit.bundle import Check, LogFiles
    from exchange.audit.force import OfflineStamping
    from exchange.audit.summary import RecordSummary
    from exchange.server.config import ServerConfig

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group("audit", cls=ExchangeGroup)
def group() -> None:
    """Export and verify evidence bundles (offline, with public trust material only).

    \b
    Example:
      exchange audit trust-export --config state/servers/MOI/server.toml -o trust
      exchange audit export --config state/servers/MOI/server.toml --id ID -o evidence.zip
      exchange audit verify evidence.zip --trust trust --owner PS/GOV/MOI/ss1
    """


def _log_files(config: ServerConfig) -> LogFiles:
    from exchange.audit.bundle import LogFiles

    return LogFiles(config.log_path, config.archive_dir)


def _offline_stamping(config: ServerConfig) -> OfflineStamping:
    """The server's own signing key and stored global configuration, to stamp its log while it
    is stopped."""
    from exchange.audit.force import OfflineStamping
    from exchange.server.logcheck import stored_globalconf
    from exchange.server.ownkeys import load_owner_signer

    signer = load_owner_signer(config)  # the newest, as the running server signs with
    conf = stored_globalconf(config, "one by running the server (it knows no approved TSA)")
    return OfflineStamping(config.server_id, signer, conf)


@group.command("export")
@click.option("--config", "config_path", type=_FILE, required=True, help="The server.toml.")
@click.option("--id", "message_id", required=True, help="The exchange's X-Road-Id.")
@click.option("-o", "out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@reports
def export(config_path: Path, message_id: str, out: Path, as_json: bool) -> None:
    """Write the evidence bundle (a zip) of one exchange as this server logged it.

    \b
    Example:
      exchange audit export --config ss-moi/server.toml --id 4df44553-... -o evidence.zip
    """
    from exchange.audit.bundle import export_bundle
    from exchange.audit.force import stamp_on_the_spot
    from exchange.server.config import load_server_config, pid_file_of
    from exchange.server.logcheck import trusted_cas_of

    config = load_server_config(config_path)
    path = asyncio.run(
        export_bundle(
            _log_files(config),
            message_id,
            out,
            cas=trusted_cas_of(config),
            stamp=lambda: stamp_on_the_spot(
                config.log_path, pid_file_of(config.path), lambda: _offline_stamping(config)
            ),
        )
    )
    if as_json:
        print_json({"message_id": message_id, "bundle": path})
    else:
        console.print(f"wrote {path}")


_OWNER_HELP = (
    "The security server whose log the bundle comes from (e.g. PS/GOV/MOI/ss1); only its "
    "member's keys may sign the tree head. Default: the one the trust folder names (owner.txt)."
)


@group.command("verify")
@click.argument("bundle", type=_FILE)
@click.option("--trust", "trust_dir", type=_DIR, required=True, help="From `audit trust-export`.")
@click.option("--owner", help=_OWNER_HELP)
@reports
def verify(bundle: Path, trust_dir: Path, owner: str | None, as_json: bool) -> None:
    """Verify an evidence bundle offline as one of the log of its owner: first what the record
    is (each value from the signed document that states it), then every check; exit 1 with the
    failing reason (also for a malformed bundle).

    \b
    Example:
      exchange audit verify evidence.zip --trust trust
      exchange audit verify evidence.zip --trust trust --owner PS/GOV/MOI/ss1
    """
    from exchange.audit.bundle import examine_bundle
    from exchange.audit.summary import summarize
    from exchange.audit.trustdir import expected_owner

    # the expected log owner, from the auditor: --owner, else the trust folder
    expected, source = expected_owner(owner, trust_dir)
    report = examine_bundle(bundle, trust_dir, expected)
    evidence = report.head
    stamp = evidence.stamp if evidence is not None else None
    summaries = [
        summarize(
            seq,
            report.verdicts.get(seq),
            entry,
            expected,
            in_log=report.in_log(seq),
            stamp=stamp,
        )
        for seq, entry in sorted(report.entries.items())
    ]
    notes = list(report.notes)
    if not as_json:
        lines = [f"log owner: {expected} (from {source})"]
        for summary in summaries:
            lines += _summary_lines(summary)
        for line in lines:
            console.print(line, markup=False, highlight=False)
    facts = {
        "bundle": bundle,
        "owner": str(expected),
        "owner_from": source,
        "records": [s.to_dict() for s in summaries],
        "notes": notes,
    }
    notes_shown = [f"note: {note}" for note in notes]
    _report(report.checks, as_json, facts, after=notes_shown, name=bundle.name)


def _summary_lines(summary: RecordSummary) -> list[str]:
    """A record as its verified parts state it: a heading, then each part's fields under it."""
    lines = [summary.heading()]
    for part in summary.parts:
        lines.append(f"  {part.heading()}")
        lines += [f"    {name:<11} {one_value(value)}" for name, value in part.fields]
    lines += [f"  not shown, {reason}" for reason in summary.unproven]
    return lines


@group.command("correlate")
@click.argument("a", type=_FILE)
@click.argument("b", type=_FILE)
@click.option("--trust", "trust_dir", type=_DIR, required=True, help="From `audit trust-export`.")
@click.option(
    "--owner",
    "owners",
    multiple=True,
    required=True,
    help="The security server whose log each bundle comes from, once per bundle, in order.",
)
@reports
def correlate(a: Path, b: Path, trust_dir: Path, owners: tuple[str, ...], as_json: bool) -> None:
    """Check that the consumer's and the provider's bundles describe the same exchange.

    \b
    Example:
      exchange audit correlate consumer.zip provider.zip --trust trust \\
          --owner PS/GOV/PALPOST/ss1 --owner PS/GOV/MOI/ss1
    """
    from exchange.audit.bundle import correlate_bundles
    from exchange.audit.trustdir import expected_owner
    from exchange.errors import ConfigurationError

    if len(owners) != 2:
        raise ConfigurationError("give --owner twice: the owner of A's log, then of B's")
    expected = (expected_owner(owners[0], trust_dir)[0], expected_owner(owners[1], trust_dir)[0])
    if not as_json:
        for path, owner in zip((a, b), expected, strict=True):
            console.print(f"{path.name}: log owner {owner}", markup=False, highlight=False)
    facts = {"bundles": [a, b], "owners": [str(owner) for owner in expected]}
    _report(correlate_bundles(a, b, trust_dir, expected), as_json, facts)


@group.command("trust-export")
@click.option("--config", "config_path", type=_FILE, required=True, help="The server.toml.")
@click.option("-o", "out", type=click.Path(file_okay=False, path_type=Path), required=True)
@reports
def trust_export(config_path: Path, out: Path, as_json: bool) -> None:
    """Write the public trust material (CA and TSA certificates, the anchor) to a folder, and
    the server's id as the owner of the bundles it will check (owner.txt).

    \b
    Example:
      exchange audit trust-export --config ss-moi/server.toml -o trust
    """
    from exchange.audit.trustdir import export_trust
    from exchange.server.config import load_server_config
    from exchange.server.logcheck import trusted_cas_of, trusted_tsas_of

    config = load_server_config(config_path)
    written = export_trust(
        out,
        cas=trusted_cas_of(config),
        tsas=trusted_tsas_of(config),
        anchor=config.anchor,
        owner=config.server_id,
    )
    if as_json:
        files = sorted(str(f.relative_to(written)) for f in written.rglob("*") if f.is_file())
        print_json({"trust": written, "owner": str(config.server_id), "files": files})
    else:
        console.print(f"wrote {written}")


@group.command("watch")
@click.option("--config", "config_path", type=_FILE, help="The server.toml (or give --db).")
@click.option("--db", type=_FILE, help="A message log file.")
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The auditor's own file of tree heads seen (kept outside the server).",
)
@reports
def watch(config_path: Path | None, db: Path | None, state: Path, as_json: bool) -> None:
    """Check that the log only grew since the last look (RFC 9162 consistency proof); run it
    periodically (e.g. from cron). Exit 1 when the history was rewritten.

    \b
    Example:
      exchange audit watch --config ss-moi/server.toml --state ~/audit/moi-heads.json
    """
    from exchange.audit.watch import watch_once
    from exchange.errors import ConfigurationError

    archive_dir = None
    if db is None:
        if config_path is None:
            raise ConfigurationError("give --config (the server's TOML file) or --db")
        from exchange.server.config import load_server_config

        config = load_server_config(config_path)
        db, archive_dir = config.log_path, config.archive_dir
    result = watch_once(db, state, archive_dir)
    if as_json:
        print_json(result.to_dict())
    else:
        console.print(f"log {result.log_id}: {result.message}", markup=False, highlight=False)
    if not result.consistent:
        raise SystemExit(EXIT_CHECK_FAILED)


@group.group("document")
def document() -> None:
    """Signed documents a ministry hands out: certificates of residence, receipts, refunds.

    \b
    Example:
      exchange audit document verify receipt.json --trust trust-bundle.pem
    """


@document.command("verify")
@click.argument("path", type=_FILE)
@click.option(
    "--trust",
    "trust",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="CA certificates (PEM file) or a folder from `audit trust-export`.",
)
@click.option("--issuer", help="The member that must have signed it, e.g. PS/GOV/MOF.")
@click.option("--type", "typ", help="The kind it must be: residence-certificate, receipt, refund.")
@reports
def document_verify(
    path: Path, trust: Path, issuer: str | None, typ: str | None, as_json: bool
) -> None:  # fmt: skip
    """Verify a signed document offline (a JWS, or a JSON answer with its "document"); exit 1
    when it does not verify.

    \b
    Example:
      exchange audit document verify receipt.json --trust trust-bundle.pem --issuer PS/GOV/MOF
    """
    from exchange.audit.documents import read_document, trusted_cas_from, verify_saved
    from exchange.errors import ConfigurationError
    from exchange.identifiers import parse_member
    from exchange.trust.documents import TYPE_NAMES

    if typ is not None and typ not in TYPE_NAMES:
        raise ConfigurationError(f"--type is one of {', '.join(sorted(TYPE_NAMES))}, not {typ!r}")
    expected = parse_member(issuer) if issuer is not None else None
    verified = verify_saved(
        read_document(path),
        trusted_cas_from(trust),
        typ=TYPE_NAMES[typ] if typ is not None else None,
        issuer=expected,
    )
    if as_json:
        print_json(
            {
                "verified": True,
                "type": verified.typ,
                "issuer": str(verified.issuer),
                "issued_at": verified.issued_at.isoformat(),
                "fields": verified.claims,
            }
        )
        return  # fmt: skip
    lines = [
        f"{verified.typ} signed by {verified.issuer} at {verified.issued_at.isoformat()}",
        f"  signer's certificate: serial {verified.signer.serial_number:x}, issued by the "
        f"approved CA {verified.ca.subject.rfc4514_string()}",
        *(f"  {name}: {_shown(value)}" for name, value in sorted(verified.claims.items())),
        "verified",
    ]
    console.print("\n".join(lines), markup=False, highlight=False)


def _shown(value: object) -> str:
    """A claim as text: strings as they are, anything else as JSON (``null``, objects)."""
    import orjson

    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _report(
    checks: Sequence[Check],
    as_json: bool,
    facts: dict[str, Any],
    *,
    after: Sequence[str] = (),
    name: str | None = None,
) -> None:
    """Each numbered check, as a line (then ``after`` and, with ``name``, a last line saying OK
    or FAILED) or in one JSON document with ``facts``; exit 1 if one failed."""
    ok = all(check.ok for check in checks)
    if as_json:
        shown = [
            {"number": c.number, "what": c.what, "ok": c.ok, "reason": c.reason} for c in checks
        ]
        print_json({**facts, "ok": ok, "checks": shown})
    else:
        lines = [check.line() for check in checks] + list(after)
        if name is not None:
            lines.append(f"{name}: {'OK' if ok else 'FAILED'}")
        for line in lines:
            console.print(line, markup=False, highlight=False)
    if not ok:
        raise SystemExit(EXIT_CHECK_FAILED)
