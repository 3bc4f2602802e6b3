"""An aiohttp application served on one address: the base of lockoutd's two HTTP endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from lockoutd.connections import ConnectionGuard, ProtocolFactory


class WebServer:
    """Serves ``app`` on ``host:port`` for as long as it is entered.

    ``port`` may be 0 (tests, the demo): once entered, :attr:`port` is the one the system chose.
    ``guard`` bounds the connections in number and time (:mod:`lockoutd.connections`);
    ``handler_args`` go to aiohttp's protocol (``keepalive_timeout``, ``lingering_time``, ...).
    """

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        guard: ConnectionGuard,
        handler_args: Mapping[str, Any] | None = None,
    ) -> None:
        self._host = host
        self._requested_port = port
        app.middlewares.append(guard.middleware())
        self._runner = web.AppRunner(app, access_log=None, **(handler_args or {}))
        self._guard = guard
        self._listener: asyncio.Server | None = None
        self.port: int | None = None
        """The port listened on, known once entered."""

    async def __aenter__(self) -> Self:
        await self._runner.setup()
        server = self._runner.server
        assert server is not None  # set up just now
        factory: ProtocolFactory = self._guard.wrap(server)
        # The socket is opened here rather than through an aiohttp site, so that the guard's
        # protocol goes around aiohttp's; closing it comes first on the way out, as a site's would.
        self._listener = await asyncio.get_running_loop().create_server(
            factory, self._host, self._requested_port
        )
        sockets = self._listener.sockets
        self.port = sockets[0].getsockname()[1] if sockets else self._requested_port
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._listener is not None:
            self._listener.close()
        await self._runner.cleanup()
