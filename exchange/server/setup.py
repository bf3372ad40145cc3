"""Creating a security server's directory: keys, certificates or CSRs, anchor, configuration.

Layout written by :func:`init_server`::

    DIR/server.toml            the configuration (docs/design.md §11: --config points here)
    DIR/anchor.json            the trust anchor, installed out of band
    DIR/keys/auth.key.pem      authentication key (0600), auth.cert.pem or auth.csr.pem
    DIR/keys/sign-CODE.key.pem signing key per member (0600), sign-CODE.cert.pem or .csr.pem
    DIR/messagelog.sqlite      created at first run
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from exchange.errors import ConfigurationError
from exchange.globalconf.anchor import Anchor
from exchange.identifiers import MemberId, SecurityServerId, ServiceId, SubsystemId
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import generate_key, save_certificate, save_private_key


@dataclass(frozen=True, slots=True)
class InitResult:
    config: Path
    auth_cert: Path
    signing_certs: dict[MemberId, Path]
    csrs: list[Path] = field(default_factory=list)


def _csr(key: Any, common_name: str, path: Path) -> Path:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def init_server(
    directory: str | Path,
    server_id: SecurityServerId,
    anchor_file: str | Path,
    *,
    members: Sequence[MemberId] = (),
    clients: Sequence[SubsystemId] = (),
    services: Sequence[tuple[ServiceId, str]] = (),
    ca: CertificateAuthority | None = None,
    consumer_port: int = 8080,
    provider_port: int = 8443,
    status_port: int = 0,
    policy_dir: str | Path | None = None,
    passphrase: bytes | None = None,
    log_bodies: bool = True,
    extra: dict[str, Any] | None = None,
    record: Callable[[x509.Certificate, str], None] | None = None,
) -> InitResult:
    """Create keys (and certificates when ``ca`` is given, CSRs otherwise) and ``server.toml``.

    The status listener (``/health``, ``/metrics``) is bound to loopback on ``status_port`` (0:
    any free port; ``exchange server init`` gives 5588)."""
    target = Path(directory).resolve()
    config_path = target / "server.toml"
    if config_path.exists():
        raise ConfigurationError(f"{config_path} already exists; choose an empty directory")
    anchor = Anchor.load(anchor_file)
    if anchor.instance != server_id.instance:
        raise ConfigurationError(
            f"the anchor is for instance {anchor.instance}, the server is in {server_id.instance}"
        )
    keys_dir = target / "keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(anchor_file, target / "anchor.json")
    csrs: list[Path] = []
    auth_key = generate_key()
    save_private_key(keys_dir / "auth.key.pem", auth_key, passphrase)
    auth_cert_path = keys_dir / "auth.cert.pem"
    if ca is not None:
        auth_cert = ca.issue_auth_cert(auth_key.public_key(), server_id)
        if record is not None:
            record(auth_cert, "auth")
        save_certificate(auth_cert_path, auth_cert)
    else:
        csrs.append(_csr(auth_key, str(server_id), keys_dir / "auth.csr.pem"))
    signing_members = list(dict.fromkeys([server_id.owner, *members]))
    signing = []
    signing_certs: dict[MemberId, Path] = {}
    for member in signing_members:
        name = f"sign-{member.member_code}"
        key = generate_key()
        save_private_key(keys_dir / f"{name}.key.pem", key, passphrase)
        cert_path = keys_dir / f"{name}.cert.pem"
        if ca is not None:
            sign_cert = ca.issue_sign_cert(key.public_key(), member)
            if record is not None:
                record(sign_cert, "sign")
            save_certificate(cert_path, sign_cert)
        else:
            csrs.append(_csr(key, str(member), keys_dir / f"{name}.csr.pem"))
        signing_certs[member] = cert_path
        signing.append(
            {"member": str(member), "key": f"keys/{name}.key.pem", "cert": f"keys/{name}.cert.pem"}
        )
    doc: dict[str, Any] = {
        "server_id": str(server_id),
        "anchor": "anchor.json",
        "consumer": {"host": "127.0.0.1", "port": consumer_port},
        "provider": {"host": "127.0.0.1", "port": provider_port},
        "status": {"host": "127.0.0.1", "port": status_port},
        "keys": {
            "auth_key": "keys/auth.key.pem",
            "auth_cert": "keys/auth.cert.pem",
            "signing": signing,
        },
        "messagelog": {"path": "messagelog.sqlite", "bodies": log_bodies},
        "clients": [{"id": str(c), "connection": "http"} for c in clients],
        "services": [{"id": str(s), "url": url} for s, url in services],
        "logging": {"format": "text", "level": "info"},
    }
    if policy_dir is not None:
        doc["policy"] = {"dir": str(Path(policy_dir).resolve())}
    if extra:
        doc.update(extra)
    config_path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return InitResult(
        config=config_path, auth_cert=auth_cert_path, signing_certs=signing_certs, csrs=csrs
    )
