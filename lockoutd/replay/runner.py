"""Feeding recorded events to the daemon's pipeline, and keeping what a summary needs."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from aiokafka import ConsumerRecord

from lockoutd.act.zitadel import LockOutcome, UnlockOutcome
from lockoutd.decide.decision import Decision, Outcome
from lockoutd.decode.event import LOGIN_FAILED, Event
from lockoutd.decode.formats import FormatName, decoder_for
from lockoutd.decode.native import InvalidEvent
from lockoutd.pipeline import Pipeline
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

    async def resolve_login_name(self, login_name: str, org_id: str | None) -> str | None:
        raise AssertionError("replay must not call ZITADEL (resolve a login name)")


@dataclass
class RuleStats:
    """What one rule did over the replay."""

    rule: Rule
    matcher: EventMatcher
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


class Replay:
    """The daemon's :class:`Pipeline` in shadow mode, fed one record at a time.

    Shadow mode is the daemon's ``engine.dry_run``: every lock decision is ``dry_run`` and the
    executor is never reached. The pipeline's clock is the newest event time seen so far (never
    ahead of the wall clock), so evidence that arrived late by more than ``engine.max_event_age``
    is ``stale`` in the replay exactly as it would have been live.
    """

    def __init__(
        self, settings: Settings, rules: RuleSet, *, topic: str, event_format: FormatName
    ) -> None:
        shadow = settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(
                    update={
                        "topics": [topic],
                        "formats": {topic: event_format},
                        "decisions_topic": _DECISIONS,
                        "dead_letter_topic": None,
                    }
                ),
                "engine": settings.engine.model_copy(update={"dry_run": True}),
            }
        )
        self.metrics = Metrics()
        self._now = 0.0
        self.pipeline = Pipeline(
            shadow, rules, store=ReplayStore(), metrics=self.metrics, clock=lambda: self._now
        )
        # The pipeline decodes the record again; the event time is needed before it runs.
        self._decode = decoder_for(event_format, max_bytes=settings.kafka.max_event_bytes)
        self.stats = ReplayStats(
            rules=[RuleStats(rule=rule, matcher=rule.matcher()) for rule in rules.rules]
        )
        self._started = time.monotonic()

    async def feed(self, record: Record) -> list[bytes]:
        """The decisions ``record`` leads to, each as the audit topic's JSON value.

        Raises :class:`InvalidEvent` for a record that is not an event; it is counted.
        """
        try:
            event = self._decode(record.value or b"")
        except InvalidEvent:
            self.stats.invalid += 1
            raise
        self._now = max(self._now, min(event.occurred_at, time.time()))
        self._count(event)
        outgoing = await self.pipeline.process([record])
        values = [r.value for r in outgoing if r.topic == _DECISIONS]
        for value in values:
            self._record(_decode_decision(value))
        return values

    def finish(self) -> ReplayStats:
        """The totals, with the events and firings as the pipeline's metrics counted them."""
        stats = self.stats
        stats.elapsed_seconds = time.monotonic() - self._started
        registry = self.metrics.registry
        for result in ("accepted", "ignored"):
            value = registry.get_sample_value("lockoutd_events_total", {"result": result})
            stats.events[result] = int(value or 0)
        stats.events["invalid"] = stats.invalid
        for rule_stats in stats.rules:
            fired = registry.get_sample_value(
                "lockoutd_rule_fired_total", {"rule": rule_stats.rule.name}
            )
            rule_stats.fired = int(fired or 0)
        return stats

    def _count(self, event: Event) -> None:
        stats = self.stats
        at = event.occurred_at
        if stats.first_event_at is None or at < stats.first_event_at:
            stats.first_event_at = at
        if stats.last_event_at is None or at > stats.last_event_at:
            stats.last_event_at = at
        if event.type != LOGIN_FAILED:
            return
        bucket = int(at // BUCKET_SECONDS)
        stats.failures[bucket] += 1
        for rule_stats in stats.rules:
            if rule_stats.matcher(event):
                rule_stats.failures[bucket] += 1

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


def _seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


def line_record(topic: str, number: int, value: bytes) -> Record:
    """A line of an events file as the record the pipeline expects (its offset is the line)."""
    return ConsumerRecord(
        topic=topic,
        partition=0,
        offset=number,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=value,
        checksum=None,
        serialized_key_size=-1,
        serialized_value_size=len(value),
        headers=(),
    )
