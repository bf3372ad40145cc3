"""OCSP (RFC 6960) for Exchange's CA: requests, responses, their verification, stapled responses.

- :func:`build_ocsp_request`: the DER request a security server sends for one certificate.
- :func:`build_ocsp_response`: the responder's core; answers one DER request from the CA's
  register (a ``store_lookup`` callable), signed by a delegated responder certificate
  (:func:`issue_ocsp_responder_cert`) or by the CA itself. Bad input gets an unsuccessful
  response (``malformedRequest``, ``unauthorized``), never an exception.
- :func:`verify_ocsp_response`: a receiver's decision on a (stapled) response: returns an
  :class:`OcspStatus` only for a fresh, correctly signed "good" answer about the certificate;
  anything else raises an :class:`OcspError` with its own code.
- :class:`OcspStapleCache`: the latest verified response per certificate; a security server keeps
  its own certificates' staples there (refreshing them ahead of time) and the peers' it received.

Error codes are the provider side's (``Server.ServerProxy.<Name>``, HTTP 403); a consumer
security server that refuses a provider's certificate re-raises with
:meth:`OcspError.for_consumer`, which gives the same error with the ``Server.ClientProxy.`` prefix.

Sans-IO: no sockets, files or SQLite; ``now`` is always a parameter (timezone-aware UTC). The HTTP
responder and fetcher are in ``exchange.trust.ocsp_service``, the register in
``exchange.trust.revocation``. Limitations: one certificate per request (cryptography parses only
single-request ``OCSPRequest``s; others are answered ``malformedRequest``); ``producedAt`` is set
by cryptography from the system clock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, NoReturn, Self

from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from exchange.errors import ConfigurationError
from exchange.protocol.jws import cert_thumbprint
from exchange.trust.ca import BACKDATE, CertificateAuthority
from exchange.trust.profiles import key_usage
from exchange.trust.validation import CertificateError, check_validity, describe

DEFAULT_SKEW_SECONDS: Final = 60
"""Clock skew tolerated on ``thisUpdate`` (docs/design.md §12)."""
MAX_RESPONSE_BYTES: Final = 64 * 1024
"""The largest OCSP response taken from a responder, or carried in a service declaration."""
REFRESH_FRACTION: Final = 0.5
"""A staple is refreshed once this fraction of its usable life has passed."""
_NONCE_MAX: Final = 32
"""RFC 8954 §2.1: a nonce is 1 to 32 octets."""
_SIGNATURE_HASH: Final = hashes.SHA256()


# --- errors ----------------------------------------------------------------------------------


class OcspError(CertificateError):
    """A certificate's OCSP status is not fresh-good (provider codes; see :meth:`for_consumer`)."""

    status = 403

    def for_consumer(self) -> Self:
        """The same error as a consumer security server reports it (``Server.ClientProxy.*``)."""
        clone = type(self).__new__(type(self), *self.args)
        clone.__dict__.update(self.__dict__)
        clone.code = self.code.replace("Server.ServerProxy.", "Server.ClientProxy.", 1)  # type: ignore[misc]
        return clone


class CertificateRevoked(OcspError):
    """The responder says the certificate is revoked (RFC 6960 §2.2 ``revoked``)."""

    code = "Server.ServerProxy.CertificateRevoked"

    def __init__(
        self,
        message: str,
        *,
        revoked_at: dt.datetime,
        reason: x509.ReasonFlags | None,
        internal: str | None = None,
    ) -> None:
        super().__init__(message, internal=internal)
        self.revoked_at = revoked_at
        self.reason = reason


class CertificateStatusUnknown(OcspError):
    """The responder does not know the certificate, or no response is held for it."""

    code = "Server.ServerProxy.CertificateStatusUnknown"


class OcspResponseStale(OcspError):
    """The response is older than the freshness limit or past its ``nextUpdate``."""

    code = "Server.ServerProxy.OcspResponseStale"


class OcspResponseInvalid(OcspError):
    """Malformed, unsuccessful, for another certificate, badly signed, or not yet valid."""

    code = "Server.ServerProxy.OcspResponseInvalid"


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertStatus:
    """What the CA's register says about one serial number: good, or revoked when and why."""

    serial: int
    revoked_at: dt.datetime | None = None
    reason: x509.ReasonFlags | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


StoreLookup = Callable[[int], CertStatus | None]
"""Serial number to its status; None for a serial the CA never issued (answered ``unknown``)."""


@dataclass(frozen=True, slots=True)
class OcspStatus:
    """A verified "good" OCSP response for one certificate, with the DER to staple."""

    serial: int
    this_update: dt.datetime
    next_update: dt.datetime | None
    produced_at: dt.datetime
    responder: x509.Certificate
    response_der: bytes = field(repr=False)

    def fresh_until(self, max_age_seconds: int) -> dt.datetime:
        """When it stops being accepted: ``thisUpdate + max age``, or ``nextUpdate`` if sooner."""
        limit = self.this_update + dt.timedelta(seconds=max_age_seconds)
        return limit if self.next_update is None else min(limit, self.next_update)

    def is_fresh(self, now: dt.datetime, max_age_seconds: int) -> bool:
        return now <= self.fresh_until(max_age_seconds)

    def needs_refresh(self, now: dt.datetime, freshness_seconds: int) -> bool:
        """True once :data:`REFRESH_FRACTION` of its usable life has passed."""
        life = self.fresh_until(freshness_seconds) - self.this_update
        return now >= self.this_update + life * REFRESH_FRACTION


# --- CertID (RFC 6960 §4.1.1) ----------------------------------------------------------------

_CERT_ID_HASHES: Final = (hashes.SHA1, hashes.SHA256, hashes.SHA384, hashes.SHA512)
_CERT_ID_DEFAULT: Final = hashes.SHA1()


def _issuer_hashes(
    issuer: x509.Certificate, algorithm: hashes.HashAlgorithm
) -> tuple[bytes, bytes]:
    """``issuerNameHash`` and ``issuerKeyHash`` of the certificates ``issuer`` issued (RFC 6960
    §4.1.1): the hash of its subject name (DER) and of its public key (the BIT STRING's value in
    its SubjectPublicKeyInfo, without the unused-bits count)."""
    name = issuer.subject.public_bytes()
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_bits = bytes(asn1_keys.PublicKeyInfo.load(spki)["public_key"].contents[1:])
    return _digest(algorithm, name), _digest(algorithm, key_bits)


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


def build_ocsp_request(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    algorithm: hashes.HashAlgorithm = _CERT_ID_DEFAULT,
    nonce: bytes | None = None,
) -> bytes:
    """The DER ``OCSPRequest`` (RFC 6960 §4.1) for ``cert``, optionally with a nonce (RFC 8954).

    The CertID hashes are SHA-1 by default, as RFC 5019 §2.1.1 requires of clients and as
    ``openssl ocsp`` does: they only name the certificate (the response's signature is what
    protects it) and the responder answers with the client's CertID. Staples are fetched without
    a nonce: they are produced ahead of time and shown to many peers.
    """
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm)
    if nonce is not None:
        if not 1 <= len(nonce) <= _NONCE_MAX:
            raise ValueError(f"an OCSP nonce is 1 to {_NONCE_MAX} octets (RFC 8954 §2.1)")
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


# --- the responder ---------------------------------------------------------------------------


class _MalformedRequest(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Request:
    serial: int
    name_hash: bytes
    key_hash: bytes
    algorithm: hashes.HashAlgorithm
    nonce: bytes | None


def _parse_request(request_der: bytes) -> _Request:
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        parsed = _Request(
            serial=request.serial_number,
            name_hash=request.issuer_name_hash,
            key_hash=request.issuer_key_hash,
            algorithm=request.hash_algorithm,
            nonce=_nonce(request.extensions),
        )
    except (ValueError, NotImplementedError, UnsupportedAlgorithm, x509.DuplicateExtension):
        raise _MalformedRequest from None
    # RFC 5280 §4.1.2.2: serial numbers are positive; a hash we do not accept for CertIDs
    if parsed.serial < 0 or not isinstance(parsed.algorithm, _CERT_ID_HASHES):
        raise _MalformedRequest
    return parsed


def _nonce(extensions: x509.Extensions) -> bytes | None:
    try:
        nonce = extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None
    if not 1 <= len(nonce) <= _NONCE_MAX:
        raise ValueError("nonce length out of range")
    return nonce


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return response.public_bytes(serialization.Encoding.DER)


def build_ocsp_response(
    request_der: bytes,
    *,
    ca: x509.Certificate,
    responder_key: ec.EllipticCurvePrivateKey,
    responder_cert: x509.Certificate,
    store_lookup: StoreLookup,
    now: dt.datetime,
    validity_seconds: int = 3600,
) -> bytes:
    """The DER ``OCSPResponse`` (RFC 6960 §4.2) answering ``request_der`` about ``ca``'s certs.

    ``ca`` is the CA certificate only: with a delegated responder the CA key need not be on the
    responder. ``responder_cert`` is ``ca`` itself or a certificate from
    :func:`issue_ocsp_responder_cert` (check the pair once with :func:`check_responder`).
    ``thisUpdate`` is ``now`` and ``nextUpdate`` ``now + validity_seconds``. A request that does
    not parse is answered ``malformedRequest``, one about another CA ``unauthorized`` (§2.3).
    """
    if validity_seconds < 1:
        raise ValueError("validity_seconds must be at least 1")
    try:
        request = _parse_request(request_der)
    except _MalformedRequest:
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    if (request.name_hash, request.key_hash) != _issuer_hashes(ca, request.algorithm):
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    this_update = now.replace(microsecond=0)
    builder = _add_status(
        ocsp.OCSPResponseBuilder(),
        request,
        store_lookup(request.serial),
        this_update,
        this_update + dt.timedelta(seconds=validity_seconds),
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, responder_cert)
    if responder_cert != ca:
        builder = builder.certificates([responder_cert])
    if request.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(request.nonce), critical=False)
    response = builder.sign(responder_key, _SIGNATURE_HASH)
    return response.public_bytes(serialization.Encoding.DER)


def _add_status(
    builder: ocsp.OCSPResponseBuilder,
    request: _Request,
    status: CertStatus | None,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> ocsp.OCSPResponseBuilder:
    # RFC 6960 §2.2: good, revoked (with time and reason), or unknown to this responder
    if status is None:
        cert_status, revoked_at, reason = ocsp.OCSPCertStatus.UNKNOWN, None, None
    elif status.revoked_at is not None:
        cert_status, revoked_at, reason = (
            ocsp.OCSPCertStatus.REVOKED,
            status.revoked_at.replace(microsecond=0),
            status.reason,
        )
    else:
        cert_status, revoked_at, reason = ocsp.OCSPCertStatus.GOOD, None, None
    return builder.add_response_by_hash(
        request.name_hash,
        request.key_hash,
        request.serial,
        request.algorithm,
        cert_status,
        this_update,
        next_update,
        revoked_at,
        reason,
    )


def issue_ocsp_responder_cert(
    ca: CertificateAuthority,
    public_key: ec.EllipticCurvePublicKey,
    *,
    days: int = 30,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A delegated OCSP responder certificate (RFC 6960 §4.2.2.2) for ``public_key``.

    EKU id-kp-OCSPSigning, KeyUsage digitalSignature, and id-pkix-ocsp-nocheck (§4.2.2.2.1):
    clients trust it for its lifetime without asking about its own status, so keep ``days`` short.
    """
    if days < 1:
        raise ValueError("a certificate must be valid for at least one day")
    now = now or dt.datetime.now(dt.UTC)
    ca_names = ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ca_name = str(ca_names[0].value) if ca_names else "Exchange CA"
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{ca_name} OCSP")]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_DIGITAL_SIGNATURE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca.key, _SIGNATURE_HASH)
    )


_DIGITAL_SIGNATURE: Final = key_usage("digitalSignature")


def check_responder(
    ca: x509.Certificate,
    responder_key: ec.EllipticCurvePrivateKey,
    responder_cert: x509.Certificate,
    now: dt.datetime,
) -> None:
    """Raise :class:`ConfigurationError` unless clients would accept what this pair signs."""
    if responder_cert.public_key() != responder_key.public_key():
        raise ConfigurationError(
            f"the OCSP responder key is not the key of {describe(responder_cert)}"
        )
    if responder_cert == ca:
        return
    try:
        _check_delegate(responder_cert, ca, now)
    except OcspResponseInvalid as exc:
        raise ConfigurationError(f"OCSP responder certificate refused: {exc.internal}") from None


# --- verification ----------------------------------------------------------------------------


def _invalid(message: str, internal: str | None = None) -> NoReturn:
    raise OcspResponseInvalid(message, internal=internal)


def verify_ocsp_response(
    response_der: bytes,
    *,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    now: dt.datetime,
    max_age_seconds: int,
    skew_seconds: int = DEFAULT_SKEW_SECONDS,
) -> OcspStatus:
    """Accept ``response_der`` only as a fresh, authentic "good" answer about ``cert``.

    RFC 6960 §3.2. ``issuer`` is the approved CA that issued ``cert`` (from
    ``validation.verify_chain``); ``max_age_seconds`` is the global configuration's OCSP
    freshness. Raises :class:`OcspResponseInvalid`, :class:`OcspResponseStale`,
    :class:`CertificateRevoked` or :class:`CertificateStatusUnknown`.
    """
    what = describe(cert)
    with _unparsable_is_invalid(what):
        # (1) a successful OCSPResponse with a basic response (RFC 6960 §4.2.1)
        response = _load_successful(response_der, what)
        # (2) it is about this certificate: CertID serial, issuer name and key hashes (§4.1.1,
        # §3.2 (1))
        single = _single_response_for(response, cert, issuer)
        # (3) signed by the issuer CA or by its delegated OCSP responder (§4.2.2.2, §3.2 (2)-(4))
        responder = _authorized_responder(response, issuer, now)
        if not _signature_valid(response, responder):
            _invalid(
                "OCSP response signature does not verify",
                f"OCSP response for {what}: bad signature",
            )
        # (4) fresh: thisUpdate not ahead of now beyond the skew, nor older than max age;
        # nextUpdate not passed (§3.2 (5), (6))
        this_update, next_update = _check_times(single, what, now, max_age_seconds, skew_seconds)
        # (5) the status: good is accepted; revoked and unknown are refused (§2.2)
        _require_good(single, what)
        produced_at = response.produced_at_utc
    return OcspStatus(
        serial=cert.serial_number,
        this_update=this_update,
        next_update=next_update,
        produced_at=produced_at,
        responder=responder,
        response_der=bytes(response_der),
    )


@contextlib.contextmanager
def _unparsable_is_invalid(what: str) -> Iterator[None]:
    """cryptography parses parts of a response (embedded certificates, extensions) only when
    they are used; whatever fails to parse then makes the response invalid. (A name attribute
    with a non-string ASN.1 type raises KeyError from ``x509.Name``.)"""
    try:
        yield
    except (ValueError, KeyError, UnsupportedAlgorithm, x509.DuplicateExtension) as exc:
        _invalid("malformed OCSP response", f"OCSP response for {what} does not parse: {exc}")


def _load_successful(response_der: bytes, what: str) -> ocsp.OCSPResponse:
    try:
        response = ocsp.load_der_ocsp_response(response_der)
    except ValueError as exc:
        _invalid("malformed OCSP response", f"OCSP response for {what} does not parse: {exc}")
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        name = response.response_status.name.lower()
        _invalid(f"OCSP responder answered {name}", f"OCSP response for {what}: status {name}")
    return response


def _single_response_for(
    response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse:
    for single in response.responses:
        if single.serial_number != cert.serial_number:
            continue
        algorithm = single.hash_algorithm
        if not isinstance(algorithm, _CERT_ID_HASHES):
            continue
        if (single.issuer_name_hash, single.issuer_key_hash) == _issuer_hashes(issuer, algorithm):
            return single
    _invalid(
        "OCSP response is not about this certificate",
        f"OCSP response has no status for {describe(cert)} (serial {cert.serial_number:x}) "
        f"issued by {describe(issuer)}",
    )


def _matches_responder_id(response: ocsp.OCSPResponse, candidate: x509.Certificate) -> bool:
    # RFC 6960 §4.2.2.3: byKey is the SHA-1 of the key's BIT STRING, as in RFC 5280 SKI method 1
    if response.responder_key_hash is not None:
        key_hash = x509.SubjectKeyIdentifier.from_public_key(candidate.public_key()).digest
        return key_hash == response.responder_key_hash
    return response.responder_name == candidate.subject


def _authorized_responder(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, now: dt.datetime
) -> x509.Certificate:
    candidates = [issuer, *response.certificates]
    responder = next((c for c in candidates if _matches_responder_id(response, c)), None)
    if responder is None:
        _invalid(
            "OCSP response signed by an unknown responder",
            f"OCSP responder of a response about a certificate of {describe(issuer)} is neither "
            "that CA nor a certificate included in the response",
        )
    if responder != issuer:
        _check_delegate(responder, issuer, now)
    return responder


def _check_delegate(
    responder: x509.Certificate, issuer: x509.Certificate, now: dt.datetime
) -> None:
    """RFC 6960 §4.2.2.2: issued directly by the CA, with id-kp-OCSPSigning, valid at ``now``."""
    who = describe(responder)
    try:
        responder.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        _invalid(
            "OCSP responder not authorised by the certificate's CA",
            f"OCSP responder {who} was not issued by {describe(issuer)}",
        )
    if ExtendedKeyUsageOID.OCSP_SIGNING not in _purposes(responder):
        _invalid(
            "OCSP responder certificate lacks OCSPSigning",
            f"OCSP responder {who} has no id-kp-OCSPSigning extended key usage",
        )
    try:
        check_validity(responder, now, "OCSP responder certificate")
    except CertificateError as exc:
        _invalid(exc.message, exc.internal)


def _purposes(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        return []


def _signature_valid(response: ocsp.OCSPResponse, responder: x509.Certificate) -> bool:
    key = responder.public_key()
    signature, data = response.signature, response.tbs_response_bytes
    try:
        algorithm = response.signature_hash_algorithm
        if isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        return False
    return True


def _check_times(
    single: ocsp.OCSPSingleResponse,
    what: str,
    now: dt.datetime,
    max_age_seconds: int,
    skew_seconds: int,
) -> tuple[dt.datetime, dt.datetime | None]:
    this_update, next_update = single.this_update_utc, single.next_update_utc
    if this_update > now + dt.timedelta(seconds=skew_seconds):
        _invalid(
            "OCSP response is not yet valid (clocks differ?)",
            f"OCSP response for {what}: thisUpdate {this_update.isoformat()} is after "
            f"{now.isoformat()} beyond the {skew_seconds} s skew",
        )
    if now - this_update > dt.timedelta(seconds=max_age_seconds):
        raise OcspResponseStale(
            "OCSP response is stale",
            internal=f"OCSP response for {what}: thisUpdate {this_update.isoformat()} is older "
            f"than {max_age_seconds} s at {now.isoformat()}",
        )
    if next_update is not None and now > next_update:
        raise OcspResponseStale(
            "OCSP response is stale",
            internal=f"OCSP response for {what}: nextUpdate {next_update.isoformat()} has passed "
            f"at {now.isoformat()}",
        )
    return this_update, next_update


def _require_good(single: ocsp.OCSPSingleResponse, what: str) -> None:
    status = single.certificate_status
    if status == ocsp.OCSPCertStatus.REVOKED:
        revoked_at = single.revocation_time_utc
        assert revoked_at is not None
        reason = single.revocation_reason
        why = f" ({reason.value})" if reason is not None else ""
        raise CertificateRevoked(
            f"certificate revoked at {revoked_at.isoformat()}{why}",
            revoked_at=revoked_at,
            reason=reason,
            internal=f"certificate {what} revoked at {revoked_at.isoformat()}{why}",
        )
    if status != ocsp.OCSPCertStatus.GOOD:
        raise CertificateStatusUnknown(
            "certificate status unknown to the OCSP responder",
            internal=f"OCSP responder does not know certificate {what}",
        )


# --- stapled responses -----------------------------------------------------------------------


class OcspStapleCache:
    """The latest verified "good" OCSP response per certificate, keyed by ``x5t#S256``.

    :meth:`put` takes response bytes and keeps them only if :func:`verify_ocsp_response` accepts
    them and they are newer than what is held; a revoked or unknown answer drops the entry.
    :meth:`get` and :meth:`require` judge freshness against the ``now`` they are given. Holds at
    most ``max_entries`` (least recently used go first). Not thread-safe: one event loop.
    """

    def __init__(self, *, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._entries: OrderedDict[str, OcspStatus] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(
        self,
        response_der: bytes,
        *,
        cert: x509.Certificate,
        issuer: x509.Certificate,
        now: dt.datetime,
        max_age_seconds: int,
    ) -> OcspStatus:
        """Verify ``response_der`` about ``cert`` and hold it; :class:`OcspError` if refused."""
        key = cert_thumbprint(cert)
        try:
            status = verify_ocsp_response(
                response_der, cert=cert, issuer=issuer, now=now, max_age_seconds=max_age_seconds
            )
        except (CertificateRevoked, CertificateStatusUnknown):
            self._entries.pop(key, None)
            raise
        held = self._entries.get(key)
        if held is not None and held.this_update > status.this_update:
            return held
        self._entries[key] = status
        self._entries.move_to_end(key)
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return status

    def get(
        self, cert: x509.Certificate, now: dt.datetime, max_age_seconds: int
    ) -> OcspStatus | None:
        """The held response for ``cert`` if it is still fresh at ``now``, else None."""
        held = self._entries.get(cert_thumbprint(cert))
        return held if held is not None and held.is_fresh(now, max_age_seconds) else None

    def held(self, cert: x509.Certificate) -> OcspStatus | None:
        """The response held for ``cert``, fresh or not (for an operator's view of its age)."""
        return self._entries.get(cert_thumbprint(cert))

    def require(self, cert: x509.Certificate, now: dt.datetime, max_age_seconds: int) -> OcspStatus:
        """The fresh response held for ``cert``; :class:`OcspError` when there is none."""
        held = self._entries.get(cert_thumbprint(cert))
        if held is None:
            raise CertificateStatusUnknown(
                "no OCSP response for the certificate",
                internal=f"no OCSP response held for {describe(cert)}",
            )
        if not held.is_fresh(now, max_age_seconds):
            raise OcspResponseStale(
                "OCSP response is stale",
                internal=f"OCSP response held for {describe(cert)} was fresh until "
                f"{held.fresh_until(max_age_seconds).isoformat()}",
            )
        return held

    def needs_refresh(
        self, cert: x509.Certificate, now: dt.datetime, freshness_seconds: int
    ) -> bool:
        """True if nothing is held for ``cert`` or half its response's usable life has passed."""
        held = self._entries.get(cert_thumbprint(cert))
        return held is None or held.needs_refresh(now, freshness_seconds)

    def forget(self, cert: x509.Certificate) -> None:
        self._entries.pop(cert_thumbprint(cert), None)
