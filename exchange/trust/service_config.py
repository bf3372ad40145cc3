"""Configuration files of the trust services: the CA service (``ca.toml``), the OCSP responder
(``ocsp.toml``) and the time-stamping authority (``tsa.toml``).

Each is a :class:`~exchange.configfile.Schema` turned into a frozen settings value; relative paths
are relative to the file's directory. The ``serve`` commands take ``--config FILE`` or the same
settings as options; both go through the schema (options' paths are relative to the working
directory). This module reads no key and opens no socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

from pydantic import AfterValidator

from exchange.configfile import (
    Port,
    Schema,
    Text,
    at_least,
    check_document,
    problem_at,
    read_toml,
)
from exchange.oplog import LoggingSection, LogSettings

CA_SERVICE_PORT: Final = 4200
OCSP_PORT: Final = 4100
TSA_PORT: Final = 4318

Days = Annotated[int, AfterValidator(at_least(1, " day(s)"))]
S = TypeVar("S", bound=Schema)


# --- the files -----------------------------------------------------------------------------------


class CaServiceFile(Schema):
    """``ca.toml``: the CA service (``exchange ca serve``)."""

    ca_dir: Text = "."
    host: Text = "127.0.0.1"
    port: Port = CA_SERVICE_PORT
    passphrase_file: Text | None = None
    days_auth: Days = 365
    days_sign: Days = 365
    logging: LoggingSection = LoggingSection()


class OcspFile(Schema):
    """``ocsp.toml``: the CA's OCSP responder (``exchange ocsp serve``)."""

    ca_dir: Text = "."
    database: Text = "revocations.sqlite"
    host: Text = "127.0.0.1"
    port: Port = OCSP_PORT
    passphrase_file: Text | None = None
    responder_key: Text | None = None
    responder_cert: Text | None = None
    responder_days: Days = 30
    validity_seconds: Annotated[int, AfterValidator(at_least(1, " second(s)"))] = 3600
    logging: LoggingSection = LoggingSection()


class TsaFile(Schema):
    """``tsa.toml``: the time-stamping authority (``exchange tsa serve``)."""

    dir: Text = "."
    host: Text = "127.0.0.1"
    port: Port = TSA_PORT
    logging: LoggingSection = LoggingSection()


# --- the settings the services use ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaServiceSettings:
    ca_dir: Path
    host: str = "127.0.0.1"
    port: int = CA_SERVICE_PORT
    passphrase_file: Path | None = None
    days_auth: int = 365
    days_sign: int = 365
    logging: LogSettings = field(default_factory=LogSettings)


@dataclass(frozen=True, slots=True)
class OcspSettings:
    ca_dir: Path
    database: Path
    host: str = "127.0.0.1"
    port: int = OCSP_PORT
    passphrase_file: Path | None = None
    responder_key: Path | None = None
    responder_cert: Path | None = None
    responder_days: int = 30
    validity_seconds: int = 3600
    logging: LogSettings = field(default_factory=LogSettings)


@dataclass(frozen=True, slots=True)
class TsaSettings:
    dir: Path
    host: str = "127.0.0.1"
    port: int = TSA_PORT
    logging: LogSettings = field(default_factory=LogSettings)


_PATHS: Final = {
    "ca_dir",
    "database",
    "passphrase_file",
    "responder_key",
    "responder_cert",
    "dir",
}


def _values(file: Schema, base: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in type(file).model_fields:
        value = getattr(file, name)
        if name in _PATHS and value is not None:
            value = base / value
        elif isinstance(value, LoggingSection):
            value = value.settings()
        values[name] = value
    return values


def ca_service_settings(doc: dict[str, Any], path: Path, text: str | None) -> CaServiceSettings:
    file = check_document(CaServiceFile, doc, text, path)
    return CaServiceSettings(**_values(file, path.parent))


def ocsp_settings(doc: dict[str, Any], path: Path, text: str | None) -> OcspSettings:
    file = check_document(OcspFile, doc, text, path)
    if (file.responder_key is None) != (file.responder_cert is None):
        given = "responder_key" if file.responder_key is not None else "responder_cert"
        raise problem_at(
            path,
            text,
            (given,),
            "a delegated responder needs both its key and its certificate: give both, or neither "
            "(a responder certificate is then issued at start with the CA key)",
        )
    return OcspSettings(**_values(file, path.parent))


def tsa_settings(doc: dict[str, Any], path: Path, text: str | None) -> TsaSettings:
    file = check_document(TsaFile, doc, text, path)
    return TsaSettings(**_values(file, path.parent))


def load_ca_service_config(path: Path) -> CaServiceSettings:
    """Read and check ``ca.toml``."""
    text, doc = read_toml(path.resolve())
    return ca_service_settings(doc, path.resolve(), text)


def load_ocsp_config(path: Path) -> OcspSettings:
    """Read and check ``ocsp.toml``."""
    text, doc = read_toml(path.resolve())
    return ocsp_settings(doc, path.resolve(), text)


def load_tsa_config(path: Path) -> TsaSettings:
    """Read and check ``tsa.toml``."""
    text, doc = read_toml(path.resolve())
    return tsa_settings(doc, path.resolve(), text)
