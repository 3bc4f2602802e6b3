"""An aiohttp application served on one address: the base of lockoutd's two HTTP endpoints."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from aiohttp import web


class WebServer:
    """Serves ``app`` on ``host:port`` for as long as it is entered.

    ``port`` may be 0 (tests, the demo): once entered, :attr:`port` is the one the system chose.
    """

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._host = host
        self._requested_port = port
        self._runner = web.AppRunner(app, access_log=None)
        self.port: int | None = None
        """The port listened on, known once entered."""

    async def __aenter__(self) -> Self:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        await site.start()
        # aiohttp does not publish the bound address; its server object holds the sockets.
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._requested_port
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._runner.cleanup()
