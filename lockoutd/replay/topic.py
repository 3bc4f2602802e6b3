"""A stretch of a Kafka topic, between two offsets or two record times, in time order.

Partitions are merged by record timestamp: a rule keyed on an address counts events from every
partition, and its windows need them in roughly the order the daemon would have seen them.
Times select records by their Kafka timestamp (when they were produced), not by the event time
inside them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from lockoutd.errors import ConfigError, KafkaUnavailable
from lockoutd.settings import KafkaSettings
from lockoutd.source.kafka import Record, connection_options

# Records that stop arriving although the end offsets say more exist (a broker gone away).
_STALL_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Bound:
    """Where a stretch starts or ends: an offset (in every partition) or a time."""

    offset: int | None = None
    at: float | None = None
    """Seconds since the epoch."""

    @classmethod
    def parse(cls, text: str) -> Bound:
        """``1200`` is an offset; ``2026-11-29T14:00:00Z`` is a time (RFC 3339, with an offset)."""
        text = text.strip()
        if text.isdigit():
            return cls(offset=int(text))
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is neither an offset nor an RFC 3339 time such as 2026-11-29T14:00:00Z"
            ) from None
        if moment.tzinfo is None:
            raise ValueError(f"{text!r} has no UTC offset; add Z or +01:00")
        return cls(at=moment.timestamp())


class TopicRange:
    """The records of ``topic`` from ``start`` (inclusive) to ``end`` (exclusive).

    Without ``start`` the stretch begins at the oldest record kept; without ``end`` it stops once
    each partition is read up to where it ended when the range was opened.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        *,
        start: Bound | None = None,
        end: Bound | None = None,
    ) -> None:
        self.topic = topic
        self._start = start
        self._end = end
        self._settings = settings
        self._consumer = AIOKafkaConsumer(
            enable_auto_commit=False,
            max_partition_fetch_bytes=max(1_048_576, settings.max_event_bytes),
            **connection_options(settings),
        )
        self.first: dict[TopicPartition, int] = {}
        self.stop: dict[TopicPartition, int] = {}

    @property
    def total(self) -> int:
        """How many offsets the stretch spans (records, unless the topic is compacted)."""
        return sum(max(0, self.stop[tp] - self.first[tp]) for tp in self.first)

    async def __aenter__(self) -> Self:
        try:
            await self._consumer.start()
            await self._resolve()
        except KafkaError as exc:
            await self._consumer.stop()
            raise KafkaUnavailable(
                f"cannot read {self.topic} from {self._settings.bootstrap_servers}: {exc}"
            ) from exc
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._consumer.stop()

    async def _resolve(self) -> None:
        consumer = self._consumer
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise ConfigError([f"replay: topic {self.topic} does not exist"])
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        beginnings = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        self.first = await self._start_offsets(tps, beginnings, ends)
        end = self._end
        if end is not None and end.offset is not None:
            self.stop = {tp: min(max(end.offset, beginnings[tp]), ends[tp]) for tp in tps}
        else:  # the end of the partition, or an end time: found while reading, see batches()
            self.stop = dict(ends)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, self.first[tp])

    async def _start_offsets(
        self,
        tps: list[TopicPartition],
        beginnings: dict[TopicPartition, int],
        ends: dict[TopicPartition, int],
    ) -> dict[TopicPartition, int]:
        start = self._start
        if start is None:
            return dict(beginnings)
        if start.offset is not None:
            return {tp: min(max(start.offset, beginnings[tp]), ends[tp]) for tp in tps}
        assert start.at is not None
        found = await self._consumer.offsets_for_times(dict.fromkeys(tps, int(start.at * 1000)))
        # No record at or after the time: nothing to read in that partition.
        return {tp: found[tp].offset if found.get(tp) is not None else ends[tp] for tp in tps}

    async def batches(self) -> AsyncIterator[list[Record]]:
        """The records of the stretch, partitions merged by record timestamp, in batches.

        A batch holds what can be merged from the records fetched so far: it ends where the merge
        has to wait for a partition's next fetch.

        Time bounds follow Kafka's own rule (``offsets_for_times``): a partition's stretch starts
        at its first record stamped at or after ``start`` and ends before its first record
        stamped at or after ``end``. The broker's lookup only says where to begin reading; the
        records' own timestamps decide, so a broker with a coarse time index reads a little more
        but never returns a different stretch.
        """
        consumer = self._consumer
        start_ms = int(self._start.at * 1000) if self._start and self._start.at else None
        end_ms = int(self._end.at * 1000) if self._end and self._end.at else None
        buffers: dict[TopicPartition, deque[Record]] = {tp: deque() for tp in self.first}
        remaining = {tp for tp in self.first if self.first[tp] < self.stop[tp]}
        started = {tp: start_ms is None for tp in self.first}
        # Only an explicit end offset is a hard limit. Otherwise a partition ends once the
        # consumer has reached the end offset it had when the range was opened: some brokers
        # (Tansu) report the end of the last batch's first record, not of the batch.
        exact_stop = self._end is not None and self._end.offset is not None
        last_progress = time.monotonic()
        merged: list[Record] = []
        while remaining or any(buffers.values()):
            # A record is handed out only while every unfinished partition has one buffered, so
            # no partition that lags behind can still hold an older one.
            empty = [tp for tp in remaining if not buffers[tp]]
            if empty:
                if merged:
                    yield merged
                    merged = []
                try:
                    fetched = await consumer.getmany(*empty, timeout_ms=500)
                except KafkaError as exc:
                    raise KafkaUnavailable(f"reading {self.topic} failed: {exc}") from exc
                for tp, batch in fetched.items():
                    for record in batch:
                        if exact_stop and record.offset >= self.stop[tp]:
                            break
                        if end_ms is not None and record.timestamp >= end_ms:
                            self.stop[tp] = record.offset
                            break
                        if not started[tp]:
                            assert start_ms is not None
                            if record.timestamp < start_ms:
                                continue
                            started[tp] = True
                        buffers[tp].append(record)
                for tp in empty:
                    if await consumer.position(tp) >= self.stop[tp]:
                        remaining.discard(tp)
                if any(fetched.values()):
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > _STALL_SECONDS:
                    raise KafkaUnavailable(
                        f"no records from {self.topic} for {_STALL_SECONDS:.0f}s although "
                        "its end offsets say more exist"
                    )
                continue
            tp = min((tp for tp in buffers if buffers[tp]), key=lambda tp: buffers[tp][0].timestamp)
            merged.append(buffers[tp].popleft())
        if merged:
            yield merged
