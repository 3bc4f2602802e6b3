"""The ingest endpoint against clients that hold connections: slow heads, slow bodies, idle
keep-alive connections and more connections than the cap (README, "Ingesting from ZITADEL")."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from pydantic import SecretStr

from lockoutd.connections import FILE_RESERVE, ensure_open_files
from lockoutd.errors import ConfigError
from lockoutd.ingest.metrics import IngestMetrics
from lockoutd.ingest.server import IngestServer
from lockoutd.ingest.signature import sign
from lockoutd.settings import IngestSettings
from lockoutd.source.kafka import OutgoingRecord

KEY = "connections-test-key"
BODY = b'{"aggregateID":"1001","event_type":"user.human.password.check.failed"}'
HEAD = b"POST /zitadel/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
PATIENCE = 30.0
"""How long a test waits for something the server does within a second or so."""


class Kafka:
    def __init__(self) -> None:
        self.records: list[OutgoingRecord] = []

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        self.records.extend(records)


class Endpoint:
    def __init__(self, server: IngestServer, metrics: IngestMetrics) -> None:
        self.server = server
        self.metrics = metrics
        assert server.port is not None
        self.port = server.port

    def closed(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "lockoutd_ingest_connections_closed_total", {"reason": reason}
        )
        return value or 0.0

    def requests(self, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "lockoutd_ingest_requests_total", {"result": result}
        )
        return value or 0.0

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def post_signed(self) -> httpx.Response:
        headers = {"ZITADEL-Signature": sign(KEY.encode(), BODY, int(time.time()))}
        async with httpx.AsyncClient(timeout=PATIENCE) as client:
            return await client.post(
                f"http://127.0.0.1:{self.port}/zitadel/events", content=BODY, headers=headers
            )


@contextlib.asynccontextmanager
async def serve(**limits: object) -> AsyncIterator[Endpoint]:
    settings = IngestSettings.model_validate(
        {"listen": "127.0.0.1:0", "topic": "zitadel.events", **limits}
    )
    metrics = IngestMetrics()
    server = IngestServer(settings, signing_key=SecretStr(KEY), publisher=Kafka(), metrics=metrics)
    async with server:
        yield Endpoint(server, metrics)


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection (fails if it never does)."""
    received = b""
    async with asyncio.timeout(PATIENCE):
        try:
            while chunk := await reader.read(1024):
                received += chunk
        except ConnectionResetError:
            pass
    return received


async def send_until_closed(endpoint: Endpoint, data: bytes) -> bytes:
    """Send ``data`` on a new connection, then nothing more; what came back until it closed."""
    reader, writer = await endpoint.connect()
    writer.write(data)
    try:
        return await closed_by_server(reader)
    finally:
        writer.close()


async def wait_for_connections(endpoint: Endpoint, *, open_: int, waiting: int) -> None:
    """Until the guard counts ``open_`` connections, ``waiting`` of them not in a request."""
    guard = endpoint.server.connections
    async with asyncio.timeout(PATIENCE):
        while (guard.open_connections, guard.waiting_connections) != (open_, waiting):  # noqa: ASYNC110 - counters, no event to wait on
            await asyncio.sleep(0.02)


@pytest.fixture
async def quick() -> AsyncIterator[Endpoint]:
    """Half-second header, body and keep-alive timeouts."""
    async with serve(header_timeout=0.5, body_timeout=0.5, keepalive_timeout=0.5) as endpoint:
        yield endpoint


async def test_a_head_that_never_ends_is_closed_and_counted(quick: Endpoint) -> None:
    assert await send_until_closed(quick, HEAD) == b""
    assert quick.closed("header_timeout") == 1


async def test_a_body_that_never_ends_is_answered_408_and_counted(quick: Endpoint) -> None:
    answer = await send_until_closed(
        quick, HEAD + b"Content-Length: 1000\r\nZITADEL-Signature: t=1,v1=00\r\n\r\n{"
    )
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"too_slow"' in answer
    assert quick.requests("too_slow") == 1


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout(quick: Endpoint) -> None:
    answer = await send_until_closed(quick, HEAD + b"Content-Length: 2\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 401 ")  # answered, then kept open until idle too long
    assert quick.closed("idle") == 1


async def test_at_the_cap_the_longest_waiting_connection_makes_room() -> None:
    """Two slow heads fill a cap of two; a signed request is accepted, the older slow one goes."""
    async with serve(max_connections=2, header_timeout=60, keepalive_timeout=60) as endpoint:
        first = await endpoint.connect()
        first[1].write(HEAD)
        await wait_for_connections(endpoint, open_=1, waiting=1)
        second = await endpoint.connect()
        second[1].write(HEAD)
        await wait_for_connections(endpoint, open_=2, waiting=2)

        answer = await endpoint.post_signed()

        assert answer.status_code == 200
        assert await closed_by_server(first[0]) == b""
        assert endpoint.closed("evicted") >= 1
        assert not second[0].at_eof()
        for _, writer in (first, second):
            writer.close()


async def test_at_the_cap_with_every_connection_in_a_request_a_new_one_is_refused() -> None:
    async with serve(max_connections=1, body_timeout=60) as endpoint:
        reader, writer = await endpoint.connect()
        writer.write(HEAD + b"Content-Length: 1000\r\n\r\n{")  # in a request, reading its body
        await wait_for_connections(endpoint, open_=1, waiting=0)

        refused_reader, refused_writer = await endpoint.connect()
        try:
            assert await closed_by_server(refused_reader) == b""
        finally:
            refused_writer.close()
        assert endpoint.closed("refused") == 1
        assert not reader.at_eof()
        writer.close()


def test_the_open_files_limit_is_raised_to_what_the_cap_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda _, value: limits.append(value))
    ensure_open_files(1000, "ingest.max_connections")
    assert limits == [(1000 + FILE_RESERVE, 4096)]


def test_a_cap_the_open_files_limit_cannot_hold_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 1024))
    with pytest.raises(ConfigError, match=r"ingest.max_connections: 1000 connections need"):
        ensure_open_files(1000, "ingest.max_connections")
