"""One EXM/1 connection between two security servers, as a sans-IO state machine (h11-style).

A :class:`Session` is one end of a connection: the ``provider`` (its provider port accepted the
connection) or the ``consumer`` (it dialled the provider and sends requests). Bytes received go
in through :meth:`Session.receive_data`, which returns :mod:`events <Event>`; frames to send come
out of the ``send_*`` methods as bytes. Which frame may be received and sent in which state is
data (:data:`RECEIVES`, :data:`SENDS`, :data:`AFTER_RECEIVING`), not code spread over two
asyncio protocols::

    state           provider receives  provider sends         consumer receives      consumer sends
    AWAITING_HELLO  HELLO              ERROR (refusal)        HELLO, ERROR           HELLO
    OPEN            HELLO, REQUEST     HELLO, RESPONSE, ERROR HELLO, RESPONSE, ERROR HELLO, REQUEST
                                       GOAWAY                 GOAWAY
    DRAINING        HELLO, REQUEST     HELLO, RESPONSE, ERROR HELLO, RESPONSE, ERROR HELLO
                                                              GOAWAY
    CLOSED          (ignored)          -                      (ignored)              -
    ERROR           (refused again)    ERROR on stream 0      (refused again)        -

The first HELLO received opens the session; the consumer sends its HELLO first. A consumer that
drains sends no new request and is CLOSED once every stream it opened is answered. A provider
that stops sends GOAWAY and drains (:meth:`Session.send_goaway`): it answers the streams open,
and a REQUEST that crossed its GOAWAY on the wire is still received, for its shell to refuse
unprocessed (a consumer may send it to another provider); the consumer that receives GOAWAY
drains (:class:`GoAwayReceived`) and closes the connection once its streams are answered, so no
request is lost in a connection the provider closed. An ERROR frame
on stream 0 refuses the whole connection (CLOSED); on another stream, that request. Any
exception while receiving moves the session to ERROR, and the connection must be closed: the
peer broke the protocol (:class:`~exchange.protocol.frames.FrameError`, or
:class:`UnexpectedFrame` for a frame its state does not allow, or a HELLO beyond the budget).

A HELLO after the first (a peer re-stapling, or presenting reloaded keys) makes its receiver judge
certificates again, so it is taken within a budget: :data:`HELLO_BURST` at once, one more per
:data:`HELLO_EVERY` seconds of the ``now`` given to :meth:`Session.receive_data` (a monotonic
clock). Whether a HELLO's certificates or a request's signature are acceptable is not decided
here (see :mod:`exchange.trustcore`).

No IO.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from exchange.protocol.frames import Frame, FrameDecoder, FrameError, FrameKind, encode_frame
from exchange.protocol.hello import Hello

Role = Literal["provider", "consumer"]


class State(enum.Enum):
    AWAITING_HELLO = "awaiting HELLO"
    OPEN = "open"
    DRAINING = "draining"
    CLOSED = "closed"
    ERROR = "error"

    # each frame looks its state up in the tables below; Enum's own hash is a Python call
    __hash__ = object.__hash__


class UnexpectedFrame(FrameError):
    """A frame of a kind or on a stream the session's state does not allow."""

    code = "Server.ServerProxy.InvalidMessage"
    status = 400


class LocalProtocolError(Exception):
    """This server tried to send what its session's state does not allow (a bug of ours)."""


_K = FrameKind
RECEIVES: Final[Mapping[tuple[Role, State], frozenset[FrameKind]]] = {
    ("provider", State.AWAITING_HELLO): frozenset({_K.HELLO}),
    ("provider", State.OPEN): frozenset({_K.HELLO, _K.REQUEST}),
    ("provider", State.DRAINING): frozenset({_K.HELLO, _K.REQUEST}),
    ("consumer", State.AWAITING_HELLO): frozenset({_K.HELLO, _K.ERROR}),
    ("consumer", State.OPEN): frozenset({_K.HELLO, _K.RESPONSE, _K.ERROR, _K.GOAWAY}),
    ("consumer", State.DRAINING): frozenset({_K.HELLO, _K.RESPONSE, _K.ERROR, _K.GOAWAY}),
}
"""Which frame kinds each end may receive in each state; anything else is UnexpectedFrame."""

SENDS: Final[Mapping[tuple[Role, State], frozenset[FrameKind]]] = {
    ("provider", State.AWAITING_HELLO): frozenset({_K.ERROR}),
    ("provider", State.OPEN): frozenset({_K.HELLO, _K.RESPONSE, _K.ERROR, _K.GOAWAY}),
    ("provider", State.DRAINING): frozenset({_K.HELLO, _K.RESPONSE, _K.ERROR}),
    ("provider", State.ERROR): frozenset({_K.ERROR}),
    ("consumer", State.AWAITING_HELLO): frozenset({_K.HELLO}),
    ("consumer", State.OPEN): frozenset({_K.HELLO, _K.REQUEST}),
    ("consumer", State.DRAINING): frozenset({_K.HELLO}),
}
"""Which frame kinds each end may send in each state; anything else is LocalProtocolError. A
provider tells a peer that broke the protocol why, on stream 0, before it closes."""

AFTER_RECEIVING: Final[Mapping[tuple[State, FrameKind], State]] = {
    (State.AWAITING_HELLO, _K.HELLO): State.OPEN,
    (State.OPEN, _K.GOAWAY): State.DRAINING,
}
"""State changes on receiving a frame (others: see ERROR on stream 0 and draining)."""

MAX_STREAM: Final = 0x7FFFFFFF

HELLO_BURST: Final = 8
"""How many HELLOs after the first a session takes at once."""

HELLO_EVERY: Final = 1.0
"""Seconds after which the session takes one more HELLO (up to :data:`HELLO_BURST` saved)."""


@dataclass(frozen=True, slots=True)
class HelloReceived:
    """The peer presented its certificates (``first``: the one that opened the session)."""

    hello: Hello
    first: bool


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A REQUEST on a new stream (provider): the meta holds the client's JWS."""

    stream_id: int
    meta: dict[str, Any]
    body: bytes


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The answer to one of our requests (consumer): the meta holds the provider's JWS."""

    stream_id: int
    meta: dict[str, Any]
    body: bytes


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """An unsigned refusal of one of our requests (consumer)."""

    stream_id: int
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConnectionRefused:
    """An unsigned refusal of the whole connection (consumer); the session is CLOSED."""

    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The provider is stopping (consumer): no new request on this connection; the session
    drains, and is CLOSED once every open stream is answered."""

    meta: dict[str, Any]


Event = (
    HelloReceived
    | RequestReceived
    | ResponseReceived
    | RequestRefused
    | ConnectionRefused
    | GoAwayReceived
)


class Session:
    """One end of an EXM/1 connection (see the module docstring)."""

    __slots__ = (
        "_decoder",
        "_goaway",
        "_hello_budget",
        "_hello_time",
        "_next_stream",
        "_wrapped",
        "hellos",
        "pending",
        "role",
        "state",
    )

    def __init__(self, role: Role, max_frame: int) -> None:
        self.role: Role = role
        self.state = State.AWAITING_HELLO
        self._decoder = FrameDecoder(max_frame)
        self._next_stream = 1
        self.pending: set[int] = set()
        """Streams opened and not yet answered (REQUESTs sent, or received)."""
        self.hellos = 0
        self._hello_budget = float(HELLO_BURST)
        self._hello_time = 0.0
        self._goaway = False
        self._wrapped = False  # stream ids went round (every id may have been opened)

    # -- receiving --------------------------------------------------------------------------------

    def receive_data(self, data: bytes, *, now: float) -> Iterator[Event]:
        """The events in ``data`` (which may hold part of a frame, or many), received at ``now``
        (seconds of a monotonic clock), one frame at a time:
        the caller acts on each before the next is judged, so a frame that breaks the protocol
        raises :class:`~exchange.protocol.frames.FrameError` only after the events before it,
        and moves the session to ERROR. Iterate to the end. Frames after the session is CLOSED
        (by an event's handler, say) are ignored."""
        if self.state is State.ERROR:
            raise FrameError("the connection already broke the protocol")
        if self.state is State.CLOSED:
            return
        try:
            frames = self._decoder.feed(data)
        except Exception:
            self._end(State.ERROR)
            raise
        for frame in frames:
            if self.closed:  # by the handler of an event before (which dropped the buffer)
                return
            try:
                event = self._on_frame(frame, now)
            except Exception:
                self._end(State.ERROR)
                raise
            yield event

    def _end(self, state: State) -> None:
        """ERROR or CLOSED: what was buffered of a frame is dropped at once (a refused
        connection can take half a minute to close, red team: 60 of them held 660 MiB)."""
        self.state = state
        self._decoder.clear()

    def _on_frame(self, frame: Frame, now: float) -> Event:
        allowed = RECEIVES.get((self.role, self.state), frozenset())
        if frame.kind not in allowed:
            raise UnexpectedFrame(
                f"unexpected {frame.kind.name} frame in state {self.state.value} "
                f"(a {self.role} receives {_names(allowed)})"
            )
        _check_meta(frame)
        self.state = AFTER_RECEIVING.get((self.state, frame.kind), self.state)
        if frame.kind is FrameKind.HELLO:
            self._spend_hello(now)
            self.hellos += 1
            return HelloReceived(Hello.from_meta(frame.meta), self.hellos == 1)
        if frame.kind is FrameKind.REQUEST:
            return self._request(frame)
        if frame.kind is FrameKind.GOAWAY:
            if frame.stream_id != 0:
                raise UnexpectedFrame(f"GOAWAY frame on stream {frame.stream_id}")
            if self._goaway:
                raise UnexpectedFrame("a second GOAWAY frame")
            self._goaway = True
            self._closed_if_drained()
            return GoAwayReceived(frame.meta)
        if frame.stream_id == 0:
            if frame.kind is FrameKind.RESPONSE:
                raise UnexpectedFrame("RESPONSE frame on stream 0")
            self._end(State.CLOSED)
            return ConnectionRefused(frame.meta)
        if frame.stream_id >= self._next_stream and not self._wrapped:
            # an answer to no request of ours (a late one, to a stream we gave up on, is taken)
            raise UnexpectedFrame(
                f"{frame.kind.name} frame on stream {frame.stream_id}, which was never opened"
            )
        self.pending.discard(frame.stream_id)
        self._closed_if_drained()
        if frame.kind is FrameKind.RESPONSE:
            return ResponseReceived(frame.stream_id, frame.meta, frame.body)
        return RequestRefused(frame.stream_id, frame.meta)

    def _spend_hello(self, now: float) -> None:
        """A HELLO after the first costs one from the budget, which refills one per
        :data:`HELLO_EVERY` seconds up to :data:`HELLO_BURST` (a clock going back refills none)."""
        if self.hellos == 0:
            self._hello_time = now
            return
        if now > self._hello_time:
            refill = (now - self._hello_time) / HELLO_EVERY
            self._hello_budget = min(float(HELLO_BURST), self._hello_budget + refill)
            self._hello_time = now
        if self._hello_budget < 1.0:
            raise UnexpectedFrame(
                f"too many HELLO frames (at most {HELLO_BURST} at once, then one every "
                f"{HELLO_EVERY:g} s)"
            )
        self._hello_budget -= 1.0

    def _request(self, frame: Frame) -> RequestReceived:
        stream = frame.stream_id
        if stream == 0:
            raise UnexpectedFrame("REQUEST frame on stream 0")
        if stream in self.pending:
            raise UnexpectedFrame(f"REQUEST frame on stream {stream}, which is still open")
        self.pending.add(stream)
        return RequestReceived(stream, frame.meta, frame.body)

    # -- sending ----------------------------------------------------------------------------------

    def _may_send(self, kind: FrameKind) -> None:
        if kind not in SENDS.get((self.role, self.state), frozenset()):
            raise LocalProtocolError(
                f"a {self.role} may not send {kind.name} in state {self.state.value}"
            )

    def send_hello(self, meta: dict[str, Any]) -> bytes:
        self._may_send(FrameKind.HELLO)
        return encode_frame(0, FrameKind.HELLO, meta)

    def send_request(self, meta: dict[str, Any], body: bytes) -> tuple[int, bytes]:
        """A REQUEST on a new stream (consumer): its stream id and bytes."""
        self._may_send(FrameKind.REQUEST)
        stream = self._next_stream
        self._next_stream = (stream + 1) & MAX_STREAM or 1
        self._wrapped = self._wrapped or self._next_stream == 1
        self.pending.add(stream)
        return stream, encode_frame(stream, FrameKind.REQUEST, meta, body)

    def send_goaway(self, meta: dict[str, Any]) -> bytes:
        """The provider stops taking requests on this connection (it drains)."""
        self._may_send(FrameKind.GOAWAY)
        self.state = State.DRAINING
        return encode_frame(0, FrameKind.GOAWAY, meta)

    @property
    def buffered(self) -> int:
        """Bytes received of a frame not yet whole (held until it is)."""
        return self._decoder.buffered

    @property
    def draining(self) -> bool:
        return self.state is State.DRAINING

    def send_response(self, stream_id: int, meta: dict[str, Any], body: bytes) -> bytes:
        """The answer on an open stream (provider)."""
        self._may_send(FrameKind.RESPONSE)
        self._answer(stream_id)
        return encode_frame(stream_id, FrameKind.RESPONSE, meta, body)

    def send_error(self, stream_id: int, meta: dict[str, Any]) -> bytes:
        """An unsigned refusal (provider): of one open stream, or on stream 0 of the whole
        connection, after which the session is CLOSED."""
        self._may_send(FrameKind.ERROR)
        if stream_id == 0:
            self.close()
        elif self.state is State.ERROR:
            raise LocalProtocolError("after a protocol error only stream 0 is refused")
        else:
            self._answer(stream_id)
        return encode_frame(stream_id, FrameKind.ERROR, meta)

    def _answer(self, stream_id: int) -> None:
        if stream_id not in self.pending:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        self.pending.discard(stream_id)

    # -- the connection ---------------------------------------------------------------------------

    def forget(self, stream_id: int) -> None:
        """The consumer gave up waiting for ``stream_id`` (a late answer is then dropped)."""
        self.pending.discard(stream_id)
        self._closed_if_drained()

    def start_draining(self) -> None:
        """The consumer sends no new request; CLOSED once every open stream is answered."""
        if self.role != "consumer":
            raise LocalProtocolError("only a consumer drains its connection")
        if self.state in (State.AWAITING_HELLO, State.OPEN):
            self.state = State.DRAINING
            self._closed_if_drained()

    def _closed_if_drained(self) -> None:
        if self.state is State.DRAINING and not self.pending:
            self._end(State.CLOSED)

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def close(self) -> None:
        """The connection is closed (by either end); a session in ERROR stays there."""
        self._end(State.ERROR if self.state is State.ERROR else State.CLOSED)


_SIGNED: Final = frozenset({FrameKind.REQUEST, FrameKind.RESPONSE})
_SCALARS: Final = (str, int, float, bool, type(None))


def _check_meta(frame: Frame) -> None:
    """A frame's meta holds what its kind carries and nothing that parses into more: a REQUEST's
    or RESPONSE's only its compact JWS (``jws``: without it, or with a value that is no string,
    the shell refuses the request, signed), an ERROR's or GOAWAY's only scalar values. Parsed
    JSON can take twenty times its bytes in memory, and a REQUEST's meta is held until its
    answer (HELLO meta is judged by :meth:`Hello.from_meta`)."""
    meta = frame.meta
    kind = frame.kind
    if kind in _SIGNED:  # every exchange: no generator
        if len(meta) > 1 or (meta and "jws" not in meta):
            raise UnexpectedFrame(f"{kind.name} frame meta holds more than its compact JWS ('jws')")
        if meta and not isinstance(meta["jws"], _SCALARS):
            raise UnexpectedFrame(f"{kind.name} frame meta holds more than scalar values")
    elif kind is not FrameKind.HELLO and not all(isinstance(v, _SCALARS) for v in meta.values()):
        raise UnexpectedFrame(f"{kind.name} frame meta holds more than scalar values")


def _names(kinds: frozenset[FrameKind]) -> str:
    return ", ".join(sorted(k.name for k in kinds)) or "nothing"
