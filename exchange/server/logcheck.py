"""Verifying and reading a security server's message log from its configuration.

The trusted CAs and the approved TSAs (whose certificates check the time-stamps of tree heads)
come from the global configuration the server holds (verified against its anchor), or from
certificate files an auditor supplies.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.errors import ConfigurationError, ExchangeError
from exchange.globalconf.document import GlobalConf
from exchange.globalconf.verifier import load_stored
from exchange.identifiers import MemberId
from exchange.messagelog.verify import CertLookup, VerifyReport, verify_log
from exchange.protocol.jws import JwsError
from exchange.server.config import ServerConfig
from exchange.server.evidence import check_entry
from exchange.trust.profiles import check_sign_profile, member_id_of_signing_cert


def exchange_entry_checker(entry: dict[str, Any], lookup: CertLookup) -> list[str]:
    """The message-log ``entry_checker`` for exchange records (see :mod:`evidence`)."""
    logged_at = entry.get("logged_at")
    at = dt.datetime.fromtimestamp(logged_at / 1000, dt.UTC) if isinstance(logged_at, int) else None

    def key(thumb: str) -> tuple[MemberId, ec.EllipticCurvePublicKey]:
        cert = lookup.trusted(thumb, at)
        try:
            check_sign_profile(cert)
            member = member_id_of_signing_cert(cert)
        except ExchangeError as exc:
            raise JwsError(f"certificate {thumb} cannot sign messages: {exc.message}") from None
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        return member, public

    return check_entry(entry, key)


def trusted_cas_of(config: ServerConfig) -> list[x509.Certificate]:
    """Approved CAs of the global configuration this server last accepted."""
    return _stored_globalconf(config, "the CA certificates with --ca").ca_certs()


def trusted_tsas_of(config: ServerConfig) -> list[x509.Certificate]:
    """Approved TSA certificates of the global configuration this server last accepted."""
    return _stored_globalconf(config, "the TSA certificates with --tsa-cert").tsa_certs()


def _stored_globalconf(config: ServerConfig, instead: str) -> GlobalConf:
    conf = load_stored(config.anchor, config.globalconf_state, int(time.time()))
    if conf is None:
        raise ConfigurationError(
            f"{config.globalconf_state} does not exist: the server has never received a global "
            f"configuration; give {instead}"
        )
    return conf


def verify_server_log(
    config: ServerConfig,
    *,
    cas: Sequence[x509.Certificate] | None = None,
    tsa_certs: Sequence[x509.Certificate] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Verify the server's message log, its tree heads and their time-stamps.

    ``cas`` and ``tsa_certs`` default to the approved CAs and TSAs of the stored global
    configuration.
    """
    if not Path(config.log_path).exists():
        raise ConfigurationError(f"message log {config.log_path} does not exist yet")
    return verify_log(
        config.log_path,
        trusted_cas=list(cas) if cas is not None else trusted_cas_of(config),
        entry_checker=exchange_entry_checker,
        progress=progress,
        tsa_certs=list(tsa_certs) if tsa_certs is not None else trusted_tsas_of(config),
        archive_dir=config.archive_dir,
    )
