"""The status listener: ``GET /health`` and ``GET /metrics`` for the operator's monitoring and
load balancer, on a port of its own (``[status]``, 127.0.0.1:5588 unless configured).

Why not the consumer port: that port is for the ministry's information systems, which need to
know whether they may call (its ``/health`` says 200 or 503 and the reason codes, nothing else),
not the server's certificates, peers, traffic by client and service, or error details. The
status listener tells the operator all of it, so it is bound to loopback by default; an operator
opens it to the load balancer and the monitoring network by configuring ``[status] host``.

- ``/health``: 200 when the server can serve, 503 when it cannot, with the reasons, warnings and
  the state behind them in a JSON body (:mod:`exchange.server.health` decides);
- ``/metrics``: the server's registry in the Prometheus text format
  (:mod:`exchange.server.metrics`).
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from aiohttp import web

from exchange.server.metrics import CONTENT_TYPE, ServerMetrics


class StatusHost(Protocol):
    """What the status listener uses of the security server."""

    @property
    def metrics(self) -> ServerMetrics: ...
    def health_report(self) -> tuple[int, dict[str, Any]]: ...


HOST_KEY = web.AppKey("host", StatusHost)


def json_answer(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _health(request: web.Request) -> web.Response:
    status, body = request.app[HOST_KEY].health_report()
    return json_answer(status, body)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[HOST_KEY].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def create_status_app(host: StatusHost) -> web.Application:
    app = web.Application()
    app[HOST_KEY] = host
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app
