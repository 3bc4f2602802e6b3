"""Dead letters that always fit, with real processes: a record too large to forward whole is
dead-lettered cut down, with headers that say so and where the original is, and the partition
moves on to the attack behind it (README, Operations: "Poison records")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from lockoutd.decode.rejects import VALUE_PREFIX_BYTES
from lockoutd.testing.broker import LocalBroker
from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, start_stack, stop_stack
from .kafka_helpers import failure, produce, read_all, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

OVERSIZE = 2 * 1024 * 1024
"""Twice ``kafka.max_event_bytes``: invalid, and too large for lockoutd's producer to forward."""


def produce_large(bootstrap: str, topic: str, value: bytes, *, key: bytes) -> None:
    """What a hostile producer can do: the local broker takes records of many megabytes."""

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, max_request_size=4 * OVERSIZE, enable_idempotence=False
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

    asyncio.run(send())


def test_an_oversize_record_is_dead_lettered_cut_down_and_the_attack_behind_it_locks(
    broker: LocalBroker, tmp_path: Path
) -> None:
    stack = start_stack(broker, tmp_path)
    try:
        user = "3800"
        stack.emulator.add_user(user, org_id=ORG_ID)
        # Keyed by the user: the oversize record sits in the attack's partition, in front of it.
        produce_large(stack.bootstrap, stack.events_topic, b"x" * OVERSIZE, key=user.encode())
        produce(
            stack.bootstrap, stack.events_topic, [failure(user, m, org_id=ORG_ID) for m in range(5)]
        )

        wait_until(
            lambda: stack.emulator.state_of(user) is UserState.LOCKED,
            timeout=60,
            what="the attack behind the oversize record to lock its user",
        )
        assert stack.config.dead_letter_topic is not None
        [dead] = wait_until(
            lambda: read_all(stack.bootstrap, stack.config.dead_letter_topic or ""),
            what="the dead letter",
        )
        headers = {name: value.decode() for name, value in dead.headers}
        assert headers["lockoutd.reason"] == "too_large"
        assert headers["lockoutd.truncated"] == "value"
        assert headers["lockoutd.original_size"] == str(OVERSIZE)
        assert headers["lockoutd.source"] == f"{stack.events_topic}/{dead.partition}/0"
        assert dead.key == user.encode()
        assert dead.value == b"x" * VALUE_PREFIX_BYTES
        assert stack.daemon.metric("lockoutd_dead_lettered_total", reason="too_large") == 1
        assert httpx.get(f"{stack.daemon.url}/readyz").status_code == 200
    finally:
        stop_stack(stack)
