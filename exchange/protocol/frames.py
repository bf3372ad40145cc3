"""Framing of the protocol between security servers (EXM/1), over mutual TLS.

Why our own framing instead of HTTP between servers: one persistent TLS connection carries many
exchanges at once (multiplexed by stream id, answered in any order), so there is no handshake
and no HTTP request/response parsing per exchange on the hottest hop (the reference costs in
bench/README.md: HTTP machinery between servers costs more than the cryptography). Each frame is::

    u32 length-of-rest | u32 stream id | u8 kind | u32 meta length | meta (JSON) | body

Kinds: HELLO (each side introduces itself and presents its signing certificates), REQUEST
(meta: the client's JWS), RESPONSE (meta: the provider's JWS), ERROR (meta: an unsigned
X-Road error, used only when the provider cannot sign, e.g. the peer is not registered), GOAWAY
(the provider is stopping: no new request on this connection; those open are still answered).
The decoder refuses frames longer than its limit before buffering them.

No IO.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from exchange.errors import ExchangeError, Fault
from exchange.protocol.canonical import canonical_bytes, loads

_HEAD = struct.Struct("!IIBI")
HEAD_SIZE: Final = _HEAD.size  # 13
_PREFIX = 4  # the length field itself
MAX_META: Final = 1 * 2**20


class FrameKind(IntEnum):
    HELLO = 1
    REQUEST = 2
    RESPONSE = 3
    ERROR = 4
    GOAWAY = 5


class FrameError(ExchangeError):
    """The peer broke the framing; the connection is closed."""

    code = "Server.ProtocolError"
    status = 502
    fault = Fault.PEER


@dataclass(frozen=True, slots=True)
class Frame:
    stream_id: int
    kind: FrameKind
    meta: dict[str, Any]
    body: bytes


def encode_frame(stream_id: int, kind: FrameKind, meta: dict[str, Any], body: bytes = b"") -> bytes:
    meta_bytes = canonical_bytes(meta, typed=True)
    rest = HEAD_SIZE - _PREFIX + len(meta_bytes) + len(body)
    return b"".join((_HEAD.pack(rest, stream_id, kind, len(meta_bytes)), meta_bytes, body))


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)`` returns the complete frames received so far."""

    __slots__ = ("_buf", "_max_frame")

    def __init__(self, max_frame: int) -> None:
        self._buf = bytearray()
        self._max_frame = max_frame

    @property
    def buffered(self) -> int:
        """Bytes received of a frame not yet whole."""
        return len(self._buf)

    def clear(self) -> None:
        """Drop what is buffered: nothing more will be decoded."""
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        end = len(buf)
        while end - pos >= HEAD_SIZE:
            rest, stream_id, kind, meta_len = _HEAD.unpack_from(buf, pos)
            # (1) bound the frame before waiting for it
            if rest > self._max_frame + MAX_META or meta_len > MAX_META:
                raise FrameError(f"frame of {rest} bytes exceeds the limit")
            if meta_len > rest - (HEAD_SIZE - _PREFIX):
                raise FrameError("frame meta longer than the frame")
            total = _PREFIX + rest
            if end - pos < total:
                break
            meta_start = pos + HEAD_SIZE
            body_start = meta_start + meta_len
            frames.append(
                _frame(stream_id, kind, buf[meta_start:body_start], buf[body_start : pos + total])
            )
            pos += total
        if pos:
            del buf[:pos]
        return frames


_KINDS: Final[Mapping[int, FrameKind]] = {kind.value: kind for kind in FrameKind}
"""Frame kinds by their number (a dictionary look-up; calling the enum is several Python calls)."""


def _frame(stream_id: int, kind: int, meta: bytearray, body: bytearray) -> Frame:
    frame_kind = _KINDS.get(kind)
    if frame_kind is None:
        raise FrameError(f"unknown frame kind {kind}")
    try:
        meta_doc = loads(bytes(meta)) if meta else {}
    except ExchangeError:
        raise FrameError("frame meta is not JSON") from None
    if not isinstance(meta_doc, dict):
        raise FrameError("frame meta is not a JSON object")
    return Frame(stream_id, frame_kind, meta_doc, bytes(body))


class FrameWriter:
    """Coalesces the frames written during one event-loop iteration into one socket write.

    Under load many exchanges finish in the same iteration; one ``send`` for all of them saves
    a system call each (socket writes are a fifth of a hop's CPU in the reference costs,
    bench/README.md). Latency is
    unchanged: the flush runs before the loop next waits for IO. Sans-IO apart from the
    ``schedule`` and ``write`` callables it is given.
    """

    __slots__ = ("_pending", "_schedule", "_scheduled", "_write")

    def __init__(
        self, write: Callable[[bytes], None], schedule: Callable[[Callable[[], None]], object]
    ) -> None:
        self._write = write
        self._schedule = schedule
        self._pending: list[bytes] = []
        self._scheduled = False

    def __call__(self, frame: bytes) -> None:
        self._pending.append(frame)
        if not self._scheduled:
            self._scheduled = True
            self._schedule(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        pending = self._pending
        if pending:
            self._pending = []
            self._write(pending[0] if len(pending) == 1 else b"".join(pending))
