"""Running an adapter as a process: ``serve`` until SIGINT/SIGTERM, on uvloop where available.

``python -m adapters.sdk serve MODULE:ATTRIBUTE --port 8081`` serves an :class:`Adapter` (or a
zero-argument function returning one, or a ``web.Application``) and prints
``READY url=http://127.0.0.1:8081 port=8081`` once listening, for scripts and tests to wait on.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from adapters.sdk.adapter import Adapter
from exchange import sdnotify


def http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def as_app(target: Adapter | web.Application) -> web.Application:
    return target.app() if isinstance(target, Adapter) else target


async def serve(
    target: Adapter | web.Application,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[str, int], None] = lambda url, port: None,
) -> None:
    """Serve until SIGINT or SIGTERM; ``on_ready(url, port)`` once listening (port 0 allowed)."""
    runner = web.AppRunner(as_app(target), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=1024).start()
        bound_host, bound_port = runner.addresses[0][:2]
        on_ready(http_url(bound_host, bound_port), bound_port)
        sdnotify.ready(f"serving on {http_url(bound_host, bound_port)}")
        await until_signalled()
        sdnotify.stopping()
    finally:
        await runner.cleanup()


async def until_signalled() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return None


def run(
    target: Adapter | web.Application,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[str, int], None] = lambda url, port: None,
) -> None:
    """Run :func:`serve` on uvloop where available; returns after a clean shutdown."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(target, host=host, port=port, on_ready=on_ready))


def load_target(spec: str) -> Adapter | web.Application:
    """``"package.module:attribute"``: an Adapter, an Application or a function making one."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"give MODULE:ATTRIBUTE, e.g. myadapter:adapter, not {spec!r}")
    found: Any = getattr(importlib.import_module(module_name), attribute)
    if callable(found) and not isinstance(found, Adapter | web.Application):
        found = found()
    if not isinstance(found, Adapter | web.Application):
        raise ValueError(f"{spec} is neither an Adapter nor an aiohttp Application")
    return found
