"""The one peer-trust object of a security server: what a peer security server must prove.

:class:`PeerTrust` is built from one verified global configuration (as
:class:`~exchange.globalconf.verifier.TrustedGlobalConf` holds it) and is replaced whole when a new
version is put in force. It is the only code that accepts

- a peer's **authentication certificate** (:meth:`PeerTrust.authenticate`): it chains to an
  approved CA, has the authentication profile, and its SHA-256 fingerprint is registered for a
  security server (for the one a consumer dialled, when it says which);
- a peer's **HELLO** (:meth:`PeerTrust.admit`): a fresh "good" OCSP response for the
  authentication certificate, else the connection is refused; each signing certificate presented
  is accepted when it chains to an approved CA, has the signing profile, names its member, and
  has a fresh "good" OCSP response. A refused signing
  certificate is skipped, with its reason kept, on both ends of a connection alike;
- and answers **which key may sign for which member** on that connection
  (:meth:`AdmittedPeer.key_for`), re-judging at every message, against the ``now`` of that
  exchange, the validity periods and the freshness of the OCSP responses.

Both ends of a connection use it (``side`` only chooses the X-Road code of a refusal:
``Server.ServerProxy.*`` at the provider, ``Server.ClientProxy.*`` at the consumer). An open
connection keeps what its peer presented (:class:`~exchange.protocol.hello.Hello`) and is judged
again by the new object when the configuration changes.

What it remembers is bounded: at most :data:`MAX_JUDGED` signing certificates judged (the oldest
judged again when needed), and a refusal is kept as a plain copy and raised afresh (its own
``detail``), never the raised exception whose traceback would hold the HELLO or request it came
in with.

A CA that publishes no OCSP responder in the global configuration is not checked for revocation
(a decision of the central server's operator, visible in the configuration). Sans-IO: no
sockets, files or clocks; every decision takes ``now`` (seconds since the epoch).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.errors import (
    ConsumerInvalidSignature,
    ConsumerSslAuthenticationFailed,
    ExchangeError,
    InvalidSignatureValue,
    SslAuthenticationFailed,
)
from exchange.globalconf.document import GlobalConf, SecurityServerInfo
from exchange.identifiers import ClientId, MemberId, SecurityServerId
from exchange.protocol.hello import Hello
from exchange.protocol.jws import cert_thumbprint
from exchange.trust.keys import fingerprint
from exchange.trust.ocsp import (
    CertificateStatusUnknown,
    OcspError,
    OcspResponseStale,
    OcspStatus,
    verify_ocsp_response,
)
from exchange.trust.profiles import (
    check_auth_profile,
    check_sign_profile,
    member_id_of_signing_cert,
)
from exchange.trust.validation import CertificateError, describe, verify_chain
from exchange.utc import utc

Side = Literal["provider", "consumer"]
"""Which end of the connection judges: the provider port, or the consumer's peer connection."""

MAX_JUDGED: Final = 512
"""Signing certificates a :class:`PeerTrust` remembers having judged (peers may present others)."""

_E = TypeVar("_E", bound=ExchangeError)


@dataclass(frozen=True, slots=True)
class SignerKey:
    """A signing certificate accepted for one member, with the span in which it (and the CA
    that issued it) are valid."""

    thumbprint: str
    member: MemberId
    cert: x509.Certificate
    public_key: ec.EllipticCurvePublicKey
    valid_from: float
    valid_until: float


@dataclass(frozen=True, slots=True)
class _Held:
    """A certificate's OCSP status as stapled (None where its CA publishes no responder)."""

    status: OcspStatus | None
    response_der: bytes | None
    fresh_until: float = math.inf
    """Until when (seconds since the epoch) ``status`` is fresh enough: checked at every
    exchange, so computed once here."""


class PeerTrust:
    """Peer trust under one global configuration (see the module docstring)."""

    __slots__ = ("_signers", "conf", "freshness")

    def __init__(self, conf: GlobalConf) -> None:
        self.conf = conf
        self.freshness = conf.settings.ocsp_freshness_seconds
        # signing certificates judged under this configuration: by x5t#S256, oldest first
        self._signers: dict[str, SignerKey | CertificateError] = {}

    @property
    def judged(self) -> int:
        """How many signing certificates this object remembers having judged."""
        return len(self._signers)

    # -- the authentication certificate -----------------------------------------------------------

    def authenticate(
        self,
        cert: x509.Certificate | None,
        now: float,
        side: Side,
        *,
        expected: SecurityServerId | None = None,
    ) -> SecurityServerInfo:
        """The security server ``cert`` (the peer's TLS certificate) authenticates, or a refusal
        (``SslAuthenticationFailed`` of ``side``). With ``expected``, it must be that server's."""
        if cert is None:
            raise _auth_failed(side, "no authentication certificate presented")
        try:
            # (1) chains to a CA the configuration approves, valid now
            verify_chain(cert, self.conf.ca_certs(), utc(now))
            # (2) the authentication profile, never a signing certificate
            check_auth_profile(cert)
        except ExchangeError as exc:
            raise _auth_failed(side, "authentication certificate refused", exc.internal) from None
        # (3) its SHA-256 fingerprint is registered for a security server (the one we dialled)
        fp = fingerprint(cert)
        info = self.conf.server_by_fingerprint(fp)
        if info is None:
            raise _auth_failed(
                side,
                "authentication certificate is not registered for any security server",
                f"fingerprint {fp}",
            )
        if expected is not None and info.id != expected:
            raise _auth_failed(
                side,
                f"security server {expected} presented an authentication certificate that the "
                "global configuration does not register for it",
                f"fingerprint {fp} is registered for {info.id}",
            )
        return info

    # -- HELLO ------------------------------------------------------------------------------------

    def admit(
        self,
        auth_cert: x509.Certificate | None,
        hello: Hello,
        now: float,
        side: Side,
        *,
        expected: SecurityServerId | None = None,
    ) -> AdmittedPeer:
        """A connection's peer as its certificates and HELLO prove it, or the refusal that closes
        the connection. Signing certificates that fail are skipped (:attr:`AdmittedPeer.refused`
        says why)."""
        # (1)-(3) the authentication certificate (see authenticate)
        info = self.authenticate(auth_cert, now, side, expected=expected)
        assert auth_cert is not None
        # (4) it is not revoked: a fresh "good" OCSP response was stapled
        try:
            auth = self._staple(auth_cert, hello.staples, now)
        except OcspError as err:
            raise (err if side == "provider" else err.for_consumer()) from None
        admitted = AdmittedPeer(self, info, auth_cert, auth, side)
        for cert in hello.certs:
            thumb = cert_thumbprint(cert)
            try:
                # (5) chain to an approved CA, signing profile, the member it signs for
                key = self._signer(cert, thumb, now)
                # (6) not revoked
                held = self._staple(cert, hello.staples, now)
            except (CertificateError, OcspError) as err:
                admitted.refused[thumb] = _plain(_on_side(err, side))
                admitted.signers.pop(thumb, None)
                continue
            admitted.refused.pop(thumb, None)
            admitted.signers[thumb] = key
            admitted.held[thumb] = held
        return admitted

    def _signer(self, cert: x509.Certificate, thumb: str, now: float) -> SignerKey:
        known = self._signers.get(thumb)
        if known is None:
            known = _judge_signer(cert, thumb, self.conf, now)
            while len(self._signers) >= MAX_JUDGED:
                del self._signers[next(iter(self._signers))]
            self._signers[thumb] = known
        if isinstance(known, CertificateError):
            raise _plain(known)
        _check_period(known, now)
        return known

    def _staple(self, cert: x509.Certificate, staples: Mapping[str, bytes], now: float) -> _Held:
        responder = self.conf.ocsp_issuer(cert)
        if responder is None:
            return _Held(None, None)
        der = staples.get(cert_thumbprint(cert))
        if der is None:
            raise CertificateStatusUnknown(
                "no OCSP response was stapled for the certificate",
                internal=f"no staple for {describe(cert)}",
            )
        status = verify_ocsp_response(
            der, cert=cert, issuer=responder[0], now=utc(now), max_age_seconds=self.freshness
        )
        return _Held(status, der, status.fresh_until(self.freshness).timestamp())


@dataclass(slots=True)
class AdmittedPeer:
    """One connection's peer under one :class:`PeerTrust`: the server its authentication
    certificate identifies and the signing keys its HELLO presented."""

    trust: PeerTrust
    info: SecurityServerInfo
    auth_cert: x509.Certificate
    auth: _Held
    side: Side
    signers: dict[str, SignerKey] = field(default_factory=dict)
    refused: dict[str, ExchangeError] = field(default_factory=dict)
    held: dict[str, _Held] = field(default_factory=dict)

    @property
    def server(self) -> SecurityServerId:
        return self.info.id

    def hosts(self, client: ClientId) -> bool:
        """Whether the configuration registers ``client`` on this peer security server."""
        return client in self.info.clients

    def key_for(self, thumbprint: str, now: float) -> SignerKey:
        """The key this peer may sign with under ``thumbprint`` at ``now``, and its member; else
        the refusal (``InvalidSignatureValue`` of the side, or the certificate's OCSP error)."""
        # (1) a certificate this peer presented and that was accepted
        refused = self.refused.get(thumbprint)
        if refused is not None:
            raise _plain(refused)
        key = self.signers.get(thumbprint)
        if key is None:
            raise _signature_refused(
                self.side, "signed with a certificate the peer did not present"
            )
        # (2) it and its CA are valid now
        try:
            _check_period(key, now)
        except CertificateError as err:
            raise _on_side(err, self.side) from None
        # (3) the OCSP responses for the peer's authentication and signing certificates are
        # still fresh (docs/design.md §5)
        self._fresh(self.auth, self.auth_cert, now)
        self._fresh(self.held[thumbprint], key.cert, now)
        return key

    def _fresh(self, held: _Held, cert: x509.Certificate, now: float) -> None:
        if now > held.fresh_until:
            err = OcspResponseStale(
                "OCSP response is stale",
                internal=f"OCSP response held for {describe(cert)} was fresh until "
                f"{utc(held.fresh_until).isoformat()}",
            )
            raise _on_side(err, self.side)

    def keys_at(self, now: float) -> KeysAt:
        """This peer's keys as judged at ``now``: the
        :class:`~exchange.trustcore.messages.SignerKeys` of one exchange."""
        return KeysAt(self, now)

    def evidence(self) -> Iterator[tuple[x509.Certificate, bytes | None]]:
        """Each accepted certificate with its stapled OCSP response, for the message log."""
        yield self.auth_cert, self.auth.response_der
        for thumb, key in self.signers.items():
            yield key.cert, self.held[thumb].response_der


@dataclass(frozen=True, slots=True)
class KeysAt:
    """An admitted peer's signing keys at one reference time (see :meth:`AdmittedPeer.key_for`)."""

    peer: AdmittedPeer
    now: float

    def signer_key(self, thumbprint: str) -> SignerKey:
        return self.peer.key_for(thumbprint, self.now)


def _judge_signer(
    cert: x509.Certificate, thumb: str, conf: GlobalConf, now: float
) -> SignerKey | CertificateError:
    try:
        # chains to an approved CA, valid now
        ca = verify_chain(cert, conf.ca_certs(), utc(now))
        # the signing profile (a P-256 key), never an authentication certificate
        check_sign_profile(cert)
        member = member_id_of_signing_cert(cert)
    except CertificateError as exc:
        return CertificateError(
            f"signing certificate refused: {exc.message}", internal=exc.internal
        )
    except ExchangeError as exc:
        return CertificateError(f"signing certificate refused: {exc.message}")
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)  # check_sign_profile demands P-256
    return SignerKey(
        thumbprint=thumb,
        member=member,
        cert=cert,
        public_key=key,
        valid_from=max(cert.not_valid_before_utc, ca.not_valid_before_utc).timestamp(),
        valid_until=min(cert.not_valid_after_utc, ca.not_valid_after_utc).timestamp(),
    )


def _plain(err: _E) -> _E:
    """A copy of ``err`` to keep or raise: no traceback, cause or context (which would hold the
    frames, and so the HELLO or request, it was raised with), its own ``detail``."""
    copy = type(err).__new__(type(err), *err.args)
    copy.__dict__.update(err.__dict__)
    copy.detail = str(uuid.uuid4())
    return copy


def _check_period(key: SignerKey, now: float) -> None:
    if now > key.valid_until:
        raise CertificateError(
            "signing certificate has expired", internal=f"{describe(key.cert)} has expired"
        )
    if now < key.valid_from:
        raise CertificateError(
            "signing certificate is not yet valid",
            internal=f"{describe(key.cert)} is not yet valid",
        )


def _auth_failed(side: Side, message: str, internal: str | None = None) -> ExchangeError:
    if side == "provider":
        return SslAuthenticationFailed(message, internal=internal)
    return ConsumerSslAuthenticationFailed(message, internal=internal)


def _signature_refused(side: Side, message: str, internal: str | None = None) -> ExchangeError:
    if side == "provider":
        return InvalidSignatureValue(message, internal=internal)
    return ConsumerInvalidSignature(message, internal=internal)


def _on_side(err: ExchangeError, side: Side) -> ExchangeError:
    """A signing certificate's refusal as ``side`` reports a signature made with it: its OCSP
    error (``Server.ClientProxy.*`` at the consumer), else ``InvalidSignatureValue``."""
    if isinstance(err, OcspError):
        return err if side == "provider" else err.for_consumer()
    return _signature_refused(
        side, f"signed with a refused certificate: {err.message}", err.internal
    )
