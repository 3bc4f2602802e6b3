"""The operations endpoint stays reachable while clients hold connections (README, "Operations")."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client import CollectorRegistry

from lockoutd.report.http import MAX_CONNECTIONS, OperationsServer

SLOW = MAX_CONNECTIONS * 2


async def test_health_answers_while_slow_clients_hold_more_connections_than_the_cap() -> None:
    """Connections that never finish their headers give way to a probe that sends at once."""
    server = OperationsServer(
        "127.0.0.1", 0, registry=CollectorRegistry(), readiness=lambda: {"kafka": True}
    )
    async with server:
        held = []
        for _ in range(SLOW):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end
            held.append((reader, writer))
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.get(f"http://127.0.0.1:{server.port}/healthz")
            assert answer.status_code == 200
            closed = 0
            for reader, _ in held:
                try:
                    if await asyncio.wait_for(reader.read(1), 0.01) == b"":
                        closed += 1
                except ConnectionResetError:
                    closed += 1
                except TimeoutError:
                    pass
            assert closed >= SLOW - MAX_CONNECTIONS  # the oldest made room
        finally:
            for _, writer in held:
                writer.close()
