"""The auditor's trust folder: the public trust material ``exchange audit trust-export`` writes,
and what the offline checks read from it.

A trust folder holds ``ca/*.pem`` (the approved CAs), ``tsa/*.pem`` (the approved TSAs),
``anchor.json`` (the global configuration's anchor) and, when exported from a server's
configuration, ``owner.txt``: the security server whose log the bundles and proofs it checks come
from, unless the auditor names another with ``--owner``. Nothing in a bundle or a proof file
says whose log it is: that is the auditor's word, from here or from the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from exchange.errors import ConfigurationError, ExchangeError
from exchange.globalconf.anchor import Anchor
from exchange.identifiers import SecurityServerId, parse_security_server
from exchange.trust.keys import cert_pem, fingerprint, load_certificates

OWNER_FILE = "owner.txt"
"""In a trust folder: the security server whose bundles and proofs it is for, by default."""


@dataclass(frozen=True, slots=True)
class TrustMaterial:
    """The approved CA and TSA certificates of a trust folder."""

    cas: tuple[x509.Certificate, ...]
    tsas: tuple[x509.Certificate, ...]

    @classmethod
    def load(cls, trust_dir: Path) -> TrustMaterial:
        return cls(tuple(_certificates(trust_dir, "ca")), tuple(_certificates(trust_dir, "tsa")))


def export_trust(
    out_dir: Path,
    *,
    cas: Sequence[x509.Certificate],
    tsas: Sequence[x509.Certificate],
    anchor: Path,
    owner: SecurityServerId | None = None,
) -> Path:
    """Write the public trust material: ``ca/*.pem``, ``tsa/*.pem``, ``anchor.json`` and, when
    ``owner`` is given, :data:`OWNER_FILE` naming the security server whose bundles it checks."""
    for sub, certs in (("ca", cas), ("tsa", tsas)):
        folder = out_dir / sub
        folder.mkdir(parents=True, exist_ok=True)
        for cert in certs:
            (folder / f"{fingerprint(cert)[:16]}.pem").write_text(cert_pem(cert))
    Anchor.load(anchor).save(out_dir / "anchor.json")
    if owner is not None:
        (out_dir / OWNER_FILE).write_text(f"{owner}\n")
    return out_dir


def trusted_owner(trust_dir: Path) -> SecurityServerId | None:
    """The security server a trust folder names (:data:`OWNER_FILE`), if it names one."""
    path = trust_dir / OWNER_FILE
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    try:
        return parse_security_server(text)
    except ExchangeError:
        raise ConfigurationError(
            f"{path} does not name a security server (INSTANCE/CLASS/CODE/SERVER)"
        ) from None


def expected_owner(given: str | None, trust_dir: Path) -> tuple[SecurityServerId, str]:
    """The log owner the auditor expects, and where that came from: ``given`` (``--owner``),
    else the trust folder's :data:`OWNER_FILE`; else ConfigurationError."""
    if given is not None:
        try:
            return parse_security_server(given), "--owner"
        except ExchangeError as exc:
            raise ConfigurationError(f"--owner: {exc.message}") from None
    named = trusted_owner(trust_dir)
    if named is None:
        raise ConfigurationError(
            "give the log's owner with --owner (the security server whose log it comes from), "
            f"or export the trust with --config so that {trust_dir / OWNER_FILE} names it"
        )
    return named, str(trust_dir / OWNER_FILE)


def _certificates(trust_dir: Path, sub: str) -> list[x509.Certificate]:
    folder = trust_dir / sub
    if not folder.is_dir():
        raise ConfigurationError(f"{folder} does not exist: run `exchange audit trust-export`")
    return [c for f in sorted(folder.glob("*.pem")) for c in load_certificates(f)]
