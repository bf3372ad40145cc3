"""Private keys and certificates on disk, and their fingerprints.

Keys are P-256 (ES256 is the cheapest sign+verify pair on our machines: the reference costs in
bench/README.md),
stored as PKCS#8 PEM files created with mode 0600 (never readable by others, not even for an
instant), optionally encrypted with a passphrase. Certificates are PEM.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from exchange.durable import write_durably
from exchange.errors import ConfigurationError


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, data: bytes) -> None:
    write_durably(path, data, private=True)


def save_private_key(
    path: str | Path, key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None
) -> Path:
    """Write ``key`` as PKCS#8 PEM with mode 0600, encrypted when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    target = Path(path)
    _write_private(target, pem)
    return target


def load_private_key(
    path: str | Path, passphrase: bytes | None = None
) -> ec.EllipticCurvePrivateKey:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read private key {p}: {exc.strerror}") from None
    mode = p.stat().st_mode & 0o077
    if mode:
        raise ConfigurationError(
            f"private key {p} is readable by others (mode {oct(p.stat().st_mode & 0o777)}); "
            f"run: chmod 600 {p}"
        )
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        if passphrase is not None:
            # a passphrase was given (e.g. from the environment) but this key is not encrypted
            return load_private_key(p, None)
        raise ConfigurationError(
            f"private key {p} is encrypted: give its passphrase "
            "(EXCHANGE_KEY_PASSPHRASE or --passphrase-file)"
        ) from None
    except ValueError:
        raise ConfigurationError(
            f"cannot load private key {p}: wrong passphrase or not a key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError(f"private key {p} is not an EC key")
    return key


def save_certificate(path: str | Path, *certs: x509.Certificate) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return target


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read certificate file {p}: {exc.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigurationError(f"{p} holds no PEM certificate") from None
    return certs


def load_certificate(path: str | Path) -> x509.Certificate:
    return load_certificates(path)[0]


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def cert_from_pem(pem: str | bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode("ascii") if isinstance(pem, str) else pem)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint of the DER certificate, lowercase hex (the global configuration form)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def self_signed_certificate(
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    days: int = 3650,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A self-signed certificate for a key that is trusted directly (e.g. the central server's
    configuration signing key carried in the anchor, or an information system's TLS key)."""
    now = now or dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
