"""Operational monitoring from the message log (``exchange server opmon``): exchanges per client,
service and side in a window, their errors and the median and 99th percentile of their total
time, read from a real log file (read-only) and through the command."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from exchange.cli import main
from exchange.identifiers import parse_security_server
from exchange.messagelog.opmon import summarise
from exchange.messagelog.store import MessageLog
from tests.test_messagelog import make_ca

WINDOW = "PS/GOV/PALPOST/unified-window"
PERSONS = "PS/GOV/MOI/population-registry/persons"
ECHO = "PS/GOV/MOI/population-registry/echo"


def record(client: str, service: str, total_us: int, ok: bool = True) -> dict[str, Any]:
    return {
        "side": "provider",
        "message_id": None,
        "client": client,
        "service": service,
        "status": "ok" if ok else "error",
        "timings_us": {"total": total_us},
    }


def write_log(path: Path) -> tuple[float, float]:
    """100 persons exchanges (1..100 ms, 3 refused), 2 echo ones; the window they were logged in."""
    signer = make_ca("Opmon CA").issue("PS/GOV/MOI/ss1")

    async def fill() -> None:
        with MessageLog(path, signer, owner=parse_security_server("PS/GOV/MOI/ss1")) as log:
            entries = [record(WINDOW, PERSONS, ms * 1000, ok=ms > 3) for ms in range(100, 0, -1)]
            entries += [record(WINDOW, ECHO, 500), record(WINDOW, ECHO, 700)]
            await log.append_many(entries)

    start = time.time()
    asyncio.run(fill())
    return start - 1, time.time() + 1


def test_counts_errors_and_percentiles_per_client_and_service(tmp_path: Path) -> None:
    log = tmp_path / "messagelog.sqlite"
    since, until = write_log(log)
    rows = summarise(log, int(since * 1000), int(until * 1000))
    persons, echo = rows
    assert (persons.client, persons.service, persons.side) == (WINDOW, PERSONS, "provider")
    assert (persons.count, persons.errors) == (100, 3)
    assert (persons.p50_ms, persons.p99_ms) == (50.0, 99.0)  # nearest rank
    assert (echo.count, echo.errors, echo.p50_ms, echo.p99_ms) == (2, 0, 0.5, 0.7)
    assert summarise(log, int(until * 1000), int(until * 1000) + 1000) == []  # outside it


def test_the_command_reads_a_stopped_servers_log(tmp_path: Path) -> None:
    from exchange.central.setup import init_central
    from exchange.identifiers import parse_security_server
    from exchange.server.setup import init_server
    from exchange.trust.ca import CertificateAuthority

    central = init_central(tmp_path / "central", "PS", port=0)
    server = init_server(
        tmp_path / "ss",
        parse_security_server("PS/GOV/MOI/ss1"),
        central.anchor_path,
        ca=CertificateAuthority.create(tmp_path / "ca", "PS Test CA"),
    )
    write_log(tmp_path / "ss" / "messagelog.sqlite")
    args = ["server", "opmon", "--config", str(server.config), "--since", "1h"]
    shown = CliRunner().invoke(main, [*args, "--json"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.output)
    assert [(e["service"], e["count"], e["errors"]) for e in doc["exchanges"]] == [
        (PERSONS, 100, 3),
        (ECHO, 2, 0),
    ]
    table = CliRunner().invoke(main, args)
    assert table.exit_code == 0 and PERSONS in table.output, table.output
    bad = CliRunner().invoke(main, [*args[:-1], "yesterday"])
    assert bad.exit_code == 2 and "neither an ISO time" in bad.output
