"""The configuration anchor: the trust root a security server installs out of band.

An anchor is a small JSON file::

    {"instance": "PS", "download_url": "http://127.0.0.1:4000/globalconf",
     "generated_at": 1732700000, "verification_certs": ["-----BEGIN CERTIFICATE-----..."]}

naming the instance, where to download the global configuration and the certificates whose keys may
sign it (more than one while the central server rotates its signing key). A verifier looks a
signer up by the JWS header's ``x5t#S256`` (RFC 7515 §4.1.8) with :meth:`Anchor.key_for`; the token
itself never supplies a key.

This module reads and writes the anchor file; it does not fetch or verify configurations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.durable import write_durably
from exchange.errors import ConfigurationError, GlobalConfError, InvalidIdentifier
from exchange.identifiers import validate_part
from exchange.protocol.jws import cert_thumbprint


@dataclass(frozen=True, slots=True)
class Anchor:
    instance: str
    download_url: str
    generated_at: int
    verification_certs: tuple[str, ...]
    """PEM certificates of the keys allowed to sign the global configuration."""
    _keys: dict[str, ec.EllipticCurvePublicKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.verification_certs:
            raise ConfigurationError("anchor has no verification certificate")
        keys = dict(_verification_key(pem) for pem in self.verification_certs)
        object.__setattr__(self, "_keys", keys)

    @property
    def thumbprints(self) -> frozenset[str]:
        """``x5t#S256`` of each verification certificate."""
        return frozenset(self._keys)

    def key_for(self, thumbprint: str) -> ec.EllipticCurvePublicKey:
        """The public key of the verification certificate with this ``x5t#S256``."""
        try:
            return self._keys[thumbprint]
        except KeyError:
            raise GlobalConfError(
                f"global configuration is signed by a certificate the anchor does not hold "
                f"(x5t#S256 {thumbprint[:60]!r})"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "download_url": self.download_url,
            "generated_at": self.generated_at,
            "verification_certs": list(self.verification_certs),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes | str) -> Anchor:
        """Parse an anchor; anything malformed raises :class:`ConfigurationError`."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ConfigurationError("anchor is not JSON") from None
        if not isinstance(doc, dict):
            raise ConfigurationError("anchor is not a JSON object")
        return cls(
            instance=_instance(doc.get("instance")),
            download_url=_url(doc.get("download_url")),
            generated_at=_timestamp(doc.get("generated_at")),
            verification_certs=_pems(doc.get("verification_certs")),
        )

    @classmethod
    def load(cls, path: str | Path) -> Anchor:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read anchor {p}: {exc.strerror}") from None
        try:
            return cls.from_json(data)
        except ConfigurationError as exc:
            raise ConfigurationError(f"anchor {p}: {exc.message}") from None

    def save(self, path: str | Path) -> Path:
        """Write atomically (a reader never sees half an anchor)."""
        target = Path(path)
        write_durably(target, self.to_json() + b"\n")
        return target


def _verification_key(pem: str) -> tuple[str, ec.EllipticCurvePublicKey]:
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("utf-8"))
    except ValueError:
        raise ConfigurationError("anchor verification certificate is not PEM") from None
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigurationError("anchor verification certificate must hold a P-256 key (ES256)")
    return cert_thumbprint(cert), key


def _instance(value: object) -> str:
    if not isinstance(value, str):
        raise ConfigurationError("anchor 'instance' must be a string")
    try:
        return validate_part(value, "instance")
    except InvalidIdentifier as exc:
        raise ConfigurationError(f"anchor {exc.message}") from None


def _url(value: object) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigurationError("anchor 'download_url' must be an http(s) URL")
    return value


def _timestamp(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ConfigurationError("anchor 'generated_at' must be a unix time in seconds")
    return value


def _pems(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError("anchor 'verification_certs' must be a list of PEM strings")
    return tuple(value)
