"""RFC 3161 time-stamping without IO: the TSA certificate, queries, replies and their verification.

- :func:`issue_tsa_cert` has a CA issue a time-stamping authority's certificate: ExtendedKeyUsage
  id-kp-timeStamping only and critical (RFC 3161 §2.3), KeyUsage digitalSignature +
  nonRepudiation (critical), BasicConstraints CA=false.
- :func:`build_timestamp_request` makes a TimeStampReq (RFC 3161 §2.4.1).
- :func:`parse_timestamp_request`, :func:`timestamp_response`, :func:`rejection_response` and
  their composition :func:`build_timestamp_response` are the TSA's side: any bytes give either a
  granted TimeStampResp whose token is a CMS SignedData (RFC 5652 §5) over a TSTInfo
  (RFC 3161 §2.4.2) with the ESS signingCertificateV2 attribute (RFC 5816), or a rejection with
  the PKIFailureInfo that says why.
- :func:`verify_timestamp_token` checks a token (or a whole reply) against a digest, the TSA
  certificates a caller trusts and the CAs they chain to, and returns what it proves as a
  :class:`TimestampInfo`.

ASN.1 is encoded and parsed by asn1crypto, keys and signatures are cryptography's. The CMS
signature of a token, the TSA certificate's path to an approved root at the token's genTime and
OpenSSL's time-stamping purpose are verified by rfc3161-client (Trail of Bits; OpenSSL's
``PKCS7_verify`` underneath). It does not check, and this module does, before it: the ESS
signingCertificate(V2) attribute naming the signer's certificate (RFC 5816 §2.2.1), the
TSTInfo's ``tsa`` naming the signer, the message imprint's hash algorithm, and that the signer
is one of the approved TSA certificates. It cannot verify a token against a TSA certificate
without the CA that issued it (OpenSSL builds the path to a self-signed root; measured: "unable
to get local issuer certificate"), so the approved CAs are required, as ``openssl ts -verify
-CAfile`` requires them; and it refuses a grantedWithMods reply, whose token this module hands
it as granted. This module does not allocate serial numbers, read clocks, files or sockets
(``exchange.trust.tsa_service`` does), and does not check revocation of the TSA certificate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn, cast

from asn1crypto import cms, core, parser, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from rfc3161_client import VerificationError, VerifierBuilder, decode_timestamp_response

from exchange.errors import ClientError, ExchangeError
from exchange.trust import keys
from exchange.trust.ca import CertificateAuthority
from exchange.trust.profiles import (
    CertificateProfile,
    CertificateTemplate,
    ProfileName,
    key_usage,
    key_usage_names,
)
from exchange.trust.validation import describe, issuers, roots_and_intermediates

DEFAULT_POLICY: Final = "1.3.6.1.4.1.99999.1.1"
"""The TSA policy (RFC 3161 §2.1 (4)) our TSA stamps under unless configured otherwise."""

HASH_ALGORITHMS: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
"""Message imprint and signer digest algorithms accepted (asn1crypto names); SHA-1 is not."""

TSA_KEY_USAGE: Final = frozenset({"digitalSignature", "contentCommitment"})
"""KeyUsage a TSA certificate may carry (RFC 3161 §2.3; contentCommitment is nonRepudiation)."""

PKIStatusFailure = str
"""A PKIFailureInfo bit name as asn1crypto spells it (RFC 3161 §2.4.2), e.g. ``bad_alg``."""

_ACCEPTED_STATUS: Final = frozenset({"granted", "granted_with_mods"})
# what asn1crypto raises on malformed input (AttributeError too: a mis-tagged Any, found by fuzzing)
_PARSE_ERRORS: Final = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError)
_UTC_TIME_YEARS: Final = range(1950, 2050)


# --- errors ----------------------------------------------------------------------------------


class TimestampError(ExchangeError):
    """Time-stamping failed: the TSA could not be reached or did not answer usefully."""

    code = "Server.TimestampFailed"
    status = 500


class TimestampRejected(TimestampError):
    """The TSA answered with a PKIStatus other than granted (RFC 3161 §2.4.2)."""

    code = "Server.TimestampFailed.Rejected"


class TimestampInvalid(TimestampError):
    """A time-stamp token does not verify. ``code`` names the step that failed:
    ``.Format``, ``.Imprint``, ``.Nonce``, ``.Signer``, ``.Signature`` or ``.Time``."""

    code = "Server.TimestampInvalid"


class TimestampQueryRejected(ClientError):
    """A TSA refuses a query; ``failure`` is the PKIFailureInfo bit to answer with."""

    code = "Client.BadTimestampQuery"

    def __init__(self, message: str, *, failure: PKIStatusFailure) -> None:
        super().__init__(message)
        self.failure = failure


def _invalid(step: str, message: str, internal: str | None = None) -> NoReturn:
    raise TimestampInvalid(message, code=f"{TimestampInvalid.code}.{step}", internal=internal)


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimestampRequest:
    """A TimeStampReq a TSA accepted for signing."""

    hash_alg: str
    digest: bytes
    nonce: int | None
    cert_req: bool
    imprint_der: bytes
    """The request's MessageImprint as received; the TSTInfo repeats it (RFC 3161 §2.4.2)."""


@dataclass(frozen=True, slots=True)
class TimestampInfo:
    """What a verified time-stamp token proves: ``digest`` existed at ``gen_time``."""

    gen_time: dt.datetime
    serial: int
    policy: str
    hash_alg: str
    digest: bytes
    tsa_cert_fingerprint: str
    """SHA-256 of the signing TSA certificate (DER), lowercase hex."""


# --- the TSA certificate ---------------------------------------------------------------------

TSA_PROFILE: Final = CertificateProfile(
    # ProfileName lists only "auth" and "sign"; the CA uses a template's subject and extensions.
    name=cast(ProfileName, "tsa"),
    title="a time-stamping authority certificate",
    key_usage=TSA_KEY_USAGE,
    allowed_key_usage=frozenset(),
    extended_key_usage=(ExtendedKeyUsageOID.TIME_STAMPING,),
    required_extended_key_usage=frozenset({ExtendedKeyUsageOID.TIME_STAMPING}),
    forbidden_extended_key_usage=frozenset(),
    urn_prefix="",
)


def tsa_template(name: str) -> CertificateTemplate:
    """Subject and extensions of a TSA certificate (RFC 3161 §2.3)."""
    return CertificateTemplate(
        profile=TSA_PROFILE,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]),
        extensions=(
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (key_usage(*sorted(TSA_KEY_USAGE)), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True),
        ),
    )


def issue_tsa_cert(
    ca: CertificateAuthority,
    public_key: CertificatePublicKeyTypes,
    name: str,
    *,
    days: int = 365,
    now: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
) -> x509.Certificate:
    """Have ``ca`` issue a TSA certificate named ``name`` for ``public_key``."""
    return ca.issue(public_key, tsa_template(name), days=days, now=now, not_before=not_before)


def check_tsa_certificate(cert: x509.Certificate) -> None:
    """Raise :class:`TimestampInvalid` (``.Signer``) unless ``cert`` may sign time-stamps.

    RFC 3161 §2.3: exactly one extended key usage, id-kp-timeStamping, and it is critical;
    KeyUsage, when present, is digitalSignature and/or nonRepudiation only (as OpenSSL demands).
    """
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        _not_a_tsa(cert, "it has no extended key usage timeStamping")
    if list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        _not_a_tsa(cert, "its extended key usage is not timeStamping alone")
    if not eku.critical:
        _not_a_tsa(cert, "its extended key usage timeStamping is not critical")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    names = key_usage_names(usage)
    if not names or names - TSA_KEY_USAGE:
        _not_a_tsa(cert, f"its key usage {', '.join(sorted(names)) or 'is empty'} is not allowed")


def _not_a_tsa(cert: x509.Certificate, reason: str) -> NoReturn:
    _invalid(
        "Signer",
        f"time-stamp signer is not a TSA certificate: {reason}",
        f"{describe(cert)} is not a TSA certificate: {reason}",
    )


# --- queries (RFC 3161 §2.4.1) -----------------------------------------------------------------


def _hash_output_size(hash_alg: str) -> int:
    return HASH_ALGORITHMS[hash_alg]().digest_size


def build_timestamp_request(
    digest: bytes,
    *,
    hash_alg: str = "sha256",
    nonce: int | None = None,
    cert_req: bool = True,
    policy: str | None = None,
) -> bytes:
    """A DER TimeStampReq for ``digest`` (the ``hash_alg`` hash of the data to stamp)."""
    if hash_alg not in HASH_ALGORITHMS:
        raise ValueError(f"unsupported hash algorithm {hash_alg!r}")
    if len(digest) != _hash_output_size(hash_alg):
        raise ValueError(f"a {hash_alg} digest has {_hash_output_size(hash_alg)} bytes")
    fields: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": hash_alg}, "hashed_message": digest},
        "cert_req": cert_req,
    }
    if nonce is not None:
        fields["nonce"] = nonce
    if policy is not None:
        fields["req_policy"] = policy
    return bytes(tsp.TimeStampReq(fields).dump())


def parse_timestamp_request(
    request_der: bytes, *, policy_oid: str = DEFAULT_POLICY
) -> TimestampRequest:
    """Parse and check a query; any input gives a request or :class:`TimestampQueryRejected`."""
    # (1) one TimeStampReq and nothing after it
    try:
        request = tsp.TimeStampReq.load(request_der, strict=True)
        request.native  # noqa: B018  (parses every field now, not lazily later)
    except _PARSE_ERRORS:
        raise TimestampQueryRejected("not a TimeStampReq", failure="bad_data_format") from None
    # (2) version 1
    if request["version"].native != "v1":
        raise TimestampQueryRejected("TimeStampReq version is not 1", failure="bad_data_format")
    # (3) a supported hash algorithm and a hash value of its length
    hash_alg, digest = _imprint(request["message_imprint"])
    # (4) the requested policy, if any, is ours
    requested = request["req_policy"]
    if requested.native is not None and requested.dotted != policy_oid:
        raise TimestampQueryRejected(
            f"policy {requested.dotted} is not offered", failure="unaccepted_policy"
        )
    # (5) no extensions: we recognise none (RFC 3161 §2.4.1, "extensions")
    if request["extensions"].native:
        raise TimestampQueryRejected(
            "extensions are not supported", failure="unaccepted_extensions"
        )
    nonce = request["nonce"].native
    return TimestampRequest(
        hash_alg=hash_alg,
        digest=digest,
        nonce=None if nonce is None else int(nonce),
        cert_req=bool(request["cert_req"].native),
        imprint_der=bytes(request["message_imprint"].dump()),
    )


def _imprint(imprint: Any) -> tuple[str, bytes]:
    # asn1crypto parses SHA-2 parameters only when absent or NULL, as RFC 5754 §2 has them
    hash_alg = str(imprint["hash_algorithm"]["algorithm"].native)
    if hash_alg not in HASH_ALGORITHMS:
        raise TimestampQueryRejected(
            f"hash algorithm {hash_alg} is not supported", failure="bad_alg"
        )
    digest = bytes(imprint["hashed_message"].native)
    if len(digest) != _hash_output_size(hash_alg):
        raise TimestampQueryRejected(
            f"a {hash_alg} hash has {_hash_output_size(hash_alg)} bytes, not {len(digest)}",
            failure="bad_data_format",
        )
    return hash_alg, digest


# --- replies (RFC 3161 §2.4.2) -----------------------------------------------------------------


class _TimeStampResp(tsp.TimeStampResp):  # type: ignore[misc]
    """asn1crypto's TimeStampResp with the token OPTIONAL, as RFC 3161 §2.4.2 has it."""

    _fields = [  # noqa: RUF012
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


def rejection_response(failure: PKIStatusFailure, text: str) -> bytes:
    """A DER TimeStampResp with status rejection, ``failure`` and a human-readable ``text``."""
    status = {"status": "rejection", "status_string": [text[:200]], "fail_info": {failure}}
    return bytes(_TimeStampResp({"status": status}).dump())


def build_timestamp_response(
    request_der: bytes,
    *,
    tsa_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    tsa_cert: x509.Certificate,
    serial: int,
    now: dt.datetime,
    policy_oid: str = DEFAULT_POLICY,
    accuracy_ms: int | None = 1000,
) -> bytes:
    """Answer the DER query ``request_der``: a granted reply, or a rejection saying why.

    Never raises for any ``request_der``; ``now`` must be timezone-aware.
    """
    try:
        request = parse_timestamp_request(request_der, policy_oid=policy_oid)
    except TimestampQueryRejected as exc:
        return rejection_response(exc.failure, exc.message)
    return timestamp_response(
        request,
        tsa_key=tsa_key,
        tsa_cert=tsa_cert,
        serial=serial,
        now=now,
        policy_oid=policy_oid,
        accuracy_ms=accuracy_ms,
    )


def timestamp_response(
    request: TimestampRequest,
    *,
    tsa_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    tsa_cert: x509.Certificate,
    serial: int,
    now: dt.datetime,
    policy_oid: str = DEFAULT_POLICY,
    accuracy_ms: int | None = 1000,
) -> bytes:
    """A granted DER TimeStampResp for an accepted ``request``, with serial number ``serial``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if serial < 1 or (accuracy_ms is not None and accuracy_ms < 0):
        raise ValueError("serial must be positive and accuracy_ms not negative")
    gen_time = now.astimezone(dt.UTC)
    gen_time = gen_time.replace(microsecond=gen_time.microsecond // 1000 * 1000)
    cert = asn1_x509.Certificate.load(tsa_cert.public_bytes(serialization.Encoding.DER))
    tst_info = _tst_info(request, cert, serial, gen_time, policy_oid, accuracy_ms)
    token = _signed_token(tst_info, tsa_key, cert, gen_time, include_cert=request.cert_req)
    return bytes(
        _TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token}).dump()
    )


def _tst_info(
    request: TimestampRequest,
    cert: Any,
    serial: int,
    gen_time: dt.datetime,
    policy_oid: str,
    accuracy_ms: int | None,
) -> Any:
    fields: dict[str, Any] = {
        "version": "v1",
        "policy": policy_oid,
        "message_imprint": tsp.MessageImprint.load(request.imprint_der),
        "serial_number": serial,
        "gen_time": gen_time,
        "tsa": asn1_x509.GeneralName({"directory_name": cert.subject}),
    }
    if accuracy_ms:
        seconds, millis = divmod(accuracy_ms, 1000)
        fields["accuracy"] = {k: v for k, v in (("seconds", seconds), ("millis", millis)) if v}
    if request.nonce is not None:
        fields["nonce"] = request.nonce
    return tsp.TSTInfo(fields)


def _signing_time(when: dt.datetime) -> Any:
    # RFC 5652 §11.3: UTCTime for 1950 to 2049, GeneralizedTime otherwise
    choice = "utc_time" if when.year in _UTC_TIME_YEARS else "generalized_time"
    return cms.Time({choice: when})


def _signing_certificate_v2(cert: Any) -> Any:
    # RFC 5816 §2.2.1 / RFC 5035 §3: ESSCertIDv2 with SHA-256 (the default, so omitted)
    issuer_serial = {
        "issuer": [asn1_x509.GeneralName({"directory_name": cert.issuer})],
        "serial_number": cert.serial_number,
    }
    cert_id = {"cert_hash": hashlib.sha256(cert.dump()).digest(), "issuer_serial": issuer_serial}
    return tsp.SigningCertificateV2({"certs": [cert_id]})


def _signed_token(
    tst_info: Any,
    tsa_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    cert: Any,
    gen_time: dt.datetime,
    *,
    include_cert: bool,
) -> Any:
    # RFC 5652 §5.3-§5.4: the signature covers the DER SET OF signed attributes
    signed_attrs = cms.CMSAttributes(
        [
            {"type": "content_type", "values": ["tst_info"]},
            {"type": "signing_time", "values": [_signing_time(gen_time)]},
            {"type": "message_digest", "values": [hashlib.sha256(tst_info.dump()).digest()]},
            {"type": "signing_certificate_v2", "values": [_signing_certificate_v2(cert)]},
        ]
    )
    signed_data: dict[str, Any] = {
        "version": "v3",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": "tst_info", "content": tst_info},
        "signer_infos": [_signer_info(signed_attrs, tsa_key, cert)],
    }
    if include_cert:
        signed_data["certificates"] = [cert]
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data})


def _signer_info(
    signed_attrs: Any, tsa_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, cert: Any
) -> Any:
    signature_algorithm, signature = _sign(tsa_key, bytes(signed_attrs.dump()))
    sid = {"issuer": cert.issuer, "serial_number": cert.serial_number}
    return cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier({"issuer_and_serial_number": sid}),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": signed_attrs,
            "signature_algorithm": {"algorithm": signature_algorithm},
            "signature": signature,
        }
    )


def _sign(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, data: bytes) -> tuple[str, bytes]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "sha256_ecdsa", key.sign(data, ec.ECDSA(hashes.SHA256()))
    return "sha256_rsa", key.sign(data, padding.PKCS1v15(), hashes.SHA256())


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseStatus:
    """The PKIStatusInfo of a TimeStampResp (RFC 3161 §2.4.2) and its token, if any."""

    status: str
    """asn1crypto's name: ``granted``, ``granted_with_mods``, ``rejection``, ``waiting``, ..."""
    failures: frozenset[PKIStatusFailure]
    text: str
    token_der: bytes | None

    @property
    def granted(self) -> bool:
        return self.status in _ACCEPTED_STATUS


def response_status(response_der: bytes) -> ResponseStatus:
    """Parse a TimeStampResp's status; :class:`TimestampInvalid` (``.Format``) if it is none.

    The token, if any, is returned as bytes, not checked: see :func:`verify_timestamp_token`.
    """
    try:
        response = _TimeStampResp.load(response_der, strict=True)
        status = response["status"]
        token = response["time_stamp_token"]
        return ResponseStatus(
            status=str(status["status"].native),
            failures=frozenset(status["fail_info"].native or ()),
            text="; ".join(status["status_string"].native or ()),
            token_der=None if isinstance(token, core.Void) else bytes(token.dump()),
        )
    except _PARSE_ERRORS:
        _invalid("Format", "not a TimeStampResp")


def token_of_response(response_der: bytes) -> bytes:
    """The TimeStampToken (DER ContentInfo) of a granted reply.

    Raises :class:`TimestampRejected` for a reply that is not granted, and
    :class:`TimestampInvalid` (``.Format``) for bytes that are not a reply.
    """
    reply = response_status(response_der)
    if not reply.granted:
        failure = ", ".join(sorted(reply.failures)) or "no failure info"
        text = f": {reply.text}" if reply.text else ""
        raise TimestampRejected(f"TSA answered {reply.status} ({failure}){text}")
    if reply.token_der is None:
        _invalid("Format", f"TSA answered {reply.status} without a time-stamp token")
    return reply.token_der


def _is_response(data: bytes) -> bool:
    # a TimeStampResp starts with a SEQUENCE (PKIStatusInfo), a ContentInfo with an OID
    try:
        _, _, _, _, contents, _ = parser.parse(data)
        first_tag = parser.parse(contents)[2]
    except _PARSE_ERRORS:
        return False
    return bool(first_tag == 16)


def verify_timestamp_token(
    token_or_response_der: bytes,
    *,
    digest: bytes,
    tsa_certs: Sequence[x509.Certificate],
    ca_certs: Sequence[x509.Certificate],
    nonce: int | None = None,
    hash_alg: str = "sha256",
) -> TimestampInfo:
    """Verify that a time-stamp token (or a whole reply) stamps ``digest``, signed by a TSA.

    The signer must be one of ``tsa_certs`` (the approved TSAs), its certificate issued through
    ``ca_certs`` (the approved CAs: roots, and intermediates under them) and valid at the
    stamped time. Raises :class:`TimestampRejected` for a reply that is not granted and
    :class:`TimestampInvalid`, whose code names the failed step, for everything else.
    """
    # (1) a reply has status granted or grantedWithMods (RFC 3161 §2.4.2); its token is used
    token_der = token_or_response_der
    if _is_response(token_der):
        token_der = token_of_response(token_der)
    # (2) a SignedData (RFC 5652 §5) with one signer encapsulating a TSTInfo v1 (RFC 3161 §2.4.2)
    stamp, signer = _parse_token(token_der)
    # (3) the message imprint is the expected hash algorithm and digest
    _check_imprint(stamp, hash_alg, digest)
    # (4) the nonce is ours, when we sent one
    if nonce is not None and stamp.nonce != nonce:
        _invalid("Nonce", "time-stamp nonce does not match the request")
    # (5) the signer is an approved TSA certificate of the TSA profile, named by ESS
    #     signingCertificate(V2) and by the TSTInfo
    cert = _signer_certificate(signer, tsa_certs)
    _check_signer(stamp, signer, cert)
    # (6) rfc3161-client: the CMS signature over the signed attributes and the message digest
    #     of the TSTInfo, the TSA certificate's path to an approved root valid at genTime, the
    #     time-stamping purpose, the imprint and the nonce
    _verify_with_library(token_der, digest, cert, ca_certs, stamp, signer, nonce)
    return TimestampInfo(
        gen_time=stamp.gen_time,
        serial=stamp.serial,
        policy=stamp.policy,
        hash_alg=hash_alg,
        digest=digest,
        tsa_cert_fingerprint=keys.fingerprint(cert),
    )


def _granted(token_der: bytes) -> bytes:
    """A TimeStampResp with status granted around ``token_der``, as rfc3161-client reads it."""
    token = cms.ContentInfo.load(token_der)
    return bytes(
        _TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token}).dump()
    )


def _verify_with_library(
    token_der: bytes,
    digest: bytes,
    cert: x509.Certificate,
    ca_certs: Sequence[x509.Certificate],
    stamp: _Stamp,
    signer: _Signer,
    nonce: int | None,
) -> None:
    roots, intermediates = roots_and_intermediates(ca_certs)
    if not roots:
        _invalid(
            "Signer",
            "TSA certificate: certificate not issued by an approved CA (no approved root CA)",
        )
    builder = VerifierBuilder(
        tsa_certificate=cert, roots=roots, intermediates=intermediates, nonce=nonce
    )
    try:
        builder.build().verify(decode_timestamp_response(_granted(token_der)), digest)
    except (VerificationError, ValueError, TypeError, OverflowError, x509.InvalidVersion) as exc:
        # what the library raises on a hostile token (an embedded certificate of version 1
        # gives InvalidVersion, found by fuzzing) is a refusal, never a crash
        _explain_refusal(stamp, signer, cert, ca_certs, f"{type(exc).__name__}: {exc}")


def _explain_refusal(
    stamp: _Stamp,
    signer: _Signer,
    cert: x509.Certificate,
    ca_certs: Sequence[x509.Certificate],
    reason: str,
) -> NoReturn:
    """rfc3161-client refused: say why in our words (the decision was the library's)."""
    if issuers(cert, ca_certs) is None:
        _invalid(
            "Signer",
            "TSA certificate: certificate not issued by an approved CA",
            f"TSA certificate {describe(cert)} not issued by an approved CA: {reason}",
        )
    if not cert.not_valid_before_utc <= stamp.gen_time <= cert.not_valid_after_utc:
        _invalid(
            "Time",
            f"time-stamp time {stamp.gen_time.isoformat()} is outside the TSA certificate's "
            f"validity ({cert.not_valid_before_utc.isoformat()} to "
            f"{cert.not_valid_after_utc.isoformat()})",
        )
    if "certificate verify error" in reason:  # OpenSSL's reason for a path it does not accept
        _invalid(
            "Signer",
            "TSA certificate: its path to an approved root CA does not validate",
            f"TSA certificate {describe(cert)}: {reason}",
        )
    if signer.message_digest != _digest(signer.digest_alg, stamp.der):
        _invalid("Signature", "signed message-digest does not match the TSTInfo", reason)
    _invalid("Signature", "time-stamp signature does not verify", reason)


def _digest(hash_alg: str, data: bytes) -> bytes | None:
    return hashlib.new(hash_alg, data).digest() if hash_alg in HASH_ALGORITHMS else None


# The token is parsed once into plain values, so that no later step meets asn1crypto's lazy
# parsing errors; names are compared in asn1crypto's normalised ``hashable`` form.


@dataclass(frozen=True, slots=True)
class _Stamp:
    """A TSTInfo (RFC 3161 §2.4.2)."""

    der: bytes
    gen_time: dt.datetime
    serial: int
    policy: str
    hash_alg: str
    digest: bytes
    nonce: int | None
    tsa_name: str | None
    """The ``tsa`` field as a directoryName, or "" for another kind of name."""


@dataclass(frozen=True, slots=True)
class _EssCertId:
    """The first ESSCertID(v2) of a signingCertificate(V2) attribute (RFC 5035 §5.4)."""

    hash_alg: str
    cert_hash: bytes
    issuers: tuple[str, ...] | None
    serial: int | None


@dataclass(frozen=True, slots=True)
class _Signer:
    """The one SignerInfo (RFC 5652 §5.3), and the certificate in the token that it names."""

    sid_issuer: str | None
    sid_serial: int | None
    sid_key_id: bytes | None
    embedded_subject: str | None
    digest_alg: str
    signature_algo: str | None
    signature_hash: str | None
    signature: bytes
    signed_attrs_der: bytes
    content_type: str | None
    message_digest: bytes | None
    ess: _EssCertId | None


def _parse_token(token_der: bytes) -> tuple[_Stamp, _Signer]:
    try:
        content_info = cms.ContentInfo.load(token_der, strict=True)
        if content_info["content_type"].native != "signed_data":
            _invalid("Format", "time-stamp token is not a CMS SignedData")
        signed_data = content_info["content"]
        stamp = _stamp_of(signed_data["encap_content_info"])
        if len(signed_data["signer_infos"]) != 1:
            _invalid("Format", "time-stamp token must have exactly one signer")
        return stamp, _signer_of(signed_data["signer_infos"][0], signed_data["certificates"])
    except _PARSE_ERRORS:
        _invalid("Format", "time-stamp token is not a CMS SignedData with a TSTInfo")


def _stamp_of(encap: Any) -> _Stamp:
    if encap["content_type"].native != "tst_info" or isinstance(encap["content"], core.Void):
        _invalid("Format", "time-stamp token does not encapsulate a TSTInfo")
    tst_info = encap["content"].parsed
    if tst_info["version"].native != "v1":
        _invalid("Format", "TSTInfo version is not 1")
    gen_time = tst_info["gen_time"].native
    if not isinstance(gen_time, dt.datetime) or gen_time.tzinfo is None:
        _invalid("Format", "TSTInfo genTime is not a UTC time")
    imprint = tst_info["message_imprint"]
    nonce = tst_info["nonce"].native
    return _Stamp(
        der=bytes(encap["content"].contents),
        gen_time=gen_time.astimezone(dt.UTC),
        serial=int(tst_info["serial_number"].native),
        policy=str(tst_info["policy"].dotted),
        hash_alg=str(imprint["hash_algorithm"]["algorithm"].native),
        digest=bytes(imprint["hashed_message"].native),
        nonce=None if nonce is None else int(nonce),
        tsa_name=_directory_name(tst_info["tsa"]),
    )


def _directory_name(general_name: Any) -> str | None:
    if isinstance(general_name, core.Void):
        return None
    return str(general_name.chosen.hashable) if general_name.name == "directory_name" else ""


def _signer_of(signer_info: Any, certificates: Any) -> _Signer:
    sid = signer_info["sid"]
    by_issuer = sid.name == "issuer_and_serial_number"
    attributes = _attributes(signer_info["signed_attrs"])
    content_type = attributes.get("content_type")
    message_digest = attributes.get("message_digest")
    scheme, scheme_hash = _signature_scheme(signer_info["signature_algorithm"])
    return _Signer(
        sid_issuer=str(sid.chosen["issuer"].hashable) if by_issuer else None,
        sid_serial=int(sid.chosen["serial_number"].native) if by_issuer else None,
        sid_key_id=None if by_issuer else bytes(sid.chosen.native),
        embedded_subject=_embedded_signer(sid, certificates),
        digest_alg=str(signer_info["digest_algorithm"]["algorithm"].native),
        signature_algo=scheme,
        signature_hash=scheme_hash,
        signature=bytes(signer_info["signature"].native),
        # RFC 5652 §5.4: the signature is over the DER SET OF the signed attributes
        signed_attrs_der=bytes(signer_info["signed_attrs"].untag().dump()),
        content_type=None if content_type is None else str(content_type.native),
        message_digest=None if message_digest is None else bytes(message_digest.native),
        ess=_ess_cert_id(attributes),
    )


def _attributes(signed_attrs: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for attribute in signed_attrs if not isinstance(signed_attrs, core.Void) else ():
        name = str(attribute["type"].native)
        if name in found or len(attribute["values"]) != 1:
            _invalid("Format", f"signed attribute {name} must occur once with one value")
        found[name] = attribute["values"][0]
    return found


def _signature_scheme(algorithm: Any) -> tuple[str | None, str | None]:
    try:
        scheme = str(algorithm.signature_algo)
    except ValueError:
        return None, None
    try:
        return scheme, str(algorithm.hash_algo)
    except ValueError:
        return scheme, None


def _ess_cert_id(attributes: dict[str, Any]) -> _EssCertId | None:
    # RFC 3161 §2.4.1 / RFC 5816 §2.2.1: the first ESSCertID(v2) identifies the signer
    if "signing_certificate_v2" in attributes:
        cert_id = attributes["signing_certificate_v2"]["certs"][0]
        hash_alg = str(cert_id["hash_algorithm"]["algorithm"].native)
    elif "signing_certificate" in attributes:
        cert_id = attributes["signing_certificate"]["certs"][0]
        hash_alg = "sha1"
    else:
        return None
    issuer_serial = cert_id["issuer_serial"]
    has_issuer = not isinstance(issuer_serial, core.Void)
    return _EssCertId(
        hash_alg=hash_alg,
        cert_hash=bytes(cert_id["cert_hash"].native),
        issuers=tuple(
            str(n.chosen.hashable) for n in issuer_serial["issuer"] if n.name == "directory_name"
        )
        if has_issuer
        else None,
        serial=int(issuer_serial["serial_number"].native) if has_issuer else None,
    )


def _embedded_signer(sid: Any, certificates: Any) -> str | None:
    for choice in certificates if not isinstance(certificates, core.Void) else ():
        if choice.name == "certificate" and _matches_sid(choice.chosen, sid):
            return str(choice.chosen.subject.human_friendly)
    return None


def _matches_sid(cert: Any, sid: Any) -> bool:
    # RFC 5652 §5.3: issuerAndSerialNumber or subjectKeyIdentifier, of an asn1crypto certificate
    if sid.name == "issuer_and_serial_number":
        wanted = sid.chosen
        return bool(
            wanted["serial_number"].native == cert.serial_number
            and wanted["issuer"].hashable == cert.issuer.hashable
        )
    return bool(cert.key_identifier is not None and cert.key_identifier == sid.chosen.native)


def _asn1(cert: x509.Certificate) -> Any:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _check_imprint(stamp: _Stamp, hash_alg: str, digest: bytes) -> None:
    if stamp.hash_alg != hash_alg:
        _invalid("Imprint", f"time-stamp is over a {stamp.hash_alg} hash, not {hash_alg}")
    if stamp.digest != digest:
        _invalid(
            "Imprint",
            "time-stamp is over another hash than the data's",
            f"time-stamp over {stamp.digest.hex()}, expected {digest.hex()}",
        )


def _is_signer(signer: _Signer, cert: x509.Certificate) -> bool:
    if signer.sid_key_id is not None:
        return bool(_asn1(cert).key_identifier == signer.sid_key_id)
    asn1_cert = _asn1(cert)
    return bool(
        signer.sid_serial == asn1_cert.serial_number
        and signer.sid_issuer == asn1_cert.issuer.hashable
    )


def _signer_certificate(signer: _Signer, tsa_certs: Sequence[x509.Certificate]) -> x509.Certificate:
    for cert in tsa_certs:
        if _is_signer(signer, cert):
            return cert
    if signer.embedded_subject is not None:
        _invalid(
            "Signer",
            "time-stamp is signed by a certificate that is not an approved TSA certificate",
            f"time-stamp signed by {signer.embedded_subject}, not an approved TSA certificate",
        )
    _invalid("Signer", "time-stamp signer is not an approved TSA certificate")


def _check_signer(stamp: _Stamp, signer: _Signer, cert: x509.Certificate) -> None:
    check_tsa_certificate(cert)
    _check_ess_certificate(signer.ess, cert)
    if stamp.tsa_name is not None and stamp.tsa_name != _asn1(cert).subject.hashable:
        _invalid("Signer", "TSTInfo names another TSA than its signer (RFC 3161 §2.4.2, tsa)")
    # RFC 5652 §11.1: content-type equals the eContentType (PKCS7_verify does not check it)
    if signer.content_type != "tst_info":
        _invalid("Signature", "signed content-type attribute is missing or not TSTInfo")


def _check_ess_certificate(ess: _EssCertId | None, cert: x509.Certificate) -> None:
    if ess is None:
        _invalid("Signer", "time-stamp lacks the ESS signingCertificate attribute")
    if ess.hash_alg not in HASH_ALGORITHMS and ess.hash_alg != "sha1":
        _invalid("Signer", f"ESS certificate hash {ess.hash_alg} is not supported")
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    if ess.cert_hash != hashlib.new(ess.hash_alg, cert_der).digest():
        _invalid("Signer", "ESS signingCertificate names another certificate than the signer")
    asn1_cert = _asn1(cert)
    if ess.issuers is not None and (
        ess.serial != asn1_cert.serial_number or asn1_cert.issuer.hashable not in ess.issuers
    ):
        _invalid("Signer", "ESS signingCertificate names another issuer or serial than the signer")


def digest_of(data: bytes, hash_alg: str = "sha256") -> bytes:
    """The ``hash_alg`` hash of ``data``, the digest a time-stamp request carries."""
    if hash_alg not in HASH_ALGORITHMS:
        raise ValueError(f"unsupported hash algorithm {hash_alg!r}")
    return hashlib.new(hash_alg, data).digest()
