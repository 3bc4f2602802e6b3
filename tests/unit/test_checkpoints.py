"""The checkpoint topic's records (README, Operations: "Windows survive restarts and
rebalances"): a state larger than one record is split and put back together, every record is
signed, and a checkpoint missing a record, altered or too large is never restored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from pydantic import SecretStr

from lockoutd.decide.engine import Engine
from lockoutd.errors import KafkaUnavailable
from lockoutd.report.metrics import Metrics
from lockoutd.settings import Settings
from lockoutd.source.checkpoints import Checkpoints
from lockoutd.source.kafka import OutgoingRecord
from lockoutd.source.schedule_seal import ScheduleSeal
from tests.unit.helpers import MINUTE, T0, event, rule, ruleset

NOW = T0 + 30 * MINUTE
TP = TopicPartition("auth.events", 1)
RULES = ruleset(rule(threshold=5, window="1d"))
SEAL = ScheduleSeal(SecretStr("a-key-of-thirty-two-bytes-long!!"))


@dataclass
class Written:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class FakeSink:
    records: list[OutgoingRecord] = field(default_factory=list)
    down: bool = False

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        if self.down:
            raise KafkaUnavailable("the broker is away")
        self.records += records


class FakeConsumer:
    """The checkpoint topic, one partition, holding ``records``."""

    def __init__(self, records: list[Written]) -> None:
        self.records = records
        self.at = 0
        self.tp = TopicPartition("lockoutd.checkpoints", 0)

    def assignment(self) -> set[TopicPartition]:
        return {self.tp}

    async def seek_to_beginning(self, *_: Any) -> None:
        self.at = 0

    async def end_offsets(self, _: Any) -> dict[TopicPartition, int]:
        return {self.tp: len(self.records)}

    async def position(self, _: Any) -> int:
        return self.at

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Written]]:
        batch, self.at = self.records[self.at :], len(self.records)
        return {self.tp: batch}


def _checkpoints(
    sink: FakeSink,
    records: list[Written] | None = None,
    metrics: Metrics | None = None,
    **kafka: Any,
) -> Checkpoints:
    settings = Settings(kafka={"group_id": "g", "checkpoint_chunk_bytes": 1024, **kafka})
    return Checkpoints(
        settings,
        sink=sink,  # type: ignore[arg-type]
        seal=SEAL,
        metrics=metrics or Metrics(),
        clock=lambda: NOW,
        consumer=FakeConsumer(records or []),  # type: ignore[arg-type]
    )


def _engine(users: int) -> Engine:
    engine = Engine(RULES)
    for n in range(users):
        for m in range(2):
            engine.process(event(m, user_id=str(100_000 + n), event_id=f"{n}-{m}"), NOW)
    return engine


async def _restore(records: list[Written], committed: int = 500) -> dict[TopicPartition, Any]:
    reader = _checkpoints(FakeSink(), records)
    return await reader.restore({TP: committed}, lambda _topic: RULES)


def _as_read(records: list[OutgoingRecord]) -> list[Written]:
    return [Written(r.key or b"", r.value, list(r.headers)) for r in records]


async def test_a_large_state_is_split_into_signed_records_and_restored_whole() -> None:
    sink = FakeSink()
    writer = _checkpoints(sink)
    original = _engine(400)
    await writer.write(TP, 500, original)
    keys = [r.key for r in sink.records]
    assert len(keys) > 2
    assert all(len(r.value) <= 1024 for r in sink.records)
    assert keys[-1] == b"g/auth.events/1"  # the first record, written last
    assert set(keys[:-1]) == {f"g/auth.events/1/{n}".encode() for n in range(1, len(keys))}
    assert all(SEAL.verify(r.key or b"", r.value, r.headers) for r in sink.records)

    [(offset, engine)] = (await _restore(_as_read(sink.records))).values()
    assert offset == 500
    assert dict(engine.tracked_keys()) == dict(original.tracked_keys())
    [state] = engine.rule_states()
    [kept] = original.rule_states()
    assert list(state.windows.export()) == list(kept.windows.export())


async def test_the_newest_complete_checkpoint_at_or_below_the_committed_offset_is_used() -> None:
    sink = FakeSink()
    writer = _checkpoints(sink, checkpoint_interval="1s")
    await writer.write(TP, 300, _engine(10))
    await writer.write(TP, 400, _engine(20))
    await writer.write(TP, 600, _engine(30))  # past the committed offset: never acted on
    [(offset, engine)] = (await _restore(_as_read(sink.records), committed=500)).values()
    assert offset == 400
    assert dict(engine.tracked_keys()) == {"password-bruteforce": 20}


async def test_old_checkpoints_appended_again_lose_against_the_newest() -> None:
    """Anyone who can read and write the topic can append lockoutd's own old checkpoints again,
    signed as they are. The newest usable checkpoint is still the one restored (the last read
    used to win), even when the copies outnumber the checkpoints kept per partition."""
    sink = FakeSink()
    writer = _checkpoints(sink, checkpoint_interval="1s")
    await writer.write(TP, 100, _engine(10))
    old = list(sink.records)
    await writer.write(TP, 200, _engine(15))
    older = sink.records[len(old) :]
    await writer.write(TP, 400, _engine(20))
    replayed = _as_read(sink.records) + _as_read(old) + _as_read(older) + _as_read(old)
    [(offset, engine)] = (await _restore(replayed, committed=500)).values()
    assert offset == 400
    assert dict(engine.tracked_keys()) == {"password-bruteforce": 20}


async def test_a_checkpoint_missing_a_record_falls_back_to_the_one_before() -> None:
    sink = FakeSink()
    writer = _checkpoints(sink)
    await writer.write(TP, 300, _engine(10))
    first = len(sink.records)
    await writer.write(TP, 400, _engine(400))
    del sink.records[first]  # a crash while the second was written
    [(offset, _)] = (await _restore(_as_read(sink.records))).values()
    assert offset == 300


@pytest.mark.parametrize("change", ["unsigned", "altered", "other group"])
async def test_a_forged_record_is_refused_and_counted(change: str) -> None:
    sink = FakeSink()
    writer = _checkpoints(sink)
    await writer.write(TP, 300, _engine(10))
    [record] = _as_read(sink.records)
    if change == "unsigned":
        record.headers = []
    elif change == "altered":
        record.value = record.value[:-1] + bytes([record.value[-1] ^ 1])
    else:
        record.key = b"other/auth.events/1"
    metrics = Metrics()
    reader = _checkpoints(FakeSink(), [record], metrics)
    assert await reader.restore({TP: 500}, lambda _topic: RULES) == {}
    rejected = _count(metrics, "lockoutd_checkpoints_rejected_total", "bad_signature")
    assert rejected == (0 if change == "other group" else 1)  # another group's is not ours


async def test_a_state_too_large_is_not_written_and_is_counted() -> None:
    sink, metrics = FakeSink(), Metrics()
    writer = _checkpoints(sink, metrics=metrics, checkpoint_max_bytes=1000)
    await writer.write(TP, 300, _engine(400))
    assert sink.records == []
    assert _count(metrics, "lockoutd_checkpoint_write_failures_total", "too_large") == 1


async def test_a_checkpoint_kafka_does_not_take_is_counted_and_nothing_stops() -> None:
    metrics = Metrics()
    writer = _checkpoints(FakeSink(down=True), metrics=metrics)
    await writer.write(TP, 300, _engine(3))
    assert _count(metrics, "lockoutd_checkpoint_write_failures_total", "kafka") == 1


def _count(metrics: Metrics, name: str, reason: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"reason": reason})
