"""A TCP proxy on loopback that a test can cut and restore, to play a network failure."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType
from typing import Self


class CuttableProxy:
    """Forwards ``listen_port`` to ``target_port`` on 127.0.0.1 until :meth:`cut`.

    While cut, every open connection is closed and new ones are refused (the listening socket is
    closed), as when a broker host drops off the network. :meth:`restore` listens again.

    With ``listen_port`` 0 the system chooses the port when the proxy is entered, and
    :attr:`listen_port` tells it: a port picked free beforehand may be taken by another
    connection before the proxy binds it. ``target_port`` may be set once it is known (a broker
    that must advertise the proxy's port starts after it); until then connections are closed.
    """

    def __init__(self, listen_port: int = 0, target_port: int | None = None) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> Self:
        self._thread.start()
        self.restore()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(timeout=5)

    def restore(self) -> None:
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=5)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._connection, "127.0.0.1", self.listen_port, reuse_address=True
            )
            # Restored later on the same port, so that clients find it where they left it.
            self.listen_port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.target_port is None:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update({writer, up_writer})
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
