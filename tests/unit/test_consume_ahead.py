"""The consumer loop judges the next batch while the broker confirms what the batch before it
published, and commits a batch only once its own records are confirmed (README, "Operations":
offsets move only past decisions acted on and published)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from lockoutd.daemon import Daemon
from lockoutd.pipeline import Pipeline
from lockoutd.rules import load_rules
from lockoutd.settings import Settings
from lockoutd.source.kafka import Batch, OutgoingRecord, Record
from tests.unit.helpers import record
from tests.unit.test_pipeline import FakeStore, failure, make_pipeline

REPO = Path(__file__).resolve().parents[2]
TP = TopicPartition("auth.events", 0)


def _batch(first: int, count: int) -> Batch:
    return Batch.of({TP: [record(first + n, b"{}") for n in range(count)]})


class ScriptedSource:
    """Hands out the given batches, then empty ones; records what the loop commits."""

    def __init__(self, batches: list[Batch], log: list[str]) -> None:
        self._batches = batches
        self._log = log
        self.rebuild_until: dict[TopicPartition, int] = {}
        self.ready = True

    async def next_batch(self) -> Batch:
        await asyncio.sleep(0.01)
        return self._batches.pop(0) if self._batches else Batch.of({})

    def held_since(self, batch: Batch) -> Callable[[TopicPartition], bool]:
        return lambda tp: True

    def resume(self) -> None:
        pass

    async def keep_membership(self) -> None:
        pass

    async def commit(self, batch: Batch) -> dict[TopicPartition, int]:
        self._log.append(f"commit {batch.next_offsets[TP]}")
        return dict(batch.next_offsets)


class RecordingPipeline:
    actions_in_flight = 0

    def __init__(self, log: list[str]) -> None:
        self._log = log

    async def process(self, records: Sequence[Record], **_: Any) -> list[OutgoingRecord]:
        last = records[-1].offset + 1
        self._log.append(f"judge {last}")
        return [OutgoingRecord("lockoutd.decisions", str(last).encode())]


class HeldSink:
    """Confirms a publish only when the test says so."""

    def __init__(self, log: list[str]) -> None:
        self._log = log
        self.confirm: dict[bytes, asyncio.Event] = {}

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        [record] = records
        self._log.append(f"publish {record.value.decode()}")
        await self.confirm.setdefault(record.value, asyncio.Event()).wait()
        self._log.append(f"confirmed {record.value.decode()}")


class Journal(list[str]):
    """What happened, in order; a test can wait for an entry."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, asyncio.Event] = {}

    def append(self, entry: str) -> None:
        super().append(entry)
        self._seen.setdefault(entry, asyncio.Event()).set()

    async def reaches(self, entry: str) -> None:
        async with asyncio.timeout(5):
            await self._seen.setdefault(entry, asyncio.Event()).wait()


async def test_the_next_batch_is_judged_while_the_last_one_is_confirmed_then_each_commits() -> None:
    settings = Settings(engine={"rule_paths": [REPO / "rules"]})
    daemon = Daemon(settings, load_rules(settings.engine.rule_paths))
    log = Journal()
    sink = HeldSink(log)
    consuming = asyncio.create_task(
        daemon._consume(
            ScriptedSource([_batch(0, 3), _batch(3, 2)], log),  # type: ignore[arg-type]
            sink,  # type: ignore[arg-type]
            RecordingPipeline(log),  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            None,
        )
    )
    try:
        await log.reaches("judge 5")
        await asyncio.sleep(0.05)
        # The second batch was judged and acted on; the first is not committed before the
        # broker has what it published.
        assert log == ["judge 3", "publish 3", "judge 5"]

        sink.confirm.setdefault(b"3", asyncio.Event()).set()
        await log.reaches("publish 5")
        assert log[3:] == ["confirmed 3", "commit 3", "publish 5"]

        # Nothing comes after it: the last batch is committed as soon as it is confirmed.
        await asyncio.sleep(0.05)
        assert "commit 5" not in log
        sink.confirm.setdefault(b"5", asyncio.Event()).set()
        await log.reaches("commit 5")
        assert log[6:] == ["confirmed 5", "commit 5"]
    finally:
        daemon.request_stop()
        await asyncio.wait_for(consuming, 5)


async def test_a_stop_commits_the_batch_in_flight_only_once_it_is_confirmed() -> None:
    settings = Settings(engine={"rule_paths": [REPO / "rules"], "drain_timeout": 0.3})
    daemon = Daemon(settings, load_rules(settings.engine.rule_paths))
    log = Journal()
    consuming = asyncio.create_task(
        daemon._consume(
            ScriptedSource([_batch(0, 3)], log),  # type: ignore[arg-type]
            HeldSink(log),  # type: ignore[arg-type]  # never confirms
            RecordingPipeline(log),  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            None,
        )
    )
    await log.reaches("publish 3")
    daemon.request_stop()
    await asyncio.wait_for(consuming, 5)
    assert log == ["judge 3", "publish 3"]  # read again and acted on again after the restart


class RebalancedSource(ScriptedSource):
    """A rebalance takes the partition between the fetch of its first batch and the judging:
    aiokafka's coordinator runs its callback in a turn of the loop already queued. The
    partition comes back, and its records are read again from the committed offset."""

    def __init__(self, batches: list[Batch], log: list[str], pipeline: Pipeline) -> None:
        super().__init__(batches, log)
        self._pipeline = pipeline
        self._losses = 0

    async def next_batch(self) -> Batch:
        batch = await super().next_batch()
        return Batch.of({TP: batch.records}, losses=self._losses) if batch.records else batch

    def held_since(self, batch: Batch) -> Callable[[TopicPartition], bool]:
        if not self._losses:
            asyncio.get_running_loop().call_soon(self._revoke)
        return lambda tp: batch.losses == self._losses

    def _revoke(self) -> None:
        self._losses += 1
        self._pipeline.forget([TP])

    async def commit(self, batch: Batch) -> dict[TopicPartition, int]:
        return {} if batch.losses != self._losses else await super().commit(batch)


async def test_a_batch_whose_partition_was_lost_before_its_judging_counts_nothing() -> None:
    """Three failures of one user, judged in a batch whose partition was lost meanwhile, then
    read again once it is back: three failures, not six. The rule locks at five."""
    settings = Settings(engine={"rule_paths": [REPO / "rules"]})
    daemon = Daemon(settings, load_rules(settings.engine.rule_paths))
    store = FakeStore()
    pipeline, _ = make_pipeline(store)
    three = [record(n, failure("1001", 60 - n)) for n in range(3)]
    log = Journal()
    source = RebalancedSource([Batch.of({TP: three}), Batch.of({TP: three})], log, pipeline)

    consuming = asyncio.create_task(
        daemon._consume(
            source,  # type: ignore[arg-type]
            SilentSink(),  # type: ignore[arg-type]
            pipeline,
            None,  # type: ignore[arg-type]
            None,
        )
    )
    await log.reaches("commit 3")
    daemon.request_stop()
    await asyncio.wait_for(consuming, 5)

    assert store.lock_calls == []
    assert log == ["commit 3"]  # only the batch read after the partition came back


class SilentSink:
    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        pass
