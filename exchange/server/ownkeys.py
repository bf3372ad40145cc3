"""A security server's own keys, read from its configuration: the member signing keys, the
authentication key, and which of them signs.

The one place that decides which key signs for a member (its newest certificate, so that a
rotated-in key takes over): the running server, and the commands that sign for a stopped one
(``log archive``, ``audit`` stamping), use the same rule.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from cryptography import x509

from exchange.errors import ConfigurationError
from exchange.identifiers import MemberId
from exchange.protocol.jws import Signer, verify_by_cert
from exchange.server.config import ServerConfig, SigningKeyConfig
from exchange.trust.keys import load_certificate, load_private_key

KEY_PROBE_SECONDS = 10.0
"""How long a key probe's verdict stands (``/health`` asks on every call)."""


def passphrase_from_env(config: ServerConfig) -> bytes | None:
    """The passphrase of the server's encrypted keys, from the environment variable its
    configuration names (``EXCHANGE_KEY_PASSPHRASE`` by default)."""
    value = os.environ.get(config.passphrase_env)
    return value.encode() if value else None


def load_auth_cert(config: ServerConfig, passphrase: bytes | None) -> x509.Certificate:
    """The authentication certificate, checked to be the auth key's (a bad key, passphrase or
    pairing fails at start, not at the first TLS handshake)."""
    cert = load_certificate(config.auth_cert)
    if load_private_key(config.auth_key, passphrase).public_key() != cert.public_key():
        raise ConfigurationError(f"{config.auth_cert} is not the certificate of {config.auth_key}")
    return cert


def load_signers(config: ServerConfig, passphrase: bytes | None) -> list[tuple[MemberId, Signer]]:
    """Every configured signing key with its certificate, each checked to pair."""
    signers = _load(config.signing, passphrase)
    if not signers:
        raise ConfigurationError("no member signing key configured")
    return signers


def _load(
    items: Iterable[SigningKeyConfig], passphrase: bytes | None
) -> list[tuple[MemberId, Signer]]:
    signers = []
    for item in items:
        key = load_private_key(item.key, passphrase)
        cert = load_certificate(item.cert)
        if cert.public_key() != key.public_key():
            raise ConfigurationError(f"{item.cert} is not the certificate of {item.key}")
        signers.append((item.member, Signer(key, cert)))
    return signers


def active(signers: Iterable[tuple[MemberId, Signer]]) -> dict[MemberId, Signer]:
    """Each member signs with its newest certificate (the last activated)."""
    chosen: dict[MemberId, Signer] = {}
    for member, signer in signers:
        held = chosen.get(member)
        if held is None or signer.cert.not_valid_before_utc >= held.cert.not_valid_before_utc:
            chosen[member] = signer
    return chosen


def owner_signer(config: ServerConfig, signers: dict[MemberId, Signer]) -> Signer:
    """The key that signs the server's own documents (tree heads, archives, the policy trail):
    its owner member's active key (another member's when the owner has none)."""
    return signers.get(config.owner) or next(iter(signers.values()))


def load_owner_signer(config: ServerConfig) -> Signer:
    """:func:`owner_signer` for a command working on a stopped server's files (only the owner's
    keys are read)."""
    mine = [s for s in config.signing if s.member == config.owner] or list(config.signing)
    signers = _load(mine, passphrase_from_env(config))
    if not signers:
        raise ConfigurationError("no member signing key configured")
    return owner_signer(config, active(signers))


def expiry_warnings(
    own_certs: Iterable[x509.Certificate],
    auth_cert: x509.Certificate,
    now: float,
    within_days: int,
) -> list[str]:
    """Operator warnings for own certificates that expire within ``within_days``."""
    warnings = []
    for cert in own_certs:
        left = cert.not_valid_after_utc.timestamp() - now
        if left < within_days * 86400:
            what = "authentication" if cert is auth_cert else "signing"
            warnings.append(
                f"{what} certificate {cert.subject.rfc4514_string()} expires "
                f"{cert.not_valid_after_utc.isoformat()} (in {max(0, int(left // 86400))} "
                "days): issue and activate a new one"
            )
    return warnings


class KeyProbe:
    """Whether each active signing key still signs: a test document each one signs must verify
    with its certificate's key. Asked by ``/health``; re-probed at most every
    :data:`KEY_PROBE_SECONDS`."""

    def __init__(self) -> None:
        self._last: tuple[float, tuple[str, ...]] = (-1e18, ())

    def unusable(self, signers: dict[MemberId, Signer], now: float) -> tuple[str, ...]:
        at, found = self._last
        if now - at < KEY_PROBE_SECONDS:
            return found
        problems = []
        for member, signer in signers.items():
            try:
                token = signer.sign(b'{"probe":"health"}')
                verify_by_cert(token, signer.cert, f"the signing certificate of {member}")
            except Exception as exc:
                problems.append(f"the signing key of member {member} does not sign: {exc}")
        self._last = (now, tuple(problems))
        return self._last[1]
