"""``exchange demo``: build the example federation, run it, exchange, verify, stop."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from exchange.demo.federation import Federation
from exchange.demo.scenario import Outcome, run_scenario
from exchange.messagelog.verify import VerifyReport
from exchange.server.config import load_server_config
from exchange.server.logcheck import verify_server_log


@dataclass
class DemoResult:
    outcomes: list[Outcome]
    reports: dict[str, VerifyReport]
    revocation_ok: bool = True

    @property
    def ok(self) -> bool:
        return (
            all(o.passed for o in self.outcomes)
            and all(r.ok for r in self.reports.values())
            and self.revocation_ok
        )


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
                console.print(f"  {member.member_code:8s} [red]failed[/red]: {exc.message}")
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
            async with session.get(federation.consumer_url(member) + "/health") as resp:
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


def _outcome_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="Exchanges through the security servers", title_justify="left")
    for col in ("", "caller", "exchange", "status", "X-Road-Error", "fields received"):
        table.add_column(col, overflow="fold")
    for o in outcomes:
        mark = "[green]✓[/green]" if o.passed else "[red]✗[/red]"
        table.add_row(
            mark,
            o.step.caller,
            o.step.title,
            str(o.status),
            o.error or "[dim]-[/dim]",
            ", ".join(o.fields) or "[dim]-[/dim]",
        )
    return table


def _verify_all(federation: Federation, console: Console) -> dict[str, VerifyReport]:
    reports: dict[str, VerifyReport] = {}
    for member, site in federation.sites.items():
        report = verify_server_log(load_server_config(site.config))
        reports[str(member)] = report
        verdict = "[green]OK[/green]" if report.ok else "[red]FAILED[/red]"
        console.print(
            f"  exchange log verify --config {site.config}\n"
            f"    {verdict}: {report.records} records, "
            f"{report.tree_heads_verified}/{report.tree_heads} signed tree heads verified, "
            f"{report.timestamps_verified}/{report.timestamps} RFC 3161 time-stamps verified"
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
    say = lambda text: console.print(f"[dim]•[/dim] {text}")  # noqa: E731
    console.rule("[bold]Exchange: the example federation (instance PS)")
    stopper: _Stopper | None = None
    try:
        federation.build(say)  # files only: a signal meanwhile ends the demo at once, as before
        stopper = _Stopper()
        await federation.start(say)
        outcomes = await run_scenario(federation)
        console.print(_outcome_table(outcomes))
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
        result = DemoResult(outcomes, reports, revocation_ok)
        passed = sum(o.passed for o in outcomes)
        verdict = "[green]all as expected[/green]" if result.ok else "[red]NOT as expected[/red]"
        console.print(
            f"\n{passed}/{len(outcomes)} exchanges as expected, "
            f"{sum(r.ok for r in reports.values())}/{len(reports)} message logs verified: {verdict}"
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
