"""Time-stamped tree heads (docs/design.md §8, issue 4 item 1), with a real RFC 3161 TSA.

A TSA issued by the federation's CA is approved in the global configuration; a server pair of its
own, the consumer on a movable clock and a failure limit of 30 s, time-stamps its tree heads.
With the TSA down the consumer keeps serving until the limit has passed, then refuses exchanges
with a clear code (and logs the refusal) until a stamp succeeds again.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.messagelog.store import (
    MessageLogError,
    TreeHead,
    head_from_row,
    open_readonly,
    read_timestamps,
)
from exchange.server.core import SecurityServer
from exchange.trust.keys import cert_pem, generate_key
from exchange.trust.timestamp import issue_tsa_cert, verify_timestamp_token
from exchange.trust.tsa_service import create_tsa_app
from tests.integration.conftest import Net
from tests.integration.support import Clock, assert_xroad_error, logged, new_id, publish

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROVIDER = parse_member("PS/GOV/TSP")
CONSUMER = parse_member("PS/GOV/TSC")
DESK = parse_subsystem("PS/GOV/TSC/desk")
REGISTRY = parse_subsystem("PS/GOV/TSP/registry")
ECHO = "/r1/PS/GOV/TSP/registry/echo/1"
TSA_NAME = "Test TSA"
FAILURE_LIMIT = 30
PAST_LIMIT = 45
"""Past the failure limit, yet within the tolerated clock skew (60 s) of peers and the TSA."""
POLICY = """
provider = "PS/GOV/TSP"
[[grant]]
id = "desk"
client = "PS/GOV/TSC/desk"
service = "PS/GOV/TSP/registry/echo"
methods = ["GET"]
"""


@dataclass
class Tsa:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    serial_db: Path
    port: int = 0
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = create_tsa_app(self.key, self.cert, serial_db=self.serial_db)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@dataclass
class Stamped:
    tsa: Tsa
    provider: SecurityServer
    consumer: SecurityServer
    clock: Clock


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stamped(net: Net) -> AsyncIterator[Stamped]:
    key = generate_key()
    tsa = Tsa(key, issue_tsa_cert(net.ca, key.public_key(), TSA_NAME), net.root / "tsa.sqlite")
    await tsa.start()
    with net.registry() as reg:
        reg.add_tsa(TSA_NAME, f"http://127.0.0.1:{tsa.port}/", cert_pem(tsa.cert))
        reg.add_member(PROVIDER, "Time-stamping provider")
        reg.add_member(CONSUMER, "Time-stamping consumer")
    clock = Clock()
    provider = await net.add_server(
        "tsp",
        SecurityServerId(*PROVIDER.parts, "ss1"),
        clients=[REGISTRY],
        services=[(REGISTRY.service("echo"), f"{net.backend_url}/echo")],
        policy=POLICY,
        start=False,
    )
    limit = {"path": "messagelog.sqlite", "timestamping_failure_limit": FAILURE_LIMIT}
    consumer = await net.add_server(
        "tsc",
        SecurityServerId(*CONSUMER.parts, "ss1"),
        clients=[DESK],
        extra={"messagelog": limit},
        start=False,
        clock=clock,
    )
    await publish(net)
    await provider.start()
    await consumer.start()
    try:
        yield Stamped(tsa, provider, consumer, clock)
    finally:
        clock.offset = 0
        with net.registry() as reg:
            reg.remove_tsa(TSA_NAME)
        await publish(net)
        await tsa.stop()


def _head(server: SecurityServer, size: int) -> TreeHead:
    conn = open_readonly(server.config.log_path)
    try:
        row = conn.execute(
            "SELECT size, root, signed_at, jws FROM tree_heads WHERE size = ?", (size,)
        ).fetchone()
    finally:
        conn.close()
    return head_from_row(server.log.log_id, row)


def _verify_stamp(server: SecurityServer, tsa: Tsa, ca: x509.Certificate, size: int) -> None:
    """The stored token stamps SHA-256 of the stored tree head's JWS, signed by the TSA."""
    conn = open_readonly(server.config.log_path)
    try:
        [stamp] = read_timestamps(conn, size)
    finally:
        conn.close()
    assert stamp.tsa == TSA_NAME
    digest = hashlib.sha256(_head(server, size).jws.encode("ascii")).digest()
    info = verify_timestamp_token(stamp.token, digest=digest, tsa_certs=[tsa.cert], ca_certs=[ca])
    assert int(info.gen_time.timestamp() * 1000) == stamp.gen_time


async def _exchange(net: Net, message_id: str | None = None) -> tuple[int, object, bytes]:
    headers = {"X-Road-Id": message_id} if message_id else None
    return await net.call("tsc", ECHO, client=str(DESK), headers=headers)


async def test_tree_head_is_time_stamped_and_verifies(net: Net, stamped: Stamped) -> None:
    stamp = await stamped.consumer.stamper.stamp_now()
    assert stamp is not None
    _verify_stamp(stamped.consumer, stamped.tsa, net.ca.cert, stamp.size)
    health = stamped.consumer.health()["timestamping"]
    assert health["last_stamped_size"] == stamp.size
    assert health["failing_since"] is None


async def test_stamp_now_after_exchanges_stamps_a_larger_head(net: Net, stamped: Stamped) -> None:
    before = await stamped.consumer.stamper.stamp_now()
    assert before is not None
    status, _, body = await _exchange(net)
    assert status == 200, body
    for server in (stamped.consumer, stamped.provider):
        stamp = await server.stamper.stamp_now()
        assert stamp is not None and stamp.size == server.log.size
        _verify_stamp(server, stamped.tsa, net.ca.cert, stamp.size)
    assert stamped.consumer.log.latest_timestamped_size() == stamped.consumer.log.size
    assert stamped.consumer.log.size > before.size
    # a head already stamped is not stamped again
    again = await stamped.consumer.stamper.stamp_now()
    assert again is not None and again.size == stamped.consumer.log.size


async def test_tsa_down_serves_until_the_limit_then_refuses_until_a_stamp(
    net: Net, stamped: Stamped
) -> None:
    consumer = stamped.consumer
    await stamped.tsa.stop()
    status, _, body = await _exchange(net)
    assert status == 200, body
    assert await consumer.stamper.stamp_now() is None
    assert consumer.health()["timestamping"]["failing_since"] is not None
    status, _, body = await _exchange(net)
    assert status == 200, body
    # (past the limit) refused with a clear code, and the refusal is logged
    stamped.clock.offset = PAST_LIMIT
    message_id = new_id("tsa-down")
    status, headers, body = await _exchange(net, message_id)
    assert_xroad_error(status, headers, body, "Server.ClientProxy.TimestampingFailed", 500)
    logged(consumer, message_id, "consumer", "Server.ClientProxy.TimestampingFailed")
    # (TSA back) the next stamp succeeds and exchanges go through again
    await stamped.tsa.start()
    stamp = await consumer.stamper.stamp_now()
    assert stamp is not None and stamp.size == consumer.log.size
    assert consumer.health()["timestamping"]["failing_since"] is None
    status, _, body = await _exchange(net)
    assert status == 200, body
    stamped.clock.offset = 0


@pytest.mark.parametrize(
    "size",
    [pytest.param(10**9, id="no-such-head"), pytest.param(None, id="already-stamped")],
)
async def test_log_keeps_stamps_only_of_its_unstamped_heads(
    stamped: Stamped, size: int | None
) -> None:
    log = stamped.consumer.log
    stamp = await stamped.consumer.stamper.stamp_now()
    assert stamp is not None
    with pytest.raises(MessageLogError):
        await log.add_timestamp(stamp.size if size is None else size, b"token", TSA_NAME, 0)
    assert log.latest_timestamp() == stamp
