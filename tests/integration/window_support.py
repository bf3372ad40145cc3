"""Running the window app in this process against a real consumer port, with a clerk or two.

The app is the real one (``create_app``) on 127.0.0.1 port 0, its state in a temp dir; its
clock can be moved (``Clock``) so session expiry is tested without waiting.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from adapters.payments.app import create_adapter as payments_adapter
from adapters.payments.store import create_store
from adapters.telecom.app import create_adapter as sims_adapter
from adapters.telecom.store import create_store as create_sim_store
from examples.window import accounts, services
from examples.window.config import WindowConfig
from examples.window.db import connect
from examples.window.web import create_app
from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.trust.documents import DocumentSigner
from exchange.trust.keys import generate_key
from tests.integration.conftest import Net
from tests.integration.support import Clock, launch

PASSWORD = "correct horse battery staple"


def add_clerks(state_dir: Path, *names: str, password: str = PASSWORD) -> None:
    conn = connect(state_dir / "window.sqlite")
    try:
        for name in names:
            accounts.add_clerk(conn, name, accounts.hash_password(password), time.time())
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def running_window(
    consumer_url: str, state_dir: Path, *, clock: Clock | None = None, **options: object
) -> AsyncIterator[str]:
    """The app serving on 127.0.0.1; yields its base URL."""
    config = WindowConfig(consumer_url=consumer_url, state_dir=state_dir, **options)  # type: ignore[arg-type]
    app = create_app(config, clock=clock or Clock())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# --- the ministries' services behind one real security server of a test member -----------------
# Finance and Telecom are their real adapters (adapters.payments: idempotent fees and payments,
# signed receipts; adapters.telecom: SIM registrations) under their real policy files
# (exchange/demo/policies/) with the member renamed; Health's insurance status and Interior's
# certificates are stand-ins keeping the contract's rules (they need the citizen in their own
# registries). The window reaches them through ``ROUTED`` (WindowConfig.services). Health's
# answer carries the dependants, which the grant does not release: the provider withholds them.
MEMBER = parse_member("PS/GOV/MOFW")
PAYMENTS = parse_subsystem("PS/GOV/MOFW/payments")
OTHERS = parse_subsystem("PS/GOV/MOFW/ministries")
SIM_REGISTRY = parse_subsystem("PS/GOV/MOFW/sim-registry")
DEPENDANT = {"national_id": "200000004", "name": "Sami Haddad"}
_POLICIES = Path(__file__).resolve().parents[2] / "exchange" / "demo" / "policies"
OTHERS_POLICY = """
[[grant]]
id = "window-insurance"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOFW/ministries/status"
methods = ["GET"]
paths = ["/*"]
fields = ["national_id", "insured", "scheme", "valid_until"]
purposes = ["citizen-service"]
[[grant]]
id = "window-certificates"
client = "PS/GOV/PALPOST/unified-window"
service = "PS/GOV/MOFW/ministries/residence-certificates"
methods = ["POST"]
paths = ["/"]
purposes = ["citizen-service"]
"""
ROUTED = {
    services.SCHEDULE: "PS/GOV/MOFW/payments/schedule",
    services.FEES: "PS/GOV/MOFW/payments/fees",
    services.RECEIPTS: "PS/GOV/MOFW/payments/receipts",
    services.INSURANCE: "PS/GOV/MOFW/ministries/status",
    services.SIMS: "PS/GOV/MOFW/sim-registry/sims",
    services.RESIDENCE: "PS/GOV/MOFW/ministries/residence-certificates",
}


@dataclass
class Ministries:
    """What the stand-ins recorded, and where Finance's real adapter keeps its books."""

    payments_db: Path
    certificates: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, Any] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/status/{nid}", self.insurance)
        app.router.add_post("/residence-certificates", self.certify)
        return app

    def receipts_of(self, fee_id: str) -> list[tuple[str, str]]:
        """(receipt number, collected by) of each payment of ``fee_id`` in Finance's books."""
        with contextlib.closing(sqlite3.connect(self.payments_db)) as conn:
            rows = conn.execute(
                "SELECT receipt_number, collected_by FROM receipts WHERE fee_id = ?", (fee_id,)
            ).fetchall()
        return [(str(a), str(b)) for a, b in rows]

    def refunds_of(self, receipt_number: str) -> int:
        with contextlib.closing(sqlite3.connect(self.payments_db)) as conn:
            query = "SELECT count(*) FROM refunds WHERE receipt_number = ?"
            return int(conn.execute(query, (receipt_number,)).fetchone()[0])

    def last_fee(self) -> str:
        with contextlib.closing(sqlite3.connect(self.payments_db)) as conn:
            row = conn.execute("SELECT fee_id FROM fees ORDER BY rowid DESC LIMIT 1").fetchone()
        return str(row[0])

    async def _once(self, request: web.Request, make: Any) -> web.Response:
        key = request.headers["Idempotency-Key"]
        if key in self.answers:
            return web.json_response(self.answers[key], status=200)
        self.answers[key] = make(await request.json(), request)
        return web.json_response(self.answers[key], status=201)

    async def insurance(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"national_id": request.match_info["nid"], "insured": True, "scheme": "government",
             "valid_until": "2027-06-30", "dependants": [DEPENDANT]}
        )  # fmt: skip

    async def certify(self, request: web.Request) -> web.Response:
        def make(body: dict[str, Any], _: web.Request) -> dict[str, Any]:
            certificate = {
                "certificate_number": f"MOI-RC-2026-{len(self.certificates) + 1:06d}",
                "national_id": body["national_id"],
                "name_ar": {"full": "أمل حداد"},
                "name_en": {"full": "Amal Haddad"},
                "address": {"locality": "Biddu", "governorate": "Jerusalem"},
                "issued_at": "2026-12-06T10:03:00Z",
                "valid_until": "2027-03-06",
                "document": "eyJhbGciOiJFUzI1NiJ9.eyJjIjoxfQ.c2lnbmVk",
            }
            self.certificates.append(certificate)
            return certificate

        return await self._once(request, make)


def _renamed(path: str, member: str) -> str:
    """A ministry's real policy file, its member renamed to the test member."""
    text = (_POLICIES / path).read_text()
    return text.replace(f'"{member}"', f'"{MEMBER}"').replace(f"{member}/", f"{MEMBER}/")


_RUNNING: dict[int, tuple[Ministries, list[web.AppRunner]]] = {}


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def ministries_of(net: Net) -> Ministries:
    """This federation's test ministries, started (and their security server launched) once."""
    if id(net) in _RUNNING:
        return _RUNNING[id(net)][0]
    books = net.root / "mofw-payments.sqlite"
    create_store(books)
    key = generate_key()
    signer = DocumentSigner(key, (net.ca.issue_sign_cert(key.public_key(), MEMBER), net.ca.cert))
    ministries = Ministries(books)
    create_sim_store(net.root / "mofw-sims.sqlite")
    finance_runner, finance = await _serve(payments_adapter(books, signer).app())
    sims_runner, sims = await _serve(sims_adapter(net.root / "mofw-sims.sqlite").app())
    others_runner, others = await _serve(ministries.app())
    _RUNNING[id(net)] = (ministries, [finance_runner, sims_runner, others_runner])
    with net.registry() as reg:
        reg.add_member(MEMBER, "Ministries (window tests)")
    policy = _renamed("MOF/payments.toml", "PS/GOV/MOF")
    policy += _renamed("MTIT/sim-registry.toml", "PS/GOV/MTIT").replace(
        'provider = "PS/GOV/MOFW"', ""
    )
    await launch(
        net, "mofw", SecurityServerId(*MEMBER.parts, "ss1"),
        clients=[PAYMENTS, SIM_REGISTRY, OTHERS],
        services=[
            *((PAYMENTS.service(code), f"{finance}/{code}")
              for code in ("schedule", "fees", "receipts")),
            (SIM_REGISTRY.service("sims"), f"{sims}/sims"),
            *((OTHERS.service(code), f"{others}/{code}")
              for code in ("status", "residence-certificates")),
        ],
        policy=policy + OTHERS_POLICY,
    )  # fmt: skip
    return ministries
