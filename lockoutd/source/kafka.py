"""The Kafka adapter: a consumer-group source with manual commits, and a producer.

Delivery is at-least-once: offsets are committed by the daemon only after every decision carried
by the records before them has been acted on and published. A crash before the commit replays the
batch; locking an already locked user is a success, so the replay is harmless.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeAlias

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    BrokerResponseError,
    CommitFailedError,
    IllegalStateError,
    KafkaError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2

from lockoutd.errors import ConfigError, KafkaRefused, KafkaUnavailable
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
    """aiokafka keyword arguments for the cluster address, TLS and SASL.

    Raises :class:`ConfigError` listing every problem: a TLS or SASL setting the protocol does not
    use, a missing SASL user, an unreadable password, CA or certificate file. Messages name
    settings and paths, never the password.
    """
    problems = _security_problems(settings)
    if problems:
        raise ConfigError(problems)
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = _ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        password = settings.sasl_password or read_secret(
            settings.sasl_password_file, "kafka.sasl_password_file"
        )
        options["sasl_mechanism"] = settings.sasl_mechanism
        # aiokafka takes the user and password under these names for SCRAM as well as PLAIN.
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = password.get_secret_value()
    return options


_TLS_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
_SASL_KEYS = ("sasl_mechanism", "sasl_username", "sasl_password_file", "sasl_password")


def _security_problems(settings: KafkaSettings) -> list[str]:
    protocol = settings.security_protocol
    problems = []
    # A setting the protocol ignores is almost always a protocol left at its default: say so
    # rather than connect without the TLS or the authentication the operator asked for.
    if protocol not in ("SSL", "SASL_SSL"):
        problems += [
            f"kafka.{key} is set, but security_protocol {protocol} does not use TLS "
            "(use SSL or SASL_SSL)"
            for key in _TLS_KEYS
            if getattr(settings, key) is not None
        ]
    else:
        problems += [
            f"kafka.{key}: {path} is not a readable file"
            for key in _TLS_KEYS
            if (path := getattr(settings, key)) is not None and not path.is_file()
        ]
    if not protocol.startswith("SASL"):
        problems += [
            f"kafka.{key} is set, but security_protocol {protocol} does not use SASL "
            "(use SASL_SSL or SASL_PLAINTEXT)"
            for key in _SASL_KEYS
            if getattr(settings, key) is not None
        ]
    else:
        problems += [
            f"kafka: security_protocol {protocol} needs kafka.{key}"
            for key in ("sasl_mechanism", "sasl_username")
            if getattr(settings, key) is None
        ]
        if settings.sasl_password is None and settings.sasl_password_file is None:
            problems.append(
                f"kafka: security_protocol {protocol} needs kafka.sasl_password_file "
                "or the LOCKOUTD_KAFKA__SASL_PASSWORD environment variable"
            )
    if settings.ssl_keyfile is not None and settings.ssl_certfile is None:
        problems.append("kafka.ssl_keyfile is set without kafka.ssl_certfile")
    return problems


def _ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    # create_ssl_context verifies the server certificate and the host name; without ssl_cafile
    # it trusts the system's CA store.
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.ssl_cafile,
            certfile=settings.ssl_certfile,
            keyfile=settings.ssl_keyfile,
        )
    except ssl.SSLError as exc:
        raise ConfigError(
            [f"kafka: cannot use the TLS files ({_tls_files(settings)}): {exc.reason or exc}"]
        ) from None
    except OSError as exc:
        raise ConfigError(
            [f"kafka: cannot read the TLS files ({_tls_files(settings)}): {exc.strerror or exc}"]
        ) from None
    return context


def _tls_files(settings: KafkaSettings) -> str:
    return ", ".join(
        f"{key}={path}" for key in _TLS_KEYS if (path := getattr(settings, key)) is not None
    )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Keeps per-partition state right across rebalances.

    On assignment, each partition's windows are rebuilt: restored from its newest checkpoint and
    the records after it, or else rewound by the longest rule window; ``rebuild_until`` tells the
    pipeline that the records before the committed offset were acted on already and only count.
    """

    def __init__(self, source: KafkaSource) -> None:
        self._source = source
        self.joined = False

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.joined = False
        if revoked:
            log.info("partitions_revoked", partitions=_names(revoked))
            self._source.partitions_lost(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._source.share_assignment()  # before anything here awaits or can fail
        log.info("partitions_assigned", partitions=_names(assigned))
        # The consumer starts fetching the new partitions from their committed offsets while
        # this runs: held until they are rewound, no record of theirs can reach the pipeline (and
        # be committed) before the rebuild mark says which records were acted on before.
        self._source.hold(assigned)
        try:
            await self._source.rewind(assigned)
        finally:
            self._source.release(assigned)
        self.joined = True


def _names(partitions: Sequence[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)


def partition_share(assigned: Iterable[tuple[str, int]], partitions: Mapping[str, int]) -> float:
    """The fraction of all consumed partitions that ``assigned`` holds.

    ``partitions`` counts the partitions of each consumed topic; every partition of every topic
    weighs the same, so the shares of a group's members add up to one. A partition of a topic
    whose count is unknown is worth nothing: an unknown never inflates the share.
    """
    total = sum(partitions.values())
    held = sum(1 for topic, _ in assigned if topic in partitions)
    return min(1.0, held / total) if total else 0.0


FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold a fetch that found nothing new; the benchmarks' bare consumers
use the same, so that they compare like with like."""

# A partition that has sent no fetch answer for this long is not being consumed (for /readyz).
_FETCH_SILENCE_MS = 15_000
# While fetching is paused, how often the cluster is asked for its metadata instead.
_CONTACT_EVERY_SECONDS = 5.0


class KafkaSource:
    """Batches of records from the configured topics, as one member of the consumer group.

    ``lookback_seconds`` says how far back in the topic the windows reach (the longest rule
    window); ``on_lost`` is told of partitions taken away, so their state can be dropped;
    ``on_share`` is told, at every assignment, the share of the consumed partitions this member
    now holds (:func:`partition_share`), which is its share of the group's safety caps;
    ``restore`` is given the committed offset of each assigned partition and answers, for those
    whose windows it restored from a checkpoint, the offset the checkpoint is valid at.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        metrics: Metrics,
        lookback_seconds: Callable[[], float] = lambda: 0.0,
        on_lost: Callable[[Sequence[TopicPartition]], None] = lambda _: None,
        on_share: Callable[[float], None] = lambda _: None,
        internal_topics: Sequence[str] = (),
        restore: Callable[[Offsets], Awaitable[Offsets]] | None = None,
    ) -> None:
        """``internal_topics`` are read alongside ``settings.topics`` (repartitioned rules)."""
        self._settings = settings
        self._topics = [*settings.topics, *internal_topics]
        self._metrics = metrics
        self._lookback_seconds = lookback_seconds
        self._on_lost = on_lost
        self._on_share = on_share
        self._restore = restore
        self._rebalance = _Rebalance(self)
        self._positions: Offsets = {}
        self._held: set[TopicPartition] = set()
        """Partitions not fetched until their rewind is done, whatever ``resume`` says."""
        self._fetching = True
        self._last_contact = time.monotonic()
        self.rebuild_until: Offsets = {}
        """Per partition, the committed offset that rewound records are replayed up to."""
        self._losses = 0
        """How many times partitions were lost, so far."""
        self._lost_at: dict[TopicPartition, int] = {}
        """Per partition, the count of losses it was last lost at: a batch handed out before
        that holds records another member reads now (given back since or not)."""
        self._consumer = AIOKafkaConsumer(
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            max_partition_fetch_bytes=max(1_048_576, settings.max_event_bytes),
            # A broker holds an empty fetch this long; shorter means a crossing event waits less
            # behind a quiet moment, at the price of a few more fetch requests.
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
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
        self._consumer.subscribe(self._topics, listener=self._rebalance)
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
        """True while the consumer holds a place in its group and the broker answers: its
        fetches, or while fetching is paused (a batch waits on ZITADEL), its metadata requests.
        Kafka's part of ``/readyz`` only: a wait on anything else must not make it False."""
        if not self._rebalance.joined:
            return False
        assignment = self._consumer.assignment()
        if not assignment:
            return True  # more members than partitions: idle, but a healthy member
        if not self._fetching:
            # No fetches while a batch waits (on ZITADEL, say): the broker's answers to
            # keep_membership's metadata requests say whether Kafka is there.
            return time.monotonic() - self._last_contact < _FETCH_SILENCE_MS / 1000
        now_ms = time.time() * 1000
        return any(
            now_ms - (self._consumer.last_poll_timestamp(tp) or 0) < _FETCH_SILENCE_MS
            for tp in assignment
        )

    async def next_batch(self, timeout_seconds: float = 1.0) -> Batch:
        """The next records, in offset order per partition; empty when none arrived in time."""
        try:
            by_partition = await self._consumer.getmany(
                timeout_ms=int(timeout_seconds * 1000),
                max_records=self._settings.max_batch_records,
            )
        except KafkaError as exc:
            raise KafkaUnavailable(f"fetching from Kafka failed: {exc}") from exc
        self._report_lag(by_partition)
        # aiokafka hands out records of the assignment as it is now; only a loss from here on
        # makes any of them another member's.
        return Batch.of(by_partition, losses=self._losses)

    def held_since(self, batch: Batch) -> Callable[[TopicPartition], bool]:
        """Whether a partition of ``batch`` has been held ever since the batch was fetched.

        A batch is judged a while after its fetch. The records of a partition lost meanwhile
        belong to whoever holds it now, who reads them from its committed offset (this instance
        too, if it got the partition back: it was rewound). Judged here as well, they would count
        in windows of a partition this instance no longer reads.
        """
        return lambda tp: not self._lost_since(tp, batch)

    def _lost_since(self, tp: TopicPartition, batch: Batch) -> bool:
        return self._lost_at.get(tp, 0) > batch.losses

    def pause(self) -> None:
        """Stop fetching from every partition, while a batch waits longer than a poll: nothing
        more is read until it is acted on (:meth:`keep_membership`)."""
        if self._fetching:
            self._fetching = False
            self._last_contact = time.monotonic()  # the fetch of the batch just answered
        self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._fetching = True
        self._consumer.resume(*(self._consumer.assignment() - self._held))

    def hold(self, partitions: Sequence[TopicPartition]) -> None:
        """Fetch nothing from ``partitions`` (before anything awaits) until :meth:`release`."""
        self._held.update(partitions)
        self._consumer.pause(*partitions)

    def release(self, partitions: Sequence[TopicPartition]) -> None:
        """Let ``partitions`` be fetched again, unless the batch in flight paused fetching."""
        self._held.difference_update(partitions)
        if self._fetching:
            self._consumer.resume(*(set(partitions) & self._consumer.assignment()))

    async def keep_membership(self) -> None:
        """Poll with every partition paused, so the group keeps this member while it waits.

        A rebalance can hand over new partitions during the poll; anything fetched from them is
        put back (by seeking to it) to be read once the batch in flight is done.
        """
        self.pause()
        try:
            fetched = await self._consumer.getmany(timeout_ms=0)
        except KafkaError as exc:
            log.warning("kafka_poll_failed", error=str(exc))
            return
        await self._contact_broker()
        for tp, records in fetched.items():
            if records:
                self._consumer.seek(tp, records[0].offset)
        self.pause()

    async def _contact_broker(self) -> None:
        """While paused, ask the cluster for its metadata now and then, for :attr:`ready`."""
        if time.monotonic() - self._last_contact < _CONTACT_EVERY_SECONDS:
            return
        try:
            await asyncio.wait_for(self._consumer.topics(), _CONTACT_EVERY_SECONDS)
        except (KafkaError, TimeoutError):
            return  # ready turns False once the silence lasts
        self._last_contact = time.monotonic()

    async def rewind(self, partitions: Sequence[TopicPartition]) -> None:
        """Seek newly assigned partitions back to rebuild their windows: to their checkpoint if
        ``restore`` restored them from one, else by the lookback."""
        lookback = self._lookback_seconds()
        committed: Offsets = {}
        for tp in partitions:
            offset = await self._consumer.committed(tp)
            if offset is not None:
                committed[tp] = offset  # without, a new group starts per auto_offset_reset
        restored = await self._restore(committed) if self._restore and committed else {}
        for tp, done in committed.items():
            start = done
            if lookback > 0:
                since_ms = int((time.time() - lookback) * 1000)
                found = (await self._consumer.offsets_for_times({tp: since_ms})).get(tp)
                start = found.offset if found is not None else done
            name = f"{tp.topic}[{tp.partition}]"
            if tp in restored:
                checkpoint = restored[tp]
                self._rebuild(tp, checkpoint, done, source="checkpoint")
                log.info(
                    "partition_restored",
                    partition=name,
                    checkpoint_offset=checkpoint,
                    committed=done,
                    records_replayed=done - checkpoint,
                    rewind_would_replay=max(0, done - start),
                )
            elif start < done:
                self._rebuild(tp, start, done, source="rewind")
                log.info("partition_rebuilding", partition=name, from_offset=start, committed=done)

    def _rebuild(self, tp: TopicPartition, start: int, committed: int, *, source: str) -> None:
        # Read the partition again from `start`: the records before `committed` only count.
        if start < committed:
            self._consumer.seek(tp, start)
            self.rebuild_until[tp] = committed
        self._metrics.partitions_restored.labels(source=source).inc()
        self._metrics.rebuild_records.labels(source=source).inc(committed - start)

    def share_assignment(self) -> None:
        """Tell ``on_share`` the share of all consumed partitions this member holds now.

        The internal topics of repartitioned rules count like the source topics: the locks of
        those rules are made by whoever holds the key's internal partition."""
        counts = {
            topic: len(self._consumer.partitions_for_topic(topic) or ()) for topic in self._topics
        }
        self._on_share(partition_share(self._consumer.assignment(), counts))

    def partitions_lost(self, partitions: Sequence[TopicPartition]) -> None:
        self._losses += 1
        for tp in partitions:
            self._lost_at[tp] = self._losses
            self.rebuild_until.pop(tp, None)
            self._positions.pop(tp, None)
        self._on_lost(partitions)

    def owns(self, key: str) -> bool:
        """True when this instance holds the partition that ``key`` hashes to.

        Work that belongs to one instance only (carrying out a scheduled unlock) goes to the
        instance holding the partition the default partitioner puts that user's records in, so
        exactly one member of the group does it and the duty moves with the partition.
        """
        topic = self._settings.topics[0]
        partitions = self._consumer.partitions_for_topic(topic)
        if not partitions or not self._rebalance.joined:
            return False
        index = (murmur2(key.encode()) & 0x7FFFFFFF) % len(partitions)
        return TopicPartition(topic, index) in self._consumer.assignment()

    async def commit(self, batch: Batch) -> Offsets:
        """Commit ``batch`` (the next offset to read, per partition); return the offsets
        committed.

        Left out, and read again by whoever holds them now (at-least-once delivery allows it):
        partitions lost since the batch was fetched, even if given back since (their windows
        were rebuilt meanwhile, and Kafka refuses a commit of a partition held elsewhere). Left
        out too: a partition whose records were read again only to rebuild its windows, below
        its rebuild mark. Its committed offset is the mark already, and moving it back would
        make the next owner act again on what was acted on.
        """
        held = self._consumer.assignment()
        ours = {
            tp: offset
            for tp, offset in batch.next_offsets.items()
            if tp in held
            and not self._lost_since(tp, batch)
            and offset >= self.rebuild_until.get(tp, 0)
        }
        if not ours:
            return {}
        try:
            await self._consumer.commit(ours)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit_failed_after_rebalance", error=str(exc))
            return {}
        return ours

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
class Batch:
    """Records fetched together, and where each partition's share of them ends."""

    records: list[Record]
    """Every partition's records in offset order, one partition after another."""
    next_offsets: Offsets
    """One past the last record of each partition: what to commit once the batch is acted on."""
    losses: int = 0
    """How many times the source had lost partitions when it handed the batch out."""

    @classmethod
    def of(
        cls, by_partition: Mapping[TopicPartition, Sequence[Record]], *, losses: int = 0
    ) -> Batch:
        """The batch of what ``getmany`` answered: records by partition, in offset order."""
        return cls(
            records=[record for records in by_partition.values() for record in records],
            # From each partition's last record, not from a pass over every record.
            next_offsets={
                tp: records[-1].offset + 1 for tp, records in by_partition.items() if records
            },
            losses=losses,
        )

    def without_records(self) -> Batch:
        """What committing the batch needs, and nothing that keeps its records alive."""
        return Batch(records=[], next_offsets=self.next_offsets, losses=self.losses)


class OutgoingRecord(msgspec.Struct, frozen=True, gc=False):
    """A record to publish. A msgspec struct, not a dataclass: one is made per forwarded event,
    and a dataclass's ``__init__`` (Python code) cost three times as much. Untracked by the
    garbage collector: it holds bytes, text and another record, never a cycle."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes | None]] = ()
    fallback: OutgoingRecord | None = None
    """What to publish instead when Kafka refuses this record for good (a dead letter without
    its value when the broker finds it too large)."""
    bundled: bool = False
    """May travel in one Kafka record with the other bundled records of its partition: the
    value of that record is the JSON array of theirs (each a JSON value), and it has no key.
    Internal records are: the record overhead of Kafka and aiokafka, paid per record on both
    sides, cost more than the events themselves (README, Operations: "Scaling out")."""
    partition: int | None = None
    """The partition to write to, for a record made for one: a bundle of the copies bound
    there, its value a JSON array already. Refused as too large, it is sent again one element
    at a time."""


_Outcome: TypeAlias = tuple[tuple[OutgoingRecord, ...], "BaseException | asyncio.Future[Any]"]
"""Records sent together and the producer's answer: an error, or the future of their delivery."""

_BATCH_BYTES = 256 * 1024
"""The producer's batch size: a batch of a partition waits for the one before it to be answered,
so a larger batch means fewer round trips for what a daemon batch publishes. Well under the
1 MiB a broker takes by default; a batch refused as too large is sent again record by record."""

BUNDLE_BYTES = _BATCH_BYTES // 4
"""The largest bundle: a producer batch holds several, and a topic with Kafka's default record
size limit (1 MiB) takes any."""

_MAX_HASHES = 65_536
"""Bound on the cached partitioner hashes of record keys."""


def refused_for_good(error: BaseException) -> bool:
    """True for an answer about the record itself that retrying cannot change: too large, an
    invalid topic, not authorized (the broker's non-retriable errors, and the producer's own
    size check). Timeouts and lost connections are outages: those are retried."""
    return isinstance(error, BrokerResponseError) and not error.retriable


class KafkaSink:
    """Publishes records (decisions, dead letters) and waits for the broker to confirm them."""

    def __init__(
        self, settings: KafkaSettings, *, producer: AIOKafkaProducer | None = None
    ) -> None:
        """``producer`` stands in for the one made from ``settings`` (in tests)."""
        self._producer = producer or AIOKafkaProducer(
            acks="all",
            # Idempotence needs broker support that not every Kafka-compatible broker has;
            # duplicates on the audit topic are harmless, decisions carry their own time and key.
            enable_idempotence=False,
            linger_ms=5,
            max_batch_size=_BATCH_BYTES,
            max_request_size=max(1_048_576, settings.max_event_bytes) + _RECORD_OVERHEAD_BYTES,
            **connection_options(settings),
        )
        self._hashes: dict[bytes, int] = {}
        self._tracked: set[str] = set()
        """Topics the producer asks the broker about in each metadata request."""
        self._refusing_batches: set[str] = set()
        """Topics that refused a batch, each named once in a warning."""

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
        """Send ``records`` and wait until the broker has every one of them.

        A record refused for good is sent once more as its ``fallback``, if it has one. Raises
        :class:`KafkaUnavailable` when any record may go through on a retry (of the whole call:
        a repeat of a delivered record is harmless), else :class:`KafkaRefused` with the
        records refused for good once everything else is delivered.
        """
        refused = await self._send(records)
        fallbacks = [record.fallback for record, _ in refused if record.fallback is not None]
        refused = [(record, error) for record, error in refused if record.fallback is None]
        if fallbacks:
            refused += await self._send(fallbacks)
        if refused:
            raise KafkaRefused([(record, f"{record.topic}: {error}") for record, error in refused])

    async def _send(
        self, records: Sequence[OutgoingRecord], *, batched: bool = True
    ) -> list[tuple[OutgoingRecord, str]]:
        await self._track({r.topic for r in records})
        # Every send is awaited before anything is raised: no delivery is left unobserved.
        outcomes: list[_Outcome] = []
        keyed: dict[str, list[OutgoingRecord]] = {}
        for r in records:
            if batched and r.key is not None and not r.headers and r.fallback is None and _fits(r):
                keyed.setdefault(r.topic, []).append(r)
            else:
                outcomes.append(((r,), await self._send_one(r)))
        for topic, group in keyed.items():
            outcomes += await self._send_batches(topic, group)
        pending = [outcome for _, outcome in outcomes if isinstance(outcome, asyncio.Future)]
        answers = iter(await asyncio.gather(*pending, return_exceptions=True))
        errors = [
            (sent, next(answers) if isinstance(outcome, asyncio.Future) else outcome)
            for sent, outcome in outcomes
        ]
        refused: list[tuple[OutgoingRecord, str]] = []
        one_by_one: list[OutgoingRecord] = []
        for sent, error in errors:
            if not isinstance(error, BaseException):
                continue
            if not refused_for_good(error):
                if isinstance(error, KafkaError):
                    raise KafkaUnavailable(f"publishing to Kafka failed: {error}") from error
                raise error
            if len(sent) > 1 or sent[0].bundled:
                # A batch or a bundle refused for good (too large for the topic, say) may hold
                # records the broker takes on their own: each is sent alone, under its own key,
                # and answered for alone.
                one_by_one += sent
                self._warn_batches_refused(sent[0].topic, error)
            elif parts := _elements_apart(sent[0]):
                one_by_one += parts
                self._warn_batches_refused(sent[0].topic, error)
            else:
                refused += [(record, str(error)) for record in sent]
        if one_by_one:
            refused += await self._send(one_by_one, batched=False)
        return refused

    async def track(self, topics: Iterable[str]) -> None:
        """Learn the partitions of ``topics`` now (see :meth:`partition_count`); failing that,
        the first records sent to them teach it."""
        with suppress(KafkaError):
            await self._track(set(topics))

    async def _track(self, topics: set[str]) -> None:
        # aiokafka's first metadata answer names every topic; once its client tracks any, it asks
        # about those only, and a topic it merely knew drops out of its view. A record already
        # waiting for such a topic (a dead letter sent with a decision for a topic asked about
        # for the first time) then waits for a leader until its delivery times out, 40 s with
        # its batch uncommitted. So every topic is tracked before its first record is sent.
        for topic in topics - self._tracked:
            await self._producer.client.add_topic(topic)
            self._tracked.add(topic)

    def _warn_batches_refused(self, topic: str, error: BaseException) -> None:
        # Every publish to such a topic pays the record-by-record path, several times the cost:
        # said once, so that the operator raises the topic's max.message.bytes (256 KiB or more).
        if topic not in self._refusing_batches:
            self._refusing_batches.add(topic)
            log.warning("publish_batch_refused", topic=topic, error=str(error))

    async def _send_one(self, r: OutgoingRecord) -> BaseException | asyncio.Future[Any]:
        value = _bundle([r]) if r.bundled else r.value  # a bundle of one, under its own key
        try:
            delivery = await self._producer.send(
                r.topic, value, key=r.key, headers=r.headers, partition=r.partition
            )
        except KafkaError as exc:  # the producer's own checks: too large, closed, no metadata
            error: BaseException = exc
            return error
        assert isinstance(delivery, asyncio.Future)
        return delivery

    async def _send_batches(self, topic: str, records: list[OutgoingRecord]) -> list[_Outcome]:
        """Keyed records of one topic, in batches of each partition made here: what the producer
        does record by record (the default partitioner's partition, each key's records in
        order), at a fraction of the cost per record."""
        try:
            partitions = list(await self._producer.partitions_for(topic))
        except KafkaError as exc:
            return [(tuple(records), exc)]
        by_partition: dict[int, list[OutgoingRecord]] = {}
        for r in records:
            # default_partition, with the hash cached.
            index = (self._hash(r.key) & 0x7FFFFFFF) % len(partitions)  # type: ignore[arg-type]
            by_partition.setdefault(partitions[index], []).append(r)
        rounds: list[list[tuple[int, Any, tuple[OutgoingRecord, ...]]]] = []
        for partition, share in by_partition.items():
            builder = self._producer.create_batch()
            in_batch: list[OutgoingRecord] = []
            batches = 0
            for key, value, carried in _kafka_records(share):
                if builder.append(timestamp=None, key=key, value=value, headers=[]) is None:
                    _add(rounds, batches, (partition, builder, tuple(in_batch)))
                    batches += 1
                    builder = self._producer.create_batch()
                    builder.append(timestamp=None, key=key, value=value, headers=[])
                    in_batch = []
                in_batch += carried
            _add(rounds, batches, (partition, builder, tuple(in_batch)))
        outcomes: list[_Outcome] = []
        # The first batch of every partition, then the second: the producer takes a partition's
        # next batch only once the one before is on its way.
        for batches_of_round in rounds:
            for partition, builder, sent in batches_of_round:
                builder.close()  # sent as soon as possible: the caller waits for it anyway
                try:
                    delivery = await self._producer.send_batch(builder, topic, partition=partition)
                except KafkaError as exc:
                    outcomes.append((sent, exc))
                else:
                    outcomes.append((sent, delivery))
        return outcomes

    def _hash(self, key: bytes) -> int:
        # The partitioner's hash is pure Python; keys (users, addresses, networks) recur.
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= _MAX_HASHES:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key)
        return hashed

    def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has, as far as the producer knows (0 before it
        knows): with :func:`default_partition`, where the producer puts a key's records."""
        return len(self._producer.client.cluster.partitions_for_topic(topic) or ())


def default_partition(key: bytes, partitions: int) -> int:
    """The partition the default partitioner gives a record keyed ``key``."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def _kafka_records(
    share: list[OutgoingRecord],
) -> Iterator[tuple[bytes | None, bytes, list[OutgoingRecord]]]:
    """The key and value of each Kafka record that carries ``share`` (one partition's records,
    in order), and the records each carries: a run of bundled records goes in bundles of at most
    :data:`BUNDLE_BYTES`, any other record alone."""
    run: list[OutgoingRecord] = []
    size = 2  # the brackets
    for r in share:
        if r.bundled:
            if run and size + len(r.value) + 1 > BUNDLE_BYTES:
                yield None, _bundle(run), run
                run, size = [], 2
            run.append(r)
            size += len(r.value) + 1
            continue
        if run:
            yield None, _bundle(run), run
            run, size = [], 2
        yield r.key, r.value, [r]
    if run:
        yield None, _bundle(run), run


_decode_elements = msgspec.json.Decoder(list[msgspec.Raw]).decode


def _elements_apart(record: OutgoingRecord) -> list[OutgoingRecord]:
    """A bundle made for one partition, as a bundle of one per element; none for another
    record, or a bundle of one element."""
    if record.partition is None or record.key is not None or record.value[:1] != b"[":
        return []
    try:
        elements = _decode_elements(record.value)
    except msgspec.DecodeError:
        return []
    if len(elements) < 2:
        return []
    return [
        OutgoingRecord(record.topic, b"[" + bytes(element) + b"]", partition=record.partition)
        for element in elements
    ]


def _bundle(records: list[OutgoingRecord]) -> bytes:
    return b"[" + b",".join([r.value for r in records]) + b"]"


def _fits(record: OutgoingRecord) -> bool:
    """A record small enough to share a batch; larger ones go alone, through the producer's own
    size check."""
    return len(record.value) + len(record.key or b"") + 2 <= BUNDLE_BYTES  # 2: a bundle's [ ]


def _add(rounds: list[list[Any]], index: int, batch: Any) -> None:
    if index == len(rounds):
        rounds.append([])
    rounds[index].append(batch)
