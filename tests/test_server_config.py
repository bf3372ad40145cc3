"""A security server's configuration file: the sections whose values the parser checks itself
(``[messagelog]`` retention, ``[limits]`` of what one peer may hold at the provider port); what
the limits do is shown in ``tests/integration/test_peer_limits.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exchange.errors import ConfigurationError
from exchange.server.config import parse_server_config

BASE_CONFIG = {
    "server_id": "PS/GOV/MOI/ss1",
    "state_dir": "state",
    "keys": {
        "auth_key": "a.pem",
        "auth_cert": "a.cert.pem",
        "signing": [{"member": "PS/GOV/MOI", "key": "s.pem", "cert": "s.cert.pem"}],
    },
}


@pytest.mark.parametrize(
    ("messagelog", "expected"),
    [
        pytest.param({}, (None, "state/archives", 3600.0, 20_000), id="off-by-default"),
        pytest.param(
            {"retention_days": 30, "archive_dir": "/srv/archives", "archive_interval": 600},
            (30.0, "/srv/archives", 600.0, 20_000),
            id="configured",
        ),
        pytest.param({"retention_days": 0.5}, (0.5, "state/archives", 3600.0, 20_000), id="half"),
    ],
)
def test_retention_configuration(
    tmp_path: Path, messagelog: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    config = parse_server_config({**BASE_CONFIG, "messagelog": messagelog}, tmp_path / "s.toml")
    r = config.retention
    folder = str(r.archive_dir.relative_to(tmp_path)) if not expected[1].startswith("/") else ""
    assert (r.days, folder or str(r.archive_dir), r.interval, r.max_records) == expected
    assert config.archive_dir == r.archive_dir


@pytest.mark.parametrize(
    ("messagelog", "message"),
    [
        pytest.param(
            {"retention_days": -1},
            "messagelog.retention_days: must be at least 0 days, not -1",
            id="negative-days",
        ),
        pytest.param(
            {"retention_days": "30d"},
            'messagelog.retention_days: must be a number, not the string "30d" '
            "(write the number alone, without a unit)",
            id="days-not-a-number",
        ),
        pytest.param(
            {"retention_days": True},
            "messagelog.retention_days: must be a number, not the boolean true",
            id="days-boolean",
        ),
        pytest.param(
            {"archive_interval": 0},
            "messagelog.archive_interval: must be a number of seconds more than 0, not 0",
            id="zero-interval",
        ),
        pytest.param(
            {"archive_max_records": 0},
            "messagelog.archive_max_records: must be at least 1, not 0",
            id="zero-records",
        ),
    ],
)
def test_bad_retention_configuration_is_refused(
    tmp_path: Path, messagelog: dict[str, Any], message: str
) -> None:
    path = tmp_path / "s.toml"
    with pytest.raises(ConfigurationError) as refused:
        parse_server_config({**BASE_CONFIG, "messagelog": messagelog}, path)
    assert refused.value.message == f"{path}: {message}"


def test_the_limits_default_and_are_configurable(tmp_path: Path) -> None:
    defaults = parse_server_config(BASE_CONFIG, tmp_path / "s.toml").limits
    assert (
        defaults.max_peer_connections,
        defaults.max_peer_requests,
        defaults.max_peer_request_bytes,
    ) == (16, 512, 64 * 2**20)
    given = {"max_peer_connections": 4, "max_peer_requests": 100, "max_peer_request_bytes": 2**20}
    limits = parse_server_config({**BASE_CONFIG, "limits": given}, tmp_path / "s.toml").limits
    assert (limits.max_peer_connections, limits.max_peer_requests) == (4, 100)
    assert limits.max_peer_request_bytes == 2**20


def test_the_handshake_limits_default_and_are_configurable(tmp_path: Path) -> None:
    defaults = parse_server_config(BASE_CONFIG, tmp_path / "s.toml").limits
    assert (defaults.max_pending_handshakes, defaults.tls_handshake_timeout) == (128, 10.0)
    given = {"max_pending_handshakes": 8, "tls_handshake_timeout": 2.5}
    limits = parse_server_config({**BASE_CONFIG, "limits": given}, tmp_path / "s.toml").limits
    assert (limits.max_pending_handshakes, limits.tls_handshake_timeout) == (8, 2.5)


def test_the_frame_timeout_defaults_and_is_configurable(tmp_path: Path) -> None:
    assert parse_server_config(BASE_CONFIG, tmp_path / "s.toml").limits.frame_timeout == 60.0
    given = {**BASE_CONFIG, "limits": {"frame_timeout": 5}}
    assert parse_server_config(given, tmp_path / "s.toml").limits.frame_timeout == 5


@pytest.mark.parametrize("key", ["tls_handshake_timeout", "frame_timeout"])
@pytest.mark.parametrize("seconds", [0, -1, 3601])
def test_a_timeout_limit_out_of_range_is_refused(tmp_path: Path, key: str, seconds: float) -> None:
    path = tmp_path / "s.toml"
    with pytest.raises(ConfigurationError) as refused:
        parse_server_config({**BASE_CONFIG, "limits": {key: seconds}}, path)
    assert refused.value.message == (
        f"{path}: limits.{key}: must be a number of seconds in (0, 3600], not {seconds}"
    )


@pytest.mark.parametrize(
    "key",
    [
        "max_peer_connections",
        "max_peer_requests",
        "max_peer_request_bytes",
        "max_pending_handshakes",
    ],
)
def test_a_limit_below_one_is_refused(tmp_path: Path, key: str) -> None:
    path = tmp_path / "s.toml"
    with pytest.raises(ConfigurationError) as refused:
        parse_server_config({**BASE_CONFIG, "limits": {key: 0}}, path)
    assert refused.value.message == f"{path}: limits.{key}: must be at least 1, not 0"
