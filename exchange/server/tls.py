"""TLS contexts of a security server (docs/design.md §5): TLS 1.2 minimum, 1.3 preferred.

OpenSSL is the first gate (chain to an approved CA, validity); the application then checks the
peer's authentication certificate fingerprint against the global configuration, which is the
authoritative decision (see :mod:`exchange.server.provider` and :mod:`exchange.server.peer`).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509

from exchange.trust.keys import cert_pem


def _base(purpose: int, cert: Path, key: Path, passphrase: bytes | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key), password=passphrase)
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def _cadata(cas: Iterable[x509.Certificate]) -> str:
    return "".join(cert_pem(c) for c in cas)


def provider_context(
    cert: Path, key: Path, passphrase: bytes | None, cas: Iterable[x509.Certificate]
) -> ssl.SSLContext:
    """Server side of the provider port: the peer must present a certificate."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER, cert, key, passphrase)
    ctx.verify_mode = ssl.CERT_REQUIRED
    data = _cadata(cas)
    if data:
        ctx.load_verify_locations(cadata=data)
    return ctx


def peer_client_context(
    cert: Path, key: Path, passphrase: bytes | None, cas: Iterable[x509.Certificate]
) -> ssl.SSLContext:
    """Client side towards a provider: host names are not used, fingerprints are."""
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT, cert, key, passphrase)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    data = _cadata(cas)
    if data:
        ctx.load_verify_locations(cadata=data)
    return ctx


def consumer_https_context(
    cert: Path, key: Path, passphrase: bytes | None, is_certs: Iterable[x509.Certificate]
) -> ssl.SSLContext:
    """HTTPS for information systems: a client certificate is asked for, and is accepted only
    if it is one registered for some hosted client (pinned as its own trust anchor)."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER, cert, key, passphrase)
    data = _cadata(is_certs)
    if data:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cadata=data)
    return ctx
