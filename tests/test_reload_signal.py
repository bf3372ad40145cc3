"""What SIGHUP's handler (``exchange.cli.server._reload``) records for ``exchange server reload``:
a reload the server applied is recorded as applied, even when something after it fails."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from exchange.cli import server as cli_server
from exchange.errors import ConfigurationError
from exchange.server.reload import read_outcome


@dataclass
class _Config:
    state_dir: Path
    logging: Any = None


@dataclass
class _Server:
    """The two things the handler uses of a running server: its configuration and reload."""

    config: _Config
    outcome: list[str] | Exception = field(default_factory=lambda: ["services"])

    async def reload(self) -> list[str]:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


async def _sighup(server: _Server) -> None:
    cli_server._reload(server)
    await asyncio.gather(*cli_server._RELOADS)


async def test_an_applied_reload_is_recorded_applied_even_if_its_logging_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_settings: object) -> None:
        raise ValueError("no such log level")

    monkeypatch.setattr(cli_server, "configure_logging", broken)
    await _sighup(_Server(_Config(tmp_path)))
    outcome = read_outcome(tmp_path)
    assert outcome is not None
    assert (outcome.applied, outcome.changes, outcome.error) == (True, ["services"], None)


async def test_a_refused_reload_is_recorded_refused_with_its_reason(tmp_path: Path) -> None:
    await _sighup(_Server(_Config(tmp_path), ConfigurationError("bad key in server.toml")))
    outcome = read_outcome(tmp_path)
    assert outcome is not None
    assert (outcome.applied, outcome.error) == (False, "bad key in server.toml")
