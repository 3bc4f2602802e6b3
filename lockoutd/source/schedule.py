"""The schedule topic: temporary locks shared by every instance, read back in full at start.

Every instance reads every partition of the topic (no consumer group) and keeps following it, so
each one knows every pending unlock and every user's escalation history. Only one instance carries
out a given unlock (see ``KafkaSource.owns``). The topic is created compacted where the broker
supports it: only the newest entry per user matters.

Anyone who can write the topic can write an entry. Each record read is checked before it counts:
its signature (with the schedule signing key, required while a rule locks temporarily), its key
against its user, its fields and its times (``check_entry``). A record that fails is counted
(``lockoutd_schedule_entries_rejected_total{reason}``), logged once as
``schedule_entry_rejected`` and skipped; it never stops the follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from lockoutd.act.schedule import (
    InvalidEntry,
    ScheduleEntry,
    UnlockSchedule,
    check_entry,
    decode_entry,
    encode_entry,
)
from lockoutd.errors import KafkaUnavailable, LockoutdError
from lockoutd.report.metrics import Metrics
from lockoutd.settings import KafkaSettings
from lockoutd.source.kafka import KafkaSink, OutgoingRecord, connection_options
from lockoutd.source.schedule_seal import ScheduleSeal, schedule_seal
from lockoutd.source.topics import create_topic

log = structlog.get_logger(__name__)

_COMPACTED = {"cleanup.policy": "compact"}


async def ensure_compacted_topic(settings: KafkaSettings, topic: str) -> None:
    """Create ``topic`` (one partition) compacted, unless it exists; a broker that does not know
    compaction gets a plain topic (:func:`create_topic`), which keeps every record instead of
    the newest per key."""
    admin = AIOKafkaAdminClient(**connection_options(settings))
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await create_topic(admin, topic, partitions=1, configs=_COMPACTED)
    finally:
        await admin.close()


class ScheduleTopic:
    """Loads, follows and writes the schedule topic; ``schedule`` is kept up to date."""

    def __init__(
        self,
        settings: KafkaSettings,
        schedule: UnlockSchedule,
        *,
        sink: KafkaSink,
        metrics: Metrics | None = None,
        seal: ScheduleSeal | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._topic = settings.schedule_topic
        self.schedule = schedule
        self._sink = sink
        self._metrics = metrics or Metrics()
        self._seal = seal if seal is not None else schedule_seal(settings)
        self._clock = clock
        self._consumer = AIOKafkaConsumer(enable_auto_commit=False, **connection_options(settings))
        self._follower: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        try:
            await self._ensure_topic()
            await self._consumer.start()
            await self._load()
        except KafkaError as exc:
            await self._consumer.stop()
            raise KafkaUnavailable(f"cannot read the schedule topic {self._topic}: {exc}") from exc
        self._follower = asyncio.create_task(self._follow(), name="schedule-follower")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self._consumer.stop()

    async def write(self, entry: ScheduleEntry) -> None:
        """Apply ``entry`` here and publish it to every instance; returns once the broker has it."""
        self.schedule.apply(entry)
        key, value = entry.user_id.encode(), encode_entry(entry)
        await self._sink.publish(
            [OutgoingRecord(self._topic, value, key=key, headers=self._seal.headers(key, value))]
        )

    async def _ensure_topic(self) -> None:
        await ensure_compacted_topic(self._settings, self._topic)

    async def _load(self) -> None:
        partitions = self._consumer.partitions_for_topic(self._topic)
        if not partitions:
            await self._consumer._client.force_metadata_update()
            partitions = self._consumer.partitions_for_topic(self._topic) or {0}
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        ends = await self._consumer.end_offsets(tps)
        while [tp for tp in tps if await self._consumer.position(tp) < ends[tp]]:
            await self._answer(self._apply(await self._consumer.getmany(timeout_ms=1000)))
        log.info("schedule_loaded", topic=self._topic, users=len(self.schedule))

    async def _follow(self) -> None:
        while True:
            try:
                await self._answer(self._apply(await self._consumer.getmany(timeout_ms=1000)))
            except KafkaError as exc:
                log.warning("schedule_follow_failed", topic=self._topic, error=str(exc))
                await asyncio.sleep(1.0)

    async def _answer(self, outdated: dict[str, ScheduleEntry]) -> None:
        """Write again the newer entry of each user an older entry arrived for.

        Compaction keeps a user's last record, not its newest entry: an old entry appended again
        (lockoutd's own, signed, copied by anyone who can read and write the topic) would be all
        that the next instance to start finds. Written again, the newer one is last once more.
        """
        for entry in outdated.values():
            log.warning(
                "schedule_entry_outdated",
                topic=self._topic,
                user_id=entry.user_id,
                note="an older entry arrived after this user's newer one; the newer one is "
                "written again so that compaction keeps it",
            )
            try:
                await self.write(entry)
            except LockoutdError as exc:  # the next older entry, or the next start, tries again
                log.warning("schedule_write_failed", topic=self._topic, error=str(exc))

    def _apply(self, batch: dict[TopicPartition, list[object]]) -> dict[str, ScheduleEntry]:
        """Take the batch's valid entries; return, per user, the newer entry of those users an
        older entry arrived for."""
        outdated: dict[str, ScheduleEntry] = {}
        for records in batch.values():
            for record in records:
                key = getattr(record, "key", None) or b""
                value = getattr(record, "value", None)
                headers = list(getattr(record, "headers", None) or ())
                if value is None:
                    # A tombstone deletes the user's entry; only a signed one may (it would
                    # otherwise cancel a pending unlock as surely as a forged entry could).
                    if key and self._seal.verify(key, b"", headers):
                        self.schedule.forget(key.decode(errors="replace"))
                    elif key:
                        self._reject(record, "bad_signature", "an unsigned tombstone")
                    continue
                if not self._seal.verify(key, value, headers):
                    self._reject(record, "bad_signature", "no valid lockoutd-signature header")
                    continue
                try:
                    entry = check_entry(decode_entry(value), now=self._clock())
                except msgspec.DecodeError as exc:  # not JSON, unknown fields, out of bounds
                    self._reject(record, "malformed", str(exc))
                    continue
                except InvalidEntry as exc:
                    self._reject(record, "invalid", str(exc))
                    continue
                if key != entry.user_id.encode():
                    self._reject(record, "wrong_key", "the record key is not the entry's user")
                    continue
                if not self.schedule.apply(entry):
                    current = self.schedule.get(entry.user_id)
                    if current is not None and current.updated_at > entry.updated_at:
                        outdated[entry.user_id] = current
        return outdated

    def _reject(self, record: object, reason: str, error: str) -> None:
        self._metrics.schedule_rejected.labels(reason=reason).inc()
        log.warning(
            "schedule_entry_rejected",
            topic=self._topic,
            partition=getattr(record, "partition", None),
            offset=getattr(record, "offset", None),
            reason=reason,
            error=error[:200],
        )
