"""What the sink does with Kafka's answers: outages are retried by the caller, refusals for good
fall back once (a dead letter without its value) and are then reported, never retried forever
(README, Operations: "Poison records")."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
)
from aiokafka.partitioner import DefaultPartitioner
from structlog.testing import capture_logs

from lockoutd.daemon import Daemon
from lockoutd.errors import KafkaRefused, KafkaUnavailable
from lockoutd.rules import load_rules
from lockoutd.settings import Settings
from lockoutd.source.kafka import KafkaSink, OutgoingRecord
from tests.unit.test_pipeline import REPO


class FakeClient:
    """The producer's client: the topics it was asked to track."""

    def __init__(self) -> None:
        self.topics: set[str] = set()

    async def add_topic(self, topic: str) -> bool:
        self.topics.add(topic)
        return True


class FakeProducer:
    """Answers each send with the error named for its value (raised by ``send`` itself when
    ``early``, like the producer's own size check), and delivers the rest."""

    def __init__(self, errors: dict[bytes, Exception], *, early: bool = False) -> None:
        self.errors = errors
        self.early = early
        self.delivered: list[OutgoingRecord] = []
        self.client = FakeClient()

    async def send(
        self, topic: str, value: bytes, *, key: Any, headers: Any, partition: int | None = None
    ) -> asyncio.Future[None]:
        error = self.errors.get(value)
        if error is not None and self.early:
            raise error
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(None)
            self.delivered.append(
                OutgoingRecord(topic, value, key=key, headers=headers, partition=partition)
            )
        return answer


class FakeBuilder:
    """A batch of at most ``room`` records."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.records: list[tuple[bytes, bytes]] = []
        self.closed = False

    def append(self, *, timestamp: None, key: bytes, value: bytes, headers: Any) -> object:
        assert not self.closed
        if len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class BatchingProducer(FakeProducer):
    """Also takes whole batches for a partition; ``batch_error`` answers every batch of more
    than one record (a topic whose record size limit a batch exceeds, say)."""

    def __init__(
        self,
        errors: dict[bytes, Exception],
        *,
        partitions: int = 3,
        room: int = 2,
        batch_error: Exception | None = None,
        bundle_error: Exception | None = None,
    ) -> None:
        super().__init__(errors)
        self.partitions = set(range(partitions))
        self.room = room
        self.batch_error = batch_error
        self.bundle_error = bundle_error
        """Answers every batch holding a bundle (a topic whose record size limit it exceeds)."""
        self.by_partition: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}

    async def partitions_for(self, topic: str) -> set[int]:
        return self.partitions

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(self.room)

    async def send_batch(
        self, batch: FakeBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        assert batch.closed  # sent at once, not left to linger
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.batch_error is not None and len(batch.records) > 1:
            answer.set_exception(self.batch_error)
        elif self.bundle_error is not None and any(v[:1] == b"[" for _, v in batch.records):
            answer.set_exception(self.bundle_error)
        else:
            answer.set_result(None)
            self.by_partition.setdefault((topic, partition), []).extend(batch.records)
        return answer


def _sink(producer: FakeProducer) -> KafkaSink:
    return KafkaSink(Settings().kafka, producer=producer)  # type: ignore[arg-type]


DEAD_LETTER = OutgoingRecord(
    "dlq",
    b"a large value",
    headers=[("lockoutd.source", b"auth.events/0/5")],
    fallback=OutgoingRecord("dlq", b"", headers=[("lockoutd.truncated", b"value")]),
)
DECISION = OutgoingRecord("decisions", b'{"outcome": "locked"}')


@pytest.mark.parametrize("early", [False, True])
async def test_a_dead_letter_refused_as_too_large_goes_without_its_value(early: bool) -> None:
    producer = FakeProducer({b"a large value": MessageSizeTooLargeError()}, early=early)
    await _sink(producer).publish([DEAD_LETTER, DECISION])
    assert [(r.topic, r.value) for r in producer.delivered] == [
        ("decisions", DECISION.value),
        ("dlq", b""),
    ]


async def test_a_refusal_without_a_fallback_is_raised_after_the_rest_is_delivered() -> None:
    producer = FakeProducer({DECISION.value: TopicAuthorizationFailedError()})
    other = OutgoingRecord("decisions", b"{}")
    with pytest.raises(KafkaRefused) as refused:
        await _sink(producer).publish([DECISION, other])
    assert [record for record, _ in refused.value.refused] == [DECISION]
    assert not refused.value.retriable
    assert producer.delivered == [other]


async def test_a_fallback_refused_too_is_raised() -> None:
    producer = FakeProducer(
        {b"a large value": MessageSizeTooLargeError(), b"": MessageSizeTooLargeError()}
    )
    with pytest.raises(KafkaRefused) as refused:
        await _sink(producer).publish([DEAD_LETTER])
    assert [record for record, _ in refused.value.refused] == [DEAD_LETTER.fallback]


@pytest.mark.parametrize("error", [NotLeaderForPartitionError(), KafkaTimeoutError()])
async def test_outages_are_unavailable_for_the_caller_to_retry(error: Exception) -> None:
    with pytest.raises(KafkaUnavailable) as raised:
        await _sink(FakeProducer({DECISION.value: error})).publish([DECISION])
    assert not isinstance(raised.value, KafkaRefused)


class RefusingSink:
    def __init__(self) -> None:
        self.calls = 0

    async def publish(self, records: list[OutgoingRecord]) -> None:
        self.calls += 1
        raise KafkaRefused([(records[0], "decisions: [Error 29] TopicAuthorizationFailedError")])


async def test_the_daemon_logs_counts_and_skips_a_refused_record() -> None:
    """No retry loop: one attempt, one error line, one count, and the batch goes on."""
    settings = Settings(engine={"rule_paths": [REPO / "rules"]})
    daemon = Daemon(settings, load_rules(settings.engine.rule_paths))
    sink = RefusingSink()
    with capture_logs() as logs:
        await daemon._publish(sink, [DECISION])  # type: ignore[arg-type]
    assert sink.calls == 1
    [line] = [entry for entry in logs if entry["event"] == "publish_refused"]
    assert (line["log_level"], line["topic"]) == ("error", "decisions")
    sample = daemon.metrics.registry.get_sample_value
    assert sample("lockoutd_publish_refused_total", {"topic": "decisions"}) == 1


def _keyed(count: int) -> list[OutgoingRecord]:
    return [
        OutgoingRecord("internal", f"event {n}".encode(), key=f"10.0.0.{n % 7}".encode())
        for n in range(count)
    ]


async def test_keyed_records_go_where_the_default_partitioner_puts_them_in_order() -> None:
    """Internal records must land in their key's partition, as any member of the group puts
    them, and a key's records in the order they were given."""
    producer = BatchingProducer({})
    records = _keyed(40)
    await _sink(producer).publish(records)
    expected: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
    for r in records:
        partition = DefaultPartitioner()(r.key, [0, 1, 2], [0, 1, 2])
        expected.setdefault((r.topic, partition), []).append((r.key or b"", r.value))
    assert producer.by_partition == expected


async def test_a_batch_refused_as_too_large_is_sent_again_record_by_record() -> None:
    """Only the record refused on its own is reported; the others of its batch are delivered."""
    producer = BatchingProducer(
        {b"event 3": MessageSizeTooLargeError()}, batch_error=MessageSizeTooLargeError()
    )
    records = _keyed(8)
    with pytest.raises(KafkaRefused) as refused:
        await _sink(producer).publish(records)
    assert [record for record, _ in refused.value.refused] == [records[3]]
    delivered = [r.value for r in producer.delivered]
    delivered += [value for batch in producer.by_partition.values() for _, value in batch]
    assert sorted(delivered) == sorted(r.value for r in records if r.value != b"event 3")


async def test_an_outage_answering_a_batch_is_unavailable_for_the_caller_to_retry() -> None:
    producer = BatchingProducer({}, batch_error=KafkaConnectionError())
    with pytest.raises(KafkaUnavailable) as raised:
        await _sink(producer).publish(_keyed(8))
    assert not isinstance(raised.value, KafkaRefused)


async def test_a_topic_that_refuses_batches_is_named_once_in_a_warning() -> None:
    """Sending record by record costs several times more: an operator must learn that the topic
    takes no batch (its max.message.bytes below lockoutd's batches), once, not per publish."""
    producer = BatchingProducer({}, batch_error=MessageSizeTooLargeError())
    sink = _sink(producer)
    with capture_logs() as logs:
        await sink.publish(_keyed(8))
        await sink.publish(_keyed(8))
    lines = [entry for entry in logs if entry["event"] == "publish_batch_refused"]
    assert [(line["log_level"], line["topic"]) for line in lines] == [("warning", "internal")]


def _bundled(count: int, *, size: int = 10) -> list[OutgoingRecord]:
    return [
        OutgoingRecord(
            "internal",
            json.dumps({"n": n, "pad": "x" * size}).encode(),
            key=f"10.0.0.{n % 7}".encode(),
            bundled=True,
        )
        for n in range(count)
    ]


def _unbundled(producer: BatchingProducer) -> dict[tuple[str, int], list[bytes]]:
    """Each partition's values, every bundle split back into the records it carries."""
    return {
        where: [
            json.dumps(element).encode() for _, value in records for element in json.loads(value)
        ]
        for where, records in producer.by_partition.items()
    }


async def test_bundled_records_of_a_partition_share_one_record_each_keys_in_order() -> None:
    """Records for an internal topic travel as one Kafka record per partition (a JSON array of
    their values): each still lands in its key's partition, a key's records in order."""
    producer = BatchingProducer({}, room=1)
    records = _bundled(40)
    await _sink(producer).publish(records)
    expected: dict[tuple[str, int], list[bytes]] = {}
    for r in records:
        partition = DefaultPartitioner()(r.key, [0, 1, 2], [0, 1, 2])
        expected.setdefault((r.topic, partition), []).append(r.value)
    assert _unbundled(producer) == expected
    assert all(len(batch) == 1 for batch in producer.by_partition.values())


async def test_a_bundle_holds_at_most_64_kib() -> None:
    producer = BatchingProducer({}, partitions=1, room=100)
    records = _bundled(30, size=10_000)
    await _sink(producer).publish(records)
    [(_, bundles)] = producer.by_partition.items()
    assert len(bundles) > 1
    assert all(len(value) <= 64 * 1024 for _, value in bundles)
    assert _unbundled(producer) == {("internal", 0): [r.value for r in records]}


async def test_a_bundle_refused_as_too_large_is_sent_again_record_by_record() -> None:
    """A topic whose records may not be as large as a bundle still gets every record, alone and
    under its own key; the warning names the topic."""
    producer = BatchingProducer({}, bundle_error=MessageSizeTooLargeError())
    records = _bundled(8)
    with capture_logs() as logs:
        await _sink(producer).publish(records)
    delivered = [(r.key, r.value) for r in producer.delivered]
    assert sorted(delivered) == sorted((r.key, b"[" + r.value + b"]") for r in records)
    for key in {r.key for r in records}:  # each key's records in order
        assert [v for k, v in delivered if k == key] == [
            b"[" + r.value + b"]" for r in records if r.key == key
        ]
    assert [line["topic"] for line in logs if line["event"] == "publish_batch_refused"] == [
        "internal"
    ]


async def test_a_partition_bundle_refused_as_too_large_goes_again_element_by_element() -> None:
    """The copies of a batch bound for one partition go there as one bundle; a topic that
    refuses it still gets every copy, each alone, in that partition and in order."""
    elements = [json.dumps({"n": n}).encode() for n in range(4)]
    bundle = OutgoingRecord("internal", b"[" + b",".join(elements) + b"]", partition=2)
    producer = FakeProducer({bundle.value: MessageSizeTooLargeError()})
    with capture_logs() as logs:
        await _sink(producer).publish([bundle])
    assert [(r.value, r.partition) for r in producer.delivered] == [
        (b"[" + element + b"]", 2) for element in elements
    ]
    assert [line["topic"] for line in logs if line["event"] == "publish_batch_refused"] == [
        "internal"
    ]
