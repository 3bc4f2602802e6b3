"""Reporting decisions: one info log line, the metrics, and a record for the audit topic."""

from __future__ import annotations

import structlog

from lockoutd.decide.decision import Decision, Outcome, encode_decision
from lockoutd.report.metrics import Metrics
from lockoutd.source.kafka import OutgoingRecord

log = structlog.get_logger(__name__)

# Past-tense log event names, one per outcome, so that a log search reads like the audit trail.
_LOG_EVENTS = {
    Outcome.LOCKED: "user_locked",
    Outcome.ALREADY_LOCKED: "user_already_locked",
    Outcome.NOT_LOCKABLE: "user_not_lockable",
    Outcome.UNLOCKED: "user_unlocked",
    Outcome.NOT_LOCKED: "user_not_locked",
    Outcome.DRY_RUN: "lock_dry_run",
    Outcome.SUPPRESSED: "lock_suppressed",
    Outcome.ALLOWLISTED: "lock_allowlisted",
    Outcome.STALE: "lock_stale",
    Outcome.UNKNOWN_USER: "user_unknown",
    Outcome.FAILED: "lock_failed",
    Outcome.REPORTED: "rule_reported",
    Outcome.NOT_OURS: "unlock_not_ours",
}


class DecisionReporter:
    """Counts, logs and prepares the audit record of every finished decision."""

    def __init__(self, decisions_topic: str | None, *, metrics: Metrics) -> None:
        self._topic = decisions_topic
        self._metrics = metrics

    def report(self, decision: Decision) -> OutgoingRecord | None:
        """Record ``decision``; return the record for the decisions topic, if one is configured."""
        outcome = decision.outcome
        if outcome is None:
            raise ValueError(f"decision for rule {decision.rule} has no outcome yet")
        self._metrics.actions.labels(
            rule=decision.rule, action=decision.action, outcome=outcome.value
        ).inc()
        # Locks that did not happen although a rule demanded them are what operators must see.
        level = log.error if outcome in (Outcome.FAILED, Outcome.SUPPRESSED) else log.info
        level(
            _LOG_EVENTS[outcome],
            rule=decision.rule,
            key=decision.key,
            user_id=decision.user_id,
            org_id=decision.org_id,
            action=decision.action,
            mode=decision.mode,
            outcome=outcome.value,
            count=decision.count,
            error=decision.error,
            # A temporary lock says when it ends; a permanent one has nothing to say here.
            **({"unlock_at": decision.unlock_at} if decision.unlock_at is not None else {}),
        )
        if self._topic is None:
            return None
        key = (decision.user_id or decision.key).encode()
        return OutgoingRecord(self._topic, encode_decision(decision), key=key)
