"""The daemon: the pipeline wired to Kafka and ZITADEL, with a lifecycle an operator can trust.

One loop, one batch ahead::

    fetch batch N+1 -> decode, count, decide, act -> (N published and committed meanwhile)
                    -> publish N+1, then commit it, while N+2 is fetched and judged

- A batch is committed only once the broker has what it published, so a crash at any instant
  replays at most the two batches in flight, and locking an already locked user is a success.
- While a batch waits on ZITADEL (an outage, retried with backoff), fetching is paused but the
  consumer keeps polling, so it keeps its place in the group and nothing piles up in memory.
- SIGTERM and SIGINT stop fetching and give the batches in flight ``engine.drain_timeout``; what
  does not finish is not committed, and the next start carries it out.
- SIGHUP, or a change to the rule files (looked at every ``engine.rule_check_interval``), reloads
  the rules between two batches; a bad rule file keeps the old rules, as do rules that lock
  temporarily without a schedule signing key.
- Each partition's windows are checkpointed after a commit, before the next batch is judged (at
  most every ``kafka.checkpoint_interval``), so that a partition assigned here after a restart or a
  rebalance replays only the records after its checkpoint.
- Kafka being unreachable is waited out (``/readyz`` says so), never a crash loop.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import stamina
import structlog
from aiokafka import TopicPartition

from lockoutd.act.account import account_findings
from lockoutd.act.schedule import UnlockSchedule
from lockoutd.act.temporary import TemporaryLocks
from lockoutd.act.unlocker import Unlocker
from lockoutd.act.zitadel import ZitadelClient
from lockoutd.decide.core import WINDOWS
from lockoutd.decide.decision import Decision
from lockoutd.decode.native import DECODER
from lockoutd.errors import (
    ConfigError,
    InvalidUserId,
    KafkaRefused,
    KafkaUnavailable,
    UnexpectedAnswer,
    ZitadelConfigError,
    ZitadelUnavailable,
    reported_error,
)
from lockoutd.pipeline import Pipeline
from lockoutd.repartition import Repartitioning, topic_prefix
from lockoutd.report.http import OperationsServer
from lockoutd.report.metrics import Metrics
from lockoutd.rules import RuleSet, load_rules
from lockoutd.rules.watch import RuleFilesWatch
from lockoutd.settings import Settings
from lockoutd.source.checkpoints import Checkpoints
from lockoutd.source.internal_topics import InternalTopics
from lockoutd.source.kafka import Batch, KafkaSink, KafkaSource, Offsets, OutgoingRecord, Record
from lockoutd.source.schedule import ScheduleTopic
from lockoutd.source.schedule_seal import ScheduleSeal, schedule_seal, unsigned_temporary_locks

log = structlog.get_logger(__name__)

_Client = TypeVar("_Client", KafkaSource, KafkaSink, ScheduleTopic, InternalTopics, Checkpoints)

# How often the consumer polls (paused) while a batch waits, to keep its place in the group.
_MEMBERSHIP_POLL_SECONDS = 1.0
_KAFKA_WAIT_MAX_SECONDS = 30.0
# How long the start waits for ZITADEL to say who lockoutd is before it goes on without knowing.
_ACCOUNT_CHECK_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class _Publishing:
    """A batch judged and acted on: its records being published, then its offsets committed."""

    batch: Batch
    committed: asyncio.Future[Offsets]


_Settle: TypeAlias = Callable[["_Publishing | None", "Checkpoints | None"], Awaitable[None]]


class _Abandoned(Exception):
    """Stopping ran out of time while a batch was in flight: it is left uncommitted."""


class _Stopped(Exception):
    """A stop was requested before the daemon had finished starting."""


class Daemon:
    """Runs the pipeline until told to stop."""

    def __init__(self, settings: Settings, rules: RuleSet) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._rules = rules
        self._stop = asyncio.Event()
        self._reload_requested: str | None = None
        # Taken now, next to the loading of the rules it started with, so no change goes unseen.
        self._rule_watch = RuleFilesWatch(settings.engine.rule_paths)
        self._started = time.monotonic()
        self._zitadel_down: Callable[[], bool] = lambda: False
        self._kafka_was_ready = False
        self._kafka_lost_at: float | None = None
        self._drain_deadline: float | None = None
        """Set once stopping: what is in flight by then must be done before it."""
        self._internal_topics: frozenset[str] = frozenset()
        """The internal topics created and subscribed to at start."""

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("shutdown_requested")
        self._stop.set()

    def request_reload(self, trigger: str = "SIGHUP") -> None:
        self._reload_requested = trigger

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT; raises on a fault the supervisor must see."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self._run()
        except _Stopped:
            log.info("daemon_stopped", uptime_seconds=self._uptime(), outcomes={})
        except BaseExceptionGroup as group:
            # The consumer and the unlocker run in a task group (and the lock calls of a batch in
            # one of their own): a refusal of lockoutd itself leaves as itself, to be said plainly.
            if (error := reported_error(group)) is group:
                raise
            raise error from None

    async def _run(self) -> None:
        settings = self.settings
        # Refused before anything connects, as ``run`` and ``check`` refuse it (preflight).
        seal = schedule_seal(settings.kafka)
        if problems := unsigned_temporary_locks(self._rules.rules, seal):
            raise ConfigError(problems)
        async with AsyncExitStack() as stack:
            store = await stack.enter_async_context(
                ZitadelClient(settings.zitadel, metrics=self.metrics)
            )
            self._zitadel_down = lambda: not store.healthy
            source: KafkaSource | None = None

            def readiness() -> dict[str, bool]:
                return {
                    "kafka": source is not None and source.ready,
                    "zitadel": store.healthy,
                }

            for check in ("kafka", "zitadel"):
                self.metrics.ready.labels(check=check).set_function(_read_check(readiness, check))

            await stack.enter_async_context(
                OperationsServer(
                    settings.metrics.host,
                    settings.metrics.port,
                    registry=self.metrics.registry,
                    readiness=readiness,
                )
            )
            await self._check_account(store)
            sink = await self._connect(stack, lambda: KafkaSink(settings.kafka))
            for topic in (settings.kafka.decisions_topic, settings.kafka.dead_letter_topic):
                if topic is not None:
                    self.metrics.publish_refused.labels(topic=topic)
            # The schedule is read in full before the first event: escalation and pending
            # unlocks must be known before anything new is locked.
            schedule = UnlockSchedule()
            if not seal.signed:
                log.info(
                    "schedule_unsigned",
                    topic=settings.kafka.schedule_topic,
                    note="no rule locks temporarily, so no schedule signing key is needed; rules "
                    "that do are refused until kafka.schedule_signing_key_file is set",
                )
            schedule_topic = await self._connect(
                stack,
                lambda: ScheduleTopic(
                    settings.kafka, schedule, sink=sink, metrics=self.metrics, seal=seal
                ),
            )
            pipeline = Pipeline(
                settings,
                self._rules,
                store=store,
                metrics=self.metrics,
                locks=TemporaryLocks(store, schedule, schedule_topic),
                repartition=True,
                partitions_of=sink.partition_count,
            )
            plan = pipeline.repartitioning
            assert plan is not None
            # Before joining the group: the group reads the internal topics from the start.
            await self._connect(
                stack,
                lambda: InternalTopics(
                    settings.kafka, plan, max_event_age=settings.engine.max_event_age
                ),
            )
            self._internal_topics = frozenset(plan.topics)
            # Their partitions known from the first batch on, the copies bound for each are
            # written as one bundle made by the pipeline (see Pipeline).
            await sink.track(plan.topics)
            for topic in plan.topics:
                self.metrics.publish_refused.labels(topic=topic)
            checkpoints = await self._checkpoints(stack, sink, seal)

            async def restore(committed: Offsets) -> Offsets:
                if checkpoints is None:
                    return {}
                restored = await checkpoints.restore(committed, pipeline.rules_for)
                for tp, (_, engine) in restored.items():
                    pipeline.install(tp, engine)
                return {tp: offset for tp, (offset, _) in restored.items()}

            def lost(partitions: Sequence[TopicPartition]) -> None:
                pipeline.forget(partitions)
                if checkpoints is not None:
                    checkpoints.forget(list(partitions))

            source = await self._connect(
                stack,
                lambda: KafkaSource(
                    settings.kafka,
                    metrics=self.metrics,
                    lookback_seconds=lambda: max(rule.window for rule in pipeline.rules.rules),
                    on_lost=lost,
                    restore=restore,
                    # The safety caps are the group's: each member locks the share of them that
                    # its partitions are of all the partitions, rebalanced with them.
                    on_share=pipeline.share_lock_budget,
                    internal_topics=sorted(plan.topics),
                ),
            )

            async def publish_decision(decision: Decision) -> None:
                if (record := pipeline.report(decision)) is not None:
                    await self._publish(sink, [record])

            unlocker = Unlocker(
                schedule, store, schedule_topic, owns=source.owns, report=publish_decision
            )
            log.info(
                "daemon_started",
                rules=[rule.name for rule in pipeline.rules.rules],
                topics=settings.kafka.topics,
                internal_topics=sorted(plan.topics),
                group_id=settings.kafka.group_id,
                metrics_listen=settings.metrics.listen,
                pending_unlocks=len(schedule),
                windows=WINDOWS,
                decoder=DECODER,
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(unlocker.run(self._stop), name="unlocker")
                if settings.engine.rule_check_interval > 0:
                    group.create_task(self._watch_rules(), name="rule-watch")
                group.create_task(
                    self._consume(source, sink, pipeline, seal, checkpoints), name="consumer"
                )
            log.info(
                "daemon_stopped",
                uptime_seconds=self._uptime(),
                outcomes=dict(pipeline.outcomes),
            )

    async def _check_account(self, store: ZitadelClient) -> None:
        """What ``check --connect`` asks ZITADEL, asked before the first event is read.

        A token ZITADEL rejects, or an account that may not lock, stops the daemon now rather
        than at the first attack. ZITADEL being unreachable does not: locks wait for it anyway.
        """
        try:
            findings = await asyncio.wait_for(
                account_findings(store, self.settings.zitadel), _ACCOUNT_CHECK_SECONDS
            )
        except (TimeoutError, ZitadelUnavailable, UnexpectedAnswer, InvalidUserId) as exc:
            log.warning(
                "zitadel_account_unchecked",
                error=str(exc) or f"no answer within {_ACCOUNT_CHECK_SECONDS:g}s",
                note="locks will wait for ZITADEL; a token it rejects stops the daemon then",
            )
            return
        if failed := [finding.text for finding in findings if not finding.ok]:
            raise ZitadelConfigError("; ".join(failed))
        log.info("zitadel_account", checks=[finding.text for finding in findings])

    def _uptime(self) -> float:
        return round(time.monotonic() - self._started, 1)

    async def _connect(self, stack: AsyncExitStack, make: Callable[[], _Client]) -> _Client:
        """Enter a Kafka client, waiting for the cluster as long as it takes (or until stopped)."""
        wait = 1.0
        while True:
            try:
                return await stack.enter_async_context(make())
            except KafkaUnavailable as exc:
                log.warning("kafka_unavailable", error=str(exc), retry_in_seconds=wait)
            if await self._stopped_within(wait):
                raise _Stopped
            wait = min(wait * 2, _KAFKA_WAIT_MAX_SECONDS)

    async def _checkpoints(
        self, stack: AsyncExitStack, sink: KafkaSink, seal: ScheduleSeal
    ) -> Checkpoints | None:
        kafka = self.settings.kafka
        if kafka.checkpoint_topic is None:
            return None
        if not seal.signed:
            log.info(
                "checkpoints_off",
                topic=kafka.checkpoint_topic,
                note="checkpoints are signed with the schedule signing key: without "
                "kafka.schedule_signing_key_file an assigned partition is rewound by the "
                "longest rule window",
            )
            return None
        return await self._connect(
            stack, lambda: Checkpoints(self.settings, sink=sink, seal=seal, metrics=self.metrics)
        )

    async def _consume(
        self,
        source: KafkaSource,
        sink: KafkaSink,
        pipeline: Pipeline,
        seal: ScheduleSeal,
        checkpoints: Checkpoints | None,
    ) -> None:
        # One batch ahead: while the broker confirms what one batch published (the copies for
        # other instances above all), the next is read, judged and acted on. A batch is
        # committed once its own publishing is confirmed, never before (README, "Operations").
        publishing: _Publishing | None = None
        settle = functools.partial(self._settle, source=source, pipeline=pipeline)
        try:
            while not self._stop.is_set():
                if self._reload_requested:
                    # New rules start from a committed batch, as a checkpoint does.
                    await settle(publishing, checkpoints)
                    publishing = None
                    self._reload(pipeline, seal)
                batch, publishing = await self._fetch(source, publishing, settle, checkpoints)
                if not batch.records or self._checkpoint_due(checkpoints, publishing):
                    # Nothing new, so nothing to overlap; or a checkpoint is due, which holds the
                    # windows as of a committed offset: none of the next batch may count first.
                    await settle(publishing, checkpoints)
                    publishing = None
                if not batch.records:
                    continue
                rebuild_until = dict(source.rebuild_until)
                held = source.held_since(batch)
                before = publishing.committed if publishing is not None else None
                work = asyncio.ensure_future(
                    self._process(pipeline, batch.records, rebuild_until, held, before)
                )
                try:
                    if not await self._wait_for(work, source, pipeline):
                        raise _Abandoned
                finally:
                    source.resume()
                # Without its records: the cycle collector is set for one batch alive at a time
                # (lockoutd/collector.py), and the next one is judged while this one is sent.
                batch = batch.without_records()
                publishing = _Publishing(
                    batch, asyncio.ensure_future(self._deliver(source, sink, batch, work.result()))
                )
            await settle(publishing, checkpoints)
            publishing = None
        except _Abandoned:
            pass  # said by _wait_for; nothing after the batch in flight was committed
        finally:
            if publishing is not None:
                publishing.committed.cancel()  # left uncommitted: read and acted on again

    async def _fetch(
        self,
        source: KafkaSource,
        publishing: _Publishing | None,
        settle: _Settle,
        checkpoints: Checkpoints | None,
    ) -> tuple[Batch, _Publishing | None]:
        """The next batch (empty when Kafka does not answer), and the batch still in flight.

        That one is committed meanwhile if it is confirmed first, as nothing new may arrive for
        a while.
        """
        fetch = asyncio.ensure_future(source.next_batch())
        try:
            if publishing is not None:
                first: set[asyncio.Future[Any]] = {fetch, publishing.committed}
                await asyncio.wait(first, return_when=FIRST_COMPLETED)
                if publishing.committed.done():
                    await settle(publishing, checkpoints)
                    publishing = None
            try:
                return await fetch, publishing
            except KafkaUnavailable as exc:
                log.warning("kafka_fetch_failed", error=str(exc))
                await self._stopped_within(1.0)
                return Batch.of({}), publishing
        finally:
            fetch.cancel()  # a no-op once it is done
            self._note_kafka(source.ready)

    async def _settle(
        self,
        publishing: _Publishing | None,
        checkpoints: Checkpoints | None,
        *,
        source: KafkaSource,
        pipeline: Pipeline,
    ) -> None:
        """Wait for the batch in flight to be published and committed, then write its
        partitions' due ``checkpoints``: the windows hold exactly the records before the offsets
        committed, as no later batch was judged. Raises :class:`_Abandoned` when stopping runs
        out of time."""
        if publishing is None:
            return
        try:
            if not await self._wait_for(publishing.committed, source, pipeline):
                raise _Abandoned
        finally:
            source.resume()
        if checkpoints is None:
            return
        for tp, offset in publishing.committed.result().items():
            if checkpoints.due(tp) and (engine := pipeline.engine_of(tp)) is not None:
                await checkpoints.write(tp, offset, engine)

    @staticmethod
    def _checkpoint_due(checkpoints: Checkpoints | None, publishing: _Publishing | None) -> bool:
        return (
            checkpoints is not None
            and publishing is not None
            and any(map(checkpoints.due, publishing.batch.next_offsets))
        )

    def _note_kafka(self, ready: bool) -> None:
        """One line when Kafka stops answering (aiokafka retries on its own, quietly), and one
        when it is back; nothing before it was first ready (the start logs its own waits)."""
        now = time.monotonic()
        if ready and self._kafka_lost_at is not None:
            log.info("kafka_ready", unready_seconds=round(now - self._kafka_lost_at, 1))
            self._kafka_lost_at = None
        elif not ready and self._kafka_was_ready and self._kafka_lost_at is None:
            log.warning(
                "kafka_not_ready",
                reason="the consumer lost its group or the broker stopped answering; aiokafka "
                "reconnects, and /readyz says kafka: false until it has",
            )
            self._kafka_lost_at = now
        self._kafka_was_ready = self._kafka_was_ready or ready

    async def _process(
        self,
        pipeline: Pipeline,
        records: Sequence[Record],
        rebuild_until: dict[TopicPartition, int],
        held: Callable[[TopicPartition], bool],
        before: asyncio.Future[Offsets] | None,
    ) -> list[OutgoingRecord]:
        """Judge and act on ``records``; then wait for the batch ``before`` them, published and
        committed meanwhile."""
        outgoing = await pipeline.process(records, rebuild_until=rebuild_until, held=held)
        if before is not None:
            await before
        return outgoing

    async def _deliver(
        self, source: KafkaSource, sink: KafkaSink, batch: Batch, records: list[OutgoingRecord]
    ) -> Offsets:
        """Publish what ``batch`` gave, and once the broker has it, commit the batch."""
        await self._publish(sink, records)
        return await source.commit(batch)

    async def _publish(self, sink: KafkaSink, records: list[OutgoingRecord]) -> None:
        # Until the broker has the decisions and dead letters, the offsets must not move on; but
        # a record it refuses for good would hold them forever: it is logged, counted, skipped.
        async for attempt in stamina.retry_context(
            on=KafkaUnavailable, attempts=None, timeout=None, wait_max=_KAFKA_WAIT_MAX_SECONDS
        ):
            with attempt:
                try:
                    await sink.publish(records)
                except KafkaRefused as refused:
                    self._skip_refused(refused)
                except KafkaUnavailable as exc:
                    # stamina's own retry lines are off: lockoutd says what it retries.
                    log.warning(
                        "publish_retrying",
                        attempt=attempt.num,
                        records=len(records),
                        error=str(exc),
                    )
                    raise

    def _skip_refused(self, refused: KafkaRefused) -> None:
        for record, error in refused.refused:
            self.metrics.publish_refused.labels(topic=record.topic).inc()
            log.error(
                "publish_refused",
                topic=record.topic,
                value_bytes=len(record.value),
                error=error,
                note="Kafka refuses this record for good; it is skipped, not retried",
            )

    async def _wait_for(
        self, work: asyncio.Future[Any], source: KafkaSource, pipeline: Pipeline
    ) -> bool:
        """Wait for ``work`` (a batch's judging, or its publishing), polling to keep the group
        membership; bounded once stopping.

        Returns False when the drain time ran out and the batch was abandoned uncommitted.
        """
        paused_at: float | None = None  # when the wait was found to be a ZITADEL outage
        try:
            while not work.done():
                if paused_at is None and self._zitadel_down():
                    paused_at = time.monotonic()
                    log.warning(
                        "fetching_paused",
                        reason="ZITADEL is unavailable; its calls are retried, and no new "
                        "events are read until the batch's decisions are carried out",
                        waiting_decisions=pipeline.actions_in_flight,
                    )
                timeout = _MEMBERSHIP_POLL_SECONDS
                if self._stop.is_set():
                    now = time.monotonic()
                    if self._drain_deadline is None:
                        # One deadline for all that is in flight: a batch and the one before.
                        self._drain_deadline = now + self.settings.engine.drain_timeout
                        log.info("draining", drain_timeout=self.settings.engine.drain_timeout)
                    timeout = min(timeout, self._drain_deadline - now)
                    if timeout <= 0:
                        work.cancel()
                        with suppress(asyncio.CancelledError):
                            await work
                        log.warning(
                            "drain_timed_out",
                            drain_timeout=self.settings.engine.drain_timeout,
                            note="the batch was not committed; the next start carries it out",
                        )
                        return False
                await asyncio.wait({work}, timeout=timeout)
                if not work.done():
                    await source.keep_membership()
            work.result()  # re-raise what the batch raised
            return True
        finally:
            resumed = work.done() and not work.cancelled() and work.exception() is None
            if paused_at is not None and resumed:
                log.info(
                    "fetching_resumed",
                    paused_seconds=round(time.monotonic() - paused_at, 1),
                )

    async def _stopped_within(self, seconds: float) -> bool:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        return self._stop.is_set()

    async def _watch_rules(self) -> None:
        """Ask for a reload when the rule files change (a ConfigMap update, an edit)."""
        watch = self._rule_watch
        while not await self._stopped_within(self.settings.engine.rule_check_interval):
            # A few stat calls: cheap enough for the event loop, no thread needed.
            if watch.changed():
                self.request_reload("file_change")

    def _reload(self, pipeline: Pipeline, seal: ScheduleSeal) -> None:
        trigger, self._reload_requested = self._reload_requested, None
        try:
            rules = load_rules(self.settings.engine.rule_paths)
            if problems := unsigned_temporary_locks(rules.rules, seal):
                raise ConfigError(problems)
        except ConfigError as exc:
            log.error(
                "rules_reload_failed",
                trigger=trigger,
                problems=exc.problems,
                kept=len(pipeline.rules.rules),
            )
            return
        prefix = topic_prefix(self.settings.kafka)
        if new := set(Repartitioning(rules, prefix).topics) - self._internal_topics:
            # The group reads only the internal topics it subscribed to at start: a rule keyed
            # anew would count nothing (or only its instance's share) until a restart.
            log.error(
                "rules_reload_failed",
                problems=[
                    f"a rule needs the internal topic {t}: restart to apply" for t in sorted(new)
                ],
                kept=len(pipeline.rules.rules),
            )
            return
        pipeline.replace_rules(rules)
        log.info("rules_reloaded", trigger=trigger, rules=[rule.name for rule in rules.rules])
        for warning in rules.warnings:
            log.warning("rules_warning", warning=warning)


def _read_check(readiness: Callable[[], dict[str, bool]], check: str) -> Callable[[], float]:
    return lambda: float(readiness()[check])
