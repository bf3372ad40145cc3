"""Freshness and replay protection for signed requests (docs/design.md §5).

A request is accepted only if its signed time lies within the allowed clock skew of ``now``
and its message id has not been accepted before for the same client within that window.
Entries older than the window are forgotten: a replay of them fails the freshness check anyway.

No IO; the server seeds the cache from its message log at start, so a restart opens no window.
"""

from __future__ import annotations

from collections import deque

from exchange.errors import ReplayedMessage, StaleMessage


class ReplayCache:
    __slots__ = ("_order", "_seen", "_skew_ms")

    def __init__(self, skew_seconds: int) -> None:
        self._skew_ms = skew_seconds * 1000
        self._seen: set[tuple[str, str]] = set()
        self._order: deque[tuple[int, tuple[str, str]]] = deque()

    def _prune(self, now_ms: int) -> None:
        horizon = now_ms - 2 * self._skew_ms
        order = self._order
        while order and order[0][0] < horizon:
            _, key = order.popleft()
            self._seen.discard(key)

    def check_and_add(self, client: str, message_id: str, signed_ms: int, now_ms: int) -> None:
        """Raise if the request is stale or replayed; otherwise remember it."""
        # (1) the signed time is within the skew window, in either direction
        if abs(now_ms - signed_ms) > self._skew_ms:
            raise StaleMessage(
                "request time is outside the allowed clock skew",
                internal=f"signed at {signed_ms} ms, now {now_ms} ms, skew {self._skew_ms} ms",
            )
        self._prune(now_ms)
        key = (client, message_id)
        # (2) the message id was not accepted before for this client
        if key in self._seen:
            raise ReplayedMessage(f"message id {message_id!r} was already received from {client}")
        self._seen.add(key)
        self._order.append((now_ms, key))

    def seed(self, client: str, message_id: str, seen_ms: int) -> None:
        key = (client, message_id)
        if key not in self._seen:
            self._seen.add(key)
            self._order.append((seen_ms, key))

    def __len__(self) -> int:
        return len(self._seen)
