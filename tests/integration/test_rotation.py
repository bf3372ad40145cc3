"""Key rotation without downtime (issue 3 item 5): under continuous traffic, a consumer security
server gets a new signing key and a new authentication key, activates them and retires the old
ones, and not one exchange fails.

The global configuration carries both authentication fingerprints during the overlap; both
signing certificates are presented to peers while both are configured.
"""

from __future__ import annotations

import asyncio
import ssl
import tomllib
from pathlib import Path

import pytest
import tomli_w
from cryptography import x509

from exchange.errors import ConfigurationError
from exchange.identifiers import SecurityServerId, parse_member, parse_subsystem
from exchange.server.config import load_server_config
from exchange.server.core import SecurityServer
from exchange.server.logcheck import verify_server_log
from exchange.trust.keys import (
    fingerprint,
    generate_key,
    load_certificate,
    save_certificate,
    save_private_key,
)
from tests.integration.conftest import Net
from tests.integration.support import publish

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROVIDER = parse_member("PS/GOV/ROTP")
CONSUMER = parse_member("PS/GOV/ROTC")
DESK = parse_subsystem("PS/GOV/ROTC/desk")
REGISTRY = parse_subsystem("PS/GOV/ROTP/registry")
ECHO = "/r1/PS/GOV/ROTP/registry/echo/1"
POLICY = """
provider = "PS/GOV/ROTP"
[[grant]]
id = "desk"
client = "PS/GOV/ROTC/desk"
service = "PS/GOV/ROTP/registry/echo"
methods = ["GET"]
"""


def _edit(config: Path, change: object) -> None:
    doc = tomllib.loads(config.read_text())
    change(doc)  # type: ignore[operator]
    config.write_text(tomli_w.dumps(doc))


async def _traffic(net: Net, stop: asyncio.Event, statuses: list[int]) -> None:
    while not stop.is_set():
        status, _, _ = await net.call("rotc", ECHO, client=str(DESK))
        statuses.append(status)


async def _settle(statuses: list[int], more: int) -> None:
    """Let at least ``more`` further exchanges complete (waits on traffic, not on time)."""
    target = len(statuses) + more
    while len(statuses) < target:
        await asyncio.sleep(0.01)


async def test_rotation_under_continuous_traffic_fails_no_exchange(net: Net) -> None:
    with net.registry() as reg:
        reg.add_member(PROVIDER, "Rotation provider")
        reg.add_member(CONSUMER, "Rotation consumer")
    await net.add_server(
        "rotp",
        SecurityServerId(*PROVIDER.parts, "ss1"),
        clients=[REGISTRY],
        services=[(REGISTRY.service("echo"), f"{net.backend_url}/echo")],
        policy=POLICY,
    )
    consumer: SecurityServer = await net.add_server(
        "rotc", SecurityServerId(*CONSUMER.parts, "ss1"), clients=[DESK]
    )
    config = consumer.config.path
    keys = config.parent / "keys"
    stop = asyncio.Event()
    statuses: list[int] = []
    traffic = [asyncio.create_task(_traffic(net, stop, statuses)) for _ in range(4)]
    try:
        await _settle(statuses, 20)

        # (1) a new signing key: added, presented with the old one, active at once (newest)
        new_sign = generate_key()
        save_private_key(keys / "sign-ROTC-2.key.pem", new_sign)
        save_certificate(
            keys / "sign-ROTC-2.cert.pem", net.ca.issue_sign_cert(new_sign.public_key(), CONSUMER)
        )
        _edit(
            config,
            lambda d: d["keys"]["signing"].append(
                {
                    "member": str(CONSUMER),
                    "key": "keys/sign-ROTC-2.key.pem",
                    "cert": "keys/sign-ROTC-2.cert.pem",
                }
            ),
        )
        await consumer.reload_keys()
        assert consumer.signers[CONSUMER].cert == load_certificate(keys / "sign-ROTC-2.cert.pem")
        await _settle(statuses, 20)

        # (2) a new authentication key: its fingerprint registered next to the old one, then
        # activated; outgoing connections move to it as they drain
        old_fp = fingerprint(consumer.auth_cert)
        new_auth = generate_key()
        server_id = consumer.config.server_id
        new_auth_cert = net.ca.issue_auth_cert(new_auth.public_key(), server_id)
        save_private_key(keys / "auth-2.key.pem", new_auth)
        save_certificate(keys / "auth-2.cert.pem", new_auth_cert)
        with net.registry() as reg:
            reg.add_auth_cert(server_id, fingerprint(new_auth_cert))
        await publish(net)
        _edit(
            config,
            lambda d: d["keys"].update(
                auth_key="keys/auth-2.key.pem", auth_cert="keys/auth-2.cert.pem"
            ),
        )
        await consumer.reload_keys()
        assert fingerprint(consumer.auth_cert) == fingerprint(new_auth_cert)
        await _settle(statuses, 20)

        # (3) retire the old authentication certificate at the central server
        with net.registry() as reg:
            reg.remove_auth_cert(server_id, old_fp)
        await publish(net)
        await _settle(statuses, 20)

        # (4) retire the old signing key
        _edit(
            config,
            lambda d: d["keys"].update(
                signing=[s for s in d["keys"]["signing"] if "ROTC-2" in s["key"]]
            ),
        )
        await consumer.reload_keys()
        assert len(consumer.all_signers) == 1
        await _settle(statuses, 20)
    finally:
        stop.set()
        await asyncio.gather(*traffic)
    assert len(statuses) >= 100
    assert set(statuses) == {200}, f"{statuses.count(200)} of {len(statuses)} succeeded"
    # the rotated server's log verifies across the change of keys (old and new certificates)
    report = verify_server_log(consumer.config)
    assert report.ok, report.to_dict()


async def test_reload_refuses_an_auth_key_that_is_not_its_certificates(net: Net) -> None:
    consumer = net.servers["rotc"]
    config = consumer.config.path
    before = consumer.auth_cert
    _edit(config, lambda d: d["keys"].update(auth_key="keys/sign-ROTC-2.key.pem"))
    try:
        with pytest.raises(ConfigurationError, match="is not the certificate of"):
            await consumer.reload_keys()
        assert consumer.auth_cert == before
    finally:
        _edit(config, lambda d: d["keys"].update(auth_key="keys/auth-2.key.pem"))
    status, _, _ = await net.call("rotc", ECHO, client=str(DESK))
    assert status == 200


async def test_start_refuses_an_auth_key_that_is_not_its_certificates(net: Net) -> None:
    """The pairing is checked when the server is built, before any port or file is opened, not
    at the first TLS handshake."""
    config = net.servers["rotc"].config.path
    _edit(config, lambda d: d["keys"].update(auth_key="keys/sign-ROTC-2.key.pem"))
    try:
        with pytest.raises(ConfigurationError, match="is not the certificate of"):
            SecurityServer(load_server_config(config))
    finally:
        _edit(config, lambda d: d["keys"].update(auth_key="keys/auth-2.key.pem"))


async def _presented(port: int) -> str:
    """The fingerprint of the certificate a TLS port presents to a new connection."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        await writer.wait_closed()
    return fingerprint(x509.load_der_x509_certificate(der))


async def test_a_new_auth_key_serves_the_consumer_https_port_too(net: Net) -> None:
    """Information systems' new TLS connections get the new authentication certificate as soon
    as it is activated. Before, the consumer port's HTTPS listener kept presenting the old one
    until a restart, also after it expired (expiry is why one rotates)."""
    member = parse_member("PS/GOV/ROTH")
    with net.registry() as reg:
        reg.add_member(member, "Rotation with an HTTPS consumer port")
    server: SecurityServer = await net.add_server(
        "roth",
        SecurityServerId(*member.parts, "ss1"),
        clients=[parse_subsystem("PS/GOV/ROTH/desk")],
        extra={"consumer_tls": {"host": "127.0.0.1", "port": 0}},
    )
    assert await _presented(server.consumer_tls_port) == fingerprint(server.auth_cert)
    keys = server.config.path.parent / "keys"
    new_auth = generate_key()
    new_cert = net.ca.issue_auth_cert(new_auth.public_key(), server.config.server_id)
    save_private_key(keys / "auth-2.key.pem", new_auth)
    save_certificate(keys / "auth-2.cert.pem", new_cert)
    with net.registry() as reg:
        reg.add_auth_cert(server.config.server_id, fingerprint(new_cert))
    await publish(net)
    _edit(
        server.config.path,
        lambda d: d["keys"].update(
            auth_key="keys/auth-2.key.pem", auth_cert="keys/auth-2.cert.pem"
        ),
    )
    await server.reload_keys()
    assert await _presented(server.consumer_tls_port) == fingerprint(new_cert)
    assert await _presented(server.provider_port) == fingerprint(new_cert)
