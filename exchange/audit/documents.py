"""Reading what ``exchange audit document verify`` checks: the document and the trust material.

The document is a file holding the compact JWS, or a service's JSON answer with a
``"document"`` member (a receipt as the window saved it). The trust material is a PEM file of
approved CA certificates (the demo's ``trust-bundle.pem``) or a folder from ``exchange audit
trust-export`` (its ``ca/*.pem``); only CA certificates in it are trusted. The verification
itself is :func:`exchange.trust.documents.verify_document`.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from cryptography import x509

from exchange.errors import ConfigurationError
from exchange.trust.keys import load_certificates

_MAX_FILE = 1 * 2**20


def read_document(path: Path) -> str:
    """The compact JWS in ``path`` (alone, or as the ``document`` of a JSON object)."""
    try:
        data = path.read_bytes()[:_MAX_FILE].strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    if data.startswith(b"{"):
        try:
            token = orjson.loads(data).get("document")
        except orjson.JSONDecodeError:
            raise ConfigurationError(f"{path} is neither a JWS nor JSON") from None
        if not isinstance(token, str):
            raise ConfigurationError(f'{path} holds JSON without a "document" member')
        return token
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path} does not hold a compact JWS") from None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def trusted_cas_from(path: Path) -> list[x509.Certificate]:
    """The CA certificates of a PEM file or of a trust-export folder's ``ca/``."""
    files = sorted((path / "ca").glob("*.pem")) if path.is_dir() else [path]
    cas = [c for f in files for c in load_certificates(f) if _is_ca(c)]
    if not cas:
        raise ConfigurationError(f"{path} holds no CA certificate to trust")
    return cas
