"""A minimal certificate authority that issues the two Exchange profiles: a self-signed root, or
an intermediate CA issued by another CA.

The CA lives in a directory: ``ca.key.pem`` (P-256, PKCS#8, mode 0600, optionally encrypted) and
``ca.cert.pem`` (BasicConstraints CA=true critical with a path length, default 0: it issues
end-entity certificates only; KeyUsage keyCertSign + cRLSign critical, SubjectKeyIdentifier; an
intermediate also the AuthorityKeyIdentifier of its parent). A root that is to certify an
intermediate CA is made with ``path_length`` 1 or more. It issues authentication and signing
certificates (``exchange.trust.profiles``), from a public key or from a PKCS#10 request
(RFC 2986) whose self-signature it checks. Issued certificates carry random serials (RFC 5280
§4.1.2.2, at least 64 bits of entropy), a SubjectKeyIdentifier and the CA's
AuthorityKeyIdentifier.

It keeps no register of what it issued, publishes no CRL and answers no OCSP; the CA service
and OCSP responder build on it. Only ``create``, ``create_intermediate`` and ``load`` touch
files.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from exchange.errors import ClientError, ConfigurationError
from exchange.identifiers import MemberId, SecurityServerId
from exchange.trust import keys
from exchange.trust.profiles import (
    CertificateTemplate,
    ProfileName,
    auth_template,
    key_usage,
    sign_template,
)

KEY_FILE: Final = "ca.key.pem"
CERT_FILE: Final = "ca.cert.pem"
BACKDATE: Final = dt.timedelta(minutes=5)
"""notBefore is set this far in the past so that a peer whose clock lags still accepts it."""


class InvalidCertificateRequest(ClientError):
    """A PKCS#10 request that does not parse, does not verify, or does not fit the profile."""

    code = "Client.InvalidCertificateRequest"


def _validity(
    now: dt.datetime | None, not_before: dt.datetime | None, days: int
) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise ValueError("a certificate must be valid for at least one day")
    if not_before is not None:
        return not_before, not_before + dt.timedelta(days=days)
    now = now or dt.datetime.now(dt.UTC)
    return now - BACKDATE, now + dt.timedelta(days=days)


def _ski(public_key: CertificatePublicKeyTypes) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey,
    name: str,
    days: int,
    now: dt.datetime | None,
    *,
    path_length: int | None,
    parent: CertificateAuthority | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start, end = _validity(now, None, days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if parent is None else parent.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(key_usage("keyCertSign", "cRLSign"), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
    )
    if parent is None:
        return builder.not_valid_after(end).sign(key, hashes.SHA256())
    end = min(end, parent.cert.not_valid_after_utc)
    builder = builder.not_valid_after(end).add_extension(parent._aki(), critical=False)
    return builder.sign(parent.key, hashes.SHA256())


def _refuse_existing_ca(target: Path) -> None:
    for existing in (target / KEY_FILE, target / CERT_FILE):
        if existing.exists():
            raise ConfigurationError(
                f"{existing} already exists: a CA is there; use another directory"
            )


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA key with its self-signed root certificate."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    cert: x509.Certificate

    @classmethod
    def create(
        cls,
        directory: str | Path,
        name: str = "Exchange Test CA",
        *,
        passphrase: bytes | None = None,
        days: int = 3650,
        now: dt.datetime | None = None,
        path_length: int | None = 0,
    ) -> CertificateAuthority:
        """Make a new root CA in ``directory``; refuses to overwrite an existing one.

        ``path_length`` is how many intermediate CAs may follow it (RFC 5280 §4.2.1.9).
        """
        target = Path(directory)
        _refuse_existing_ca(target)
        key = keys.generate_key()
        cert = _ca_certificate(key, name, days, now, path_length=path_length)
        return cls._saved(target, key, cert, passphrase)

    def create_intermediate(
        self,
        directory: str | Path,
        name: str,
        *,
        passphrase: bytes | None = None,
        days: int = 1825,
        now: dt.datetime | None = None,
        path_length: int | None = 0,
    ) -> CertificateAuthority:
        """Make a new intermediate CA in ``directory``, certified by this CA (never outliving
        it); refuses to overwrite an existing one."""
        constraints = self.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.path_length is not None and constraints.path_length < 1:
            raise ConfigurationError(
                f"{self.cert.subject.rfc4514_string()} may not certify another CA (path length "
                f"{constraints.path_length}); make a root with path length 1 or more"
            )
        target = Path(directory)
        _refuse_existing_ca(target)
        key = keys.generate_key()
        cert = _ca_certificate(key, name, days, now, path_length=path_length, parent=self)
        return self._saved(target, key, cert, passphrase)

    @classmethod
    def _saved(
        cls,
        target: Path,
        key: ec.EllipticCurvePrivateKey,
        cert: x509.Certificate,
        passphrase: bytes | None,
    ) -> CertificateAuthority:
        keys.save_private_key(target / KEY_FILE, key, passphrase)
        keys.save_certificate(target / CERT_FILE, cert)
        return cls(key=key, cert=cert)

    @classmethod
    def load(cls, directory: str | Path, passphrase: bytes | None = None) -> CertificateAuthority:
        """Load the CA in ``directory``; :class:`ConfigurationError` if it is missing or broken."""
        target = Path(directory)
        key = keys.load_private_key(target / KEY_FILE, passphrase)
        cert = keys.load_certificate(target / CERT_FILE)
        if cert.public_key() != key.public_key():
            raise ConfigurationError(f"{target / KEY_FILE} is not the key of {target / CERT_FILE}")
        return cls(key=key, cert=cert)

    def issue(
        self,
        public_key: CertificatePublicKeyTypes,
        template: CertificateTemplate,
        *,
        days: int = 365,
        now: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
    ) -> x509.Certificate:
        """Issue a certificate for ``public_key`` as ``template`` says.

        Without ``not_before`` it is valid from ``now`` (backdated by :data:`BACKDATE`) for
        ``days``; with it, from ``not_before`` for ``days`` (tests make expired certificates so).
        It never outlives the CA certificate.
        """
        start, end = _validity(now, not_before, days)
        end = min(end, self.cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(template.subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(_ski(public_key), critical=False)
            .add_extension(self._aki(), critical=False)
        )
        for extension, critical in template.extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(self.key, hashes.SHA256())

    def _aki(self) -> x509.AuthorityKeyIdentifier:
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def issue_auth_cert(
        self,
        public_key: CertificatePublicKeyTypes,
        server_id: SecurityServerId,
        *,
        dns_names: Iterable[str] = ("localhost",),
        ip_addresses: Iterable[str] = ("127.0.0.1",),
        days: int = 365,
        now: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
    ) -> x509.Certificate:
        """An authentication (TLS) certificate for security server ``server_id``."""
        template = auth_template(server_id, dns_names, ip_addresses)
        return self.issue(public_key, template, days=days, now=now, not_before=not_before)

    def issue_sign_cert(
        self,
        public_key: CertificatePublicKeyTypes,
        member_id: MemberId,
        *,
        days: int = 365,
        now: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
    ) -> x509.Certificate:
        """A signing certificate for member ``member_id``; the key must be P-256 (ES256)."""
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise ValueError("a signing certificate needs a P-256 key (ES256)")
        template = sign_template(member_id)
        return self.issue(public_key, template, days=days, now=now, not_before=not_before)

    def issue_from_csr(
        self,
        csr_pem: bytes,
        profile: ProfileName,
        identifier: SecurityServerId | MemberId,
        *,
        dns_names: Iterable[str] = ("localhost",),
        ip_addresses: Iterable[str] = ("127.0.0.1",),
        days: int = 365,
        now: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
    ) -> x509.Certificate:
        """Issue a ``profile`` certificate for the key in a PEM PKCS#10 request.

        Only the request's public key is used; subject and extensions come from the profile and
        ``identifier``, which the caller has authorised. Raises
        :class:`InvalidCertificateRequest` for a request that does not parse or verify.
        """
        public_key = _verified_csr_key(csr_pem)
        if profile == "auth" and isinstance(identifier, SecurityServerId):
            return self.issue_auth_cert(
                public_key,
                identifier,
                dns_names=dns_names,
                ip_addresses=ip_addresses,
                days=days,
                now=now,
                not_before=not_before,
            )
        if profile == "sign" and isinstance(identifier, MemberId):
            try:
                return self.issue_sign_cert(
                    public_key, identifier, days=days, now=now, not_before=not_before
                )
            except ValueError as exc:
                raise InvalidCertificateRequest(f"certificate request refused: {exc}") from None
        raise TypeError(f"a {profile!r} certificate cannot be issued to {identifier!r}")


def csr_public_key(csr_pem: bytes) -> CertificatePublicKeyTypes:
    """The public key of a PEM PKCS#10 request whose self-signature verifies (RFC 2986 §3)."""
    # (1) a PEM PKCS#10 CertificationRequest (RFC 2986 §4)
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise InvalidCertificateRequest("not a PEM certificate signing request") from None
    # (2) its self-signature verifies: the requester holds the private key (RFC 2986 §3)
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise InvalidCertificateRequest("certificate signing request signature does not verify")
    return csr.public_key()


def _verified_csr_key(csr_pem: bytes) -> CertificatePublicKeyTypes:
    key = csr_public_key(csr_pem)
    # (3) a key type we issue for
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidCertificateRequest("certificate signing request key must be an EC key")
    return key
