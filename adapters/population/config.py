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


class RegistryFile(Schema):
    """``registry.toml``: the registry's SQLite file, where to listen, ``[logging]``."""

    database: Text
    host: Text = "127.0.0.1"
    port: Port
    logging: LoggingSection = LoggingSection()


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    database: Path
    host: str
    port: int
    logging: LogSettings = field(default_factory=LogSettings)


def registry_settings(doc: dict[str, Any], path: Path, text: str | None) -> RegistrySettings:
    """The document checked against :class:`RegistryFile` (no IO)."""
    file = check_document(RegistryFile, doc, text, path)
    return RegistrySettings(
        database=path.parent / file.database,
        host=file.host,
        port=file.port,
        logging=file.logging.settings(),
    )


def load_registry_config(path: Path) -> RegistrySettings:
    """Read and check ``registry.toml``."""
    text, doc = read_toml(path.resolve())
    return registry_settings(doc, path.resolve(), text)
