"""Producing, consuming and waiting on the broker from synchronous end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from lockoutd.testing.process import DaemonProcess


def at(minutes: float, *, base: datetime | None = None) -> str:
    """RFC 3339 time ``minutes`` after ``base`` (default: ten minutes ago, so events are fresh)."""
    start = base or datetime.now(UTC) - timedelta(minutes=10)
    return (start + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def failure(
    user_id: str, minutes: float, *, reason: str = "password", **fields: Any
) -> dict[str, Any]:
    """A native ``auth.login.failed`` event for ``user_id`` at ``at(minutes)``."""
    return {
        "type": "auth.login.failed",
        "occurred_at": at(minutes),
        "user_id": user_id,
        "reason": reason,
        **fields,
    }


class ProducerRecord(NamedTuple):
    value: bytes
    key: bytes
    headers: Sequence[tuple[str, bytes | None]] = ()


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[dict[str, Any] | bytes],
    *,
    key_field: str = "user_id",
    headers: Sequence[tuple[str, bytes | None]] = (),
) -> None:
    """Send ``values`` (event dicts or raw bytes) in order, keyed by user as producers do, each
    with ``headers`` (Kafka allows a header without a value: None)."""
    produce_records(
        bootstrap,
        topic,
        [
            ProducerRecord(value, b"raw", headers)
            if isinstance(value, bytes)
            else ProducerRecord(
                json.dumps(value).encode(),
                str(value.get(key_field) or value.get("login_name") or "").encode(),
                headers,
            )
            for value in values
        ],
    )


def produce_records(bootstrap: str, topic: str, records: Iterable[ProducerRecord]) -> None:
    """Send ``records`` in order, each acknowledged before the next is sent."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for record in records:
                await producer.send_and_wait(
                    topic, record.value, key=record.key, headers=list(record.headers) or None
                )
        finally:
            await producer.stop()

    asyncio.run(send())


def produce_at_once(bootstrap: str, topic: str, events: Iterable[dict[str, Any]]) -> None:
    """Send ``events`` in one request per partition, keyed by user: a consumer that fetches
    them gets them in one batch."""

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=200
        )
        await producer.start()
        try:
            sent = [
                await producer.send(
                    topic, json.dumps(event).encode(), key=str(event["user_id"]).encode()
                )
                for event in events
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(send())


def read_all(bootstrap: str, topic: str, *, timeout: float = 5.0) -> list[Any]:
    """Every record now on ``topic`` (all partitions), read without a consumer group."""

    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            if not tps:
                return []
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            # Read until past the end offsets and one fetch comes back empty: some brokers report
            # the end of a batched write short, so the end offsets alone could stop too early.
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for rs in batch.values():
                    records.extend(rs)
                if not batch and not [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                    break
            return records
        finally:
            await consumer.stop()

    return asyncio.run(read())


def decisions(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """The decisions published on ``topic``, decoded."""
    return [json.loads(record.value) for record in read_all(bootstrap, topic)]


def wait_until(condition: Callable[[], Any], *, timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")


def wait_committed(
    bootstrap: str, group: str, topics: Sequence[str], *, timeout: float = 30.0
) -> None:
    """Wait until ``group`` has committed the end of every partition of ``topics``.

    The daemon commits only after the decisions of a batch were acted on and published, so this
    is the barrier after which "nothing happened" can be asserted.
    """

    async def caught_up() -> bool:
        # A consumer that names the group but never subscribes reads its commits without joining.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = [
                TopicPartition(topic, p)
                for topic in topics
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not tps:
                await consumer._client.force_metadata_update()
                return False
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                if ends[tp] and (await consumer.committed(tp) or 0) < ends[tp]:
                    return False
            return True
        finally:
            await consumer.stop()

    wait_until(lambda: asyncio.run(caught_up()), timeout=timeout, what=f"group {group} to commit")


def assigned(daemon: DaemonProcess, topic: str) -> list[str]:
    """The partitions of ``topic`` that ``daemon`` was given at its latest assignment (the
    group assigns internal topics' partitions too, which these tests do not count)."""
    lines = [e for e in daemon.logs() if e.get("event") == "partitions_assigned"]
    partitions: list[str] = lines[-1]["partitions"] if lines else []
    return [partition for partition in partitions if partition.startswith(f"{topic}[")]
