"""Canonical bytes (cross-checked with the standard library) and compact JWS (cross-checked with
PyJWT); every malformed or tampered token is a JwsError, never another exception."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import random
import re
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import BadRequest
from exchange.protocol.canonical import (
    b64url,
    b64url_decode,
    canonical_bytes,
    loads,
    sha256_b64url,
    sha512_b64,
)
from exchange.protocol.jws import (
    ALGORITHM,
    JwsError,
    Signer,
    VerifiedJws,
    cert_thumbprint,
    unverified_header,
    unverified_payload,
    verify,
    verify_by_cert,
)
from exchange.trust.keys import generate_key, self_signed_certificate

# --- canonical bytes ---------------------------------------------------------------------------

INT64 = st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)
json_values = st.recursive(
    st.none() | st.booleans() | INT64 | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


def _reordered(value: Any, rnd: random.Random) -> Any:
    """The same value with every object's keys inserted in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _reordered(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_reordered(v, rnd) for v in value]
    return value


def _stdlib(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@given(value=json_values, rnd=st.randoms(use_true_random=False))
def test_canonical_is_independent_of_insertion_order(value: Any, rnd: random.Random) -> None:
    assert canonical_bytes(_reordered(value, rnd)) == canonical_bytes(value)


@given(value=json_values)
def test_canonical_equals_stdlib_sorted_compact_utf8(value: Any) -> None:
    assert canonical_bytes(value) == _stdlib(value)


@given(value=json_values)
def test_canonical_round_trips_through_loads(value: Any) -> None:
    assert loads(canonical_bytes(value)) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"b": 1, "a": 2}, b'{"a":2,"b":1}', id="sorted-keys"),
        pytest.param(
            {"a": [1, 2, {"y": None, "x": True}]}, b'{"a":[1,2,{"x":true,"y":null}]}', id="nested"
        ),
        pytest.param({"B": 1, "a": 2, "_": 3}, b'{"B":1,"_":3,"a":2}', id="code-point-order"),
        pytest.param({"name": "Jüri Šõ €😀"}, '{"name":"Jüri Šõ €😀"}'.encode(), id="utf8-kept"),
        pytest.param({"s": 'q"\\\n'}, b'{"s":"q\\"\\\\\\n"}', id="escapes"),
        pytest.param(("a", 1), b'["a",1]', id="tuple-is-list"),
        pytest.param({}, b"{}", id="empty"),
    ],
)
def test_canonical_examples(value: Any, expected: bytes) -> None:
    assert canonical_bytes(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(1.0, id="top-level"),
        pytest.param({"a": 0.5}, id="in-object"),
        pytest.param([1, [2, 3.25]], id="in-nested-list"),
        pytest.param({"a": {"b": (1, float("nan"))}}, id="nan-in-tuple"),
        pytest.param({"a": float("inf")}, id="infinity"),
        pytest.param({1: "x"}, id="int-key"),
        pytest.param({"a": {None: "x"}}, id="none-key"),
    ],
)
def test_canonical_refuses_floats_and_non_string_keys(value: Any) -> None:
    with pytest.raises(TypeError):
        canonical_bytes(value)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"nul", id="bad-literal"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b'{"a":"\xff"}', id="not-utf8-in-string"),
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"[1,]", id="trailing-comma"),
        pytest.param(b"{'a':1}", id="single-quotes"),
        pytest.param(b"{} {}", id="trailing-data"),
        pytest.param("[\ud800]", id="lone-surrogate-text"),
        pytest.param(b"[" * 10_000, id="deep-nesting"),
    ],
)
def test_loads_malformed_is_bad_request(data: bytes | str) -> None:
    with pytest.raises(BadRequest) as info:
        loads(data)
    assert info.value.code == "Client.BadRequest"


@given(data=st.binary(max_size=64) | st.text(max_size=64))
def test_loads_any_input_parses_or_is_bad_request(data: bytes | str) -> None:
    with contextlib.suppress(BadRequest):
        loads(data)


@given(data=st.binary(max_size=200))
def test_b64url_round_trip(data: bytes) -> None:
    text = b64url(data)
    assert "=" not in text
    assert text == base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert b64url_decode(text) == data


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a", id="one-char"),
        pytest.param("abcde", id="length-1-mod-4"),
        pytest.param("ab==", id="padding"),
        pytest.param("ab+/", id="standard-alphabet"),
        pytest.param("ab!c", id="punctuation"),
        pytest.param("ab c", id="space"),
        pytest.param("abcé", id="non-ascii"),
        pytest.param("ab\nc", id="newline"),
    ],
)
def test_b64url_decode_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)


_UNPADDED_B64URL = re.compile(r"[A-Za-z0-9_-]*")


@given(text=st.text(alphabet="AZaz09-_+/= .\né\u2028", max_size=12) | st.text(max_size=12))
def test_b64url_decode_takes_exactly_unpadded_base64url(text: str) -> None:
    if _UNPADDED_B64URL.fullmatch(text) is not None and len(text) % 4 != 1:
        padded = text + "=" * (-len(text) % 4)
        assert b64url_decode(text) == base64.urlsafe_b64decode(padded)
    else:
        with pytest.raises(ValueError):
            b64url_decode(text)


@given(data=st.binary(max_size=100))
def test_digests(data: bytes) -> None:
    assert b64url_decode(sha256_b64url(data)) == hashlib.sha256(data).digest()
    assert base64.b64decode(sha512_b64(data), validate=True) == hashlib.sha512(data).digest()


# --- JWS ---------------------------------------------------------------------------------------


class Party:
    def __init__(self, cn: str) -> None:
        self.key = generate_key()
        self.cert = self_signed_certificate(self.key, cn)
        self.signer = Signer(self.key, self.cert)

    def key_for(self, thumbprint: str) -> ec.EllipticCurvePublicKey:
        assert thumbprint == self.signer.thumbprint
        return self.key.public_key()

    def any_key(self, thumbprint: str) -> ec.EllipticCurvePublicKey:
        return self.key.public_key()


@pytest.fixture(scope="module")
def alice() -> Party:
    return Party("alice")


@pytest.fixture(scope="module")
def mallory() -> Party:
    return Party("mallory")


def _pyjwt_token(key: ec.EllipticCurvePrivateKey, payload: bytes, headers: dict[str, Any]) -> str:
    return jwt.api_jws.encode(payload, key, algorithm="ES256", headers=headers)


def _segments(token: str) -> list[str]:
    return token.split(".")


def _with_header(token: str, header: dict[str, Any]) -> str:
    _, payload, sig = _segments(token)
    return f"{b64url(json.dumps(header).encode())}.{payload}.{sig}"


def test_thumbprint_is_sha256_of_der(alice: Party) -> None:
    der = alice.cert.public_bytes(serialization.Encoding.DER)
    assert cert_thumbprint(alice.cert) == b64url(hashlib.sha256(der).digest())
    assert alice.signer.thumbprint == cert_thumbprint(alice.cert)


def test_header_is_canonical_es256_with_thumbprint(alice: Party) -> None:
    token = alice.signer.sign(b"{}")
    header_b64 = _segments(token)[0]
    assert b64url_decode(header_b64) == canonical_bytes(
        {"alg": "ES256", "x5t#S256": alice.signer.thumbprint}
    )
    assert unverified_header(token) == {"alg": ALGORITHM, "x5t#S256": alice.signer.thumbprint}


@given(payload=st.binary(max_size=300))
def test_our_tokens_verify_with_pyjwt(alice: Party, payload: bytes) -> None:
    token = alice.signer.sign(payload)
    public_key = alice.cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    decoded = jwt.api_jws.decode_complete(token, key=public_key, algorithms=["ES256"])
    assert decoded["payload"] == payload
    assert decoded["header"]["x5t#S256"] == alice.signer.thumbprint
    verified = verify(token, alice.key_for)
    assert verified == VerifiedJws(header=decoded["header"], payload=payload)
    assert unverified_payload(token) == payload


@given(payload=st.binary(max_size=300))
def test_pyjwt_tokens_verify_with_ours(alice: Party, payload: bytes) -> None:
    token = _pyjwt_token(alice.key, payload, {"x5t#S256": alice.signer.thumbprint})
    assert verify(token, alice.key_for).payload == payload


def test_verified_document(alice: Party) -> None:
    token = alice.signer.sign(canonical_bytes({"a": [1, "ü"]}))
    assert verify(token, alice.key_for).document() == {"a": [1, "ü"]}


def _flip(segment: str) -> str:
    i = len(segment) // 2
    return segment[:i] + ("A" if segment[i] != "A" else "B") + segment[i + 1 :]


def _tampered(token: str, index: int) -> str:
    segs = _segments(token)
    segs[index] = _flip(segs[index])
    return ".".join(segs)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["header", "payload", "signature"])
def test_flipped_character_is_refused(alice: Party, index: int) -> None:
    token = alice.signer.sign(b'{"amount":100}')
    with pytest.raises(JwsError):
        verify(_tampered(token, index), alice.any_key)


def test_wrong_key_is_refused(alice: Party, mallory: Party) -> None:
    with pytest.raises(JwsError, match="does not verify"):
        verify(alice.signer.sign(b"{}"), mallory.any_key)


def test_verify_by_cert_takes_the_key_of_the_carried_certificate(
    alice: Party, mallory: Party
) -> None:
    token = alice.signer.sign(b'{"x":1}')
    assert verify_by_cert(token, alice.cert, "auth_cert").payload == b'{"x":1}'
    with pytest.raises(JwsError, match="is not the thumbprint of auth_cert"):
        verify_by_cert(token, mallory.cert, "auth_cert")


def test_other_signers_payload_is_refused(alice: Party, mallory: Party) -> None:
    """Mallory's signature over Mallory's payload, presented under Alice's header."""
    forged = _segments(mallory.signer.sign(b'{"x":1}'))
    real = _segments(alice.signer.sign(b'{"x":1}'))
    with pytest.raises(JwsError):
        verify(".".join([real[0], forged[1], forged[2]]), alice.key_for)


THUMB = "<the signer's thumbprint>"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"alg": "none", "x5t#S256": THUMB}, id="alg-none"),
        pytest.param({"alg": "None", "x5t#S256": THUMB}, id="alg-None"),
        pytest.param({"alg": "HS256", "x5t#S256": THUMB}, id="alg-hs256"),
        pytest.param({"alg": "ES384", "x5t#S256": THUMB}, id="alg-es384"),
        pytest.param({"alg": "RS256", "x5t#S256": THUMB}, id="alg-rs256"),
        pytest.param({"alg": ["ES256"], "x5t#S256": THUMB}, id="alg-list"),
        pytest.param({"x5t#S256": THUMB}, id="alg-missing"),
        pytest.param({"alg": "ES256"}, id="no-thumbprint"),
        pytest.param({"alg": "ES256", "x5t#S256": 1}, id="thumbprint-not-text"),
        pytest.param({"alg": "ES256", "x5t#S256": THUMB, "crit": ["b64"]}, id="crit"),
    ],
)
def test_bad_headers_are_refused(alice: Party, header: dict[str, Any]) -> None:
    header = {k: alice.signer.thumbprint if v == THUMB else v for k, v in header.items()}
    with pytest.raises(JwsError):
        verify(_with_header(alice.signer.sign(b"{}"), header), alice.any_key)


def test_alg_none_without_signature_is_refused(alice: Party) -> None:
    header = b64url(json.dumps({"alg": "none", "x5t#S256": alice.signer.thumbprint}).encode())
    with pytest.raises(JwsError):
        verify(f"{header}.{b64url(b'{}')}.", alice.any_key)


def test_hs256_key_confusion_is_refused(alice: Party) -> None:
    """HMAC keyed with the public key (the classic algorithm-confusion forgery)."""
    secret = alice.cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url(json.dumps({"alg": "HS256", "x5t#S256": alice.signer.thumbprint}).encode())
    signing_input = f"{header}.{b64url(b'{}')}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(JwsError, match="algorithm"):
        verify(f"{signing_input}.{b64url(mac)}", alice.any_key)


def test_validly_signed_crit_header_is_refused(alice: Party) -> None:
    """RFC 7515 §4.1.11: the signature is good, the critical extension unknown to us."""
    token = _pyjwt_token(
        alice.key, b"{}", {"x5t#S256": alice.signer.thumbprint, "crit": ["exp"], "exp": 1}
    )
    with pytest.raises(JwsError, match="critical"):
        verify(token, alice.any_key)


def test_der_signature_is_refused(alice: Party) -> None:
    """A DER ECDSA signature (what OpenSSL emits) is not the JWS r||s form."""
    header, payload, _ = _segments(alice.signer.sign(b"{}"))
    der = alice.key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(JwsError, match="64 bytes"):
        verify(f"{header}.{payload}.{b64url(der)}", alice.any_key)


@pytest.mark.parametrize("length", [0, 32, 63, 65, 96, 128])
def test_signature_of_wrong_length_is_refused(alice: Party, length: int) -> None:
    header, payload, sig = _segments(alice.signer.sign(b"{}"))
    raw = (b64url_decode(sig) * 3)[:length]
    with pytest.raises(JwsError):
        verify(f"{header}.{payload}.{b64url(raw)}", alice.any_key)


@pytest.mark.parametrize(
    "r_s",
    [
        pytest.param(b"\x00" * 64, id="zero"),
        pytest.param(b"\xff" * 64, id="above-order"),
    ],
)
def test_degenerate_signature_values_are_refused(alice: Party, r_s: bytes) -> None:
    header, payload, _ = _segments(alice.signer.sign(b"{}"))
    with pytest.raises(JwsError):
        verify(f"{header}.{payload}.{b64url(r_s)}", alice.any_key)


def _insert(token: str, index: int, text: str) -> str:
    segs = _segments(token)
    segs[index] = segs[index][:5] + text + segs[index][5:]
    return ".".join(segs)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["header", "payload", "signature"])
@pytest.mark.parametrize(
    "junk",
    [
        pytest.param("!!!!", id="punctuation"),
        pytest.param("====", id="padding-inside"),
        pytest.param("+/+/", id="standard-alphabet"),
        pytest.param("    ", id="spaces"),
        pytest.param("\n\n\n\n", id="newlines"),
        pytest.param("éééé", id="non-ascii"),
        pytest.param("\x00", id="nul"),
    ],
)
def test_non_base64url_characters_are_refused(alice: Party, index: int, junk: str) -> None:
    with pytest.raises(JwsError):
        verify(_insert(alice.signer.sign(b'{"a":1}'), index, junk), alice.any_key)


def test_padded_signature_is_refused(alice: Party) -> None:
    with pytest.raises(JwsError):
        verify(alice.signer.sign(b"{}") + "==", alice.any_key)


def test_standard_base64_signature_is_refused(alice: Party) -> None:
    token = alice.signer.sign(b"{}")
    while "-" not in token.rsplit(".", 1)[1] and "_" not in token.rsplit(".", 1)[1]:
        token = alice.signer.sign(b"{}")
    header, payload, sig = _segments(token)
    standard = sig.replace("-", "+").replace("_", "/")
    with pytest.raises(JwsError):
        verify(f"{header}.{payload}.{standard}", alice.any_key)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: ".".join(t.split(".")[:2]), id="two-segments"),
        pytest.param(lambda t: t + ".", id="four-segments-empty"),
        pytest.param(lambda t: t + ".AAAA", id="four-segments"),
        pytest.param(lambda t: "..", id="empty-segments"),
        pytest.param(lambda t: t.replace(".", ".."), id="doubled-dots"),
        pytest.param(lambda t: t.encode(), id="bytes"),
        pytest.param(lambda t: None, id="none"),
        pytest.param(lambda t: 42, id="int"),
        pytest.param(lambda t: b64url(b"[1]") + "." + t.split(".", 1)[1], id="header-not-object"),
        pytest.param(lambda t: b64url(b"{") + "." + t.split(".", 1)[1], id="header-not-json"),
        pytest.param(lambda t: b64url(b"\xff") + "." + t.split(".", 1)[1], id="header-not-utf8"),
        pytest.param(lambda t: "x" * (64 * 2**20 + 1), id="huge"),
    ],
)
def test_malformed_tokens_are_refused(alice: Party, make: Any) -> None:
    token = make(alice.signer.sign(b"{}"))
    with pytest.raises(JwsError):
        verify(token, alice.any_key)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("a.b", id="two-segments"),
        pytest.param("!.b.c", id="bad-base64url"),
        pytest.param(f"{b64url(b'[]')}.b.c", id="not-an-object"),
        pytest.param(None, id="none"),
    ],
)
def test_unverified_header_refuses_junk(token: Any) -> None:
    with pytest.raises(JwsError):
        unverified_header(token)


@pytest.mark.parametrize(
    "token",
    [pytest.param("a.b", id="two-segments"), pytest.param("a.!.c", id="bad-base64url")],
)
def test_unverified_payload_refuses_junk(token: str) -> None:
    with pytest.raises(JwsError):
        unverified_payload(token)


def test_jws_error_code() -> None:
    err = JwsError("x")
    assert err.code == "Server.InvalidSignatureValue"
    assert err.status == 400


@given(text=st.text(max_size=300))
def test_any_text_verifies_or_raises_jws_error(alice: Party, text: str) -> None:
    try:
        verify(text, alice.any_key)
    except JwsError:
        return
    raise AssertionError("random text verified")


b64url_alphabet = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=120
)


@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "x5t#S256", "crit", "kid"]),
        st.one_of(
            st.sampled_from(["ES256", "none", "HS256"]),
            st.text(max_size=5),
            st.integers(),
            st.none(),
        ),
    ),
    payload=b64url_alphabet,
    sig=b64url_alphabet,
)
def test_structured_junk_raises_jws_error(
    alice: Party, header: dict[str, Any], payload: str, sig: str
) -> None:
    token = f"{b64url(json.dumps(header).encode())}.{payload}.{sig}"
    with pytest.raises(JwsError):
        verify(token, alice.any_key)


@given(data=st.data())
def test_any_single_character_change_is_refused(alice: Party, data: st.DataObject) -> None:
    token = alice.signer.sign(b'{"to":"MOF","amount":100}')
    i = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    c = data.draw(st.characters(codec="utf-8").filter(lambda ch: ch != token[i]))
    mutated = token[:i] + c + token[i + 1 :]
    try:
        verified = verify(mutated, alice.any_key)
    except JwsError:
        return
    # base64 leaves some trailing bits of the last character unused: only such a re-encoding of
    # the very same signature bytes may verify
    assert i == len(token) - 1
    assert verified.payload == b'{"to":"MOF","amount":100}'
    assert b64url_decode(mutated.rsplit(".", 1)[1]) == b64url_decode(token.rsplit(".", 1)[1])


def test_key_lookup_receives_the_thumbprint(alice: Party) -> None:
    seen: list[str] = []

    def key_for(thumbprint: str) -> ec.EllipticCurvePublicKey:
        seen.append(thumbprint)
        return alice.key.public_key()

    verify(alice.signer.sign(b"{}"), key_for)
    assert seen == [alice.signer.thumbprint]


def test_key_lookup_errors_propagate(alice: Party) -> None:
    def key_for(thumbprint: str) -> ec.EllipticCurvePublicKey:
        raise JwsError("unknown signer")

    with pytest.raises(JwsError, match="unknown signer"):
        verify(alice.signer.sign(b"{}"), key_for)


def test_signer_needs_a_certificate_for_its_thumbprint() -> None:
    key = generate_key()
    cert: x509.Certificate = self_signed_certificate(key, "x")
    assert Signer(key, cert).thumbprint == cert_thumbprint(cert)


def test_only_headers_of_our_size_are_remembered(alice: Party) -> None:
    """Headers are parsed (and were remembered) before any signature is checked: a peer's padded
    headers must not stay in memory (red team: 200 of under 1 MiB each held 3.8 GB for good)."""
    from exchange.protocol import jws

    ours = alice.signer.sign(b"{}")
    verify(ours, alice.any_key)
    assert ours.split(".")[0] in jws._HEADERS
    padded = b64url(canonical_bytes({"alg": "ES256", "p": [[]] * 1000}))
    with pytest.raises(JwsError):
        verify(f"{padded}.e30.AAAA", alice.any_key)
    assert padded not in jws._HEADERS
    assert unverified_header(f"{padded}.e30.AAAA")["p"] == [[]] * 1000  # still read, once
