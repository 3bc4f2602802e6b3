"""The checkpoint topic: each consumed partition's window state, so that a partition assigned to
an instance replays only the records after its newest checkpoint (README, Operations: "Windows
survive restarts and rebalances").

A checkpoint of a partition is written after a commit, at most every ``kafka.checkpoint_interval``,
and holds the engine state at the committed offset (:mod:`lockoutd.decide.snapshot`), compressed
and cut into records of at most ``kafka.checkpoint_chunk_bytes``. Record ``i`` of a checkpoint
of partition ``p`` of topic ``t`` has the key ``<group>/<t>/<p>`` (the first) or
``<group>/<t>/<p>/<i>`` (the others), so that compaction keeps the newest of each; every record
names its checkpoint by a random id and says how many records it has. A checkpoint whose records
are not all there (one cut short by a crash, or partly compacted away) is not used.

Anyone who can write the topic could plant a window one event short of a threshold, or an empty
one that blinds a key; so checkpoints are signed with the schedule signing key (as schedule entries
are, :mod:`lockoutd.source.schedule_seal`) and are off without one. What is read is checked before
it is used: a record without a valid signature, a checkpoint that does not decode within
``kafka.checkpoint_max_bytes`` or holds what no window could, is counted
(``lockoutd_checkpoints_rejected_total{reason}``), logged as ``checkpoint_rejected`` and skipped;
the partition then falls back to an older checkpoint or to the rewind by the longest window.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from lockoutd.decide.engine import Engine
from lockoutd.decide.snapshot import (
    FORMAT_VERSION,
    Unusable,
    decode_snapshot,
    encode_snapshot,
    engine_from_snapshot,
)
from lockoutd.errors import KafkaRefused, KafkaUnavailable
from lockoutd.report.metrics import Metrics
from lockoutd.rules import RuleSet
from lockoutd.settings import Settings
from lockoutd.source.kafka import KafkaSink, OutgoingRecord, connection_options
from lockoutd.source.schedule import ensure_compacted_topic
from lockoutd.source.schedule_seal import ScheduleSeal

log = structlog.get_logger(__name__)

_KEPT_PER_PARTITION = 3
"""Checkpoints of one partition held while the topic is read: the few at the highest offsets, in
case the newest is incomplete or refused (an uncompacted topic holds every checkpoint ever
written, and anyone who can write it can append old ones again)."""


class Chunk(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """One record of a checkpoint."""

    version: int
    id: str
    index: int
    count: int
    offset: int
    data: bytes


_CHUNK = msgspec.msgpack.Decoder(Chunk)


@dataclass
class _Found:
    """The records of one checkpoint read so far."""

    id: str
    count: int
    offset: int
    chunks: dict[int, bytes] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.chunks) == self.count


def checkpoint_key(group: str, tp: TopicPartition, index: int = 0) -> bytes:
    base = f"{group}/{tp.topic}/{tp.partition}"
    return (base if index == 0 else f"{base}/{index}").encode()


class Checkpoints:
    """Writes checkpoints of partitions and restores engines from them."""

    def __init__(
        self,
        settings: Settings,
        *,
        sink: KafkaSink,
        seal: ScheduleSeal,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        consumer: AIOKafkaConsumer | None = None,
    ) -> None:
        """``consumer`` stands in for the one made from ``settings`` (in tests)."""
        assert settings.kafka.checkpoint_topic is not None
        assert seal.signed
        self._settings = settings
        self._kafka = settings.kafka
        self._topic = settings.kafka.checkpoint_topic
        self._sink = sink
        self._seal = seal
        self._metrics = metrics
        self._clock = clock
        self._written: dict[TopicPartition, float] = {}
        self._consumer = consumer or AIOKafkaConsumer(
            enable_auto_commit=False,
            max_partition_fetch_bytes=max(1_048_576, settings.kafka.checkpoint_chunk_bytes * 2),
            **connection_options(settings.kafka),
        )
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        try:
            await ensure_compacted_topic(self._kafka, self._topic)
            await self._consumer.start()
            partitions = self._consumer.partitions_for_topic(self._topic)
            if not partitions:
                await self._consumer._client.force_metadata_update()
                partitions = self._consumer.partitions_for_topic(self._topic) or {0}
            self._consumer.assign([TopicPartition(self._topic, p) for p in sorted(partitions)])
        except KafkaError as exc:
            await self._consumer.stop()
            raise KafkaUnavailable(
                f"cannot read the checkpoint topic {self._topic}: {exc}"
            ) from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._consumer.stop()

    def due(self, tp: TopicPartition) -> bool:
        """Whether ``tp``'s last checkpoint is older than the interval (or there is none)."""
        last = self._written.get(tp)
        return last is None or self._clock() - last >= self._kafka.checkpoint_interval

    def forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._written.pop(tp, None)

    async def write(self, tp: TopicPartition, offset: int, engine: Engine) -> None:
        """Write ``engine``'s state of ``tp``, valid at the committed ``offset``.

        A checkpoint that cannot be written is logged and counted, never raised: the partition
        is then restored from an older one, or rewound, as without checkpoints.
        """
        now = self._clock()
        self._written[tp] = now
        started = time.perf_counter()
        try:
            data = encode_snapshot(
                engine,
                group=self._kafka.group_id,
                topic=tp.topic,
                partition=tp.partition,
                offset=offset,
                written_at=now,
                max_bytes=self._kafka.checkpoint_max_bytes,
            )
        except Unusable as exc:
            self._metrics.checkpoint_failures.labels(reason="too_large").inc()
            log.warning("checkpoint_not_written", partition=_name(tp), error=str(exc))
            return
        size = self._kafka.checkpoint_chunk_bytes - 256  # room for the chunk's own fields
        pieces = [data[at : at + size] for at in range(0, len(data), size)] or [b""]
        ident = secrets.token_hex(8)
        records = []
        # The first record last: compaction then replaces the newest complete checkpoint's first
        # record only once the rest of the next one is in.
        for index in reversed(range(len(pieces))):
            key = checkpoint_key(self._kafka.group_id, tp, index)
            chunk = Chunk(FORMAT_VERSION, ident, index, len(pieces), offset, pieces[index])
            value = msgspec.msgpack.encode(chunk)
            records.append(
                OutgoingRecord(self._topic, value, key=key, headers=self._seal.headers(key, value))
            )
        try:
            await self._sink.publish(records)
        except (KafkaUnavailable, KafkaRefused) as exc:
            self._metrics.checkpoint_failures.labels(reason="kafka").inc()
            log.warning("checkpoint_not_written", partition=_name(tp), error=str(exc)[:300])
            return
        self._metrics.checkpoints_written.inc()
        log.info(
            "checkpoint_written",
            partition=_name(tp),
            offset=offset,
            bytes=len(data),
            records=len(pieces),
            seconds=round(time.perf_counter() - started, 3),
        )

    async def restore(
        self, committed: Mapping[TopicPartition, int], rules_for: Callable[[str], RuleSet]
    ) -> dict[TopicPartition, tuple[int, Engine]]:
        """For each partition that has a usable checkpoint at or below its committed offset,
        the checkpoint's offset and an engine holding its state, for the rules counted on its
        topic (``rules_for``: a source topic's rules leave out those counted on internal
        topics)."""
        async with self._lock:
            try:
                found = await self._read(set(committed))
            except KafkaError as exc:
                log.warning("checkpoints_unreadable", topic=self._topic, error=str(exc))
                return {}
        restored: dict[TopicPartition, tuple[int, Engine]] = {}
        for tp, candidates in found.items():
            # The highest offset first, not the last read: an old checkpoint appended again
            # (signed, as lockoutd wrote it) must not win over a newer one.
            for candidate in sorted(reversed(candidates), key=_offset, reverse=True):
                if not candidate.complete or candidate.offset > committed[tp]:
                    continue
                engine = self._engine(tp, candidate, committed[tp], rules_for(tp.topic))
                if engine is not None:
                    restored[tp] = (candidate.offset, engine)
                    break
        return restored

    def _engine(
        self, tp: TopicPartition, found: _Found, committed: int, rules: RuleSet
    ) -> Engine | None:
        data = b"".join(found.chunks[i] for i in range(found.count))
        try:
            snapshot = decode_snapshot(data, max_bytes=self._kafka.checkpoint_max_bytes)
            if snapshot.offset != found.offset:
                raise Unusable("invalid", "its records disagree on the offset")
            return engine_from_snapshot(
                snapshot,
                rules,
                group=self._kafka.group_id,
                topic=tp.topic,
                partition=tp.partition,
                committed=committed,
                now=self._clock(),
                max_clock_skew=self._settings.engine.max_clock_skew,
                max_keys=self._settings.engine.max_tracked_keys,
            )
        except Unusable as exc:
            if exc.reason == "rules_changed":
                log.info("checkpoint_outdated", partition=_name(tp), reason=str(exc))
            else:
                self._reject(tp, exc.reason, str(exc))
            return None

    async def _read(self, wanted: set[TopicPartition]) -> dict[TopicPartition, list[_Found]]:
        # The whole topic, from the start: compacted, it holds about one checkpoint a partition.
        by_key = {
            checkpoint_key(self._kafka.group_id, tp): tp for tp in wanted
        }  # the first record's key; the others' start with it and a slash
        found: dict[TopicPartition, list[_Found]] = {tp: [] for tp in wanted}
        consumer = self._consumer
        tps = list(consumer.assignment())
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        limit = self._kafka.checkpoint_max_bytes
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    key: bytes = record.key or b""
                    tp = by_key.get(key)
                    if tp is None:
                        head, _, index = key.rpartition(b"/")
                        tp = by_key.get(head) if index.isdigit() else None
                        if tp is None:
                            continue  # another group's or partition's
                    headers = list(record.headers or ())
                    value: bytes = record.value or b""
                    if not self._seal.verify(key, value, headers):
                        self._reject(tp, "bad_signature", "no valid lockoutd-signature header")
                        continue
                    try:
                        chunk = _CHUNK.decode(value)
                    except msgspec.DecodeError as exc:
                        self._reject(tp, "malformed", str(exc))
                        continue
                    if key != checkpoint_key(self._kafka.group_id, tp, chunk.index) or not (
                        0 <= chunk.index < chunk.count <= limit // 1024 + 1
                    ):
                        self._reject(tp, "invalid", "a record out of place in its checkpoint")
                        continue
                    _keep(found[tp], chunk)
        return found

    def _reject(self, tp: TopicPartition, reason: str, error: str) -> None:
        self._metrics.checkpoints_rejected.labels(reason=reason).inc()
        log.warning("checkpoint_rejected", partition=_name(tp), reason=reason, error=error[:200])


def _keep(found: list[_Found], chunk: Chunk) -> None:
    # The checkpoints of a partition in the order their records were read; a record goes with
    # its fellows, and only the few at the highest offsets are held (copies of old checkpoints
    # appended again cannot push the newest out).
    same = next((f for f in found if f.id == chunk.id), None)
    if same is None:
        same = _Found(chunk.id, chunk.count, chunk.offset)
        found.append(same)
        if len(found) > _KEPT_PER_PARTITION:
            found.remove(min(found, key=_offset))
    elif (same.count, same.offset) != (chunk.count, chunk.offset):
        return  # a record that contradicts its fellows cannot belong to them
    else:
        found.remove(same)
        found.append(same)
    same.chunks[chunk.index] = chunk.data


def _offset(found: _Found) -> int:
    return found.offset


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"
