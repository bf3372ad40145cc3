"""How a bounded TLS port binds (exchange/server/handshakes.py): as ``loop.create_server`` would.

The provider port and the consumer's HTTPS listener bind their own sockets now, so the host
values an operator may write in ``[provider] host`` must mean what they meant before: one
address, or every interface for "" (both families, one port).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct

import pytest

from exchange.server.handshakes import HandshakeLimits, TlsPort

pytestmark = pytest.mark.asyncio


def _port() -> TlsPort:
    return TlsPort(
        HandshakeLimits("test port", 4, 1.0),
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
        asyncio.Protocol,
    )


@pytest.mark.parametrize(
    ("host", "families"),
    [
        pytest.param("127.0.0.1", {socket.AF_INET}, id="one-address"),
        pytest.param("0.0.0.0", {socket.AF_INET}, id="any-ipv4"),
        pytest.param("", {socket.AF_INET, socket.AF_INET6}, id="every-interface"),
    ],
)
async def test_a_port_binds_the_addresses_of_its_host_on_one_port(
    host: str, families: set[socket.AddressFamily]
) -> None:
    if socket.AF_INET6 in families and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    port = _port()
    try:
        number = await port.open(host, 0)
        assert number > 0
        assert {s.family for s in port.sockets} == families
        assert {s.getsockname()[1] for s in port.sockets} == {number}
        # it accepts: a TCP connection is taken in and its handshake counted as pending
        _, writer = await asyncio.open_connection("127.0.0.1", number)
        for _ in range(200):  # a bounded wait for the accept loop
            if port.limits.pending:
                break
            await asyncio.sleep(0.01)
        assert len(port.limits.pending) == 1
        writer.close()
    finally:
        port.close()
    assert all(s.fileno() == -1 for s in port.sockets)


async def test_a_port_in_use_is_refused_and_nothing_stays_bound() -> None:
    first, second = _port(), _port()
    try:
        number = await first.open("127.0.0.1", 0)
        with pytest.raises(OSError):
            await second.open("127.0.0.1", number)
        assert all(s.fileno() == -1 for s in second.sockets)
    finally:
        first.close()


async def test_connections_reset_at_once_leave_the_port_accepting() -> None:
    port = _port()
    limits = port.limits
    try:
        number = await port.open("127.0.0.1", 0)
        for _ in range(20):  # connect, then reset before any byte (SO_LINGER 0)
            sock = socket.create_connection(("127.0.0.1", number))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        for _ in range(200):  # a bounded wait: each failed its handshake or was refused
            if not limits.pending and limits.failed + limits.refused == 20:
                break
            await asyncio.sleep(0.01)
        assert (len(limits.pending), limits.failed + limits.refused) == (0, 20)
        _, writer = await asyncio.open_connection("127.0.0.1", number)
        for _ in range(200):
            if limits.pending:
                break
            await asyncio.sleep(0.01)
        assert len(limits.pending) == 1  # the port still accepts
        writer.close()
    finally:
        port.close()
