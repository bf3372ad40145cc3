"""The window's configuration: a frozen value with bounded defaults; only the CLI reads files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

CLIENT: Final = "PS/GOV/PALPOST/unified-window"
PURPOSE: Final = "citizen-service"
DB_FILE: Final = "window.sqlite"
KEY_FILE: Final = "cookie.key"


@dataclass(frozen=True, slots=True)
class Throttle:
    """Failed sign-ins allowed before each further attempt waits, per account and per address.

    After ``free`` failures within ``window_seconds`` the key is locked for ``base_seconds``,
    doubling with each further failure up to ``max_seconds``.
    """

    free: int
    window_seconds: float = 900.0
    base_seconds: float = 30.0
    max_seconds: float = 900.0

    def lock_seconds(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return float(min(self.base_seconds * 2 ** (failures - self.free), self.max_seconds))


@dataclass(frozen=True, slots=True)
class WindowConfig:
    """Where the app keeps its state and how it reaches its security server."""

    consumer_url: str
    state_dir: Path
    client: str = CLIENT
    purpose: str = PURPOSE
    timezone: str = "Asia/Hebron"
    session_idle_seconds: float = 15 * 60.0
    session_max_seconds: float = 8 * 3600.0
    secure_cookies: bool = False
    exchange_timeout_seconds: float = 60.0
    automatic_retries: int = 1
    keep_documents_seconds: float = 24 * 3600.0
    per_account: Throttle = Throttle(free=5)
    per_address: Throttle = Throttle(free=20)
    max_form_bytes: int = 64 * 1024
    services: Mapping[str, str] = field(default_factory=dict)
    """Where a deployment serves one of the window's services (``examples.window.services``)
    under another identifier: contract identifier -> deployed identifier."""

    @property
    def db_path(self) -> Path:
        return self.state_dir / DB_FILE

    @property
    def key_path(self) -> Path:
        return self.state_dir / KEY_FILE
