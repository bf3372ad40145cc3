"""``exchange audit``: evidence bundles for one exchange, verified offline (DESIGN.md §8)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from exchange.cli.common import EXIT_CHECK_FAILED, console, handle_errors

if TYPE_CHECKING:
    from exchange.audit.bundle import Check

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group("audit")
def group() -> None:
    """Export and verify evidence bundles (offline, with public trust material only).

    \b
    Example:
      exchange audit trust-export --config state/servers/MOI/server.toml -o trust
      exchange audit export --config state/servers/MOI/server.toml --id ID -o evidence.zip
      exchange audit verify evidence.zip --trust trust
    """


@group.command("export")
@click.option("--config", "config_path", type=_FILE, required=True, help="The server.toml.")
@click.option("--id", "message_id", required=True, help="The exchange's X-Road-Id.")
@click.option("-o", "out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@handle_errors
def export(config_path: Path, message_id: str, out: Path) -> None:
    """Write the evidence bundle (a zip) of one exchange as this server logged it.

    \b
    Example:
      exchange audit export --config ss-moi/server.toml --id 4df44553-... -o evidence.zip
    """
    from exchange.audit.bundle import export_bundle
    from exchange.audit.force import stamp_on_the_spot
    from exchange.server.config import load_server_config

    config = load_server_config(config_path)
    path = asyncio.run(
        export_bundle(config, message_id, out, stamp=lambda: stamp_on_the_spot(config))
    )
    console.print(f"wrote {path}")


@group.command("verify")
@click.argument("bundle", type=_FILE)
@click.option("--trust", "trust_dir", type=_DIR, required=True, help="From `audit trust-export`.")
@handle_errors
def verify(bundle: Path, trust_dir: Path) -> None:
    """Verify an evidence bundle offline; exit 1 with the failing reason.

    \b
    Example:
      exchange audit verify evidence.zip --trust trust
    """
    from exchange.audit.bundle import bundle_notes, verify_bundle

    checks = verify_bundle(bundle, trust_dir)
    for note in bundle_notes(bundle):
        console.print(f"note: {note}", markup=False, highlight=False)
    _report(checks)


@group.command("correlate")
@click.argument("a", type=_FILE)
@click.argument("b", type=_FILE)
@click.option("--trust", "trust_dir", type=_DIR, required=True, help="From `audit trust-export`.")
@handle_errors
def correlate(a: Path, b: Path, trust_dir: Path) -> None:
    """Check that the consumer's and the provider's bundles describe the same exchange.

    \b
    Example:
      exchange audit correlate consumer.zip provider.zip --trust trust
    """
    from exchange.audit.bundle import correlate_bundles

    _report(correlate_bundles(a, b, trust_dir))


@group.command("trust-export")
@click.option("--config", "config_path", type=_FILE, required=True, help="The server.toml.")
@click.option("-o", "out", type=click.Path(file_okay=False, path_type=Path), required=True)
@handle_errors
def trust_export(config_path: Path, out: Path) -> None:
    """Write the public trust material (CA and TSA certificates, the anchor) to a folder.

    \b
    Example:
      exchange audit trust-export --config ss-moi/server.toml -o trust
    """
    from exchange.audit.bundle import export_trust
    from exchange.server.config import load_server_config

    console.print(f"wrote {export_trust(load_server_config(config_path), out)}")


@group.command("watch")
@click.option("--config", "config_path", type=_FILE, help="The server.toml (or give --db).")
@click.option("--db", type=_FILE, help="A message log file.")
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The auditor's own file of tree heads seen (kept outside the server).",
)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def watch(config_path: Path | None, db: Path | None, state: Path, as_json: bool) -> None:
    """Check that the log only grew since the last look (RFC 9162 consistency proof); run it
    periodically (e.g. from cron). Exit 1 when the history was rewritten.

    \b
    Example:
      exchange audit watch --config ss-moi/server.toml --state ~/audit/moi-heads.json
    """
    from exchange.audit.watch import watch_once
    from exchange.cli.common import print_json
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
@click.option("--json", "as_json", is_flag=True, help="Print the verified fields as JSON.")
@handle_errors
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
    from exchange.cli.common import print_json
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


def _report(checks: Sequence[Check]) -> None:
    failed = False
    for check in checks:
        console.print(check.line(), markup=False, highlight=False)
        failed = failed or not check.ok
    if failed:
        raise SystemExit(EXIT_CHECK_FAILED)
