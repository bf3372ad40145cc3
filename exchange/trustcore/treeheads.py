"""What a message log's tree head proves, and who may sign one (docs/design.md §8).

A log belongs to the security server that created it, its *owner*: the log's id and the owner's
server id are in every tree head it signs (:func:`tree_head_payload`), and only a signing key of
the owner's member may sign them, whichever of its keys was current (key rotation) and nothing
else: not another member's signing certificate (those are in the log too, to check the requests
and responses), not an authentication, TSA or CA certificate. The expected owner comes from
outside the log file, which an attacker may control: the server's configuration, or the
auditor's own knowledge (``--owner``).

:func:`verify_owner_signature` is that rule for any document the owner signs for its log (tree
heads, archive manifests); :func:`verify_tree_head` adds what a tree head states. The payload is
read in one place, :func:`read_tree_head` (:func:`stated_tree_head` for a head whose signature
is checked apart or not at all: proofs, evidence). :func:`verify_head_timestamp` checks the
RFC 3161 time-stamp that says when a head existed.

No IO.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import orjson
from cryptography import x509

from exchange.errors import ExchangeError, VerificationFailed
from exchange.identifiers import SecurityServerId
from exchange.protocol.canonical import b64url, b64url_decode, canonical_bytes
from exchange.protocol.jws import unverified_payload
from exchange.trust.timestamp import (
    TimestampError,
    TimestampInfo,
    TimestampInvalid,
    verify_timestamp_token,
)
from exchange.trustcore.messages import SignerKey, SignerKeys, verify_jws

HASH_SIZE = 32
TIMESTAMP_SKEW_MS: Final = 60_000
"""How far a time-stamp's genTime may precede its tree head's signing time (clock skew)."""


def tree_head_payload(
    log_id: str, owner: SecurityServerId, size: int, root: bytes, signed_at: int
) -> bytes:
    """The canonical bytes a tree head's JWS signs: log id, owner, size, root, time (unix ms).

    Both callers (the log signing its head, :func:`verify_tree_head` rebuilding it from the
    integers and strings it checked) give typed values that cannot be floats: the float walk is
    skipped, as for the signed messages."""
    return canonical_bytes(
        {
            "log": log_id,
            "owner": str(owner),
            "root": b64url(root),
            "signed_at": signed_at,
            "size": size,
        },
        typed=True,
    )


@dataclass(frozen=True, slots=True)
class VerifiedTreeHead:
    """A tree head signed by a key of its log's owner."""

    log_id: str
    owner: SecurityServerId
    size: int
    root: bytes
    signed_at: int
    signer: SignerKey


def verify_owner_signature(
    token: str, keys: SignerKeys, owner: SecurityServerId
) -> tuple[bytes, SignerKey]:
    """The payload of ``token`` once it is signed by a signing key of ``owner``'s member, and
    that key; else VerificationFailed."""
    # (1) the JWS verifies with a key the caller trusts as a signing key (profile, CA, time)
    try:
        verified, signer = verify_jws(token, keys)
    except ExchangeError as exc:
        raise VerificationFailed(f"signature: {exc.message}") from None
    # (2) that key is one of the owner's member, the only one that signs for its log
    if signer.member != owner.owner:
        raise VerificationFailed(
            f"signed by member {signer.member}, not by the log's owner {owner.owner} (server "
            f"{owner})"
        )
    return verified.payload, signer


def verify_tree_head(
    token: str, keys: SignerKeys, *, owner: SecurityServerId, log_id: str | None
) -> VerifiedTreeHead:
    """A tree head of the log ``log_id`` (any, when None) of ``owner``; else VerificationFailed."""
    # (1)+(2) signed by a signing key of the owner's member
    payload, signer = verify_owner_signature(token, keys, owner)
    head = read_tree_head(payload)
    # (3) it names the expected owner: a head of another server's log is not this log's
    if head.owner != str(owner):
        raise VerificationFailed(f"the tree head names owner {head.owner!r}, not {owner}")
    # (4) and this log
    if log_id is not None and head.log_id != log_id:
        raise VerificationFailed(
            f"the tree head was signed for log {head.log_id!r}, not {log_id!r}"
        )
    # (5) in the canonical form, so that nothing else rides along in the signed bytes
    if payload != tree_head_payload(head.log_id, owner, head.size, head.root, head.signed_at):
        raise VerificationFailed("the signed payload is not a canonical tree head")
    return VerifiedTreeHead(head.log_id, owner, head.size, head.root, head.signed_at, signer)


@dataclass(frozen=True, slots=True)
class StatedTreeHead:
    """What a tree head's payload states, not who signed it: log id, owner (as written), size,
    root and signing time (unix ms)."""

    log_id: str
    owner: str
    size: int
    root: bytes
    signed_at: int


def read_tree_head(payload: bytes) -> StatedTreeHead:
    """The tree head ``payload`` (a tree head JWS's payload) states: a JSON object with a string
    log and owner, integer size and signing time and a SHA-256 root in canonical base64url; else
    VerificationFailed. The one reader of a tree head's payload, signed or not."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise VerificationFailed("the signed payload is not JSON") from None
    if not isinstance(document, dict):
        raise VerificationFailed("the signed payload is not a tree head")
    log_id, owner, size, signed_at, root_text = (
        document.get(k) for k in ("log", "owner", "size", "signed_at", "root")
    )
    if not (
        isinstance(log_id, str)
        and isinstance(owner, str)
        and _is_int(size)
        and _is_int(signed_at)
        and isinstance(root_text, str)
    ):
        raise VerificationFailed("the signed payload is not a tree head")
    assert isinstance(size, int) and isinstance(signed_at, int)
    try:
        root = b64url_decode(root_text)
    except ValueError:
        root = b""
    if len(root) != HASH_SIZE or b64url(root) != root_text:
        raise VerificationFailed("the signed payload is not a tree head (root)")
    return StatedTreeHead(log_id, owner, size, root, signed_at)


def stated_tree_head(token: object) -> StatedTreeHead:
    """What the tree head JWS ``token`` states, its signature unchecked (to name a head, to
    compare a proof's root with it, or to know when its signer must have been valid); else
    VerificationFailed. :func:`verify_tree_head` is the check of who signed it."""
    if not isinstance(token, str):
        raise VerificationFailed("the tree head is not a compact JWS (not a string)")
    try:
        payload = unverified_payload(token)
    except ExchangeError as exc:
        raise VerificationFailed(f"the tree head is not a compact JWS ({exc.message})") from None
    return read_tree_head(payload)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def timestamp_digest(token: str) -> bytes:
    """What a tree head's time-stamp stamps: SHA-256 of its compact JWS (ASCII bytes)."""
    return hashlib.sha256(token.encode("ascii")).digest()


def verify_head_timestamp(
    stamp: bytes,
    token: str,
    signed_at: int,
    *,
    tsa_certs: Sequence[x509.Certificate],
    ca_certs: Sequence[x509.Certificate],
) -> TimestampInfo:
    """What the RFC 3161 token ``stamp`` proves of the tree head ``token`` (its JWS, signed at
    ``signed_at``, unix ms): that it existed at the token's genTime; else VerificationFailed.
    The head itself is the caller's to verify (:func:`verify_tree_head`)."""
    # (1) the token stamps SHA-256 of the head's JWS, signed by an approved TSA whose
    #     certificate an approved CA issued (RFC 3161 §2.4.2)
    try:
        digest = timestamp_digest(token)
    except UnicodeEncodeError:
        raise VerificationFailed("the tree head is not a compact JWS (not ASCII)") from None
    try:
        info = verify_timestamp_token(stamp, digest=digest, tsa_certs=tsa_certs, ca_certs=ca_certs)
    except TimestampError as exc:
        if exc.code == f"{TimestampInvalid.code}.Imprint":
            detail = exc.internal or exc.message
            raise VerificationFailed(
                f"time-stamp is over another hash than the tree head ({detail})"
            ) from None
        raise VerificationFailed(f"time-stamp does not verify: {exc.message}") from None
    # (2) a time-stamp over a tree head cannot predate it, beyond the allowed clock skew
    stamped = int(info.gen_time.timestamp() * 1000)
    if stamped < signed_at - TIMESTAMP_SKEW_MS:
        signed = dt.datetime.fromtimestamp(signed_at / 1000, dt.UTC)
        raise VerificationFailed(
            f"time-stamp genTime {info.gen_time.isoformat()} precedes the tree head's signing "
            f"time {signed.isoformat()} by more than {TIMESTAMP_SKEW_MS // 1000} s"
        )
    return info
