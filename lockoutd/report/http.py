"""The operations endpoint: ``/metrics``, ``/healthz`` and ``/readyz``."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from lockoutd.connections import ConnectionGuard
from lockoutd.webserver import WebServer

# Prometheus, a health checker and an operator's curl need a handful of connections, each of
# which sends its request at once; a client that does not cannot hold the process's open files.
MAX_CONNECTIONS = 64
HEADER_TIMEOUT_SECONDS = 10.0
KEEPALIVE_TIMEOUT_SECONDS = 120.0  # longer than a scrape interval: a scraper's connection stays


class OperationsServer(WebServer):
    """Serves metrics and health on ``host:port`` for as long as it is entered."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        readiness: Callable[[], dict[str, bool]],
    ) -> None:
        self._registry = registry
        self._readiness = readiness
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        guard = ConnectionGuard(
            max_connections=MAX_CONNECTIONS,
            header_timeout=HEADER_TIMEOUT_SECONDS,
            keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS,
        )
        super().__init__(
            app,
            host,
            port,
            guard=guard,
            handler_args={"keepalive_timeout": KEEPALIVE_TIMEOUT_SECONDS},
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        checks = self._readiness()
        ready = all(checks.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
        )
