"""What a partition's new owner commits while it rebuilds the partition's windows, against the
real broker: the records before the committed offset were acted on already, and the committed
offset must never move back below them (README, Operations: "Windows survive restarts and
rebalances")."""

from __future__ import annotations

import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from lockoutd.decode.event import LOGIN_FAILED, Event
from lockoutd.pipeline import Pipeline
from lockoutd.repartition import encode_event
from lockoutd.report.metrics import Metrics
from lockoutd.settings import Settings
from lockoutd.source.kafka import Batch, KafkaSource
from lockoutd.testing.broker import LocalBroker
from tests.unit.helpers import rule, ruleset
from tests.unit.test_pipeline import FakeStore

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RULES = ruleset(rule("bruteforce", threshold=5, window="1d"))
USER = "1001"


async def _instance(settings: Settings, store: FakeStore, *, batches: int) -> None:
    """One member of the group, as the daemon runs it (fetch, judge, commit), for ``batches``
    batches that hold records; then it is gone, as if killed."""
    pipeline = Pipeline(settings, RULES, store=store, metrics=Metrics())
    source = KafkaSource(
        settings.kafka,
        metrics=Metrics(),
        lookback_seconds=lambda: 86_400.0,
        on_lost=pipeline.forget,
    )
    async with source:
        done = 0
        deadline = time.monotonic() + 60
        while done < batches and time.monotonic() < deadline:
            batch = await source.next_batch()
            if not batch.records:
                continue
            rebuild_until = dict(source.rebuild_until)
            await pipeline.process(batch.records, rebuild_until=rebuild_until)
            await source.commit(batch)
            done += 1
        assert done == batches, "the instance read fewer batches than it should have"


async def test_a_rebuild_cut_short_leaves_the_committed_offset_where_it_was(
    broker: LocalBroker,
) -> None:
    """The first owner locks a user and commits; an administrator unlocks the user. The next
    owner re-reads the partition two records a batch to rebuild its windows and dies after one
    batch. Committing that batch moved the group's offset back to 2, and the owner after it
    took the user's old failures for new ones and locked the user again."""
    topic, group = f"events-{uuid.uuid4().hex[:8]}", f"lockoutd-{uuid.uuid4().hex[:8]}"
    await broker.create_topics(topic, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    await producer.start()
    try:
        now = time.time()
        for n in range(6):
            event = Event(
                type=LOGIN_FAILED,
                occurred_at=now - 300 + n,
                user_id=USER,
                reason="password",
                event_id=f"failure-{n}",
            )
            await producer.send_and_wait(topic, encode_event(event), key=USER.encode())
    finally:
        await producer.stop()
    kafka = {"bootstrap_servers": broker.bootstrap_servers, "topics": [topic], "group_id": group}
    store = FakeStore()

    await _instance(Settings(kafka=kafka), store, batches=1)
    assert store.lock_calls == [(USER, None)]
    store.locked.clear()  # an administrator unlocks the user
    store.lock_calls.clear()

    await _instance(Settings(kafka={**kafka, "max_batch_records": 2}), store, batches=1)
    assert await _committed(broker, group, TopicPartition(topic, 0)) == 6

    await _instance(Settings(kafka=kafka), store, batches=1)  # rebuilds and reads nothing new
    assert store.lock_calls == []


async def _committed(broker: LocalBroker, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def test_records_of_a_partition_lost_after_their_fetch_are_neither_judged_nor_committed(
    broker: LocalBroker,
) -> None:
    """The daemon fetches a batch while the one before it is still being published, so a
    rebalance can take a partition between the fetch and the judging. The records of that
    partition are the new owner's: the old one judges none of them and commits none of them.
    Nor of a partition revoked and given back (aiokafka revokes every partition at a
    rebalance): it was rewound, and its records are read again."""
    topic, group = f"events-{uuid.uuid4().hex[:8]}", f"lockoutd-{uuid.uuid4().hex[:8]}"
    await broker.create_topics(topic, partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    await producer.start()
    try:
        for partition in (0, 1):
            for n in range(3):
                await producer.send_and_wait(topic, b"{}", partition=partition, key=str(n).encode())
    finally:
        await producer.stop()
    kafka = Settings(
        kafka={"bootstrap_servers": broker.bootstrap_servers, "topics": [topic], "group_id": group}
    ).kafka

    def member() -> KafkaSource:
        return KafkaSource(kafka, metrics=Metrics(), lookback_seconds=lambda: 60.0)

    async with member() as first:
        batch = await first.next_batch(timeout_seconds=10)
        if len(batch.next_offsets) < 2:  # one fetch may answer for one partition only
            more = await first.next_batch(timeout_seconds=10)
            batch = Batch(
                batch.records + more.records,
                {**batch.next_offsets, **more.next_offsets},
                losses=batch.losses,
            )
        assert len(batch.next_offsets) == 2
        async with member() as second:
            taken: set[TopicPartition] = set()
            deadline = time.monotonic() + 60
            while not taken and time.monotonic() < deadline:
                taken = set((await second.next_batch()).next_offsets)
            assert taken, "the second member took none of the partitions"
            [kept] = set(batch.next_offsets) - taken

            held = first.held_since(batch)
            assert not any(held(tp) for tp in batch.next_offsets)
            assert await first.commit(batch) == {}
            again = await first.next_batch(timeout_seconds=10)

    assert set(again.next_offsets) == {kept}
    assert again.records[0].offset == 0  # read again from the start: nothing was lost
