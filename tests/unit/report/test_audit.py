"""Reporting finished decisions: the actions metric, one log line, and the audit record."""

from __future__ import annotations

import json

import msgspec
import pytest
from structlog.testing import capture_logs

from lockoutd.decide.decision import Decision, Outcome
from lockoutd.report.audit import DecisionReporter
from lockoutd.report.metrics import Metrics


def _decision(outcome: Outcome | None, **fields: object) -> Decision:
    decision = Decision(
        rule="password-bruteforce",
        key="42",
        user_id="42",
        org_id="7",
        action="lock",
        mode="enforce",
        outcome=outcome,
        count=5,
        window_seconds=600.0,
        first_event_at="2026-11-29T13:55:00.000Z",
        last_event_at="2026-11-29T14:03:07.000Z",
        decided_at="2026-11-29T14:03:07.100Z",
    )
    return msgspec.structs.replace(decision, **fields)


def _actions(metrics: Metrics, outcome: str) -> float | None:
    return metrics.registry.get_sample_value(
        "lockoutd_actions_total",
        {"rule": "password-bruteforce", "action": "lock", "outcome": outcome},
    )


def test_a_decision_is_counted_logged_and_published() -> None:
    """A lock is counted by outcome, logged once as ``user_locked`` and keyed by user id."""
    metrics = Metrics()
    with capture_logs() as logs:
        record = DecisionReporter("lockoutd.decisions", metrics=metrics).report(
            _decision(Outcome.LOCKED)
        )
    assert _actions(metrics, "locked") == 1
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [("user_locked", "info")]
    assert logs[0]["user_id"] == "42"
    assert record is not None
    assert (record.topic, record.key) == ("lockoutd.decisions", b"42")
    assert json.loads(record.value)["outcome"] == "locked"


def test_a_failure_is_logged_as_an_error_with_its_reason() -> None:
    """A failed action is an error log line that carries the reason."""
    with capture_logs() as logs:
        DecisionReporter(None, metrics=Metrics()).report(
            _decision(Outcome.FAILED, error="ZITADEL answered 503 10 times")
        )
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [("lock_failed", "error")]
    assert logs[0]["error"] == "ZITADEL answered 503 10 times"


def test_a_temporary_lock_logs_when_it_ends() -> None:
    with capture_logs() as logs:
        DecisionReporter(None, metrics=Metrics()).report(
            _decision(Outcome.LOCKED, unlock_at="2026-11-29T14:18:07.200Z")
        )
        DecisionReporter(None, metrics=Metrics()).report(_decision(Outcome.LOCKED))
    assert logs[0]["unlock_at"] == "2026-11-29T14:18:07.200Z"
    assert "unlock_at" not in logs[1]  # a permanent lock has no end to state


def test_a_decision_without_a_user_id_is_keyed_by_its_key() -> None:
    """A decision for a login name or an address is published under its rule key."""
    record = DecisionReporter("d", metrics=Metrics()).report(
        _decision(Outcome.UNKNOWN_USER, user_id=None, key="nobody@example.com")
    )
    assert record is not None
    assert record.key == b"nobody@example.com"


def test_without_a_decisions_topic_nothing_is_published() -> None:
    """With no audit topic the decision is still counted, and no record is returned."""
    metrics = Metrics()
    assert DecisionReporter(None, metrics=metrics).report(_decision(Outcome.SUPPRESSED)) is None
    assert _actions(metrics, "suppressed") == 1


def test_a_pending_decision_cannot_be_reported() -> None:
    """A lock that has not been carried out has no outcome to report."""
    with pytest.raises(ValueError, match="no outcome yet"):
        DecisionReporter(None, metrics=Metrics()).report(_decision(None))


@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_outcome_can_be_reported(outcome: Outcome) -> None:
    """Each outcome has a log event name and a metric series."""
    metrics = Metrics()
    with capture_logs() as logs:
        DecisionReporter(None, metrics=metrics).report(_decision(outcome))
    assert len(logs) == 1
    assert _actions(metrics, outcome.value) == 1
