"""``registry.toml``: how Interior's population registry adapter is served.

``exchange registry serve --config registry.toml`` reads it (or the same settings as options);
relative paths are relative to the file's directory. This module opens no database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exchange.configfile import Port, Schema, Text, check_document, read_toml
from exchange.oplog import LoggingSection, LogSettings


class CertificatesSection(Schema):
    """``[certificates]``: issue certificates of residence, recorded in ``database`` and signed
    with Interior's document key (``signing_key``) and its chain (``signing_chain``)."""

    database: Text
    signing_key: Text
    signing_chain: Text


class RegistryFile(Schema):
    """``registry.toml``: the registry's SQLite file, where to listen, ``[certificates]``,
    ``[logging]``."""

    database: Text
    host: Text = "127.0.0.1"
    port: Port
    certificates: CertificatesSection | None = None
    logging: LoggingSection = LoggingSection()


@dataclass(frozen=True, slots=True)
class CertificateSettings:
    database: Path
    signing_key: Path
    signing_chain: Path


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    database: Path
    host: str
    port: int
    certificates: CertificateSettings | None = None
    logging: LogSettings = field(default_factory=LogSettings)


def registry_settings(doc: dict[str, Any], path: Path, text: str | None) -> RegistrySettings:
    """The document checked against :class:`RegistryFile` (no IO)."""
    file = check_document(RegistryFile, doc, text, path)
    here = path.parent
    found = file.certificates
    certificates = None
    if found is not None:
        certificates = CertificateSettings(
            here / found.database, here / found.signing_key, here / found.signing_chain
        )
    return RegistrySettings(
        database=here / file.database,
        host=file.host,
        port=file.port,
        certificates=certificates,
        logging=file.logging.settings(),
    )


def load_registry_config(path: Path) -> RegistrySettings:
    """Read and check ``registry.toml``."""
    text, doc = read_toml(path.resolve())
    return registry_settings(doc, path.resolve(), text)
