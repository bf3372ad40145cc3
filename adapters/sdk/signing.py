"""An adapter's document-signing key and certificate chain, read from files at start.

``load_document_signer(key, certificates)``: the key (PKCS#8 PEM, mode 0600, passphrase from
``EXCHANGE_KEY_PASSPHRASE`` when it is encrypted) and a PEM file with the key's member signing
certificate first and the CA certificate(s) after it (the chain put into each document's
``x5c``). Wrong pairs and certificates of the wrong profile fail the start with
:class:`~exchange.errors.ConfigurationError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from exchange.errors import ConfigurationError
from exchange.trust.documents import DocumentSigner
from exchange.trust.keys import load_certificates, load_private_key
from exchange.trust.validation import CertificateError

PASSPHRASE_ENV = "EXCHANGE_KEY_PASSPHRASE"


def load_document_signer(key_path: Path, chain_path: Path) -> DocumentSigner:
    """The signer made of the key at ``key_path`` and the chain at ``chain_path``."""
    passphrase = os.environ.get(PASSPHRASE_ENV)
    key = load_private_key(key_path, passphrase.encode() if passphrase else None)
    chain = tuple(load_certificates(chain_path))
    try:
        return DocumentSigner(key, chain)
    except (ValueError, CertificateError) as exc:
        reason = exc.message if isinstance(exc, CertificateError) else str(exc)
        raise ConfigurationError(f"{chain_path}: {reason}") from None
