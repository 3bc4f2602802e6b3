"""One batch through the pipeline: decode, evaluate, decide, act, report.

The pipeline knows nothing of offsets, signals or connections; the daemon feeds it batches and
commits after it returns. Window state is kept per partition: with records keyed by user, every
event of a user lives in one partition, and a partition that moves to another instance takes its
state with it (rebuilt there from the topic) instead of leaving a stale copy behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

import structlog
from aiokafka import TopicPartition

from lockoutd.act.executor import LockExecutor
from lockoutd.act.temporary import TemporaryLocks
from lockoutd.act.zitadel import UserStore
from lockoutd.decide.bound import KeyBound
from lockoutd.decide.decision import Decision, decide
from lockoutd.decide.engine import Engine
from lockoutd.decode.event import KNOWN_TYPES, LOGIN_SUCCEEDED, Event
from lockoutd.decode.formats import decoder_for
from lockoutd.decode.limits import Horizon
from lockoutd.decode.native import UNPARSED_IP, RefusedElement, bundle_decoder
from lockoutd.decode.rejects import Rejects
from lockoutd.decode.signed import SignatureCheck
from lockoutd.errors import reported_error
from lockoutd.repartition import Repartitioning, encode_event, topic_prefix
from lockoutd.report.audit import DecisionReporter
from lockoutd.report.metrics import Metrics
from lockoutd.rules import RuleSet
from lockoutd.rules.model import AllowedSet, LockAction
from lockoutd.secrets import ingest_signing_key
from lockoutd.settings import Settings
from lockoutd.source.kafka import BUNDLE_BYTES, OutgoingRecord, Record

_YIELD_EVERY = 1024
"""Records judged between two turns of the event loop."""

_ID_ROOM = 1024
"""Room on an internal record for the event id lockoutd adds to an event that had none."""

_Bundled = tuple[Record, Event]
"""Where an event of a bundle came from: the internal record, and the event (its dead letter's
value, should judging it fail)."""

_Pending = tuple[Decision, float, LockAction | None, AllowedSet]
"""A decision, its newest event's time, the rule's lock and the users the rule never locks."""

Partition = tuple[str, int]
"""A topic and a partition number; a ``TopicPartition`` is one. Replay uses plain tuples: a tuple
of a string and a number is not tracked by the garbage collector, nor then are the thousands of
``Judged`` tuples of a batch that hold it, which otherwise cost full collections."""

Origin = TypeVar("Origin")

Judged = tuple[Partition, bytes | None, Event, float, bool, Origin]
"""A decoded record for :meth:`Pipeline.judge`: its partition, its Kafka key, the event, the time
to judge it at (``now`` for the engine and the decision), whether it is new (False for a record
acted on before, replayed to rebuild a partition's windows) and where it came from (the record, or
its place in a replay), handed back should judging it fail. A plain tuple: one is made per
record."""


class Pipeline:
    """Turns batches of records into acted-on decisions and the records to publish."""

    def __init__(
        self,
        settings: Settings,
        rules: RuleSet,
        *,
        store: UserStore,
        metrics: Metrics,
        locks: TemporaryLocks | None = None,
        clock: Callable[[], float] = time.time,
        repartition: bool = False,
        partitions_of: Callable[[str], int] = lambda _: 0,
    ) -> None:
        """``repartition`` counts the rules keyed on something other than the user on their
        internal topics (the daemon, one of a group); without it every rule is counted where its
        events are read (``lockoutd replay``, which reads every event in one process).

        ``partitions_of`` answers how many partitions an internal topic has, as the sink
        knows it (0 while it does not): with it, a batch's copies bound for one partition are
        written as one bundle made here, rather than one record each for the sink to place."""
        self.rules = rules
        self.outcomes: Counter[str] = Counter()
        self._engines: dict[Partition, Engine] = {}
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._executor = LockExecutor(
            store,
            max_locks_per_minute=settings.safety.max_locks_per_minute,
            max_locks_per_minute_per_org=settings.safety.max_locks_per_minute_per_org,
            metrics=metrics,
            locks=locks,
            clock=clock,
        )
        # The future is measured against the clock the records are judged by.
        horizon = Horizon(settings.engine.max_clock_skew, clock=clock)
        self._decoders = {
            topic: decoder_for(
                settings.kafka.formats.get(topic, "native"),
                max_bytes=settings.kafka.max_event_bytes,
                horizon=horizon,
            )
            for topic in settings.kafka.topics
        }
        self._signature_check: SignatureCheck | None = None
        self._signed_topics: frozenset[str] = frozenset()
        if settings.kafka.require_zitadel_signature:
            key = ingest_signing_key(settings.ingest).get_secret_value().encode()
            self._signature_check = SignatureCheck(key)
            self._signed_topics = frozenset(
                topic for topic, kind in settings.kafka.formats.items() if kind == "zitadel"
            )
        self.repartitioning = (
            Repartitioning(rules, topic_prefix(settings.kafka)) if repartition else None
        )
        """Where each rule is counted; None when every rule is counted in place."""
        # Internal records are bundles of events (README, Operations: "Scaling out"), each with
        # the event id lockoutd gave it if it had none; a native record alone is read too.
        self._internal_decoder = bundle_decoder(
            max_bytes=settings.kafka.max_event_bytes + _ID_ROOM, horizon=horizon
        )
        self._partitions_of = partitions_of
        self._rejects = Rejects(
            settings.kafka.dead_letter_topic,
            metrics=metrics,
            max_record_bytes=settings.kafka.max_event_bytes,
        )
        self._reporter = DecisionReporter(settings.kafka.decisions_topic, metrics=metrics)
        metrics.declare_rules(_actions(rules))
        self._bound = KeyBound(settings.engine.max_tracked_keys, settings.engine.max_window_bytes)
        metrics.tracked_keys_limit.set(settings.engine.max_tracked_keys)
        metrics.window_bytes_limit.set(settings.engine.max_window_bytes)

    @property
    def actions_in_flight(self) -> int:
        """Decisions of the batch being carried out now (during an outage: waiting for it)."""
        return self._executor.in_flight

    def replace_rules(self, rules: RuleSet) -> None:
        """Use ``rules`` from the next batch on; unchanged rules keep their counts."""
        self.rules = rules
        if self.repartitioning is not None:
            self.repartitioning = Repartitioning(rules, self.repartitioning.prefix)
        self._engines = {
            tp: engine.reloaded(self.rules_for(tp[0])) for tp, engine in self._engines.items()
        }
        self._metrics.declare_rules(_actions(rules))

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop the window state of partitions this instance no longer reads."""
        for tp in partitions:
            self._engines.pop(tp, None)
        self._report_tracked_keys()

    def install(self, tp: TopicPartition, engine: Engine) -> None:
        """Use ``engine`` (restored from a checkpoint) for the records of ``tp`` from now on."""
        self._engines[tp] = engine
        self._report_tracked_keys()

    def engine_of(self, tp: TopicPartition) -> Engine | None:
        """The engine counting ``tp``'s records, if any record of it was counted yet."""
        return self._engines.get(tp)

    def share_lock_budget(self, share: float) -> None:
        """Lock no more than ``share`` of the group's safety caps from now on."""
        self._executor.set_share(share)

    async def process(
        self,
        records: Sequence[Record],
        *,
        rebuild_until: Mapping[TopicPartition, int] | None = None,
        held: Callable[[TopicPartition], bool] | None = None,
    ) -> list[OutgoingRecord]:
        """Act on every decision ``records`` carry; return the records to publish before commit.

        Every record is judged at the batch's arrival (the wall clock). Records of a partition
        below ``rebuild_until[partition]`` were acted on before (by this instance before a
        restart, or by the partition's previous owner): they rebuild the windows, and a crossing
        made of them alone (one that already locked someone) does not act again. A crossing that
        holds any record at or past the mark acts, whichever of its records came last.

        Records of a partition that ``held`` says is no longer held are not counted (see
        :meth:`judge`).
        """
        dead_letters: list[OutgoingRecord] = []

        def failed(origin: Record | _Bundled, error: Exception) -> None:
            if isinstance(origin, tuple):  # an event of a bundle: its dead letter holds it alone
                bundle, event = origin
                origin = dataclasses.replace(bundle, value=encode_event(event))
            self._refuse(origin, error, dead_letters)

        forwarded: list[OutgoingRecord] = []
        gathered: dict[tuple[str, int], list[bytes]] = {}
        decoded = self._decoded(records, rebuild_until or {}, dead_letters, forwarded, gathered)
        audits = await self.judge(decoded, failed, held=held)
        for (topic, partition), copies in gathered.items():
            forwarded += _bundles(topic, partition, copies)
        return forwarded + dead_letters + audits

    def _decoded(
        self,
        records: Sequence[Record],
        rebuild_until: Mapping[TopicPartition, int],
        dead_letters: list[OutgoingRecord],
        forwarded: list[OutgoingRecord],
        gathered: dict[tuple[str, int], list[bytes]],
    ) -> Iterator[Judged[Record | _Bundled]]:
        now = self._clock()
        decoders = self._decoders
        plan = self.repartitioning
        internal = plan.topics if plan is not None else {}
        # Copies are gathered per partition while the sink knows every internal topic's
        # partitions (the daemon asks at start), else handed to it one record each to place.
        counts = {topic: self._partitions_of(topic) for topic in internal}
        gathers = all(counts.values())
        forwards = forwards_successes = is_internal = signed = False
        check_signature = self._signature_check
        # One TopicPartition per run of a partition's records, not per record: a batch holds
        # each partition's records together.
        tp = TopicPartition("", -1)
        topic, partition = tp  # compared as locals: a TopicPartition field read costs a descriptor
        rebuild_below = -1
        for record in records:
            if record.partition != partition or record.topic != topic:
                tp = TopicPartition(record.topic, record.partition)
                topic, partition = tp
                rebuild_below = rebuild_until.get(tp, -1)
                is_internal = topic in internal
                signed = topic in self._signed_topics
                forwards = plan is not None and bool(plan.routes) and not is_internal
                # Where signatures are required, the internal topics count signed failures too:
                # a success nobody signed must not reset them. (A rule counted in place counts
                # one source topic's events: there an unsigned success meets unsigned failures.)
                forwards_successes = forwards and (signed or check_signature is None)
            acts = record.offset >= rebuild_below
            if is_internal:
                yield from self._internal_events(record, tp, now, acts, dead_letters)
                continue
            try:
                if signed:
                    assert check_signature is not None
                    check_signature(record.value or b"", record.headers)
                event = decoders[record.topic](record.value or b"")
                if event.ip is None and acts and UNPARSED_IP in event.extra:
                    self._metrics.unparsed_addresses.inc()
                if forwards and acts and (forwards_successes or event.type != LOGIN_SUCCEEDED):
                    # Written once, by the instance that read it first: a record read again only
                    # to rebuild windows was written before its offset was committed.
                    assert plan is not None
                    if gathers:
                        plan.gather(event, topic, partition, record.offset, counts, gathered)
                    else:
                        forwarded += plan.forward(event, topic, partition, record.offset)
            except Exception as error:  # invalid, or a bug: neither may stop the daemon
                if acts:
                    self._refuse(record, error, dead_letters)
                continue
            yield tp, record.key, event, now, acts, record

    def _internal_events(
        self,
        record: Record,
        tp: TopicPartition,
        now: float,
        acts: bool,
        dead_letters: list[OutgoingRecord],
    ) -> Iterator[Judged[Record | _Bundled]]:
        # An internal record's key is the rule's own: no key mismatch to count (None below).
        try:
            decoded = self._internal_decoder(record.value or b"")
        except Exception as error:  # invalid, or a bug: neither may stop the daemon
            if acts:
                self._refuse(record, error, dead_letters)
            return
        if len(decoded) == 1 and isinstance(event := decoded[0], Event):
            yield tp, None, event, now, acts, record
            return
        for item in decoded:
            if isinstance(item, RefusedElement):
                if acts:
                    element = dataclasses.replace(record, value=item.raw)
                    self._refuse(element, item.error, dead_letters)
                continue
            yield tp, None, item, now, acts, (record, item)

    def _refuse(self, record: Record, error: Exception, dead_letters: list[OutgoingRecord]) -> None:
        if (dead := self._rejects.refuse(record, error)) is not None:
            dead_letters.append(dead)

    async def judge(
        self,
        batch: Iterable[Judged[Origin]],
        failed: Callable[[Origin, Exception], None],
        *,
        held: Callable[[TopicPartition], bool] | None = None,
    ) -> list[OutgoingRecord]:
        """Count, decide and act on decoded events, each at its own time; return the audits.

        This is :meth:`process` after decoding; ``lockoutd replay`` calls it directly with the
        events it decoded itself, each judged at its event time. A record whose counting or
        deciding raises is handed to ``failed`` with the exception (unless it only rebuilds
        windows) and the batch goes on: no record may stop the daemon (README, "Operations").
        """
        pending: list[_Pending] = []
        max_age = self._settings.engine.max_event_age
        dry_run = self._settings.engine.dry_run
        engines = self._engines
        # Per batch, not per record: counters, and the engine only when the partition changes.
        accepted = ignored = 0
        last_tp: Partition | None = None
        engine: Engine | None = None
        # An internal topic's records are copies of events already counted where they were read.
        internal = self.repartitioning.topics if self.repartitioning is not None else ()
        counts = True
        judged = 0
        for tp, key, event, now, acts, origin in batch:
            judged += 1
            if not judged % _YIELD_EVERY:
                # The loop's other tasks go on meanwhile: above all the producer, sending what
                # the batch before published as soon as the broker confirms its last request.
                # A rebalance may take partitions then, so the engine is looked up again.
                await asyncio.sleep(0)
                engine = None
            # One try per record: it costs nothing until something raises.
            try:
                if tp is not last_tp or engine is None:
                    if held is not None and not held(tp):
                        # Its new owner (or this instance, rewound) counts these records. Their
                        # copies and dead letters may go out twice: copies count once by id.
                        continue
                    last_tp = tp
                    engine = engines.get(tp)
                    if engine is None:
                        engine = engines[tp] = Engine(self.rules_for(tp[0]))
                    counts = tp[0] not in internal
                if event.type not in KNOWN_TYPES:
                    if acts and counts:
                        ignored += 1
                    continue
                firings = engine.process(event, now, record_key=key, replayed=not acts)
                for firing in firings:
                    if firing.replayed_only:
                        continue  # a crossing that acted before the partition was rebuilt
                    self._metrics.rule_fired.labels(rule=firing.rule.name).inc()
                    allowed = self.rules.allowed_for(firing.rule)
                    for decision in decide(
                        firing, self.rules, now=now, max_event_age=max_age, dry_run=dry_run
                    ):
                        pending.append(
                            (decision, event.occurred_at, firing.rule.action.lock, allowed)
                        )
                if acts and counts:
                    accepted += 1  # last: a record that failed is not counted as accepted
            except Exception as error:  # one record's bug must not stop the daemon
                if acts:
                    failed(origin, error)
        if accepted:
            self._metrics.events.labels(result="accepted").inc(accepted)
        if ignored:
            self._metrics.events.labels(result="ignored").inc(ignored)
        audits = [
            audit
            for decision in await self._carry_out(pending)
            if (audit := self.report(decision)) is not None
        ]
        self._keep_within_bound()
        self._report_tracked_keys()
        return audits

    def rules_for(self, topic: str) -> RuleSet:
        """The rules counted on ``topic``: all of them, unless some are counted on internal
        topics (see :mod:`lockoutd.repartition`)."""
        plan = self.repartitioning
        return self.rules if plan is None else plan.rules_for(topic)

    def report(self, decision: Decision) -> OutgoingRecord | None:
        """Count, log and prepare the audit record of a finished decision."""
        self.outcomes[decision.outcome or ""] += 1
        return self._reporter.report(decision)

    def _keep_within_bound(self) -> None:
        # Once a batch: a batch adds at most its records' worth of keys beyond the bound.
        evicted = self._bound.enforce(self._engines.values())
        if not evicted:
            return
        for rule, count in evicted.items():
            self._metrics.evicted_keys.labels(rule=rule).inc(count)
        structlog.get_logger(__name__).warning(
            "tracked_keys_evicted",
            evicted=dict(evicted),
            max_tracked_keys=self._bound.max_keys,
            max_window_bytes=self._bound.max_bytes,
        )

    def _report_tracked_keys(self) -> None:
        tracked: Counter[str] = Counter({rule.name: 0 for rule in self.rules.rules})
        held: Counter[str] = Counter({rule.name: 0 for rule in self.rules.rules})
        mismatched: Counter[str] = Counter()
        for engine in self._engines.values():
            for rule, windows in engine.rule_windows():
                tracked[rule] += len(windows)
                held[rule] += windows.held_bytes()
            mismatched.update(engine.take_key_mismatches())
        for rule, count in tracked.items():
            self._metrics.tracked_keys.labels(rule=rule).set(count)
        for rule, count in held.items():
            self._metrics.window_bytes.labels(rule=rule).set(count)
        for rule, count in mismatched.items():
            self._metrics.key_mismatches.labels(rule=rule).inc(count)

    async def _carry_out(self, pending: list[_Pending]) -> list[Decision]:
        if not any(decision.outcome is None for decision, _, _, _ in pending):
            return [decision for decision, _, _, _ in pending]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(
                        self._executor.carry_out(
                            decision, event_time=at, action=action, allowed=allowed
                        )
                    )
                    if decision.outcome is None
                    else None
                    for decision, at, action, allowed in pending
                ]
        except BaseExceptionGroup as group_error:
            # A fatal error (ZITADEL refusing lockoutd) leaves as itself, for callers to see.
            raise reported_error(group_error) from None
        return [
            task.result() if task is not None else decision
            for task, (decision, _, _, _) in zip(tasks, pending, strict=True)
        ]


def _bundles(topic: str, partition: int, copies: list[bytes]) -> list[OutgoingRecord]:
    """The records that carry ``copies`` (encoded elements of a bundle) to one partition: one
    bundle, or as many as keep each within :data:`lockoutd.source.kafka.BUNDLE_BYTES`."""
    records = []
    start, size = 0, 2  # the brackets
    for end, copy in enumerate(copies):
        if end > start and size + len(copy) + 1 > BUNDLE_BYTES:
            records.append(_bundle(topic, partition, copies[start:end]))
            start, size = end, 2
        size += len(copy) + 1
    records.append(_bundle(topic, partition, copies[start:]))
    return records


def _bundle(topic: str, partition: int, copies: list[bytes]) -> OutgoingRecord:
    return OutgoingRecord(topic, b"[" + b",".join(copies) + b"]", partition=partition)


def _actions(rules: RuleSet) -> Iterator[tuple[str, str]]:
    """Each rule's action, and ``unlock`` for the rules whose locks lockoutd ends."""
    for rule in rules.rules:
        yield rule.name, rule.action.name
        if rule.action.lock is not None and rule.action.lock.duration is not None:
            yield rule.name, "unlock"
