"""The series created at start are those that can happen: no ``report`` that ``locked``."""

from __future__ import annotations

from lockoutd.report.metrics import Metrics


def declared(metrics: Metrics) -> set[tuple[str, str, str]]:
    return {
        (s.labels["rule"], s.labels["action"], s.labels["outcome"])
        for family in metrics.registry.collect()
        if family.name == "lockoutd_actions"
        for s in family.samples
        if s.name == "lockoutd_actions_total"
    }


def test_each_action_declares_only_its_own_outcomes() -> None:
    metrics = Metrics()
    metrics.declare_rules([("spray", "report"), ("brute", "lock"), ("brute", "unlock")])
    series = declared(metrics)
    assert {outcome for rule, action, outcome in series if action == "report"} == {"reported"}
    lock = {outcome for rule, action, outcome in series if action == "lock"}
    assert "locked" in lock
    assert "suppressed" in lock
    assert "reported" not in lock
    assert "unlocked" not in lock
    unlock = {outcome for rule, action, outcome in series if action == "unlock"}
    assert unlock == {"unlocked", "not_locked", "not_ours", "unknown_user", "failed"}
