"""Publishing to several topics at once against a real broker (README, Operations): a record
for a topic the producer has not asked about yet must not strand the records sent with it."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from lockoutd.settings import KafkaSettings
from lockoutd.source.kafka import KafkaSink, OutgoingRecord
from lockoutd.testing.broker import LocalBroker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_a_publish_naming_a_new_topic_delivers_the_records_for_the_others(
    broker: LocalBroker,
) -> None:
    """The producer learns every topic from its first metadata answer. A topic it is asked about
    later makes it ask for the topics it tracks only, and one it merely knew (a dead-letter
    topic, say) dropped out of its view with a record waiting for it: that record waited for
    the producer's delivery timeout (40 s) while the batch, and its partition, stood still."""
    suffix = uuid.uuid4().hex[:8]
    known, new = f"known-{suffix}", f"new-{suffix}"
    await broker.create_topics(known)
    async with KafkaSink(KafkaSettings(bootstrap_servers=broker.bootstrap_servers)) as sink:
        await broker.create_topics(new)  # created after the producer's first look
        records = [OutgoingRecord(known, b"dead letter"), OutgoingRecord(new, b"decision")]
        # Well under the 40 s the stranded record used to wait: a record that waits that long
        # holds its batch uncommitted, and shutdown's drain gives up at 20 s.
        await asyncio.wait_for(sink.publish(records), timeout=15)
