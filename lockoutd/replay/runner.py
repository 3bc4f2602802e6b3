"""Feeding recorded events to the daemon's pipeline, and keeping what a summary needs."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import compress, repeat

import msgspec

from lockoutd.act.zitadel import (
    LockOutcome,
    LockReceipt,
    ResolvedUser,
    UnlockOutcome,
    UserSnapshot,
)
from lockoutd.decide.decision import Decision, Outcome
from lockoutd.decode.event import LOGIN_FAILED, Event
from lockoutd.decode.formats import FormatName, decoder_for
from lockoutd.decode.limits import Horizon
from lockoutd.decode.native import InvalidEvent
from lockoutd.decode.rejects import unexpected
from lockoutd.pipeline import Judged, Partition, Pipeline
from lockoutd.report.metrics import Metrics
from lockoutd.rules import Rule, RuleSet
from lockoutd.rules.model import EventMatcher
from lockoutd.settings import Settings
from lockoutd.source.kafka import Record

# The pipeline hands decisions over as records for this (never published) audit topic.
_DECISIONS = "lockoutd.replay.decisions"

BUCKET_SECONDS = 10
"""Resolution of the timelines; a week is 60,480 buckets per rule at most."""

SAMPLE_DECISIONS = 200
"""Decisions kept per rule for the report's table."""

_decode_decision = msgspec.json.Decoder(Decision).decode


class ReplayStore:
    """The user store of a replay: it is never called, and says so loudly if it ever is."""

    async def lock(self, user_id: str, org_id: str | None) -> LockOutcome:
        raise AssertionError("replay must not call ZITADEL (lock)")

    async def unlock(self, user_id: str, org_id: str | None) -> UnlockOutcome:
        raise AssertionError("replay must not call ZITADEL (unlock)")

    async def lock_user(self, user_id: str, org_id: str | None) -> LockReceipt:
        raise AssertionError("replay must not call ZITADEL (lock)")

    async def resolve_login_name(self, login_name: str, org_id: str | None) -> ResolvedUser | None:
        raise AssertionError("replay must not call ZITADEL (resolve a login name)")

    async def read_user(self, user_id: str, org_id: str | None) -> UserSnapshot | None:
        raise AssertionError("replay must not call ZITADEL (read a user)")


@dataclass
class RuleStats:
    """What one rule did over the replay."""

    rule: Rule
    fired: int = 0
    keys: set[str] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)
    decisions_by_key: Counter[str] = field(default_factory=Counter)
    failures: Counter[int] = field(default_factory=Counter)
    """Failures the rule matches, by :data:`BUCKET_SECONDS` bucket of event time."""
    decided: Counter[tuple[int, str]] = field(default_factory=Counter)
    """Decisions by bucket of their decision time and outcome."""
    samples: list[Decision] = field(default_factory=list)

    @property
    def would_lock(self) -> int:
        """Locks the daemon would have attempted had the rule been enforced."""
        return self.outcomes[Outcome.DRY_RUN] if self.rule.action.name == "lock" else 0


@dataclass
class ReplayStats:
    """Totals of a replay; ``events`` comes from the pipeline's own metrics."""

    rules: list[RuleStats]
    events: dict[str, int] = field(default_factory=dict)
    invalid: int = 0
    first_event_at: float | None = None
    last_event_at: float | None = None
    failures: Counter[int] = field(default_factory=Counter)
    elapsed_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Fed:
    """What a batch fed to :class:`Replay` led to."""

    decisions: list[bytes]
    """Each decision as the audit topic's JSON value, in the order they were made."""
    invalid: list[tuple[int, InvalidEvent]]
    """The records that are not events: their index in the batch, and why (they are counted)."""


_Conditions = tuple[tuple[str, frozenset[str]], ...]


def _on_failures(rule: Rule) -> _Conditions:
    """The conditions of ``rule`` that a failure may not meet: its type is known to match."""
    return tuple(
        (name, values)
        for name, values in rule.matcher().conditions
        if not (name == "type" and LOGIN_FAILED in values)
    )


class _MatchedFailures:
    """Failures by :data:`BUCKET_SECONDS` bucket: all of them, and those each rule matches.

    Each distinct set of conditions is tested once per failure: rules often share one, and a rule
    that asks nothing beyond the failure type matches every failure without a test.
    """

    def __init__(self, rules: RuleSet) -> None:
        self.all: Counter[int] = Counter()
        self._tested: dict[_Conditions, tuple[Callable[[Event], bool], Counter[int]]] = {}
        for rule in rules.rules:
            if conditions := _on_failures(rule):
                self._tested.setdefault(conditions, (EventMatcher(conditions).test, Counter()))

    def count(self, failures: list[Event]) -> None:
        """Count a batch of failures (Counter.update counts a whole list at C speed)."""
        buckets = [int(event.occurred_at // BUCKET_SECONDS) for event in failures]
        self.all.update(buckets)
        for test, matched in self._tested.values():
            matched.update(compress(buckets, map(test, failures)))

    def of(self, rule: Rule) -> Counter[int]:
        """A copy of the failures ``rule`` matched, by bucket."""
        conditions = _on_failures(rule)
        return Counter(self._tested[conditions][1] if conditions else self.all)


class Replay:
    """The daemon's :class:`Pipeline` in shadow mode, fed batches of records.

    Shadow mode is the daemon's ``engine.dry_run``: every lock decision is ``dry_run`` and the
    executor is never reached. Each event is judged at the newest event time seen so far (never
    ahead of the wall clock), so evidence that arrived late by more than ``engine.max_event_age``
    is ``stale`` in the replay exactly as it would have been live.

    Without ``timelines`` the failures by time, which only the HTML report shows, are not
    counted: testing every rule's conditions on every failure a second time is a sizeable share
    of a replay.
    """

    def __init__(
        self,
        settings: Settings,
        rules: RuleSet,
        *,
        topic: str,
        event_format: FormatName,
        timelines: bool = True,
    ) -> None:
        shadow = settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(
                    update={
                        "topics": [topic],
                        "formats": {topic: event_format},
                        "decisions_topic": _DECISIONS,
                        "dead_letter_topic": None,
                        # Replay decodes itself, without the daemon's signature check: a
                        # backtest needs no key, and a file has no headers.
                        "require_zitadel_signature": False,
                    }
                ),
                "engine": settings.engine.model_copy(update={"dry_run": True}),
            }
        )
        self.metrics = Metrics()
        self._now = 0.0
        self.pipeline = Pipeline(shadow, rules, store=ReplayStore(), metrics=self.metrics)
        # Replay decodes itself: an invalid record is reported with where it was, not
        # dead-lettered, and the summary needs every event's time.
        # The replay's clock is event time, but an event from the future is refused against the
        # wall clock, as the daemon would have refused it.
        self._decode = decoder_for(
            event_format,
            max_bytes=settings.kafka.max_event_bytes,
            horizon=Horizon(settings.engine.max_clock_skew),
        )
        self._file_partition: Partition = (topic, 0)
        self._partitions: dict[Partition, Partition] = {}
        self.stats = ReplayStats(rules=[RuleStats(rule=rule) for rule in rules.rules])
        self._matched = _MatchedFailures(rules) if timelines else None
        self._started = time.monotonic()

    async def feed_lines(self, lines: Sequence[bytes]) -> Fed:
        """The lines of an events file, in order: one partition, records without a key."""
        return await self._feed(lines, repeat(self._file_partition), repeat(None))

    async def feed_records(self, records: Sequence[Record]) -> Fed:
        """Records of a topic, in the order the daemon would have judged them."""
        values = [record.value or b"" for record in records]
        return await self._feed(values, self._partitions_of(records), [r.key for r in records])

    async def _feed(
        self,
        values: Sequence[bytes],
        partitions: Iterable[Partition],
        keys: Iterable[bytes | None],
    ) -> Fed:
        judged, invalid, failures = self._judged(values, partitions, keys)
        if self._matched is not None:
            self._matched.count(failures)
        failed: list[tuple[int, InvalidEvent]] = []
        audits = await self.pipeline.judge(
            judged, lambda index, error: failed.append((index, unexpected(error)))
        )
        if failed:
            invalid = sorted(invalid + failed, key=_first)
        self.stats.invalid += len(invalid)
        decisions = [audit.value for audit in audits]
        for value in decisions:
            self._record(_decode_decision(value))
        return Fed(decisions, invalid)

    def _judged(
        self,
        values: Sequence[bytes],
        partitions: Iterable[Partition],
        keys: Iterable[bytes | None],
    ) -> tuple[list[Judged[int]], list[tuple[int, InvalidEvent]], list[Event]]:
        """Decode a batch: what to judge (each at its own time), what is invalid, the failures."""
        stats = self.stats
        decode = self._decode
        judged: list[Judged[int]] = []
        invalid: list[tuple[int, InvalidEvent]] = []
        failures: list[Event] = []
        # Once per batch: the clock only bounds event times that lie in the future.
        wall = time.time()
        now = self._now
        first = math.inf if stats.first_event_at is None else stats.first_event_at
        last = -math.inf if stats.last_event_at is None else stats.last_event_at
        for value, tp, key in zip(values, partitions, keys, strict=False):
            try:
                event = decode(value)
            except InvalidEvent as error:
                # Every record before this one is judged or invalid: no enumerate() per record.
                invalid.append((len(judged) + len(invalid), error))
                continue
            except Exception as error:  # as in the daemon: one record's bug stops nothing
                invalid.append((len(judged) + len(invalid), unexpected(error)))
                continue
            at = event.occurred_at
            # Plain comparisons instead of min() and max(): this runs for every event.
            if at < first:
                first = at
            if at > last:
                last = at
            if event.type == LOGIN_FAILED:
                failures.append(event)
            # The newest event time so far, never ahead of the wall clock.
            at_most_now = at if at < wall else wall
            if at_most_now > now:
                now = at_most_now
            judged.append((tp, key, event, now, True, len(judged) + len(invalid)))
        self._now = now
        if judged:
            stats.first_event_at, stats.last_event_at = first, last
        return judged, invalid, failures

    def _partitions_of(self, records: Sequence[Record]) -> list[Partition]:
        # The same tuple for all records of a partition: the pipeline changes engine on identity.
        known = self._partitions
        partitions = ((record.topic, record.partition) for record in records)
        return [known.setdefault(partition, partition) for partition in partitions]

    def finish(self) -> ReplayStats:
        """The totals, with the events and firings as the pipeline's metrics counted them."""
        stats = self.stats
        stats.elapsed_seconds = time.monotonic() - self._started
        registry = self.metrics.registry
        for result in ("accepted", "ignored"):
            value = registry.get_sample_value("lockoutd_events_total", {"result": result})
            stats.events[result] = int(value or 0)
        stats.events["invalid"] = stats.invalid
        if self._matched is not None:
            stats.failures = Counter(self._matched.all)
        for rule_stats in stats.rules:
            fired = registry.get_sample_value(
                "lockoutd_rule_fired_total", {"rule": rule_stats.rule.name}
            )
            rule_stats.fired = int(fired or 0)
            if self._matched is not None:
                rule_stats.failures = self._matched.of(rule_stats.rule)
        return stats

    def _record(self, decision: Decision) -> None:
        for rule_stats in self.stats.rules:
            if rule_stats.rule.name == decision.rule:
                break
        else:  # pragma: no cover - the pipeline only decides for the rules it was given
            return
        outcome = decision.outcome.value if decision.outcome is not None else ""
        rule_stats.keys.add(decision.key)
        rule_stats.outcomes[outcome] += 1
        rule_stats.decisions_by_key[decision.key] += 1
        decided_at = _seconds(decision.decided_at)
        rule_stats.decided[(int(decided_at // BUCKET_SECONDS), outcome)] += 1
        if len(rule_stats.samples) < SAMPLE_DECISIONS:
            rule_stats.samples.append(decision)


def _first(item: tuple[int, InvalidEvent]) -> int:
    return item[0]


def _seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()
