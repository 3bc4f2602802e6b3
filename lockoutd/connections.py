"""What clients can hold of an HTTP endpoint: a bounded number of connections, each one
bounded in time (README, "Ingesting from ZITADEL" and "Operations").

aiohttp parses requests well but bounds a client only by its keep-alive timer; a client that
sends half a request head and then a byte now and then holds its connection, and a file
descriptor, for as long as it likes. Enough of them (slowloris) exhaust the process's open-files
limit, and then no request is accepted at all, nor any other connection opened. A
:class:`ConnectionGuard` sits between the listening socket and aiohttp's protocol, and knows each
connection in one of three states::

    head      opened, or the first byte of a next request arrived: the head must be complete
              within header_timeout
    request   aiohttp handed the request to the handler, which bounds reading the body itself
    idle      between two requests: closed after keepalive_timeout

At ``max_connections``, a new connection closes the one that has waited longest in ``head`` or
``idle`` (a slow client has, a client that sends its request at once never waits long); when
every connection is in the middle of a request, the new one is closed instead. Connections the
guard closes are aborted (no lingering) and, given metrics, counted by reason.
"""

from __future__ import annotations

import asyncio
import enum
import resource
from collections.abc import Callable
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter, Gauge

from lockoutd.errors import ConfigError

ProtocolFactory = Callable[[], asyncio.Protocol]

FILE_RESERVE = 256
"""Open files a process needs beside the connections of a guarded endpoint: Kafka connections,
the metrics server and its scrapers, standard streams, and a burst of connections accepted at
once before the guard closes the ones over the cap."""


class ConnectionMetrics(Protocol):
    """Where a guard counts: connections open (a gauge), closed by the guard (by ``reason``)."""

    @property
    def connections(self) -> Gauge: ...

    @property
    def connections_closed(self) -> Counter: ...


class _State(enum.Enum):
    HEAD = "head"
    REQUEST = "request"
    IDLE = "idle"


class ConnectionGuard:
    """Bounds the connections of one listening socket; see the module's description."""

    def __init__(
        self,
        *,
        max_connections: int,
        header_timeout: float,
        keepalive_timeout: float,
        metrics: ConnectionMetrics | None = None,
    ) -> None:
        self._max = max_connections
        self._header_timeout = header_timeout
        self._keepalive_timeout = keepalive_timeout
        self._metrics = metrics
        self._open: dict[asyncio.BaseTransport, _Guarded] = {}
        # Connections in HEAD or IDLE, the longest waiting first (dicts keep insertion order).
        self._waiting: dict[_Guarded, bool] = {}

    def wrap(self, make: ProtocolFactory) -> ProtocolFactory:
        """A protocol factory for the listening socket, around aiohttp's own."""
        return lambda: _Guarded(self, make)

    def middleware(self) -> Middleware:
        """Marks a connection as in a request while the application handles one of its requests."""

        @web.middleware
        async def in_request(request: web.Request, handler: Handler) -> web.StreamResponse:
            connection = self._open.get(request.transport) if request.transport else None
            if connection is None:
                return await handler(request)
            connection.enter(_State.REQUEST)
            try:
                return await handler(request)
            finally:
                connection.enter(_State.IDLE)

        return in_request

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def waiting_connections(self) -> int:
        """Open connections not in the middle of a request: the ones the cap may close."""
        return len(self._waiting)

    def _admit(self, connection: _Guarded, transport: asyncio.BaseTransport) -> bool:
        if len(self._open) >= self._max:
            if not self._waiting:
                self._count_close("refused")
                return False
            self._close(next(iter(self._waiting)), "evicted")
        self._open[transport] = connection
        self._count_open()
        return True

    def _count_open(self) -> None:
        if self._metrics is not None:
            self._metrics.connections.set(len(self._open))

    def _count_close(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.connections_closed.labels(reason=reason).inc()

    def _entered(self, connection: _Guarded, state: _State) -> float | None:
        """Note ``connection``'s new state; the seconds it may stay in it (None: unbounded)."""
        self._waiting.pop(connection, None)
        if state is _State.REQUEST:
            return None
        self._waiting[connection] = True
        return self._header_timeout if state is _State.HEAD else self._keepalive_timeout

    def _forget(self, connection: _Guarded) -> None:
        self._waiting.pop(connection, None)
        if connection.transport is not None and connection.transport in self._open:
            del self._open[connection.transport]
            self._count_open()

    def _close(self, connection: _Guarded, reason: str) -> None:
        self._forget(connection)
        self._count_close(reason)
        connection.abort()


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard's deadline around it."""

    def __init__(self, guard: ConnectionGuard, make: ProtocolFactory) -> None:
        self._guard = guard
        self._make = make
        self._inner: asyncio.Protocol | None = None
        self._state = _State.HEAD
        self._deadline: asyncio.TimerHandle | None = None
        self._closed = False
        self.transport: asyncio.BaseTransport | None = None

    def enter(self, state: _State) -> None:
        self._state = state
        self._stop_clock()
        if self._closed:
            return  # the client went away during a request: nothing left to guard
        seconds = self._guard._entered(self, state)
        if seconds is not None:
            self._deadline = asyncio.get_running_loop().call_later(seconds, self._expired)

    def abort(self) -> None:
        self._closed = True
        self._stop_clock()
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]

    def _stop_clock(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        self._guard._close(self, "header_timeout" if self._state is _State.HEAD else "idle")

    # -- asyncio.Protocol, handed on to aiohttp ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self._guard._admit(self, transport):
            transport.abort()  # type: ignore[attr-defined]
            return
        self._inner = self._make()
        self._inner.connection_made(transport)
        self.enter(_State.HEAD)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._state is _State.IDLE:
            self.enter(_State.HEAD)  # a next request begins: its head is now on the clock
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._stop_clock()
        if self._inner is not None:
            self._guard._forget(self)
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


def ensure_open_files(max_connections: int, setting: str) -> None:
    """Raise the soft open-files limit to what ``max_connections`` needs, or refuse to start.

    ``setting`` names where the cap is configured, for the message.

    Without this the cap would be a promise the process cannot keep: past the limit, accepting a
    connection fails, and the guard never sees it.
    """
    needed = max_connections + FILE_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            [
                f"{setting}: {max_connections} connections need {needed} open files, and this "
                f"process may open {hard}: lower {setting} or "
                "raise the limit (LimitNOFILE= in a systemd unit, ulimit -n in a shell)"
            ]
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
