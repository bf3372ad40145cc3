"""Creating a central server's directory: registry, configuration signing key, anchor."""

from __future__ import annotations

import time
from pathlib import Path

import tomli_w

from exchange.central.app import DEFAULT_PORT, CentralConfig, central_config
from exchange.central.registry import Registry
from exchange.errors import ConfigurationError
from exchange.globalconf.anchor import Anchor
from exchange.trust.keys import (
    cert_pem,
    generate_key,
    save_certificate,
    save_private_key,
    self_signed_certificate,
)


def init_central(
    directory: str | Path,
    instance: str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    download_url: str | None = None,
    regenerate_interval_seconds: int = 60,
    expiry_seconds: int = 600,
) -> CentralConfig:
    """Write ``central.toml``, ``central.db``, the signing key (0600) and ``anchor.json``."""
    target = Path(directory).resolve()
    toml_path = target / "central.toml"
    if toml_path.exists():
        raise ConfigurationError(f"{toml_path} already exists; this central server is set up")
    doc = {
        "instance": instance,
        "database": "central.db",
        "signing_key": "keys/globalconf-signing.key",
        "signing_cert": "keys/globalconf-signing.pem",
        "anchor": "anchor.json",
        "host": host,
        "port": port,
        "regenerate_interval_seconds": regenerate_interval_seconds,
        "expiry_seconds": expiry_seconds,
    }
    config = central_config(doc, toml_path)
    target.mkdir(parents=True, exist_ok=True)
    Registry.create(config.db_path, instance).close()
    anchor = _create_signing_key(config, download_url or f"http://{host}:{port}/globalconf")
    anchor.save(config.anchor_path)
    toml_path.write_text(tomli_w.dumps(config.to_toml_dict(base=target)), encoding="utf-8")
    return config


def _create_signing_key(config: CentralConfig, download_url: str) -> Anchor:
    key = generate_key()
    cert = self_signed_certificate(key, f"{config.instance} global configuration signing")
    save_private_key(config.signing_key_path, key)
    save_certificate(config.signing_cert_path, cert)
    return Anchor(
        instance=config.instance,
        download_url=download_url,
        generated_at=int(time.time()),
        verification_certs=(cert_pem(cert),),
    )
