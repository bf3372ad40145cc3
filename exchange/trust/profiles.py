"""The two certificate profiles of Exchange, how to build them and how to tell them apart.

- **Authentication certificate** of a security server: the TLS certificate between security
  servers, server and client side. KeyUsage digitalSignature (critical), ExtendedKeyUsage
  serverAuth + clientAuth, BasicConstraints CA=false (critical), SubjectAlternativeName with the
  server's DNS names / IP addresses and the URI ``urn:x-road:server:INSTANCE/CLASS/CODE/SERVER``.
- **Signing certificate** of a member: the certificate of the key that signs messages and tree
  heads. KeyUsage digitalSignature + contentCommitment (critical), ExtendedKeyUsage
  id-kp-documentSigning (RFC 9336) and never serverAuth/clientAuth, so that OpenSSL itself refuses
  it as a TLS certificate, BasicConstraints CA=false (critical), SubjectAlternativeName URI
  ``urn:x-road:member:INSTANCE/CLASS/CODE``.

The identifier in the SAN URI is the authoritative one; the subject (CN, O = member code,
OU = member class, serialNumber = instance) is for people and tools that show subjects.
Identifier parts are percent-encoded in the URI wherever RFC 3986 §3.3 / RFC 8141 §2 would
read them as syntax (only ``?`` among our characters).

The checks are a separation of duties: an authentication certificate can never pass as a signing
certificate and the other way round. They do not check the issuer, validity or revocation (see
``exchange.trust.validation``). No IO.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal, NoReturn, TypeVar
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from exchange.errors import InvalidIdentifier
from exchange.identifiers import MemberId, SecurityServerId, parse_member, parse_security_server
from exchange.trust.validation import CertificateProfileError, describe

ProfileName = Literal["auth", "sign"]

DOCUMENT_SIGNING: Final = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
"""id-kp-documentSigning, RFC 9336 §3.1."""

SERVER_URN_PREFIX: Final = "urn:x-road:server:"
MEMBER_URN_PREFIX: Final = "urn:x-road:member:"

_UB_NAME: Final = 64
"""ub-common-name, ub-organization-name, ub-serial-number ... (RFC 5280 Appendix A.1)."""
_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]+")
_URN_SAFE: Final = "'()+,-.=_"

_KEY_USAGE_NAMES: Final = {
    "digital_signature": "digitalSignature",
    "content_commitment": "contentCommitment",
    "key_encipherment": "keyEncipherment",
    "data_encipherment": "dataEncipherment",
    "key_agreement": "keyAgreement",
    "key_cert_sign": "keyCertSign",
    "crl_sign": "cRLSign",
    "encipher_only": "encipherOnly",
    "decipher_only": "decipherOnly",
}


def key_usage(*names: str) -> x509.KeyUsage:
    """A KeyUsage with exactly the given usages (RFC 5280 §4.2.1.3 names, e.g. ``keyCertSign``)."""
    flags = {attr: rfc in names for attr, rfc in _KEY_USAGE_NAMES.items()}
    unknown = set(names) - set(_KEY_USAGE_NAMES.values())
    if unknown:
        raise ValueError(f"unknown key usage {sorted(unknown)}")
    return x509.KeyUsage(**flags)


def key_usage_names(usage: x509.KeyUsage) -> frozenset[str]:
    """The RFC 5280 §4.2.1.3 names of the usages set in ``usage``."""
    names = set()
    for attr, rfc in _KEY_USAGE_NAMES.items():
        if attr in ("encipher_only", "decipher_only") and not usage.key_agreement:
            continue
        if getattr(usage, attr):
            names.add(rfc)
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class CertificateProfile:
    """What a profile sets when issuing and demands when checking.

    ``key_usage`` is issued and required; ``allowed_key_usage`` may also appear in certificates
    from other CAs; anything else is refused. ``extended_key_usage`` is issued,
    ``required_extended_key_usage`` must be present and ``forbidden_extended_key_usage`` must not.
    """

    name: ProfileName
    title: str
    key_usage: frozenset[str]
    allowed_key_usage: frozenset[str]
    extended_key_usage: tuple[ObjectIdentifier, ...]
    required_extended_key_usage: frozenset[ObjectIdentifier]
    forbidden_extended_key_usage: frozenset[ObjectIdentifier]
    urn_prefix: str


AUTH_PROFILE: Final = CertificateProfile(
    name="auth",
    title="an authentication certificate",
    key_usage=frozenset({"digitalSignature"}),
    allowed_key_usage=frozenset({"keyAgreement", "keyEncipherment"}),
    extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    required_extended_key_usage=frozenset(
        {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ),
    forbidden_extended_key_usage=frozenset({DOCUMENT_SIGNING}),
    urn_prefix=SERVER_URN_PREFIX,
)

SIGN_PROFILE: Final = CertificateProfile(
    name="sign",
    title="a signing certificate",
    key_usage=frozenset({"digitalSignature", "contentCommitment"}),
    allowed_key_usage=frozenset(),
    extended_key_usage=(DOCUMENT_SIGNING,),
    required_extended_key_usage=frozenset(),
    forbidden_extended_key_usage=frozenset(
        {
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
            ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
        }
    ),
    urn_prefix=MEMBER_URN_PREFIX,
)

_PURPOSE_NAMES: Final = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
    DOCUMENT_SIGNING: "documentSigning",
}

PROFILES: Final = {AUTH_PROFILE.name: AUTH_PROFILE, SIGN_PROFILE.name: SIGN_PROFILE}


# --- identifiers in the SubjectAlternativeName URI ----------------------------------------------


def _urn(prefix: str, parts: Iterable[str]) -> str:
    return prefix + "/".join(quote(p, safe=_URN_SAFE) for p in parts)


def server_urn(server_id: SecurityServerId) -> str:
    return _urn(SERVER_URN_PREFIX, server_id.parts)


def member_urn(member_id: MemberId) -> str:
    return _urn(MEMBER_URN_PREFIX, member_id.parts)


def parse_server_urn(urn: str) -> SecurityServerId:
    """``urn:x-road:server:...`` to a security server id, or :class:`CertificateProfileError`."""
    if not urn.startswith(SERVER_URN_PREFIX):
        raise CertificateProfileError(f"not a security server URI: {urn[:80]!r}")
    try:
        return parse_security_server(urn.removeprefix(SERVER_URN_PREFIX), encoded=True)
    except InvalidIdentifier as exc:
        raise CertificateProfileError(f"malformed security server URI: {exc.message}") from None


def parse_member_urn(urn: str) -> MemberId:
    """``urn:x-road:member:...`` to a member id, or :class:`CertificateProfileError`."""
    if not urn.startswith(MEMBER_URN_PREFIX):
        raise CertificateProfileError(f"not a member URI: {urn[:80]!r}")
    try:
        return parse_member(urn.removeprefix(MEMBER_URN_PREFIX), encoded=True)
    except InvalidIdentifier as exc:
        raise CertificateProfileError(f"malformed member URI: {exc.message}") from None


def _x_road_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return [u for u in uris if u.startswith("urn:x-road:")]


def _the_uri(cert: x509.Certificate, profile: CertificateProfile) -> str:
    uris = _x_road_uris(cert)
    if len(uris) != 1 or not uris[0].startswith(profile.urn_prefix):
        found = ", ".join(uris) or "none"
        raise CertificateProfileError(
            f"not {profile.title}: expected one {profile.urn_prefix}... "
            f"subject alternative name URI, found {found}",
            internal=f"{describe(cert)}: expected one {profile.urn_prefix}... SAN URI, "
            f"found {found}",
        )
    return uris[0]


def server_id_of_auth_cert(cert: x509.Certificate) -> SecurityServerId:
    """The security server an authentication certificate was issued to (from its SAN URI)."""
    return parse_server_urn(_the_uri(cert, AUTH_PROFILE))


def member_id_of_signing_cert(cert: x509.Certificate) -> MemberId:
    """The member a signing certificate was issued to (from its SAN URI)."""
    return parse_member_urn(_the_uri(cert, SIGN_PROFILE))


_URN_PARSERS: Final[dict[str, Callable[[str], object]]] = {
    "auth": parse_server_urn,
    "sign": parse_member_urn,
}


# --- building ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateTemplate:
    """Subject and extensions a CA puts into a certificate of one profile for one identifier."""

    profile: CertificateProfile
    subject: x509.Name
    extensions: tuple[tuple[x509.ExtensionType, bool], ...]
    """(value, critical) pairs; the CA adds SubjectKeyIdentifier and AuthorityKeyIdentifier."""


def _attribute(oid: ObjectIdentifier, value: str) -> x509.NameAttribute[str]:
    return x509.NameAttribute(oid, value[:_UB_NAME])


def _serial_number(instance: str) -> x509.NameAttribute[str]:
    # X.520 serialNumber is a PrintableString (RFC 5280 Appendix A.1), which lacks "_"; an
    # instance code with "_" is kept intact as a UTF8String rather than refused.
    value = instance[:_UB_NAME]
    if _PRINTABLE.fullmatch(value):
        return x509.NameAttribute(NameOID.SERIAL_NUMBER, value)
    return x509.NameAttribute(NameOID.SERIAL_NUMBER, value, _ASN1Type.UTF8String)


def _subject(common_name: str, member: MemberId) -> x509.Name:
    return x509.Name(
        [
            _serial_number(member.instance),
            _attribute(NameOID.ORGANIZATIONAL_UNIT_NAME, member.member_class),
            _attribute(NameOID.ORGANIZATION_NAME, member.member_code),
            _attribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _end_entity_extensions(
    profile: CertificateProfile, names: list[x509.GeneralName]
) -> tuple[tuple[x509.ExtensionType, bool], ...]:
    return (
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (key_usage(*profile.key_usage), True),
        (x509.ExtendedKeyUsage(list(profile.extended_key_usage)), False),
        (x509.SubjectAlternativeName(names), False),
    )


def auth_template(
    server_id: SecurityServerId,
    dns_names: Iterable[str] = ("localhost",),
    ip_addresses: Iterable[str] = ("127.0.0.1",),
) -> CertificateTemplate:
    """The authentication certificate of ``server_id``, reachable at the given names."""
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    names.append(x509.UniformResourceIdentifier(server_urn(server_id)))
    return CertificateTemplate(
        profile=AUTH_PROFILE,
        subject=_subject(server_id.server_code, server_id.owner),
        extensions=_end_entity_extensions(AUTH_PROFILE, names),
    )


def sign_template(member_id: MemberId) -> CertificateTemplate:
    """The signing certificate of ``member_id``."""
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(member_urn(member_id))]
    return CertificateTemplate(
        profile=SIGN_PROFILE,
        subject=_subject(member_id.member_code, member_id),
        extensions=_end_entity_extensions(SIGN_PROFILE, names),
    )


# --- checking ------------------------------------------------------------------------------------


def _refuse(cert: x509.Certificate, profile: CertificateProfile, reason: str) -> NoReturn:
    raise CertificateProfileError(
        f"not {profile.title}: {reason}",
        internal=f"{describe(cert)} is not {profile.title}: {reason}",
    )


_E = TypeVar("_E", bound=x509.ExtensionType)


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def check_profile(cert: x509.Certificate, profile: CertificateProfile) -> None:
    """Raise :class:`CertificateProfileError` unless ``cert`` may be used as ``profile`` says."""
    # (1) an end-entity certificate (RFC 5280 §4.2.1.9)
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        _refuse(cert, profile, "it is a CA certificate")
    # (2) key usage present (absent means any usage, RFC 5280 §4.2.1.3) and within the profile
    usage = _extension(cert, x509.KeyUsage)
    if usage is None:
        _refuse(cert, profile, "it has no key usage extension")
    names = key_usage_names(usage)
    if missing := profile.key_usage - names:
        _refuse(cert, profile, f"key usage lacks {', '.join(sorted(missing))}")
    if extra := names - profile.key_usage - profile.allowed_key_usage:
        _refuse(cert, profile, f"key usage {', '.join(sorted(extra))} not allowed")
    # (3) extended key usage (RFC 5280 §4.2.1.12): the profile's purposes, none of the other's
    _check_extended_key_usage(cert, profile)
    # (4) exactly one identifier URI of the profile's kind, holding a valid identifier
    _URN_PARSERS[profile.name](_the_uri(cert, profile))


def _check_extended_key_usage(cert: x509.Certificate, profile: CertificateProfile) -> None:
    eku = _extension(cert, x509.ExtendedKeyUsage)
    purposes = set(eku) if eku is not None else set()
    if missing := profile.required_extended_key_usage - purposes:
        _refuse(cert, profile, f"extended key usage lacks {_purpose_names(missing)}")
    if forbidden := purposes & profile.forbidden_extended_key_usage:
        _refuse(cert, profile, f"extended key usage {_purpose_names(forbidden)} not allowed")


def _purpose_names(purposes: Iterable[ObjectIdentifier]) -> str:
    return ", ".join(sorted(purpose_name(p) for p in purposes))


def purpose_name(purpose: ObjectIdentifier) -> str:
    """The RFC 5280 §4.2.1.12 / RFC 9336 name of an extended key usage, else its dotted form."""
    return _PURPOSE_NAMES.get(purpose, purpose.dotted_string)


def check_auth_profile(cert: x509.Certificate) -> None:
    """Refuse ``cert`` as a TLS certificate between security servers unless it is an auth cert."""
    check_profile(cert, AUTH_PROFILE)


def check_sign_profile(cert: x509.Certificate) -> None:
    """Refuse ``cert`` as a message-signing certificate unless it is a signing cert with a P-256
    key (the key ES256 signatures need, RFC 7518 §3.4)."""
    check_profile(cert, SIGN_PROFILE)
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        _refuse(cert, SIGN_PROFILE, "its key is not a P-256 key (ES256)")


def profile_of(cert: x509.Certificate) -> Literal["auth", "sign", "ca"] | None:
    """Which profile ``cert`` conforms to, ``"ca"`` for a CA certificate, else None."""
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        return "ca"
    try:
        check_auth_profile(cert)
        return "auth"
    except CertificateProfileError:
        pass
    try:
        check_sign_profile(cert)
        return "sign"
    except CertificateProfileError:
        return None
