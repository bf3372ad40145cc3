"""EXM/1 as a sans-IO state machine (exchange/protocol/session.py), tested without sockets.

- A Hypothesis state machine drives a consumer's and a provider's :class:`Session` against each
  other through in-memory pipes, delivering bytes in arbitrary pieces, and checks after every
  step that both ends agree with a model of the protocol: who may send what in which state,
  which streams are open, what each event carries.
- A fuzz of ``receive_data``: any bytes, for either end in any state, give events or the
  documented error (:class:`FrameError`, the session then in ERROR), nothing else.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from exchange.protocol.frames import FrameError, FrameKind, encode_frame
from exchange.protocol.hello import Hello, hello_meta
from exchange.protocol.session import (
    HELLO_BURST,
    HELLO_EVERY,
    MAX_STREAM,
    RECEIVES,
    ConnectionRefused,
    GoAwayReceived,
    HelloReceived,
    LocalProtocolError,
    RequestReceived,
    RequestRefused,
    ResponseReceived,
    Role,
    Session,
    State,
    UnexpectedFrame,
)

MAX_FRAME = 4096
HELLO = hello_meta("PS/GOV/X/ss1", [], {})
bodies = st.binary(max_size=64)


def deliver(session: Session, data: bytes, cuts: list[int], now: float = 0.0) -> list[Any]:
    """``data`` given to ``session`` at ``now`` in pieces cut at ``cuts``: the events, in
    order."""
    events: list[Any] = []
    start = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        events += session.receive_data(data[start:cut], now=now)
        start = max(start, cut)
    return events


class Exm1(RuleBasedStateMachine):
    """A consumer and a provider talking EXM/1 correctly, and what each must then see."""

    streams = Bundle("streams")

    @initialize()
    def connect(self) -> None:
        self.consumer = Session("consumer", MAX_FRAME)
        self.provider = Session("provider", MAX_FRAME)
        self.to_provider = b""
        self.to_consumer = b""
        self.sent: dict[int, bytes] = {}  # stream -> request body, as the consumer sent it
        self.answered: set[int] = set()
        self.at_provider: dict[int, bytes] = {}  # what the provider received and not answered
        self.received: list[Any] = []  # the consumer's events about its streams
        self.now = 0.0  # the consumer's clock
        self.restapled = 0  # HELLOs the provider sent since the consumer last read

    # -- the consumer ------------------------------------------------------------------------------

    @precondition(lambda self: self.consumer.hellos == 0 and not self.to_provider)
    @rule()
    def consumer_hello(self) -> None:
        if self.consumer.state is State.AWAITING_HELLO and self.provider.hellos == 0:
            self.to_provider += self.consumer.send_hello(HELLO)

    @precondition(lambda self: self.consumer.state is State.OPEN)
    @rule(target=streams, body=bodies)
    def consumer_request(self, body: bytes) -> int:
        stream, data = self.consumer.send_request({"jws": "a.b.c"}, body)
        assert stream not in self.sent and stream != 0
        self.sent[stream] = body
        self.to_provider += data
        return stream

    @rule(stream=consumes(streams))
    def consumer_gives_up(self, stream: int) -> None:
        self.consumer.forget(stream)
        self.sent.pop(stream, None)

    @precondition(lambda self: self.consumer.state in (State.AWAITING_HELLO, State.OPEN))
    @rule()
    def consumer_drains(self) -> None:
        self.consumer.start_draining()
        assert self.consumer.state is (State.DRAINING if self.sent else State.CLOSED)

    @rule(kind=st.sampled_from([FrameKind.REQUEST, FrameKind.HELLO]))
    def consumer_may_not_send_out_of_state(self, kind: FrameKind) -> None:
        state = self.consumer.state
        allowed = {
            State.AWAITING_HELLO: {FrameKind.HELLO},
            State.OPEN: {FrameKind.HELLO, FrameKind.REQUEST},
            State.DRAINING: {FrameKind.HELLO},
        }.get(state, set())
        if kind in allowed:
            return
        with pytest.raises(LocalProtocolError):
            if kind is FrameKind.REQUEST:
                self.consumer.send_request({}, b"")
            else:
                self.consumer.send_hello(HELLO)
        assert self.consumer.state is state

    # -- the provider ------------------------------------------------------------------------------

    @precondition(lambda self: bool(self.at_provider) and self.provider.state is State.OPEN)
    @rule(data=st.data(), refuse=st.booleans(), body=bodies)
    def provider_answers(self, data: st.DataObject, refuse: bool, body: bytes) -> None:
        stream = data.draw(st.sampled_from(sorted(self.at_provider)))
        del self.at_provider[stream]
        if refuse:
            self.to_consumer += self.provider.send_error(stream, {"type": "Server.ServerProxy.X"})
        else:
            self.to_consumer += self.provider.send_response(stream, {"jws": "r"}, body)
        self.answered.add(stream)
        with pytest.raises(LocalProtocolError):  # a stream is answered once
            self.provider.send_response(stream, {}, b"")

    @precondition(lambda self: self.provider.state is State.OPEN and self.restapled < HELLO_BURST)
    @rule()
    def provider_restaples(self) -> None:
        """A correct provider re-staples rarely: at most HELLO_BURST before its consumer reads,
        which it does HELLO_BURST * HELLO_EVERY seconds later (the session's HELLO budget)."""
        self.to_consumer += self.provider.send_hello(HELLO)
        self.restapled += 1

    # -- the wire ----------------------------------------------------------------------------------

    @rule(cuts=st.lists(st.integers(0, 10_000), max_size=4))
    def deliver_to_provider(self, cuts: list[int]) -> None:
        data, self.to_provider = self.to_provider, b""
        before = self.provider.state
        for event in deliver(self.provider, data, cuts):
            if isinstance(event, HelloReceived):
                if event.first:
                    assert before is State.AWAITING_HELLO
                    self.to_consumer += self.provider.send_hello(HELLO)
            else:
                assert isinstance(event, RequestReceived)
                assert self.sent.get(event.stream_id, event.body) == event.body
                self.at_provider[event.stream_id] = event.body
        if self.provider.hellos:
            assert self.provider.state is State.OPEN

    @rule(cuts=st.lists(st.integers(0, 10_000), max_size=4))
    def deliver_to_consumer(self, cuts: list[int]) -> None:
        data, self.to_consumer = self.to_consumer, b""
        self.now += HELLO_BURST * HELLO_EVERY
        self.restapled = 0
        for event in deliver(self.consumer, data, cuts, self.now):
            assert not isinstance(event, ConnectionRefused)
            if isinstance(event, ResponseReceived | RequestRefused):
                assert event.stream_id in self.answered
                self.sent.pop(event.stream_id, None)
                self.received.append(event)

    @precondition(lambda self: self.provider.state is State.OPEN)
    @rule(kind=st.sampled_from([FrameKind.RESPONSE, FrameKind.ERROR]))
    def a_provider_refuses_frames_a_consumer_never_sends(self, kind: FrameKind) -> None:
        with pytest.raises(UnexpectedFrame):
            list(self.provider.receive_data(encode_frame(1, kind, {}), now=0.0))
        assert self.provider.state is State.ERROR
        with pytest.raises(FrameError):  # and stays broken
            list(self.provider.receive_data(b"", now=0.0))
        # it may still say why, on stream 0, and nothing else
        self.provider.send_error(0, {"type": "Server.ServerProxy.InvalidMessage"})
        with pytest.raises(LocalProtocolError):
            self.provider.send_hello(HELLO)
        self.connect()  # a new connection for the next steps

    # -- what must hold after every step -------------------------------------------------------

    @invariant()
    def open_streams_agree(self) -> None:
        if not hasattr(self, "consumer"):
            return
        assert set(self.sent) <= self.consumer.pending
        assert set(self.at_provider) == self.provider.pending
        assert self.consumer.state is not State.ERROR
        if self.consumer.state is State.DRAINING:
            assert self.consumer.pending
        for state in (self.consumer.state, self.provider.state):
            assert state in State


TestExm1 = Exm1.TestCase
TestExm1.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# --- fuzz ----------------------------------------------------------------------------------------

frames = st.builds(
    encode_frame,
    st.integers(0, 3),
    st.sampled_from(list(FrameKind)),
    st.dictionaries(
        st.sampled_from(["jws", "certs", "ocsp", "type", "v"]),
        st.one_of(
            st.integers(-(2**31), 2**31),
            st.text(max_size=8),
            st.lists(st.text(max_size=8), max_size=3),
        ),
        max_size=3,
    ),
    st.binary(max_size=16),
)
wire = st.lists(st.one_of(frames, st.binary(max_size=40)), max_size=6).map(b"".join)


@settings(max_examples=600, deadline=None)
@given(
    role=st.sampled_from(["provider", "consumer"]),
    opened=st.booleans(),
    data=wire,
    cuts=st.lists(st.integers(0, 500), max_size=5),
)
def test_any_bytes_give_events_or_the_documented_error(
    role: Role, opened: bool, data: bytes, cuts: list[int]
) -> None:
    session = Session(role, MAX_FRAME)
    if opened:
        list(session.receive_data(encode_frame(0, FrameKind.HELLO, HELLO), now=0.0))
        assert session.state is State.OPEN
    try:
        events = deliver(session, data, cuts)
    except FrameError:
        assert session.state is State.ERROR
        return
    kinds = RECEIVES.get((role, State.OPEN), frozenset())
    for event in events:
        assert isinstance(
            event,
            HelloReceived
            | RequestReceived
            | ResponseReceived
            | RequestRefused
            | ConnectionRefused
            | GoAwayReceived,
        )
        if isinstance(event, GoAwayReceived):
            assert role == "consumer" and FrameKind.GOAWAY in kinds
        if isinstance(event, RequestReceived):
            assert role == "provider" and FrameKind.REQUEST in kinds and event.stream_id != 0
        if isinstance(event, HelloReceived):
            assert isinstance(event.hello, Hello)
    assert session.state in (State.AWAITING_HELLO, State.OPEN, State.DRAINING, State.CLOSED)


@pytest.mark.parametrize(
    ("role", "frame", "error"),
    [
        pytest.param(
            "provider",
            encode_frame(1, FrameKind.REQUEST, {}),
            UnexpectedFrame,
            id="request-before-hello",
        ),
        pytest.param(
            "consumer",
            encode_frame(1, FrameKind.RESPONSE, {}),
            UnexpectedFrame,
            id="response-before-hello",
        ),
        pytest.param(
            "consumer",
            encode_frame(0, FrameKind.REQUEST, {}),
            UnexpectedFrame,
            id="request-to-a-consumer",
        ),
        pytest.param(
            "provider",
            encode_frame(0, FrameKind.HELLO, {"certs": "x"}),
            FrameError,
            id="malformed-hello",
        ),
    ],
)
def test_out_of_order_frames_are_the_documented_errors(
    role: Role, frame: bytes, error: type[FrameError]
) -> None:
    session = Session(role, MAX_FRAME)
    with pytest.raises(error):
        list(session.receive_data(frame, now=0.0))
    assert session.state is State.ERROR


def test_frames_after_a_refusal_are_ignored_and_streams_are_checked() -> None:
    provider = Session("provider", MAX_FRAME)
    hello = encode_frame(0, FrameKind.HELLO, HELLO)
    request = encode_frame(5, FrameKind.REQUEST, {"jws": "t"}, b"b")
    events = list(provider.receive_data(hello + request, now=0.0))
    assert [type(e) for e in events] == [HelloReceived, RequestReceived]
    with pytest.raises(UnexpectedFrame, match="still open"):
        list(provider.receive_data(request, now=0.0))
    consumer = Session("consumer", MAX_FRAME)
    list(consumer.receive_data(hello, now=0.0))
    refusal = encode_frame(0, FrameKind.ERROR, {"type": "Server.ServerProxy.X"})
    events = list(consumer.receive_data(refusal + hello, now=0.0))
    assert [type(e) for e in events] == [ConnectionRefused]
    assert consumer.state is State.CLOSED
    assert list(consumer.receive_data(hello, now=0.0)) == []


# --- GOAWAY: a provider that stops -------------------------------------------------------------


def _opened(role: Role) -> Session:
    session = Session(role, MAX_FRAME)
    list(session.receive_data(encode_frame(0, FrameKind.HELLO, HELLO), now=0.0))
    return session


def test_a_stopping_provider_answers_what_is_open_and_its_consumer_drains() -> None:
    provider, consumer = _opened("provider"), _opened("consumer")
    stream, request = consumer.send_request({"jws": "a"}, b"")
    [received] = provider.receive_data(request, now=0.0)
    assert isinstance(received, RequestReceived)
    goaway = provider.send_goaway({"reason": "stopping"})
    assert provider.state is State.DRAINING
    with pytest.raises(LocalProtocolError):
        provider.send_goaway({})
    # a request that crossed the GOAWAY on the wire still arrives, for the shell to refuse
    late_stream, late = consumer.send_request({"jws": "b"}, b"")
    [crossed] = provider.receive_data(late, now=0.0)
    assert isinstance(crossed, RequestReceived) and crossed.stream_id == late_stream
    refusal = provider.send_error(late_stream, {"type": "Server.ServerProxy.ShuttingDown"})
    [event] = consumer.receive_data(goaway, now=0.0)
    assert isinstance(event, GoAwayReceived) and consumer.state is State.DRAINING
    with pytest.raises(LocalProtocolError):
        consumer.send_request({"jws": "c"}, b"")
    [refused] = consumer.receive_data(refusal, now=0.0)
    assert isinstance(refused, RequestRefused)
    [answered] = consumer.receive_data(provider.send_response(stream, {"jws": "r"}, b""), now=0.0)
    assert isinstance(answered, ResponseReceived)
    assert consumer.state is State.CLOSED  # every stream answered: the consumer closes


@pytest.mark.parametrize(
    ("role", "frame"),
    [
        pytest.param("provider", encode_frame(0, FrameKind.GOAWAY, {}), id="to-a-provider"),
        pytest.param("consumer", encode_frame(3, FrameKind.GOAWAY, {}), id="on-a-stream"),
    ],
)
def test_a_misplaced_goaway_breaks_the_protocol(role: Role, frame: bytes) -> None:
    session = _opened(role)
    with pytest.raises(UnexpectedFrame):
        list(session.receive_data(frame, now=0.0))
    assert session.state is State.ERROR


@pytest.mark.parametrize(
    ("role", "frames"),
    [
        pytest.param(
            "provider",
            [encode_frame(1, FrameKind.REQUEST, {"jws": "a.b.c", "pad": [{}] * 1000})],
            id="request-meta-beside-the-jws",
        ),
        pytest.param(
            "provider",
            [encode_frame(1, FrameKind.REQUEST, {"jws": [{}] * 1000})],
            id="request-jws-a-list",
        ),
        pytest.param(
            "provider",
            [encode_frame(1, FrameKind.REQUEST, {"pad": "x"})],
            id="request-meta-without-the-jws",
        ),
        pytest.param(
            "consumer",
            [encode_frame(1, FrameKind.RESPONSE, {"jws": "r", "extra": 1})],
            id="response-meta-beside-the-jws",
        ),
        pytest.param(
            "consumer",
            [encode_frame(1, FrameKind.ERROR, {"type": "X", "message": [[]] * 1000})],
            id="error-meta-not-scalar",
        ),
        pytest.param(
            "consumer",
            [encode_frame(0, FrameKind.GOAWAY, {"reason": {"nested": {}}})],
            id="goaway-meta-not-scalar",
        ),
        pytest.param(
            "consumer",
            [encode_frame(0, FrameKind.GOAWAY, {}), encode_frame(0, FrameKind.GOAWAY, {})],
            id="a-second-goaway",
        ),
    ],
)
def test_frame_meta_holds_what_its_kind_carries(role: Role, frames: list[bytes]) -> None:
    """Found by the red team: a registered peer padded each REQUEST's meta with 1 MiB of `{}`
    beside its JWS, which parses into about 24 MiB held until the answer (40 requests with empty
    bodies: +975 MiB at the provider); a rogue provider's repeated GOAWAYs each wrote a log
    line."""
    session = _opened(role)
    if role == "consumer":
        session.send_request({"jws": "a"}, b"")
    *before, last = frames
    for frame in before:
        list(session.receive_data(frame, now=0.0))
    with pytest.raises(UnexpectedFrame, match=r"meta holds more than|second GOAWAY"):
        list(session.receive_data(last, now=0.0))
    assert session.state is State.ERROR


def test_a_request_without_its_jws_is_for_the_shell_to_refuse() -> None:
    """Meta without the JWS is no protocol error: the provider refuses the request, signed."""
    [event] = _opened("provider").receive_data(encode_frame(1, FrameKind.REQUEST, {}), now=0.0)
    assert isinstance(event, RequestReceived) and event.meta == {}


@pytest.mark.parametrize("kind", [FrameKind.RESPONSE, FrameKind.ERROR])
def test_an_answer_on_a_stream_never_opened_breaks_the_protocol(kind: FrameKind) -> None:
    """The consumer holds its provider to what the provider holds it to (red team: an answer on
    a stream no request opened was dropped silently, where a provider refuses a frame out of
    place)."""
    consumer = _opened("consumer")
    stream, _ = consumer.send_request({"jws": "a"}, b"")
    meta = {"jws": "r"} if kind is FrameKind.RESPONSE else {"type": "Server.ServerProxy.X"}
    with pytest.raises(UnexpectedFrame, match="never opened"):
        list(consumer.receive_data(encode_frame(stream + 1, kind, meta), now=0.0))
    assert consumer.state is State.ERROR


def test_a_late_answer_to_a_stream_given_up_is_taken_and_ids_may_go_round() -> None:
    consumer = _opened("consumer")
    stream, _ = consumer.send_request({"jws": "a"}, b"")
    consumer.forget(stream)  # its answer took too long
    late = encode_frame(stream, FrameKind.RESPONSE, {"jws": "r"})
    [event] = consumer.receive_data(late, now=0.0)
    assert isinstance(event, ResponseReceived) and consumer.state is State.OPEN
    consumer._next_stream = MAX_STREAM  # as after 2**31 - 2 requests
    last, _ = consumer.send_request({"jws": "b"}, b"")
    assert last == MAX_STREAM
    # the ids went round: an answer on a low stream may be to a request of the first round
    [again] = consumer.receive_data(encode_frame(stream + 5, FrameKind.RESPONSE, {}), now=0.0)
    assert isinstance(again, ResponseReceived)


def test_what_was_buffered_is_dropped_when_the_session_ends() -> None:
    """A refused connection can take a while to close (the peer leaves the closing handshake
    unanswered); what it had buffered of a frame is dropped at once (red team: 60 refused
    connections held 660 MiB for 30 s each)."""
    begun = encode_frame(1, FrameKind.REQUEST, {"jws": "a"}, b"x" * 1000)[:600]
    refused = _opened("provider")
    assert list(refused.receive_data(begun, now=0.0)) == [] and refused.buffered == 600
    refused.send_error(0, {"type": "Server.ServerProxy.X"})
    assert refused.buffered == 0 and refused.state is State.CLOSED
    broken = _opened("provider")
    unknown = struct.pack("!IIBI", 9 + 2, 1, 9, 2) + b"{}"  # a kind EXM/1 does not define
    with pytest.raises(FrameError):  # with a frame begun behind it
        list(broken.receive_data(unknown + begun, now=0.0))
    assert broken.buffered == 0 and broken.state is State.ERROR
    closed = _opened("consumer")
    list(closed.receive_data(begun[:300], now=0.0))
    closed.close()
    assert closed.buffered == 0
