"""What ``exchange audit document verify`` checks: a saved document against the trust material.

The document is a file holding the compact JWS, or a service's JSON answer with a
``"document"`` member (a receipt as the window saved it). For an answer, every member it states
beside the document must be the one signed inside it: a receipt whose printed amount was changed
does not verify, though its signature still does. The trust material is a PEM file of approved
CA certificates (the demo's ``trust-bundle.pem``) or a folder from ``exchange audit
trust-export`` (its ``ca/*.pem``); only CA certificates in it are trusted. The signature, the
signer and its certificate are judged by :func:`exchange.trust.documents.verify_document`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography import x509

from exchange.errors import ConfigurationError
from exchange.identifiers import MemberId
from exchange.trust.documents import DocumentError, VerifiedDocument, verify_document
from exchange.trust.keys import load_certificates

_MAX_FILE: Final = 1 * 2**20
_MISSING: Final = object()
UNSIGNED_MEMBERS: Final = frozenset({"document", "refunds"})
"""Members of a saved answer that are not claims of its document: the document itself, and a
receipt's refunds (each a signed document of its own)."""


@dataclass(frozen=True, slots=True)
class SavedDocument:
    """A document as saved: its JWS, and the answer's other members when it was an answer."""

    token: str
    stated: dict[str, Any]


def read_document(path: Path) -> SavedDocument:
    """The compact JWS in ``path`` (alone, or as the ``document`` of a JSON answer)."""
    try:
        data = path.read_bytes()[:_MAX_FILE].strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    if data.startswith(b"{"):
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ConfigurationError(f"{path} is neither a JWS nor JSON") from None
        token = answer.get("document")
        if not isinstance(token, str):
            raise ConfigurationError(f'{path} holds JSON without a "document" member')
        return SavedDocument(token, {k: v for k, v in answer.items() if k not in UNSIGNED_MEMBERS})
    try:
        return SavedDocument(data.decode("ascii"), {})
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path} does not hold a compact JWS") from None


def verify_saved(
    saved: SavedDocument,
    trusted_cas: Sequence[x509.Certificate],
    *,
    typ: str | None = None,
    issuer: MemberId | None = None,
) -> VerifiedDocument:
    """Verify the document, then that the answer states nothing it does not sign."""
    # (1)-(6) the document: its type, signer's profile, signature, issuer, chain, expectations
    verified = verify_document(saved.token, trusted_cas, typ=typ, issuer=issuer)
    # (7) every member the answer states beside it is the signed one
    for name, value in saved.stated.items():
        signed = verified.claims.get(name, _MISSING)
        if signed != value:
            shown = "nothing" if signed is _MISSING else orjson.dumps(signed).decode()[:80]
            raise DocumentError(
                f"the answer states {name} = {orjson.dumps(value).decode()[:80]}, "
                f"but the signed document says {shown}"
            )
    return verified


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
