"""Attacker peers for the integration tests, made of our own protocol building blocks.

- :class:`RogueClient` connects to a provider port as a security server does (a real
  :class:`~exchange.server.peer.PeerPool` over real mutual TLS) with whatever keys the attacker
  holds, presents whatever signing certificates it likes in HELLO and sends REQUEST frames whose
  signed documents it crafted (:func:`sign_request`) or altered (:func:`tamper_signature`).
- :class:`RogueProvider` listens on a provider port registered in the global configuration and
  answers each REQUEST as the test tells it (:class:`Incoming`): with responses bound to another
  request, badly signed, signed by the wrong member, or with altered bodies.

Nothing is mocked: the signatures are real ES256 JWS (:class:`~exchange.protocol.jws.Signer`),
the frames are EXM/1 (:func:`~exchange.protocol.frames.encode_frame`), the TLS is OpenSSL's.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509

from exchange.identifiers import ClientId, SecurityServerId, ServiceId
from exchange.protocol.canonical import b64url, b64url_decode
from exchange.protocol.frames import Frame, FrameDecoder, FrameKind, encode_frame
from exchange.protocol.hello import hello_meta
from exchange.protocol.jws import Signer, unverified_payload, verify
from exchange.protocol.messages import SignedRequest, SignedResponse, request_hash
from exchange.protocol.session import ResponseReceived
from exchange.server import tls
from exchange.server.core import SecurityServer
from exchange.server.peer import Answer, PeerConnection, PeerPool
from exchange.trustcore.peers import PeerTrust

MAX_FRAME = 10 * 2**20


def hello_frame(server_id: SecurityServerId | str, certs: Sequence[x509.Certificate]) -> bytes:
    """The HELLO a security server sends: its id and the signing certificates it presents."""
    return encode_frame(0, FrameKind.HELLO, hello_meta(str(server_id), certs, {}))


def sign_request(
    signer: Signer,
    *,
    client: ClientId,
    service: ServiceId,
    security_server: SecurityServerId,
    method: str = "GET",
    path: str = "/123456782",
    query: str = "",
    body: bytes = b"",
    message_id: str | None = None,
    timestamp_ms: int | None = None,
    purpose: str | None = None,
    user_id: str | None = None,
    issue: str | None = None,
    represented_party: str | None = None,
    client_server: SecurityServerId | None = None,
) -> tuple[str, SignedRequest]:
    """A validly signed request document, as a consumer security server would make it (or, with
    fields an honest consumer refuses, as a rogue peer would); sent by ``client_server``
    (default: the client member's server ``ss1``, as in the test federation)."""
    member = client.member
    request = SignedRequest(
        message_id=f"rogue-{uuid.uuid4()}" if message_id is None else message_id,
        client=client,
        service=service,
        method=method,
        path=path,
        query=query,
        headers=(),
        body_sha256=b64url(hashlib.sha256(body).digest()),
        body_length=len(body),
        user_id=user_id,
        purpose=purpose,
        issue=issue,
        represented_party=represented_party,
        security_server=security_server,
        client_server=client_server or SecurityServerId(*member.parts, "ss1"),
        timestamp_ms=int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
    )
    return signer.sign(request.canonical()), request


def tamper_signature(token: str) -> str:
    """The same JWS with one bit of its signature flipped (still well-formed base64url)."""
    header, payload, sig = token.split(".")
    raw = bytearray(b64url_decode(sig))
    raw[10] ^= 0x01
    return f"{header}.{payload}.{b64url(bytes(raw))}"


# --- the attacker as a client of a provider ----------------------------------------------------


class RogueClient:
    """A connection to ``target``'s provider port made with an attacker's choice of keys."""

    def __init__(
        self,
        target: SecurityServer,
        *,
        auth_cert: Path,
        auth_key: Path,
        cas: Sequence[x509.Certificate],
        presented: Sequence[x509.Certificate],
        claimed_server: SecurityServerId | str = "PS/GOV/ROGUE/ss1",
    ) -> None:
        conf = target.trusted.current
        assert conf is not None
        trust = PeerTrust(conf)
        meta = hello_meta(str(claimed_server), presented, {})
        self.pool = PeerPool(
            target.config.server_id,
            f"127.0.0.1:{target.provider_port}",
            ssl_context=tls.peer_client_context(auth_cert, auth_key, None, cas),
            hello=lambda: meta,
            trust=lambda: trust,
            size=1,
            connect_timeout=5.0,
            max_frame=MAX_FRAME,
        )

    async def send(self, token: str, body: bytes = b"") -> tuple[Answer, PeerConnection]:
        return await self.pool.request({"jws": token}, body, 10.0)

    async def send_meta(
        self, meta: dict[str, Any], body: bytes = b""
    ) -> tuple[Answer, PeerConnection]:
        return await self.pool.request(meta, body, 10.0)

    def close(self) -> None:
        self.pool.close()


def read_signed_response(frame: Answer, conn: PeerConnection) -> tuple[SignedResponse, Any]:
    """The provider's answer: its signature verifies with a certificate it presented."""
    assert isinstance(frame, ResponseReceived), frame.meta

    def key_for(thumb: str) -> Any:
        assert conn.peer is not None
        return conn.peer.signers[thumb].public_key

    verified = verify(frame.meta["jws"], key_for)
    response = SignedResponse.from_payload(verified.payload)
    assert response.body_sha256 == b64url(hashlib.sha256(frame.body).digest())
    return response, orjson.loads(frame.body) if frame.body else None


# --- the attacker as a provider ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Incoming:
    """One REQUEST a rogue provider received, with what it needs to answer (or mis-answer) it."""

    frame: Frame
    token: str
    request: SignedRequest
    transport: asyncio.Transport

    @property
    def request_hash(self) -> str:
        return request_hash(self.token)

    def reply(self, response_jws: str, body: bytes) -> None:
        self.transport.write(
            encode_frame(self.frame.stream_id, FrameKind.RESPONSE, {"jws": response_jws}, body)
        )


def sign_response(
    signer: Signer,
    bound_to: Incoming,
    body: bytes,
    *,
    signed_body: bytes | None = None,
    request_hash_value: str | None = None,
    status: int = 200,
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),),
) -> str:
    """A validly signed response bound to ``bound_to`` unless told otherwise."""
    digest_of = body if signed_body is None else signed_body
    response = SignedResponse(
        message_id=bound_to.request.message_id,
        request_id=str(uuid.uuid4()),
        request_hash=bound_to.request_hash if request_hash_value is None else request_hash_value,
        status=status,
        headers=headers,
        body_sha256=b64url(hashlib.sha256(digest_of).digest()),
        body_length=len(digest_of),
        error_type=None,
        error_message=None,
        policy_version=None,
        released_fields=None,
        timestamp_ms=int(time.time() * 1000),
    )
    return signer.sign(response.canonical())


Reply = Callable[[Incoming], None]


class _RogueProviderConnection(asyncio.Protocol):
    def __init__(self, owner: RogueProvider) -> None:
        self.owner = owner
        self.decoder = FrameDecoder(MAX_FRAME)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.owner.transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.owner.transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for frame in self.decoder.feed(data):
            if frame.kind is FrameKind.HELLO:
                self.transport.write(self.owner.hello)
            elif frame.kind is FrameKind.REQUEST:
                token = frame.meta["jws"]
                request = SignedRequest.from_payload(unverified_payload(token))
                self.owner.answer(Incoming(frame, token, request, self.transport))


class RogueProvider:
    """A provider port that answers as :attr:`answer` says (set it per test)."""

    def __init__(
        self,
        server_id: SecurityServerId,
        *,
        auth_cert: Path,
        auth_key: Path,
        cas: Sequence[x509.Certificate],
        presented: Sequence[x509.Certificate],
    ) -> None:
        self.server_id = server_id
        self.ssl_context = tls.provider_context(auth_cert, auth_key, None, cas)
        self.hello = hello_frame(server_id, presented)
        self.answer: Reply = lambda incoming: None
        self.transports: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _RogueProviderConnection(self), "127.0.0.1", 0, ssl=self.ssl_context
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for transport in list(self.transports):
                transport.close()
            await self._server.wait_closed()
