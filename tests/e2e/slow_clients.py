"""Slow HTTP clients (slowloris) on loopback, bounded in number and in time.

Each connection sends the first lines of a request head, then one more header line every
``interval`` seconds, never the blank line that ends the head. It stops when the server answers
or closes the connection, or by itself after ``give_up_after`` seconds, whichever comes first;
leaving the ``with`` block stops every one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from types import TracebackType
from typing import Self

CONNECT_TIMEOUT = 10.0


class SlowClients:
    def __init__(
        self, port: int, *, count: int, give_up_after: float, interval: float = 1.0
    ) -> None:
        self._port = port
        self._count = count
        self._give_up_after = give_up_after
        self._interval = interval
        self._lock = threading.Lock()
        self._outcomes: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._main: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    @property
    def outcomes(self) -> Counter[str]:
        """``not_connected``, ``closed_by_server`` and ``gave_up``, as far as known."""
        with self._lock:
            return Counter(self._outcomes)

    @property
    def connected(self) -> int:
        with self._lock:
            return self._outcomes["connected"]

    @property
    def attempted(self) -> int:
        """Connections that were made or failed to be made."""
        with self._lock:
            return self._outcomes["connected"] + self._outcomes["not_connected"]

    @property
    def finished(self) -> int:
        """Connections that ended: closed by the server, or given up by the client."""
        with self._lock:
            return self._outcomes["closed_by_server"] + self._outcomes["gave_up"]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._main is not None:
            with contextlib.suppress(RuntimeError):  # every connection had ended already
                self._loop.call_soon_threadsafe(self._main.cancel)
        self._thread.join(self._give_up_after + CONNECT_TIMEOUT + 10)

    def _count_outcome(self, outcome: str) -> None:
        with self._lock:
            self._outcomes[outcome] += 1

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._main = self._loop.create_task(self._all())
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._main)
        self._loop.close()

    async def _all(self) -> None:
        async with asyncio.TaskGroup() as group:
            for index in range(self._count):
                group.create_task(self._hold(index))

    async def _hold(self, index: int) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self._port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):
            self._count_outcome("not_connected")
            return
        self._count_outcome("connected")
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._give_up_after
        outcome = "gave_up"
        try:
            writer.write(b"POST /zitadel/events HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            while loop.time() < give_up_at:
                try:
                    await asyncio.wait_for(reader.read(1024), self._interval)
                except TimeoutError:
                    writer.write(b"X-Slow-%d: still typing\r\n" % index)
                    await writer.drain()
                    continue
                outcome = "closed_by_server"  # an answer or the end of the stream
                break
        except OSError:
            outcome = "closed_by_server"
        finally:
            writer.close()
            self._count_outcome(outcome)
