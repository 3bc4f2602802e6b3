"""HTTPS with HTTP/2 in front of the ZITADEL emulator, as a real ZITADEL serves it.

The emulator is an aiohttp server, which speaks HTTP/1.1 only. :class:`H2Front` terminates TLS
with a certificate of a throwaway CA (:mod:`.certificates`), offers ``h2`` by ALPN
(Hypercorn), and hands every request on to the emulator unchanged, recording which HTTP version
each one arrived in.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config

from lockoutd.testing.broker import free_port

from .certificates import Authority

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_HOP_BY_HOP = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade"}
_RECOMPUTED = {b"content-length", b"content-encoding"}  # httpx hands the body over decoded


class H2Front:
    """``https://127.0.0.1:<port>`` (HTTP/2 or HTTP/1.1) forwarding to ``upstream``."""

    def __init__(self, upstream: str, folder: Path) -> None:
        self._upstream = upstream
        authority = Authority("lockoutd test CA")
        self.ca_file = authority.write_ca(folder / "ca.pem")
        cert, key = authority.issue("zitadel", folder, server=True)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.http_versions: list[str] = []
        self._config = Config()
        self._config.bind = [f"127.0.0.1:{self.port}"]
        self._config.certfile, self._config.keyfile = str(cert), str(key)
        self._config.alpn_protocols = ["h2", "http/1.1"]
        self._config.accesslog = None
        self._config.errorlog = None
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="h2-front", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the HTTP/2 front did not start")
        trust = ssl.create_default_context(cafile=str(self.ca_file))
        deadline = time.monotonic() + 30
        while True:  # until Hypercorn listens
            try:
                httpx.get(self.url, verify=trust, timeout=5)
                return self
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._stopping = asyncio.Event()
        self._loop.call_soon(self._started.set)
        self._loop.run_until_complete(self._serve(self._stopping))
        self._loop.close()

    async def _serve(self, stopping: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self._upstream) as upstream:

            async def app(scope: Scope, receive: Receive, send: Send) -> None:
                if scope["type"] != "http":
                    return
                self.http_versions.append(scope["http_version"])
                body = b""
                while True:
                    message = await receive()
                    body += message.get("body", b"")
                    if not message.get("more_body"):
                        break
                headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
                path = scope["raw_path"].decode() + (
                    "?" + scope["query_string"].decode() if scope["query_string"] else ""
                )
                answer = await upstream.request(
                    scope["method"], path, headers=headers, content=body
                )
                await send(
                    {
                        "type": "http.response.start",
                        "status": answer.status_code,
                        "headers": [
                            (k.encode(), v.encode())
                            for k, v in answer.headers.items()
                            if k.encode() not in _HOP_BY_HOP | _RECOMPUTED
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": answer.content})

            await serve(app, self._config, shutdown_trigger=stopping.wait)  # type: ignore[arg-type]
