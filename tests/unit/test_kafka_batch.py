"""What the daemon commits after a batch comes from the batch the source fetched."""

from __future__ import annotations

from aiokafka import TopicPartition

from lockoutd.source.kafka import Batch
from tests.unit.helpers import record


def test_a_batch_commits_one_past_the_last_record_of_each_partition() -> None:
    first, second = TopicPartition("auth.events", 0), TopicPartition("auth.events", 1)
    fetched = {
        first: [record(4, b"a", partition=0), record(5, b"b", partition=0)],
        second: [record(9, b"c", partition=1)],
    }

    batch = Batch.of(fetched)

    assert [r.value for r in batch.records] == [b"a", b"b", b"c"]
    assert batch.next_offsets == {first: 6, second: 10}


def test_a_partition_that_answered_nothing_is_not_committed() -> None:
    """An empty list for a partition must not move its offset (nor fail on ``[-1]``)."""
    quiet = TopicPartition("auth.events", 2)

    batch = Batch.of({quiet: [], TopicPartition("auth.events", 0): [record(0, b"x")]})

    assert quiet not in batch.next_offsets
    assert batch.next_offsets == {TopicPartition("auth.events", 0): 1}
