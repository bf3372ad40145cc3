"""The one rule for which of a server's keys signs (exchange.server.ownkeys): the running server
and the commands that sign for a stopped one (log archive, audit stamping) choose alike."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from exchange.errors import ConfigurationError
from exchange.identifiers import parse_member, parse_security_server
from exchange.protocol.jws import Signer
from exchange.server.config import SigningKeyConfig
from exchange.server.ownkeys import (
    KeyProbe,
    active,
    load_auth_cert,
    load_owner_signer,
    load_signers,
    owner_signer,
)
from exchange.trust.ca import CertificateAuthority
from exchange.trust.keys import generate_key, save_certificate, save_private_key

MOI = parse_member("PS/GOV/MOI")
MOH = parse_member("PS/GOV/MOH")
NOW = dt.datetime.now(dt.UTC)


@dataclasses.dataclass
class _Config:
    """The fields of ServerConfig that ownkeys reads (a ServerConfig needs a whole server)."""

    owner: Any
    signing: tuple[SigningKeyConfig, ...]
    auth_key: Path
    auth_cert: Path
    passphrase_env: str = "EXCHANGE_TEST_OWNKEYS_PASSPHRASE"


def _signing(ca: CertificateAuthority, tmp: Path, name: str, member: Any, age_days: int) -> Any:
    key = generate_key()
    cert = ca.issue_sign_cert(
        key.public_key(), member, not_before=NOW - dt.timedelta(days=age_days)
    )
    save_private_key(tmp / f"{name}.key", key)
    save_certificate(tmp / f"{name}.pem", cert)
    return SigningKeyConfig(member, tmp / f"{name}.key", tmp / f"{name}.pem"), cert


@pytest.fixture
def keys(tmp_path: Path) -> tuple[_Config, dict[str, Any]]:
    ca = CertificateAuthority.create(tmp_path / "ca", "PS Test CA")
    # the owner's older key is listed first (as after a rotation that appended the new one):
    # the choice is by certificate, not by position
    older, older_cert = _signing(ca, tmp_path, "moi-old", MOI, 30)
    newer, newer_cert = _signing(ca, tmp_path, "moi-new", MOI, 1)
    health, health_cert = _signing(ca, tmp_path, "moh", MOH, 0)
    auth = generate_key()
    save_private_key(tmp_path / "auth.key", auth)
    save_certificate(
        tmp_path / "auth.pem",
        ca.issue_auth_cert(auth.public_key(), parse_security_server("PS/GOV/MOI/ss1")),
    )
    config = _Config(MOI, (older, newer, health), tmp_path / "auth.key", tmp_path / "auth.pem")
    return config, {"newer": newer_cert, "older": older_cert, "health": health_cert}


def test_each_member_signs_with_its_newest_certificate(keys: Any) -> None:
    config, certs = keys
    signers = active(load_signers(config, None))
    assert signers[MOI].cert == certs["newer"]
    assert signers[MOH].cert == certs["health"]
    assert owner_signer(config, signers).cert == certs["newer"]


def test_a_stopped_servers_commands_sign_with_the_key_the_running_server_would(
    keys: Any,
) -> None:
    """log archive and audit stamping read only the owner's keys and take its newest (audit's
    stamping took the first listed before, an old key after a rotation)."""
    config, certs = keys
    assert load_owner_signer(config).cert == certs["newer"]
    running = owner_signer(config, active(load_signers(config, None)))
    assert load_owner_signer(config).cert == running.cert


def test_a_key_that_is_not_its_certificates_is_refused(keys: Any, tmp_path: Path) -> None:
    config, _ = keys
    other = dataclasses.replace(config.signing[0], key=config.signing[1].key)
    with pytest.raises(ConfigurationError, match="is not the certificate of"):
        load_signers(dataclasses.replace(config, signing=(other,)), None)
    wrong_auth = dataclasses.replace(config, auth_key=config.signing[0].key)
    with pytest.raises(ConfigurationError, match="is not the certificate of"):
        load_auth_cert(wrong_auth, None)
    with pytest.raises(ConfigurationError, match="no member signing key"):
        load_signers(dataclasses.replace(config, signing=()), None)


def test_the_key_probe_signs_and_caches_its_verdict(keys: Any) -> None:
    config, _ = keys
    signers = active(load_signers(config, None))
    probe = KeyProbe()
    assert probe.unusable(signers, 1000.0) == ()
    # a key that no longer matches its certificate: found at the next probe, not within the
    # probe interval
    swapped = {MOI: Signer(signers[MOI].key, signers[MOH].cert)}
    assert probe.unusable(swapped, 1001.0) == ()
    found = probe.unusable(swapped, 1011.0)
    assert len(found) == 1 and "PS/GOV/MOI" in found[0]
