"""TLS ports whose handshakes are bounded in number and in time: the provider port, and the
consumer port's HTTPS listener for information systems.

Anyone who reaches such a port can open a TCP connection and start, or stall, a TLS handshake
before presenting any certificate. A TLS server made by ``loop.create_server(ssl=...)``
accepts every such connection and lets each hang for 60 s, and its protocol sees none of them:
a client without a certificate could hold file descriptors until the process runs out, and then
no port accepts, no backend connection opens and no log file opens. So such a port accepts
sockets itself (:class:`TlsPort`), counts the connections still in their handshake, closes each
new one at once while ``max_pending_handshakes`` are pending, and runs each handshake with
``loop.connect_accepted_socket`` under ``tls_handshake_timeout``. A completed handshake gets the
port's protocol (:class:`~exchange.server.provider.ProviderConnection` at the provider port,
aiohttp's request handler at the consumer's HTTPS listener), which then judges the certificate.

This module does not authenticate anyone: the TLS context asks for a client certificate from an
approved CA, and the protocol checks it against the global configuration.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

log = logging.getLogger("exchange.server.tls")

WARN_EVERY: Final = 10.0
"""Seconds between two warnings about refused handshakes (one per burst, with the count)."""
BACKLOG: Final = 100
ACCEPT_RETRY: Final = 0.1
"""Seconds to wait after a failed accept (EMFILE, say) before the next."""
_RESET: Final = struct.pack("ii", 1, 0)
"""SO_LINGER on, 0 s: closing sends a reset, and the socket leaves no TIME_WAIT behind."""


@dataclass(slots=True)
class HandshakeLimits:
    """What one port's handshakes may take, and what they took."""

    port: str
    """The port's name in the operator's log: "provider port", say."""
    max_pending: int
    timeout: float
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    refused: int = 0
    """Connections closed unheard because ``max_pending`` handshakes were under way."""
    failed: int = 0
    """Handshakes that failed or timed out."""
    _unreported: int = 0
    _warned_at: float = float("-inf")

    def refuse(self) -> None:
        self.refused += 1
        self._unreported += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            log.warning(
                "%s: %d connection(s) closed before their TLS handshake: %d "
                "handshakes already under way (at most %d)",
                self.port,
                self._unreported,
                len(self.pending),
                self.max_pending,
            )
            self._unreported = 0
            self._warned_at = now

    def counts(self) -> dict[str, int]:
        """For ``/health``: handshakes under way, refused and failed since start."""
        return {
            "handshakes_pending": len(self.pending),
            "handshakes_refused": self.refused,
            "handshakes_failed": self.failed,
        }

    def cancel_all(self) -> None:
        for task in list(self.pending):
            task.cancel()


class TlsPort:
    """A TLS port's listening sockets and their accept loops.

    Each accepted socket gets its handshake in a task of its own
    (``loop.connect_accepted_socket``, which calls the protocol's ``connection_made`` once the
    handshake is done); the loop itself only accepts, counts and refuses, so a stalled handshake
    never delays the next accept.
    """

    def __init__(
        self,
        limits: HandshakeLimits,
        context: ssl.SSLContext,
        protocol_factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self.limits = limits
        self.context = context
        self.protocol_factory = protocol_factory
        self.sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []

    async def open(self, host: str, port: int) -> int:
        """Bind and listen on every address of ``host`` (as ``loop.create_server`` does) and
        start accepting; returns the port (the one chosen when ``port`` is 0)."""
        loop = asyncio.get_running_loop()
        # "" means every interface, as it does for loop.create_server
        passive = socket.AI_PASSIVE
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=passive)
        chosen = port  # with port 0, the first address's port, for all of them
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address[0], chosen, *address[2:]))
                chosen = chosen or int(sock.getsockname()[1])
                sock.listen(BACKLOG)
                sock.setblocking(False)
        except OSError:
            self.close()
            raise
        for sock in self.sockets:
            self._accepting.append(loop.create_task(self._accept(sock)))
        return chosen

    def close(self) -> None:
        for task in self._accepting:
            task.cancel()
        self._accepting.clear()
        self.limits.cancel_all()
        for sock in self.sockets:
            sock.close()

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        limits = self.limits
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors, say: try again soon, keep serving
                log.error("%s: accepting a connection failed: %s", limits.port, exc)
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            # whatever happens to one socket, it is closed and this loop accepts the next
            try:
                self._admit(loop, sock)
            except OSError as exc:  # a peer that reset at once, say
                log.debug("%s: an accepted connection was dropped: %r", limits.port, exc)
                sock.close()
            except Exception:
                log.exception("%s: a bug of ours while admitting a connection", limits.port)
                sock.close()

    def _admit(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        """Close ``sock`` at once past the limit, else start its handshake."""
        limits = self.limits
        if len(limits.pending) >= limits.max_pending:
            limits.refuse()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            sock.close()
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        accepted = _Accepted(sock)
        task = loop.create_task(self._handshake(accepted))
        limits.pending.add(task)
        task.add_done_callback(limits.pending.discard)
        task.add_done_callback(accepted.done)

    async def _handshake(self, accepted: _Accepted) -> None:
        loop = asyncio.get_running_loop()
        # from here the event loop owns the socket: connect_accepted_socket wraps it in a
        # transport before it first waits, and closes that transport on failure or cancellation
        accepted.handed_over = True
        try:
            await loop.connect_accepted_socket(
                self.protocol_factory,
                accepted.sock,
                ssl=self.context,
                ssl_handshake_timeout=self.limits.timeout,
                # closing, too: a peer that never answers our close_notify holds the connection
                # (and what it buffered) this long, not asyncio's 30 s
                ssl_shutdown_timeout=self.limits.timeout,
            )
        except Exception as exc:  # a failed or timed-out handshake, or a closed connection
            self.limits.failed += 1
            log.debug("%s: a TLS handshake failed: %r", self.limits.port, exc)


@dataclass(slots=True)
class _Accepted:
    """An accepted socket, closed here only if its handshake task never started (cancelled at
    once, when the port closes): once started, the event loop's transport closes it."""

    sock: socket.socket
    handed_over: bool = False

    def done(self, task: asyncio.Task[None]) -> None:
        if not self.handed_over:
            self.sock.close()
