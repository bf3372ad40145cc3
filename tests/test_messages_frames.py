"""Signed request/response documents (round trips and malformed payloads) and EXM/1 framing
(round trips in any chunking, bounds checked before buffering)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import ExchangeError
from exchange.identifiers import MemberId, SecurityServerId, ServiceId, SubsystemId
from exchange.protocol.canonical import canonical_bytes, loads
from exchange.protocol.forwarding import is_end_to_end
from exchange.protocol.frames import (
    HEAD_SIZE,
    MAX_META,
    Frame,
    FrameDecoder,
    FrameError,
    FrameKind,
    encode_frame,
)
from exchange.protocol.jws import Signer, verify
from exchange.protocol.messages import (
    REQUEST_HASH_ALGORITHM,
    VERSION,
    SignedDecision,
    SignedRequest,
    SignedResponse,
    body_digest,
    request_hash,
)
from exchange.protocol.syntax import is_text
from exchange.trust.keys import generate_key, self_signed_certificate

INVALID_MESSAGE = "Server.ServerProxy.InvalidMessage"
INT64 = st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)
PART = st.text(alphabet="ABCXYZabcxyz0189'()+,-.=?_", min_size=1, max_size=12)
members = st.builds(MemberId, PART, PART, PART)
subsystems = st.builds(SubsystemId, PART, PART, PART, PART)
services = st.builds(ServiceId, PART, PART, PART, PART, PART)
servers = st.builds(SecurityServerId, PART, PART, PART, PART)
TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789ABCXYZabcxyz"
VISIBLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#?")
header_pairs = st.lists(
    st.tuples(
        st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=10).filter(
            lambda name: is_end_to_end(name.lower())
        ),
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    ),
    max_size=4,
).map(tuple)
http_paths = st.lists(st.text(alphabet=VISIBLE, max_size=8).map(lambda p: "/" + p), max_size=4).map(
    "".join
)
http_queries = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"),
    max_size=40,
)
# the field rules of exchange.protocol.fields: what an honest consumer signs
message_ids = st.from_regex(r"[A-Za-z0-9._:\-]{1,40}", fullmatch=True)
texts = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S", "Zs"), max_codepoint=0xFFFF),
    min_size=1,
    max_size=20,
).filter(lambda t: is_text(t) and t == t.strip())
optional_text = st.none() | texts
optional_party = st.none() | texts.filter(lambda t: all(p.strip() for p in t.split("/")))

requests = st.builds(
    SignedRequest,
    message_id=message_ids,
    client=members | subsystems,
    service=services,
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    path=http_paths,
    query=http_queries,
    headers=header_pairs,
    body_sha256=st.text(max_size=43),
    body_length=st.integers(min_value=0, max_value=2**40),
    user_id=optional_text,
    purpose=optional_text,
    issue=optional_text,
    represented_party=optional_party,
    security_server=servers,
    client_server=servers,
    timestamp_ms=INT64,
    protocol=st.sampled_from(["rest", "soap"]),
)


decisions = st.builds(
    SignedDecision,
    allowed=st.booleans(),
    code=st.text(max_size=30),
    grant=optional_text,
    fields=st.none() | st.lists(st.text(max_size=10), max_size=4).map(tuple),
)


@st.composite
def responses(draw: st.DrawFn) -> SignedResponse:
    error = draw(
        st.none() | st.tuples(st.text(alphabet=TOKEN_CHARS, min_size=1), st.text(max_size=30))
    )
    return SignedResponse(
        message_id=draw(st.just("") | message_ids),
        request_id=draw(message_ids),
        request_hash=draw(st.text(max_size=88)),
        status=draw(st.integers(min_value=200, max_value=599)),
        headers=draw(header_pairs),
        body_sha256=draw(st.text(max_size=43)),
        body_length=draw(st.integers(min_value=0, max_value=2**40)),
        error_type=None if error is None else error[0],
        error_message=None if error is None else error[1],
        policy_version=draw(optional_text),
        released_fields=draw(st.none() | st.lists(st.text(max_size=10), max_size=4).map(tuple)),
        timestamp_ms=draw(INT64),
        decision=draw(st.none() | decisions),
    )


def _request(**changes: Any) -> SignedRequest:
    fields: dict[str, Any] = {
        "message_id": "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "client": SubsystemId("PS", "GOV", "MOF", "tax-office"),
        "service": ServiceId("PS", "GOV", "MOI", "population-registry", "persons"),
        "method": "GET",
        "path": "/123",
        "query": "fields=name",
        "headers": (("accept", "application/json"),),
        "body_sha256": body_digest(b"")["sha256"],
        "body_length": 0,
        "user_id": "EE:clerk-17",
        "purpose": "citizen-service",
        "issue": None,
        "represented_party": None,
        "security_server": SecurityServerId("PS", "GOV", "MOI", "ss1"),
        "client_server": SecurityServerId("PS", "GOV", "MOF", "ss1"),
        "timestamp_ms": 1_700_000_000_000,
    }
    return SignedRequest(**{**fields, **changes})


def _response(**changes: Any) -> SignedResponse:
    fields: dict[str, Any] = {
        "message_id": "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "request_id": "r-1",
        "request_hash": "aGFzaA==",
        "status": 200,
        "headers": (("content-type", "application/json"),),
        "body_sha256": body_digest(b"{}")["sha256"],
        "body_length": 2,
        "error_type": None,
        "error_message": None,
        "policy_version": "7",
        "released_fields": ("name",),
        "timestamp_ms": 1_700_000_000_001,
    }
    return SignedResponse(**{**fields, **changes})


# --- round trips -------------------------------------------------------------------------------


@given(request=requests)
def test_request_round_trip(request: SignedRequest) -> None:
    payload = request.canonical()
    assert payload == canonical_bytes(request.to_dict())
    assert loads(payload) == request.to_dict()
    assert SignedRequest.from_payload(payload) == request


@given(response=responses())
def test_response_round_trip(response: SignedResponse) -> None:
    payload = response.canonical()
    assert loads(payload) == response.to_dict()
    assert SignedResponse.from_payload(payload) == response


def test_request_document_shape() -> None:
    doc = _request().to_dict()
    assert doc["v"] == VERSION
    assert doc["type"] == "request"
    assert doc["client"] == "PS/GOV/MOF/tax-office"
    assert doc["service"] == "PS/GOV/MOI/population-registry/persons"
    assert doc["security_server"] == "PS/GOV/MOI/ss1"
    assert doc["headers"] == [["accept", "application/json"]]
    assert doc["body"] == {"sha256": body_digest(b"")["sha256"], "length": 0}


def test_response_document_shape() -> None:
    doc = _response(error_type="Server.ServerProxy.AccessDenied", error_message="no").to_dict()
    assert doc["request_hash"] == {"alg": REQUEST_HASH_ALGORITHM, "value": "aGFzaA=="}
    assert doc["error"] == {"type": "Server.ServerProxy.AccessDenied", "message": "no"}
    assert doc["released_fields"] == ["name"]


def test_signed_documents_cannot_change_nor_pass_for_json_arrays() -> None:
    """The documents are named tuples: a field cannot be set after signing or checking, and
    the canonical encoder refuses one put inside another document, as it refused dataclasses,
    instead of writing it out as a JSON array."""
    response = _response(decision=SignedDecision(True, "Allowed", "g1", ("name",)))
    assert response.decision is not None
    for doc in (_request(), response, response.decision):
        with pytest.raises(AttributeError):
            doc.timestamp_ms = 0  # type: ignore[misc,union-attr]
        with pytest.raises(TypeError, match="not JSON serializable"):
            canonical_bytes({"document": doc})
        with pytest.raises(TypeError, match="not JSON serializable"):
            canonical_bytes({"document": doc}, typed=True)


def test_signed_request_through_jws() -> None:
    key = generate_key()
    signer = Signer(key, self_signed_certificate(key, "MOF"))
    token = signer.sign(_request().canonical())
    verified = verify(token, lambda _: key.public_key())
    assert SignedRequest.from_payload(verified.payload) == _request()


def test_request_hash_is_base64_sha512_of_the_token() -> None:
    token = "eyJhbGciOiJFUzI1NiJ9.e30.c2ln"
    expected = base64.b64encode(hashlib.sha512(token.encode("ascii")).digest()).decode()
    assert request_hash(token) == expected
    assert len(base64.b64decode(request_hash(token), validate=True)) == 64


@given(body=st.binary(max_size=200))
def test_body_digest(body: bytes) -> None:
    digest = body_digest(body)
    assert digest["length"] == len(body)
    padded = digest["sha256"] + "=" * (-len(digest["sha256"]) % 4)
    assert base64.urlsafe_b64decode(padded) == hashlib.sha256(body).digest()


# --- malformed payloads ------------------------------------------------------------------------


def _without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


def _payload(doc: Any) -> bytes:
    return canonical_bytes(doc)


REQ = _request().to_dict()
RESP = _response().to_dict()

BAD_REQUESTS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"{", id="not-json"),
    pytest.param(b"\xff", id="not-utf8"),
    pytest.param(b"[]", id="list"),
    pytest.param(b'"request"', id="string"),
    pytest.param(b"1", id="number"),
    pytest.param(b"null", id="null"),
    pytest.param(_payload({**REQ, "v": 2}), id="version-2"),
    pytest.param(_payload({**REQ, "v": "1"}), id="version-string"),
    pytest.param(_payload({**REQ, "v": True}), id="version-true"),
    pytest.param(_payload(REQ).replace(b'"v":1', b'"v":1.0'), id="version-float"),
    pytest.param(_payload(_without(REQ, "v")), id="version-missing"),
    pytest.param(_payload({**REQ, "type": "response"}), id="type-response"),
    pytest.param(_payload(_without(REQ, "type")), id="type-missing"),
    pytest.param(_payload(RESP), id="a-response"),
    *[
        pytest.param(_payload(_without(REQ, key)), id=f"missing-{key}")
        for key in (
            "id",
            "client",
            "service",
            "method",
            "path",
            "query",
            "body",
            "security_server",
            "ts",
            "protocol",
        )
    ],
    pytest.param(_payload({**REQ, "id": 1}), id="id-int"),
    pytest.param(_payload({**REQ, "method": None}), id="method-null"),
    pytest.param(_payload({**REQ, "ts": "1700000000000"}), id="ts-string"),
    pytest.param(_payload({**REQ, "ts": True}), id="ts-bool"),
    pytest.param(_payload(REQ).replace(b'"ts":1700000000000', b'"ts":1.5'), id="ts-float"),
    pytest.param(_payload({**REQ, "user_id": 5}), id="user-id-int"),
    pytest.param(_payload({**REQ, "purpose": ["a"]}), id="purpose-list"),
    pytest.param(_payload({**REQ, "headers": {"a": "b"}}), id="headers-object"),
    pytest.param(_payload({**REQ, "headers": [["a"]]}), id="header-one-item"),
    pytest.param(_payload({**REQ, "headers": [["a", "b", "c"]]}), id="header-three-items"),
    pytest.param(_payload({**REQ, "headers": [["a", 1]]}), id="header-value-int"),
    pytest.param(_payload({**REQ, "headers": ["a: b"]}), id="header-string"),
    pytest.param(_payload({**REQ, "body": "digest"}), id="body-string"),
    pytest.param(_payload({**REQ, "body": {"length": 0}}), id="body-no-sha256"),
    pytest.param(_payload({**REQ, "body": {"sha256": "x"}}), id="body-no-length"),
    pytest.param(
        _payload({**REQ, "body": {"sha256": "x", "length": "0"}}), id="body-length-string"
    ),
    pytest.param(_payload({**REQ, "client": "PS/GOV"}), id="client-two-parts"),
    pytest.param(_payload({**REQ, "client": "PS/GOV/MOF/tax office"}), id="client-space"),
    pytest.param(
        _payload({**REQ, "service": "PS/GOV/MOI/population-registry"}), id="service-four-parts"
    ),
    pytest.param(_payload({**REQ, "service": "PS/GOV/MOI/reg/pers%6Fns"}), id="service-percent"),
    pytest.param(_payload({**REQ, "security_server": "PS/GOV/MOI"}), id="server-three-parts"),
    pytest.param(_payload({**REQ, "security_server": None}), id="server-null"),
    # the consumer's rules for the X-Road fields (exchange.protocol.fields), applied alike here
    pytest.param(_payload({**REQ, "id": "x" * 100_000}), id="id-100000-chars"),
    pytest.param(_payload({**REQ, "id": ""}), id="id-empty"),
    pytest.param(_payload({**REQ, "id": "a\x1b[2Jb"}), id="id-escape"),
    pytest.param(_payload({**REQ, "user_id": "clerk\u2028Approved"}), id="user-id-u2028"),
    pytest.param(_payload({**REQ, "user_id": "clerk\x1b]8;;http://x\x07"}), id="user-id-osc"),
    pytest.param(_payload({**REQ, "user_id": "\u202eclerk"}), id="user-id-bidi-override"),
    pytest.param(_payload({**REQ, "user_id": ""}), id="user-id-empty"),
    pytest.param(_payload({**REQ, "user_id": " clerk"}), id="user-id-leading-space"),
    pytest.param(_payload({**REQ, "purpose": "care\x85"}), id="purpose-c1"),
    pytest.param(_payload({**REQ, "purpose": "care\nx"}), id="purpose-newline"),
    pytest.param(_payload({**REQ, "issue": "x" * 1025}), id="issue-too-long"),
    pytest.param(_payload({**REQ, "represented_party": "COM//1"}), id="party-empty-part"),
    pytest.param(_payload({**REQ, "method": "get"}), id="method-lower-case"),
    pytest.param(_payload({**REQ, "method": "X" * 33}), id="method-too-long"),
    pytest.param(_payload({**REQ, "path": "/" + "a" * 8192}), id="path-too-long"),
    pytest.param(_payload({**REQ, "protocol": "gopher"}), id="protocol-unknown"),
    *[
        pytest.param(_payload({**REQ, "headers": [[name, "1"]]}), id=f"header-{name}")
        for name in (
            "content-length",
            "Transfer-Encoding",
            "connection",
            "upgrade",
            "keep-alive",
            "te",
            "trailer",
            "proxy-authorization",
            "proxy-x",
            "host",
            "x-road-client",
        )
    ],
]


@pytest.mark.parametrize("payload", BAD_REQUESTS)
def test_malformed_request(payload: bytes) -> None:
    with pytest.raises(ExchangeError) as info:
        SignedRequest.from_payload(payload)
    assert info.value.code == INVALID_MESSAGE
    assert info.value.status == 400


BAD_RESPONSES = [
    pytest.param(b"{", id="not-json"),
    pytest.param(b"[]", id="list"),
    pytest.param(_payload({**RESP, "v": 0}), id="version-0"),
    pytest.param(_payload({**RESP, "v": True}), id="version-true"),
    pytest.param(_payload({**RESP, "type": "request"}), id="type-request"),
    pytest.param(_payload(REQ), id="a-request"),
    *[
        pytest.param(_payload(_without(RESP, key)), id=f"missing-{key}")
        for key in ("id", "request_id", "request_hash", "status", "body", "ts")
    ],
    pytest.param(_payload({**RESP, "request_hash": "abc"}), id="request-hash-string"),
    pytest.param(_payload({**RESP, "request_hash": {"value": "abc"}}), id="request-hash-no-alg"),
    pytest.param(
        _payload({**RESP, "request_hash": {"alg": "SHA-256", "value": "abc"}}),
        id="request-hash-sha256",
    ),
    pytest.param(
        _payload({**RESP, "request_hash": {"alg": "SHA-512"}}), id="request-hash-no-value"
    ),
    pytest.param(_payload({**RESP, "status": "200"}), id="status-string"),
    pytest.param(_payload({**RESP, "status": False}), id="status-bool"),
    pytest.param(_payload({**RESP, "error": "denied"}), id="error-string"),
    pytest.param(_payload({**RESP, "error": {"message": "x"}}), id="error-no-type"),
    pytest.param(_payload({**RESP, "error": {"type": "X", "message": 1}}), id="error-message-int"),
    pytest.param(_payload({**RESP, "released_fields": "name"}), id="released-string"),
    pytest.param(_payload({**RESP, "released_fields": ["a", 1]}), id="released-int-item"),
    pytest.param(_payload({**RESP, "policy_version": 7}), id="policy-version-int"),
    pytest.param(_payload({**RESP, "headers": [[1, 2]]}), id="headers-ints"),
    # what would split or bend the consumer's HTTP answer (exchange.protocol.forwarding)
    *[
        pytest.param(_payload({**RESP, "status": status}), id=f"status-{status}")
        for status in (-5, 0, 100, 101, 199, 600, 1000, 2**62)
    ],
    *[
        pytest.param(_payload({**RESP, "headers": [[name, value]]}), id=f"header-{name}")
        for name, value in (
            ("content-length", "0"),
            ("Content-Length", "0"),
            ("transfer-encoding", "chunked"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "websocket"),
            ("trailer", "x"),
            ("proxy-authenticate", "Basic"),
            ("x-road-error", "Client.Fake"),
            ("server", "evil"),
        )
    ],
    pytest.param(_payload({**RESP, "id": "a b"}), id="id-space"),
    pytest.param(_payload({**RESP, "request_id": ""}), id="request-id-empty"),
    pytest.param(
        _payload({**RESP, "error": {"type": "X\r\nSet-Cookie: a=1", "message": ""}}),
        id="error-type-crlf",
    ),
]


@pytest.mark.parametrize("payload", BAD_RESPONSES)
def test_malformed_response(payload: bytes) -> None:
    with pytest.raises(ExchangeError) as info:
        SignedResponse.from_payload(payload)
    assert info.value.code == INVALID_MESSAGE
    assert info.value.status == 400


json_scalars = st.none() | st.booleans() | INT64 | st.text(max_size=10)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.mark.parametrize(
    ("parse", "doc"),
    [
        pytest.param(SignedRequest.from_payload, REQ, id="request"),
        pytest.param(SignedResponse.from_payload, RESP, id="response"),
    ],
)
@given(data=st.data())
def test_mutated_documents_parse_or_raise_invalid_message(
    parse: Any, doc: dict[str, Any], data: st.DataObject
) -> None:
    mutated = dict(doc)
    for key in data.draw(st.lists(st.sampled_from(sorted(doc)), min_size=1, max_size=3)):
        if data.draw(st.booleans()):
            mutated.pop(key, None)
        else:
            mutated[key] = data.draw(json_values)
    try:
        parse(canonical_bytes(mutated))
    except ExchangeError as exc:
        assert exc.code == INVALID_MESSAGE


@given(payload=st.binary(max_size=100))
def test_random_bytes_raise_invalid_message(payload: bytes) -> None:
    for parse in (SignedRequest.from_payload, SignedResponse.from_payload):
        with pytest.raises(ExchangeError) as info:
            parse(payload)
        assert info.value.code == INVALID_MESSAGE


# --- frames ------------------------------------------------------------------------------------

metas = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
frames = st.builds(
    Frame,
    stream_id=st.integers(min_value=0, max_value=2**32 - 1),
    kind=st.sampled_from(FrameKind),
    meta=metas,
    body=st.binary(max_size=300),
)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(sent=st.lists(frames, max_size=6), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_frames_round_trip_in_any_chunking(sent: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(f.stream_id, f.kind, f.meta, f.body) for f in sent)
    decoder = FrameDecoder(max_frame=1024)
    received: list[Frame] = []
    for chunk in _chunks(wire, cuts):
        received += decoder.feed(chunk)
    assert received == sent


def test_frame_layout() -> None:
    wire = encode_frame(7, FrameKind.REQUEST, {"jws": "a.b.c"}, b"body")
    meta = b'{"jws":"a.b.c"}'
    assert HEAD_SIZE == 13
    assert wire == struct.pack("!IIBI", 9 + len(meta) + 4, 7, 2, len(meta)) + meta + b"body"


def test_byte_by_byte() -> None:
    wire = encode_frame(1, FrameKind.HELLO, {"a": 1}, b"xy")
    decoder = FrameDecoder(max_frame=100)
    assert all(decoder.feed(wire[i : i + 1]) == [] for i in range(len(wire) - 1))
    assert decoder.feed(wire[-1:]) == [Frame(1, FrameKind.HELLO, {"a": 1}, b"xy")]


def test_empty_meta_is_an_empty_object() -> None:
    wire = struct.pack("!IIBI", 9 + 3, 5, FrameKind.ERROR, 0) + b"abc"
    assert FrameDecoder(100).feed(wire) == [Frame(5, FrameKind.ERROR, {}, b"abc")]


def test_frame_at_the_limit_is_accepted() -> None:
    body = b"x" * 100
    wire = struct.pack("!IIBI", 100 + MAX_META, 1, FrameKind.REQUEST, 2) + b"{}"
    decoder = FrameDecoder(max_frame=100)
    assert decoder.feed(wire) == []
    filler = b"y" * (100 + MAX_META - 9 - 2 - len(body))
    (frame,) = decoder.feed(body + filler)
    assert frame.body == body + filler


def _head(rest: int, kind: int = FrameKind.REQUEST, meta_len: int = 2, stream: int = 1) -> bytes:
    return struct.pack("!IIBI", rest, stream, kind, meta_len)


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        pytest.param(_head(100 + MAX_META + 1), "exceeds", id="oversize-announced"),
        pytest.param(_head(2**32 - 1), "exceeds", id="max-u32-length"),
        pytest.param(_head(100, meta_len=MAX_META + 1), "exceeds", id="oversize-meta"),
        pytest.param(_head(9 + 2, meta_len=5) + b"{}", "meta longer", id="meta-longer-than-frame"),
        pytest.param(_head(0, meta_len=0), "meta longer", id="shorter-than-header"),
        pytest.param(_head(8, meta_len=0), "meta longer", id="one-short-of-header"),
        pytest.param(_head(11, kind=0) + b"{}", "unknown frame kind", id="kind-0"),
        pytest.param(_head(11, kind=6) + b"{}", "unknown frame kind", id="kind-6"),
        pytest.param(_head(11, kind=255) + b"{}", "unknown frame kind", id="kind-255"),
        pytest.param(_head(11) + b"{x", "not JSON", id="meta-not-json"),
        pytest.param(_head(11) + b"\xff\xfe", "not JSON", id="meta-not-utf8"),
        pytest.param(_head(11) + b"[]", "not a JSON object", id="meta-list"),
        pytest.param(_head(10, meta_len=1) + b"1", "not a JSON object", id="meta-number"),
        pytest.param(_head(13, meta_len=4) + b"null", "not a JSON object", id="meta-null"),
    ],
)
def test_bad_frames(wire: bytes, match: str) -> None:
    decoder = FrameDecoder(max_frame=100)
    with pytest.raises(FrameError, match=match) as info:
        decoder.feed(wire)
    assert info.value.code == "Server.ProtocolError"


def test_oversize_refused_from_the_header_alone() -> None:
    """Only the 13 header bytes have arrived: the decoder refuses without waiting for more."""
    decoder = FrameDecoder(max_frame=10)
    assert decoder.feed(_head(10 + MAX_META + 1)[:12]) == []
    with pytest.raises(FrameError):
        decoder.feed(_head(10 + MAX_META + 1)[12:])


def test_bad_frame_after_a_good_one() -> None:
    good = encode_frame(1, FrameKind.HELLO, {})
    with pytest.raises(FrameError):
        FrameDecoder(100).feed(good + _head(11, kind=9) + b"{}")


def test_partial_frame_waits() -> None:
    wire = encode_frame(3, FrameKind.RESPONSE, {"jws": "t"}, b"0123456789")
    decoder = FrameDecoder(100)
    assert decoder.feed(wire[:-1]) == []
    assert decoder.feed(wire[-1:] + wire[:5]) == [
        Frame(3, FrameKind.RESPONSE, {"jws": "t"}, b"0123456789")
    ]
    assert decoder.feed(wire[5:]) == [Frame(3, FrameKind.RESPONSE, {"jws": "t"}, b"0123456789")]


@given(data=st.binary(max_size=200), cut=st.integers(min_value=0, max_value=200))
def test_random_bytes_decode_or_raise_frame_error(data: bytes, cut: int) -> None:
    decoder = FrameDecoder(max_frame=64)
    try:
        decoder.feed(data[:cut])
        decoder.feed(data[cut:])
    except FrameError:
        pass


@given(
    allowed=st.booleans(),
    code=st.sampled_from(["Allowed", "Server.ServerProxy.AccessDenied", "Metadata"]),
    grant=st.none() | st.text(min_size=1, max_size=12),
    granted=st.none() | st.lists(st.text(max_size=8), max_size=4),
)
def test_a_servers_own_decision_is_signed_as_a_record_states_it(
    allowed: bool, code: str, grant: str | None, granted: list[str] | None
) -> None:
    """The provider signs its own decision without re-checking it (``own``); what it signs is
    what the check of a logged decision (``of``) reads back."""
    entry = {
        "allowed": allowed,
        "code": code,
        "grant": grant,
        "source": None,
        "fields": granted,
        "policy_version": "v1",
        "reason": "a reason",
    }
    assert SignedDecision.own(entry) == SignedDecision.of(entry)
    assert SignedDecision.own(None) is None
