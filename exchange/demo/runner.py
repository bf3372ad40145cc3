"""``exchange demo``: build the example federation, run it, exchange, verify, stop."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from rich.console import Console
from rich.table import Table
from rich.text import Text

from exchange.demo.federation import Federation
from exchange.demo.scenario import Outcome, run_scenario
from exchange.demo.window import SessionStep, clerk_session
from exchange.messagelog.verify import VerifyReport
from exchange.server.config import load_server_config
from exchange.server.logcheck import verify_server_log


@dataclass
class DemoResult:
    outcomes: list[Outcome]
    reports: dict[str, VerifyReport]
    revocation_ok: bool = True
    documents_ok: bool = True
    session: list[SessionStep] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            all(o.passed for o in self.outcomes)
            and all(r.ok for r in self.reports.values())
            and self.revocation_ok
            and self.documents_ok
            and bool(self.session)
            and all(step.ok for step in self.session)
        )

    def to_dict(self) -> dict[str, Any]:
        """What ``exchange demo --json`` prints: each exchange, each log's verification, the
        revocation, time-stamp and document checks, the clerk's session."""
        return {
            "ok": self.ok,
            "exchanges": [
                {
                    "title": o.step.title,
                    "caller": o.step.caller,
                    "method": o.step.method,
                    "path": o.step.path,
                    "message_id": o.message_id,
                    "status": o.status,
                    "error": o.error,
                    "fields": list(o.fields),
                    "expected_status": o.step.expect_status,
                    "expected_error": o.step.expect_error,
                    "passed": o.passed,
                }
                for o in self.outcomes
            ],
            "logs": {member: report.to_dict() for member, report in self.reports.items()},
            "revocation_and_timestamps_ok": self.revocation_ok,
            "documents_ok": self.documents_ok,
            "session": [{"what": s.what, "ok": s.ok, "detail": s.detail} for s in self.session],
        }


async def _print_timestamps(console: Console, federation: Federation) -> bool:
    """Each server's latest signed tree head, time-stamped by the TSA (RFC 3161) and verified.

    (The servers will do this themselves on an interval: issue 4. Here the demo shows the TSA
    and the verification at work on real tree heads.)"""
    from exchange.messagelog.store import open_readonly
    from exchange.trust.keys import load_certificate
    from exchange.trust.timestamp import TimestampError
    from exchange.trust.tsa_service import TimestampClient

    tsa_cert = load_certificate(federation.tsa_cert_path)
    ca_cert = load_certificate(federation.state_dir / "ca" / "ca.cert.pem")
    ok = True
    console.print(f"Time-stamps (TSA {federation.tsa_url}) over each server's latest tree head:")
    async with TimestampClient() as client:
        for member, site in federation.sites.items():
            conn = open_readonly(site.directory / "messagelog.sqlite")
            try:
                row = conn.execute(
                    "SELECT size, jws FROM tree_heads ORDER BY size DESC LIMIT 1"
                ).fetchone()
            finally:
                conn.close()
            if row is None:
                continue
            digest = hashlib.sha256(row[1].encode("ascii")).digest()
            try:
                _, info = await client.request(
                    digest, federation.tsa_url, tsa_certs=[tsa_cert], ca_certs=[ca_cert]
                )
            except TimestampError as exc:
                ok = False
                console.print(f"  {member.member_code:8s} ", FAILED, f": {exc.message}", sep="")
                continue
            console.print(
                f"  {member.member_code:8s} tree head of size {row[0]}: token serial "
                f"{info.serial}, time {info.gen_time.isoformat()}, verified"
            )
    return ok


async def _print_ocsp(console: Console, federation: Federation) -> bool:
    """Each server's own OCSP responses (fetched from the CA's responder, stapled in HELLO) and
    the peers' responses it verified, from its /health endpoint."""
    ok = True
    lines = []
    async with aiohttp.ClientSession() as session:
        for member in federation.sites:
            async with session.get(federation.status_url(member) + "/health") as resp:
                ocsp = (await resp.json())["ocsp"]
            ok = ok and ocsp["own_fresh"] == ocsp["own_total"]
            lines.append(
                f"  {member.member_code:8s} own certificates with a fresh 'good' OCSP response: "
                f"{ocsp['own_fresh']}/{ocsp['own_total']}; peers' responses verified: "
                f"{ocsp['peers_verified']}"
            )
    console.print(f"Revocation (OCSP responder {federation.ocsp_url}):")
    for line in lines:
        console.print(line)
    return ok


FAILED: Final = Text("FAILED", "red")
NOTHING: Final = Text("-", "dim")
"""Styled words of the summary: rich markup is off on the CLI's console (text from peers and
logs is shown, never obeyed), so styles come as ``Text`` objects."""

SIGNED: Final = (("certificate", "certificate of residence", "PS/GOV/MOI"),
                 ("receipt", "receipt", "PS/GOV/MOF"))  # fmt: skip
"""The signed documents the window is given: (kept step, what it is, the member that signs)."""


def _verify_documents(
    console: Console, federation: Federation, outcomes: list[Outcome], serve: bool
) -> bool:
    """The certificate of residence and the receipt the window was given, saved and verified
    offline with the federation's trust bundle, as an auditor would (``exchange audit document
    verify``)."""
    from exchange.audit.documents import read_document, trusted_cas_from, verify_saved
    from exchange.identifiers import parse_member
    from exchange.trust.documents import DocumentError

    kept = {o.step.keep: o for o in outcomes if o.step.keep and isinstance(o.body, dict)}
    cas = trusted_cas_from(federation.trust_bundle)
    folder = federation.state_dir / "documents"
    folder.mkdir(parents=True, exist_ok=True)
    ok = True
    console.print("Signed documents the window was given, verified offline with the trust bundle:")
    for name, what, member in SIGNED:
        outcome = kept.get(name)
        token = outcome.body.get("document") if outcome is not None else None
        if outcome is None or not isinstance(token, str):
            ok = False
            console.print(f"  {what}: ", Text("not received", "red"), sep="")
            continue
        path = folder / f"{name}.json"
        path.write_bytes(outcome.raw)
        try:
            verified = verify_saved(read_document(path), cas, issuer=parse_member(member))
        except DocumentError as exc:
            ok = False
            console.print(f"  {what}: ", FAILED, f": {exc.message}", sep="")
            continue
        number = verified.claims.get(f"{name}_number", "")
        signed = f"signed by {verified.issuer} at {verified.issued_at.isoformat()}"
        console.print(f"  {what} {number}: {signed}, ", Text("verified", "green"), sep="")
        if serve:
            console.print(f"    exchange audit document verify {path} --trust "
                          f"{federation.trust_bundle}")  # fmt: skip
    return ok


async def _clerk_session(console: Console, federation: Federation) -> list[SessionStep]:
    """One clerk's session through the window's HTTP interface, as a browser would."""
    assert federation.window is not None
    nid = federation.sample_ids[1] if len(federation.sample_ids) > 1 else federation.sample_ids[0]
    console.print(f"A clerk's session through the window ({federation.window.url}):")
    session = await clerk_session(federation.window, nid)
    for step in session:
        mark = Text("✓", "green") if step.ok else Text("✗", "red")
        console.print("  ", mark, f" {step.what}: {step.detail}", sep="")
    return session


def _outcome_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="Exchanges through the security servers", title_justify="left")
    for col in ("", "caller", "exchange", "status", "X-Road-Error", "fields received"):
        table.add_column(col, overflow="fold")
    for o in outcomes:
        mark = Text("✓", "green") if o.passed else Text("✗", "red")
        table.add_row(
            mark,
            Text(o.step.caller),
            Text(o.step.title),
            Text(str(o.status)),
            Text(o.error) if o.error else NOTHING,
            Text(", ".join(o.fields)) if o.fields else NOTHING,
        )
    return table


def _verify_all(federation: Federation, console: Console) -> dict[str, VerifyReport]:
    reports: dict[str, VerifyReport] = {}
    for member, site in federation.sites.items():
        report = verify_server_log(load_server_config(site.config))
        reports[str(member)] = report
        verdict = Text("OK", "green") if report.ok else FAILED
        console.print(
            f"  exchange log verify --config {site.config}\n    ",
            verdict,
            f": {report.records} records, "
            f"{report.tree_heads_verified}/{report.tree_heads} signed tree heads verified, "
            f"{report.timestamps_verified}/{report.timestamps} RFC 3161 time-stamps verified",
            sep="",
        )
    return reports


async def run_demo(
    console: Console,
    *,
    state_dir: Path | None,
    serve: bool,
    people: int,
    progress: bool = True,
) -> DemoResult:
    temporary = state_dir is None
    root = Path(tempfile.mkdtemp(prefix="exchange-demo-")) if state_dir is None else state_dir
    federation = Federation(root.resolve(), people=people, progress=progress)
    say = lambda text: console.print(Text("• ", "dim"), text, sep="")  # noqa: E731
    console.rule(Text("Exchange: the example federation (instance PS)", "bold"))
    stopper: _Stopper | None = None
    try:
        federation.build(say)  # files only: a signal meanwhile ends the demo at once, as before
        stopper = _Stopper()
        await federation.start(say)
        outcomes = await run_scenario(federation)
        console.print(_outcome_table(outcomes))
        documents_ok = _verify_documents(console, federation, outcomes, serve)
        session = await _clerk_session(console, federation)
        revocation_ok = await _print_ocsp(console, federation)
        revocation_ok = await _print_timestamps(console, federation) and revocation_ok
        if serve:
            console.rule("Message logs (servers running)")
            reports = _verify_all(federation, console)
            path = federation.write_endpoints()
            _print_serving(console, federation, path)
            await stopper.wait()
            await federation.stop()
        else:
            await federation.stop()
            console.rule("Message logs, verified offline after the servers stopped")
            reports = _verify_all(federation, console)
        result = DemoResult(outcomes, reports, revocation_ok, documents_ok, session)
        passed = sum(o.passed for o in outcomes)
        verdict = Text("all as expected", "green") if result.ok else Text("NOT as expected", "red")
        console.print(
            f"\n{passed}/{len(outcomes)} exchanges as expected, "
            f"{sum(r.ok for r in reports.values())}/{len(reports)} message logs verified: ",
            verdict,
            sep="",
        )
        return result
    finally:
        if stopper is not None:
            stopper.close()
        await federation.stop()
        if temporary:
            shutil.rmtree(root, ignore_errors=True)


def _print_serving(console: Console, federation: Federation, path: Path) -> None:
    from exchange.demo.federation import MINISTRIES

    window = federation.sites[MINISTRIES[1].member]
    nid = federation.sample_ids[0]
    console.rule("Serving")
    console.print(f"endpoints: {path}")
    console.print("try:")
    console.print(
        f"  curl -s -H 'X-Road-Client: PS/GOV/PALPOST/unified-window' "
        f"-H 'X-Road-Purpose: citizen-service' "
        f"http://127.0.0.1:{window.consumer_port}/r1/PS/GOV/MOI/population-registry/persons/{nid}"
    )
    console.print(f"  exchange log show --config {federation.sites[MINISTRIES[0].member].config}")
    if federation.window is not None:
        clerk = federation.window
        console.print(f"the post office's window: {clerk.url}")
        console.print(f"  sign in as {clerk.username} with the password {clerk.password}")
    console.print("Ctrl-C (SIGINT) or SIGTERM stops the federation.")


class _Stopper:
    """SIGINT and SIGTERM for the demo from its first process on. While it starts the
    federation and runs its exchanges, a signal cancels it, and the ``finally`` of
    :func:`run_demo` stops every process started so far; while it serves, a signal ends
    :meth:`wait`. Before, SIGTERM ahead of serving killed the demo at once and left its servers
    running (each has a session of its own, so nothing else stops them)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.stop = asyncio.Event()
        self.waiting = False
        for sig in self.SIGNALS:
            self.loop.add_signal_handler(sig, self._signalled)

    def _signalled(self) -> None:
        self.stop.set()
        if not self.waiting and self.task is not None:
            self.task.cancel()

    async def wait(self) -> None:
        self.waiting = True
        await self.stop.wait()

    def close(self) -> None:
        for sig in self.SIGNALS:
            self.loop.remove_signal_handler(sig)
