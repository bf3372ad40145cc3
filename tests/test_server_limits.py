"""The ``[limits]`` of what one peer server may hold at a provider port: defaults, values, and
refusal of values below one (the behaviour itself: ``tests/integration/test_peer_limits.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.errors import ConfigurationError
from exchange.server.config import parse_server_config

CONFIG = {
    "server_id": "PS/GOV/MOI/ss1",
    "state_dir": "state",
    "keys": {
        "auth_key": "a.pem",
        "auth_cert": "a.cert.pem",
        "signing": [{"member": "PS/GOV/MOI", "key": "s.pem", "cert": "s.cert.pem"}],
    },
}


def test_the_limits_default_and_are_configurable(tmp_path: Path) -> None:
    defaults = parse_server_config(CONFIG, tmp_path / "s.toml").limits
    assert (
        defaults.max_peer_connections,
        defaults.max_peer_requests,
        defaults.max_peer_request_bytes,
    ) == (16, 512, 64 * 2**20)
    given = {"max_peer_connections": 4, "max_peer_requests": 100, "max_peer_request_bytes": 2**20}
    limits = parse_server_config({**CONFIG, "limits": given}, tmp_path / "s.toml").limits
    assert (limits.max_peer_connections, limits.max_peer_requests) == (4, 100)
    assert limits.max_peer_request_bytes == 2**20


@pytest.mark.parametrize(
    "key", ["max_peer_connections", "max_peer_requests", "max_peer_request_bytes"]
)
def test_a_limit_below_one_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"\[limits\] {key} must be at least 1, not 0"):
        parse_server_config({**CONFIG, "limits": {key: 0}}, tmp_path / "s.toml")
