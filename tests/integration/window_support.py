"""Running the window app in this process against a real consumer port, with a clerk or two.

The app is the real one (``create_app``) on 127.0.0.1 port 0, its state in a temp dir; its
clock can be moved (``Clock``) so session expiry is tested without waiting.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from examples.window import accounts
from examples.window.config import WindowConfig
from examples.window.db import connect
from examples.window.web import create_app

PASSWORD = "correct horse battery staple"


@dataclass
class Clock:
    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def add_clerks(state_dir: Path, *names: str, password: str = PASSWORD) -> None:
    conn = connect(state_dir / "window.sqlite")
    try:
        for name in names:
            accounts.add_clerk(conn, name, accounts.hash_password(password), time.time())
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def running_window(
    consumer_url: str, state_dir: Path, *, clock: Clock | None = None, **options: object
) -> AsyncIterator[str]:
    """The app serving on 127.0.0.1; yields its base URL."""
    config = WindowConfig(consumer_url=consumer_url, state_dir=state_dir, **options)  # type: ignore[arg-type]
    app = create_app(config, clock=clock or Clock())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
