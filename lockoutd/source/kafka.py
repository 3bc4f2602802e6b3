"""The Kafka adapter: a consumer-group source with manual commits, and a producer.

Delivery is at-least-once: offsets are committed by the daemon only after every decision carried
by the records before them has been acted on and published. A crash before the commit replays the
batch; locking an already locked user is a success, so the replay is harmless.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2

from lockoutd.errors import ConfigError, KafkaUnavailable
from lockoutd.report.metrics import Metrics
from lockoutd.secrets import read_secret
from lockoutd.settings import KafkaSettings

log = structlog.get_logger(__name__)

# aiokafka ships no type information; this alias documents what the consumer hands out.
Record: TypeAlias = ConsumerRecord
Offsets = dict[TopicPartition, int]

# Room for headers and framing around the largest value lockoutd forwards to the dead-letter topic.
_RECORD_OVERHEAD_BYTES = 64 * 1024


def connection_options(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for the cluster address, TLS and SASL."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = _ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        if settings.sasl_mechanism is None or settings.sasl_username is None:
            raise ConfigError(
                [
                    f"kafka: security_protocol {settings.security_protocol} needs sasl_mechanism "
                    "and sasl_username"
                ]
            )
        password = settings.sasl_password or read_secret(
            settings.sasl_password_file, "kafka.sasl_password_file"
        )
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = password.get_secret_value()
    return options


def _ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    # create_ssl_context verifies the server certificate and host name by default.
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.ssl_cafile,
        certfile=settings.ssl_certfile,
        keyfile=settings.ssl_keyfile,
    )
    return context


class _Membership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tracks whether the consumer holds a place in its group, for ``/readyz``."""

    def __init__(self) -> None:
        self.joined = False

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.joined = False
        if revoked:
            log.info("partitions_revoked", partitions=_names(revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.joined = True
        log.info("partitions_assigned", partitions=_names(assigned))


def _names(partitions: Sequence[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)


class KafkaSource:
    """Batches of records from the configured topics, as one member of the consumer group."""

    def __init__(self, settings: KafkaSettings, *, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._membership = _Membership()
        self._fetching = False
        self._positions: Offsets = {}
        self._consumer = AIOKafkaConsumer(
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            max_partition_fetch_bytes=max(1_048_576, settings.max_event_bytes),
            **connection_options(settings),
        )

    async def __aenter__(self) -> Self:
        try:
            await self._consumer.start()
        except KafkaError as exc:
            await self._consumer.stop()
            raise KafkaUnavailable(
                f"cannot reach Kafka at {self._settings.bootstrap_servers}: {exc}"
            ) from exc
        self._consumer.subscribe(self._settings.topics, listener=self._membership)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._consumer.stop()

    @property
    def ready(self) -> bool:
        """True while the consumer holds a place in its group and its last fetch worked."""
        return self._membership.joined and self._fetching

    async def next_batch(self, timeout_seconds: float = 1.0) -> list[Record]:
        """The next records, in offset order per partition; empty when none arrived in time."""
        try:
            by_partition = await self._consumer.getmany(
                timeout_ms=int(timeout_seconds * 1000),
                max_records=self._settings.max_batch_records,
            )
        except KafkaError as exc:
            self._fetching = False
            raise KafkaUnavailable(f"fetching from Kafka failed: {exc}") from exc
        self._fetching = True
        self._report_lag(by_partition)
        return [record for records in by_partition.values() for record in records]

    def owns(self, key: str) -> bool:
        """True when this instance holds the partition that ``key`` hashes to.

        Work that belongs to one instance only (carrying out a scheduled unlock) goes to the
        instance holding the partition the default partitioner puts that user's records in, so
        exactly one member of the group does it and the duty moves with the partition.
        """
        topic = self._settings.topics[0]
        partitions = self._consumer.partitions_for_topic(topic)
        if not partitions or not self._membership.joined:
            return False
        index = (murmur2(key.encode()) & 0x7FFFFFFF) % len(partitions)
        return TopicPartition(topic, index) in self._consumer.assignment()

    async def commit(self, offsets: Offsets) -> bool:
        """Commit ``offsets`` (the next offset to read, per partition).

        Returns False when a rebalance took the partitions away first: their new owner reads the
        records again, which at-least-once delivery allows.
        """
        if not offsets:
            return True
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            log.warning("commit_failed_after_rebalance", error=str(exc))
            return False
        return True

    def _report_lag(self, by_partition: dict[TopicPartition, list[Record]]) -> None:
        for tp, records in by_partition.items():
            if records:
                self._positions[tp] = records[-1].offset + 1
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            position = self._positions.get(tp)
            if end is not None and position is not None:
                self._metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, end - position)
                )


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class KafkaSink:
    """Publishes records (decisions, dead letters) and waits for the broker to confirm them."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._producer = AIOKafkaProducer(
            acks="all",
            # Idempotence needs broker support that not every Kafka-compatible broker has;
            # duplicates on the audit topic are harmless, decisions carry their own time and key.
            enable_idempotence=False,
            linger_ms=5,
            max_request_size=max(1_048_576, settings.max_event_bytes) + _RECORD_OVERHEAD_BYTES,
            **connection_options(settings),
        )

    async def __aenter__(self) -> Self:
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise KafkaUnavailable(f"cannot reach Kafka to publish: {exc}") from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._producer.stop()

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        """Send ``records`` and wait until the broker has every one of them."""
        if not records:
            return
        try:
            deliveries = [
                await self._producer.send(r.topic, r.value, key=r.key, headers=r.headers)
                for r in records
            ]
            await asyncio.gather(*deliveries)
        except KafkaError as exc:
            raise KafkaUnavailable(f"publishing to Kafka failed: {exc}") from exc
