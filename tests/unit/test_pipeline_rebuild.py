"""A partition's rebuilt records and its new ones, in every order they can reach the pipeline:
the crossing acts once when any of its records was not acted on before, and never when all of
them were (README, Operations: "Windows survive restarts and rebalances")."""

from __future__ import annotations

from aiokafka import ConsumerRecord, TopicPartition

from tests.unit.helpers import record
from tests.unit.test_pipeline import FakeStore, failure, make_pipeline

MARK = {TopicPartition("auth.events", 0): 3}
"""Offsets 0-2 were acted on by the partition's previous owner; 3 and on are new."""


def _records(*offsets: int) -> list[ConsumerRecord[bytes, bytes]]:
    # Five failures of one user, a minute apart, one per offset: the fifth crosses.
    return [record(offset, failure("1001", 300 - offset * 60)) for offset in offsets]


async def test_rebuilt_then_new_locks_once() -> None:
    store = FakeStore()
    pipeline, _ = make_pipeline(store)
    await pipeline.process(_records(0, 1, 2), rebuild_until=MARK)
    await pipeline.process(_records(3, 4), rebuild_until=MARK)
    assert store.lock_calls == [("1001", None)]


async def test_new_then_rebuilt_locks_once() -> None:
    """The new records reached the engine before the rebuilt ones: the crossing still acts."""
    store = FakeStore()
    pipeline, _ = make_pipeline(store)
    first = await pipeline.process(_records(3, 4), rebuild_until=MARK)
    second = await pipeline.process(_records(0, 1, 2), rebuild_until=MARK)
    assert store.lock_calls == [("1001", None)]
    assert (first, [r.topic for r in second]) == ([], ["decisions"])


async def test_interleaved_locks_once() -> None:
    store = FakeStore()
    pipeline, metrics = make_pipeline(store)
    await pipeline.process(_records(0, 3, 1, 4, 2), rebuild_until=MARK)
    assert store.lock_calls == [("1001", None)]
    sample = metrics.registry.get_sample_value
    assert sample("lockoutd_events_total", {"result": "accepted"}) == 2
    assert sample("lockoutd_rule_fired_total", {"rule": "password-bruteforce"}) == 1


async def test_a_crossing_entirely_below_the_mark_does_not_act_again() -> None:
    """It acted before the restart (an administrator may have unlocked the user since)."""
    store = FakeStore()
    pipeline, _ = make_pipeline(store)
    mark = {TopicPartition("auth.events", 0): 5}
    assert await pipeline.process(_records(0, 1, 2, 3, 4), rebuild_until=mark) == []
    assert await pipeline.process(_records(5), rebuild_until=mark) == []
    assert store.lock_calls == []
