"""Decisions (README, "Decisions"): the outcome known before acting, and the published JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lockoutd.decide.decision import Decision, Outcome, decide, encode_decision, rfc3339
from lockoutd.decide.engine import Engine, Firing
from lockoutd.decode.event import Event
from lockoutd.rules.model import Rule, RuleSet
from tests.unit.helpers import MINUTE, T0, event, rule, ruleset

HOUR = 3600.0

DOCUMENTED_FIELDS = {
    "rule",
    "key",
    "user_id",
    "org_id",
    "action",
    "mode",
    "outcome",
    "count",
    "window_seconds",
    "first_event_at",
    "last_event_at",
    "decided_at",
    "unlock_at",
}
EXTRA_FIELDS = {"login_name", "error"}


def _firing(the_rule: Rule, rules: RuleSet, **fields: Any) -> Firing:
    """The firing the rule's threshold of failures (one a minute, from T0) produces."""
    engine = Engine(rules)
    events: list[Event] = [event(minute, **fields) for minute in range(the_rule.threshold)]
    firings = [f for e in events for f in engine.process(e, T0 + HOUR)]
    assert len(firings) == 1
    return firings[0]


def _decide(
    the_rule: Rule | None = None,
    *,
    users: list[str] | None = None,
    now: float | None = None,
    max_event_age: float = HOUR,
    **fields: Any,
) -> Decision:
    the_rule = the_rule or rule()
    rules = ruleset(the_rule, users=users)
    firing = _firing(the_rule, rules, **fields)
    at = now if now is not None else firing.last_event_at + 5
    [decision] = decide(firing, rules, now=at, max_event_age=max_event_age)
    return decision


def test_an_enforce_lock_is_left_pending() -> None:
    """A lock in enforce mode has no outcome yet: the executor must carry it out."""
    decision = _decide(org_id="7")
    assert decision.outcome is None
    assert (decision.rule, decision.key, decision.user_id, decision.org_id) == (
        "password-bruteforce",
        "42",
        "42",
        "7",
    )
    assert (decision.action, decision.mode, decision.count) == ("lock", "enforce", 3)
    assert decision.window_seconds == 600.0


def test_a_report_action_is_reported() -> None:
    """A rule whose action is report is decided at once, even for an allowlisted user."""
    decision = _decide(rule(action={"report": {}}), users=["42"])
    assert (decision.action, decision.outcome) == ("report", Outcome.REPORTED)


@pytest.mark.parametrize(
    ("allowlist", "fields"),
    [
        pytest.param(["42"], {}, id="by user id"),
        pytest.param(
            ["Alice@Example.com"],
            {"user_id": None, "login_name": "alice@example.com"},
            id="by login name, case-insensitive",
        ),
        pytest.param(
            ["  BreakGlass@acme.example "],
            {"user_id": None, "login_name": "breakglass@acme.example"},
            id="an entry written with spaces and capitals",
        ),
    ],
)
def test_an_allowlisted_user_is_never_locked(allowlist: list[str], fields: dict[str, Any]) -> None:
    """A user in the allowlist gets the outcome ``allowlisted`` instead of a lock."""
    assert _decide(users=allowlist, **fields).outcome is Outcome.ALLOWLISTED


def test_a_user_not_in_the_allowlist_is_not_allowlisted() -> None:
    """Another user's entry in the allowlist does not protect this one."""
    assert _decide(users=["43", "bob@example.com"]).outcome is None


def test_an_allowlisted_login_name_beside_a_user_id_is_left_to_zitadels_word() -> None:
    """The lock acts on the id; a login name beside it is the event's claim, which an attacker
    writes at will. The decision goes to the executor, which spares the user only when ZITADEL
    names it so."""
    assert _decide(users=["alice@example.com"], login_name="alice@example.com").outcome is None


def test_old_evidence_is_stale() -> None:
    """When the newest failure is older than ``max_event_age``, the decision is ``stale``."""
    last_event_at = T0 + 2 * MINUTE
    assert _decide(now=last_event_at + HOUR + 1).outcome is Outcome.STALE
    assert _decide(now=last_event_at + HOUR).outcome is None


def test_a_dry_run_rule_decides_but_calls_nothing() -> None:
    """A rule in dry-run mode gets the outcome ``dry_run``."""
    decision = _decide(rule(mode="dry-run"))
    assert (decision.mode, decision.outcome) == ("dry-run", Outcome.DRY_RUN)


def test_times_are_rfc3339_in_utc_with_a_z() -> None:
    """First, last and decision times are RFC 3339 UTC times ending in ``Z``."""
    decision = _decide(now=T0 + 2 * MINUTE + 0.25)
    assert decision.first_event_at == "2023-11-14T22:13:20.000Z"
    assert decision.last_event_at == "2023-11-14T22:15:20.000Z"
    assert decision.decided_at == "2023-11-14T22:15:20.250Z"


def test_rfc3339_keeps_milliseconds() -> None:
    """Sub-second times keep their milliseconds."""
    assert rfc3339(1_795_960_987.123) == "2026-11-29T14:03:07.123Z"


def test_the_json_has_exactly_the_spec_fields() -> None:
    """The encoded decision has the README's decision fields plus ``login_name`` and ``error``."""
    document = json.loads(encode_decision(_decide(rule(mode="dry-run"), org_id="7")))
    assert set(document) == DOCUMENTED_FIELDS | EXTRA_FIELDS
    assert document == {
        "rule": "password-bruteforce",
        "key": "42",
        "user_id": "42",
        "org_id": "7",
        "action": "lock",
        "mode": "dry-run",
        "outcome": "dry_run",
        "count": 3,
        "window_seconds": 600.0,
        "first_event_at": "2023-11-14T22:13:20.000Z",
        "last_event_at": "2023-11-14T22:15:20.000Z",
        "decided_at": "2023-11-14T22:15:25.000Z",
        "unlock_at": None,
        "login_name": None,
        "error": None,
    }


def test_a_login_name_decision_carries_the_name() -> None:
    """For a failure known only by login name, the user id is empty, the name is given, and the
    key says it is a login name."""
    decision = _decide(user_id=None, login_name="alice@example.com")
    document = json.loads(encode_decision(decision))
    assert (document["user_id"], document["login_name"], document["key"]) == (
        None,
        "alice@example.com",
        "login_name:alice@example.com",
    )
