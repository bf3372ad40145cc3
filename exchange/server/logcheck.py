"""Verifying a security server's message log from its configuration.

The log's owner is this server (``server_id`` of its configuration, never what the log file
says); the trusted CAs and the approved TSAs (whose certificates check the time-stamps of tree
heads) come from the global configuration the server holds (verified against its anchor), or
from certificate files an auditor supplies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509

from exchange.errors import ConfigurationError
from exchange.globalconf.document import GlobalConf
from exchange.globalconf.verifier import load_stored
from exchange.messagelog.verify import VerifyReport, verify_log
from exchange.server.config import ServerConfig


def trusted_cas_of(config: ServerConfig) -> list[x509.Certificate]:
    """Approved CAs of the global configuration this server last accepted."""
    return stored_globalconf(config, "the CA certificates with --ca").ca_certs()


def trusted_tsas_of(config: ServerConfig) -> list[x509.Certificate]:
    """Approved TSA certificates of the global configuration this server last accepted."""
    return stored_globalconf(config, "the TSA certificates with --tsa-cert").tsa_certs()


def stored_globalconf(config: ServerConfig, instead: str) -> GlobalConf:
    """The global configuration this server last accepted, verified against its anchor."""
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
    crash: bool = False,
) -> VerifyReport:
    """Verify the server's message log as this server's: every record, its tree heads (signed
    by this server's owner) and their time-stamps.

    ``cas`` and ``tsa_certs`` default to the approved CAs and TSAs of the stored global
    configuration; ``crash`` as for :func:`~exchange.messagelog.verify.verify_log`.
    """
    if not Path(config.log_path).exists():
        raise ConfigurationError(f"message log {config.log_path} does not exist yet")
    return verify_log(
        config.log_path,
        trusted_cas=list(cas) if cas is not None else trusted_cas_of(config),
        owner=config.server_id,
        progress=progress,
        tsa_certs=list(tsa_certs) if tsa_certs is not None else trusted_tsas_of(config),
        archive_dir=config.archive_dir,
        crash=crash,
    )
