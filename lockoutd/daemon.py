"""The daemon: the pipeline wired to Kafka and ZITADEL, with a lifecycle an operator can trust.

One loop, one batch at a time::

    fetch a batch -> decode -> engine -> decide -> act (bounded concurrency) -> publish -> commit

The commit comes last, so a crash at any instant replays at most one batch and loses no lock.
SIGTERM and SIGINT stop fetching and give the batch in flight ``engine.drain_timeout`` to finish;
SIGHUP reloads the rules between two batches.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, suppress
from typing import Any, TypeVar

import stamina
import structlog
from aiokafka import TopicPartition

from lockoutd.act.executor import LockExecutor
from lockoutd.act.schedule import UnlockSchedule
from lockoutd.act.temporary import TemporaryLocks
from lockoutd.act.unlocker import Unlocker
from lockoutd.act.zitadel import UserStore, ZitadelClient
from lockoutd.decide.decision import Decision, decide
from lockoutd.decide.engine import Engine
from lockoutd.decode.event import KNOWN_TYPES
from lockoutd.decode.formats import decoder_for
from lockoutd.decode.native import InvalidEvent
from lockoutd.decode.rejects import Rejects
from lockoutd.errors import ConfigError, KafkaUnavailable
from lockoutd.report.audit import DecisionReporter
from lockoutd.report.http import OperationsServer
from lockoutd.report.metrics import Metrics
from lockoutd.rules import RuleSet, load_rules
from lockoutd.rules.model import LockAction
from lockoutd.settings import Settings
from lockoutd.source.kafka import KafkaSink, KafkaSource, OutgoingRecord, Record
from lockoutd.source.schedule import ScheduleTopic

log = structlog.get_logger(__name__)

# Kafka start-up and publishing are retried this long before the daemon gives up and exits
# non-zero, leaving the restart to its supervisor.
_KAFKA_RETRY_SECONDS = 120.0

_Client = TypeVar("_Client", KafkaSource, KafkaSink, ScheduleTopic)


class Pipeline:
    """Decode, evaluate, decide, act and report one batch. Knows nothing of offsets or signals."""

    def __init__(
        self,
        settings: Settings,
        rules: RuleSet,
        *,
        store: UserStore,
        metrics: Metrics,
        locks: TemporaryLocks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = rules
        self.engine = Engine(rules)
        self.outcomes: Counter[str] = Counter()
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._executor = LockExecutor(
            store,
            max_locks_per_minute=settings.safety.max_locks_per_minute,
            metrics=metrics,
            locks=locks,
            clock=clock,
        )
        self._decoders = {
            topic: decoder_for(
                settings.kafka.formats.get(topic, "native"),
                max_bytes=settings.kafka.max_event_bytes,
            )
            for topic in settings.kafka.topics
        }
        self._rejects = Rejects(settings.kafka.dead_letter_topic, metrics=metrics)
        self._reporter = DecisionReporter(settings.kafka.decisions_topic, metrics=metrics)
        metrics.declare_rules((rule.name, rule.action.name) for rule in rules.rules)

    def replace_rules(self, rules: RuleSet) -> None:
        """Use ``rules`` from the next batch on; unchanged rules keep their counts."""
        self.rules = rules
        self.engine = self.engine.reloaded(rules)
        self._metrics.declare_rules((rule.name, rule.action.name) for rule in rules.rules)

    async def process(self, records: Sequence[Record]) -> list[OutgoingRecord]:
        """Act on every decision ``records`` carry; return the records to publish before commit."""
        now = self._clock()
        outgoing: list[OutgoingRecord] = []
        pending: list[tuple[Decision, float, LockAction | None]] = []
        events = self._metrics.events
        max_age = self._settings.engine.max_event_age
        dry_run = self._settings.engine.dry_run
        for record in records:
            try:
                event = self._decoders[record.topic](record.value or b"")
            except InvalidEvent as error:
                if (dead_letter := self._rejects.reject(record, error)) is not None:
                    outgoing.append(dead_letter)
                continue
            if event.type not in KNOWN_TYPES:
                events.labels(result="ignored").inc()
                continue
            events.labels(result="accepted").inc()
            for firing in self.engine.process(event, now):
                self._metrics.rule_fired.labels(rule=firing.rule.name).inc()
                for decision in decide(
                    firing, self.rules, now=now, max_event_age=max_age, dry_run=dry_run
                ):
                    pending.append((decision, event.occurred_at, firing.rule.action.lock))
        for decision in await self._carry_out(pending):
            if (audit := self.report(decision)) is not None:
                outgoing.append(audit)
        for rule, count in self.engine.tracked_keys():
            self._metrics.tracked_keys.labels(rule=rule).set(count)
        return outgoing

    def report(self, decision: Decision) -> OutgoingRecord | None:
        """Count, log and prepare the audit record of a decision made outside a batch."""
        self.outcomes[decision.outcome or ""] += 1
        return self._reporter.report(decision)

    async def _carry_out(
        self, pending: list[tuple[Decision, float, LockAction | None]]
    ) -> list[Decision]:
        if not any(decision.outcome is None for decision, _, _ in pending):
            return [decision for decision, _, _ in pending]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(
                        self._executor.carry_out(decision, event_time=at, action=action)
                    )
                    if decision.outcome is None
                    else None
                    for decision, at, action in pending
                ]
        except BaseExceptionGroup as group_error:
            # One fatal error (ZITADEL refusing lockoutd) is what the caller needs to see.
            raise group_error.exceptions[0] from None
        return [
            task.result() if task is not None else decision
            for task, (decision, _, _) in zip(tasks, pending, strict=True)
        ]


def next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """The offsets to commit after ``records``: one past the last record of each partition."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
    return offsets


class Daemon:
    """Runs the pipeline until told to stop."""

    def __init__(self, settings: Settings, rules: RuleSet) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._rules = rules
        self._stop = asyncio.Event()
        self._reload_requested = False
        self._started = time.monotonic()

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("shutdown_requested")
        self._stop.set()

    def request_reload(self) -> None:
        self._reload_requested = True

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT; raises on a fault the supervisor must see."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        settings = self.settings
        async with AsyncExitStack() as stack:
            store = await stack.enter_async_context(
                ZitadelClient(settings.zitadel, metrics=self.metrics)
            )
            source: KafkaSource | None = None

            def readiness() -> dict[str, bool]:
                return {
                    "kafka": source is not None and source.ready,
                    "zitadel": store.healthy,
                }

            await stack.enter_async_context(
                OperationsServer(
                    settings.metrics.host,
                    settings.metrics.port,
                    registry=self.metrics.registry,
                    readiness=readiness,
                )
            )
            sink = await self._connect(stack, lambda: KafkaSink(settings.kafka))
            # The schedule is read in full before the first event: escalation and pending
            # unlocks must be known before anything new is locked.
            schedule = UnlockSchedule()
            schedule_topic = await self._connect(
                stack, lambda: ScheduleTopic(settings.kafka, schedule, sink=sink)
            )
            locks = TemporaryLocks(store, schedule, schedule_topic)
            pipeline = Pipeline(
                settings, self._rules, store=store, metrics=self.metrics, locks=locks
            )
            source = await self._connect(
                stack, lambda: KafkaSource(settings.kafka, metrics=self.metrics)
            )

            async def publish_decision(decision: Decision) -> None:
                if (record := pipeline.report(decision)) is not None:
                    await sink.publish([record])

            unlocker = Unlocker(
                schedule, store, schedule_topic, owns=source.owns, report=publish_decision
            )
            log.info(
                "daemon_started",
                rules=[rule.name for rule in pipeline.rules.rules],
                topics=settings.kafka.topics,
                group_id=settings.kafka.group_id,
                metrics_listen=settings.metrics.listen,
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(unlocker.run(self._stop), name="unlocker")
                group.create_task(self._consume(source, sink, pipeline), name="consumer")
            log.info(
                "daemon_stopped",
                uptime_seconds=round(time.monotonic() - self._started, 1),
                outcomes=dict(pipeline.outcomes),
            )

    async def _connect(self, stack: AsyncExitStack, make: Callable[[], _Client]) -> _Client:
        async for attempt in stamina.retry_context(
            on=KafkaUnavailable, attempts=None, timeout=_KAFKA_RETRY_SECONDS, wait_max=10.0
        ):
            with attempt:
                return await stack.enter_async_context(make())
        raise AssertionError("unreachable: stamina raises when it gives up")

    async def _consume(self, source: KafkaSource, sink: KafkaSink, pipeline: Pipeline) -> None:
        while not self._stop.is_set():
            if self._reload_requested:
                self._reload(pipeline)
            try:
                records = await source.next_batch()
            except KafkaUnavailable as exc:
                log.warning("kafka_fetch_failed", error=str(exc))
                await self._sleep_unless_stopped(1.0)
                continue
            if not records:
                continue
            work = asyncio.ensure_future(self._process_and_publish(pipeline, sink, records))
            if not await self._finish_within_drain(work):
                return  # not committed: the next owner of these partitions replays the batch
            await source.commit(next_offsets(records))

    async def _process_and_publish(
        self, pipeline: Pipeline, sink: KafkaSink, records: Sequence[Record]
    ) -> None:
        outgoing = await pipeline.process(records)
        async for attempt in stamina.retry_context(
            on=KafkaUnavailable, attempts=None, timeout=_KAFKA_RETRY_SECONDS, wait_max=10.0
        ):
            with attempt:
                await sink.publish(outgoing)

    async def _finish_within_drain(self, work: asyncio.Future[None]) -> bool:
        """Wait for ``work``; once a stop is requested, wait at most the drain timeout."""
        stop_wait = asyncio.ensure_future(self._stop.wait())
        either: set[asyncio.Future[Any]] = {work, stop_wait}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                done, _ = await asyncio.wait({work}, timeout=self.settings.engine.drain_timeout)
                if not done:
                    work.cancel()
                    log.warning(
                        "drain_timed_out",
                        drain_timeout=self.settings.engine.drain_timeout,
                        note="the batch was not committed and is processed again after restart",
                    )
                    return False
            work.result()  # re-raise what the batch raised
            return True
        finally:
            stop_wait.cancel()

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    def _reload(self, pipeline: Pipeline) -> None:
        self._reload_requested = False
        try:
            rules = load_rules(self.settings.engine.rule_paths)
        except ConfigError as exc:
            log.error("rules_reload_failed", problems=exc.problems, kept=len(pipeline.rules.rules))
            return
        pipeline.replace_rules(rules)
        log.info("rules_reloaded", rules=[rule.name for rule in rules.rules])
