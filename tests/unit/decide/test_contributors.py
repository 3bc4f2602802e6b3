"""``targets: contributors``: a rule keyed on something else locks every user it counted."""

from __future__ import annotations

from typing import Any

from lockoutd.act.executor import LockExecutor
from lockoutd.decide import core
from lockoutd.decide.decision import Decision, Outcome, decide
from lockoutd.decide.engine import Engine, Firing
from lockoutd.decode.event import Event
from lockoutd.report.metrics import Metrics
from lockoutd.rules.model import Rule, RuleSet
from tests.unit.helpers import MINUTE, T0, FakeUserStore, event, rule, ruleset

NOW = T0 + 20 * MINUTE
HOUR = 3600.0
IP = "203.0.113.7"


def _address_rule(**overrides: Any) -> Rule:
    """Five failures from one address in ten minutes lock every user they were for."""
    fields: dict[str, Any] = {
        "match": {"type": "auth.login.failed"},
        "key": ["ip"],
        "threshold": 5,
        "window": "10m",
        "action": {"lock": {"targets": "contributors"}},
    }
    fields.update(overrides)
    return rule("address-bruteforce", **fields)


def _fire(rules: RuleSet, events: list[Event]) -> Firing:
    engine = Engine(rules)
    [firing] = [f for e in events for f in engine.process(e, NOW)]
    return firing


def _decide(
    rules: RuleSet, firing: Firing, *, now: float = NOW, dry_run: bool = False
) -> list[Decision]:
    return decide(firing, rules, now=now, max_event_age=HOUR, dry_run=dry_run)


def _from_ip(*users: str, start: float = 0.0) -> list[Event]:
    return [event(start + n, user_id=user, ip=IP, org_id="7") for n, user in enumerate(users)]


def test_the_firing_carries_the_counted_events() -> None:
    """A contributors rule's firing holds the events in its window, oldest first."""
    events = _from_ip("a", "b", "a", "c", "b")
    firing = _fire(ruleset(_address_rule()), events)
    assert firing.contributors == tuple(events)


def test_the_windows_keep_who_and_when_of_an_event_not_its_free_text() -> None:
    """A window keeps its contributors' events for its whole length: without their user agent
    and extra fields, which only the record's size bounds. The decisions need only the user."""
    agent, payload = "A" * 512, "p" * 300_000
    events = [
        event(n, user_id=u, ip=IP, org_id="7", user_agent=agent, payload=payload)
        for n, u in enumerate("abcde")
    ]
    rules = ruleset(_address_rule())
    firing = _fire(rules, events)
    assert firing.contributors == tuple(e.as_evidence() for e in events)
    assert all(c.extra == {} and c.user_agent is None for c in firing.contributors)
    assert [(c.user_id, c.org_id, c.ip, c.occurred_at) for c in firing.contributors] == [
        (e.user_id, e.org_id, e.ip, e.occurred_at) for e in events
    ]
    assert firing.event == events[-1]  # the event that crossed, whole
    assert [d.user_id for d in _decide(rules, firing)] == list("abcde")


def test_only_events_still_in_the_window_contribute() -> None:
    """A failure that has left the window no longer names a contributor."""
    # threshold 3, window 10m
    #
    # t (min)  0        11   12   13
    #          a        b    c    d
    #                             ^ fires: (3m, 13m] holds b, c, d; a has left
    events = [
        event(0, user_id="a", ip=IP),
        event(11, user_id="b", ip=IP),
        event(12, user_id="c", ip=IP),
        event(13, user_id="d", ip=IP),
    ]
    firing = _fire(ruleset(_address_rule(threshold=3)), events)
    assert [e.user_id for e in firing.contributors] == ["b", "c", "d"]


def test_a_repeated_event_contributes_once() -> None:
    """A producer's retry (the same ``event_id``) is neither counted nor kept twice."""
    events = [
        event(0, user_id="a", ip=IP, event_id="e1"),
        event(0, user_id="a", ip=IP, event_id="e1"),
        event(1, user_id="b", ip=IP, event_id="e2"),
        event(2, user_id="c", ip=IP, event_id="e3"),
    ]
    firing = _fire(ruleset(_address_rule(threshold=3)), events)
    assert [e.event_id for e in firing.contributors] == ["e1", "e2", "e3"]


def test_kept_events_are_bounded_like_the_times() -> None:
    """A window keeps at most ``threshold`` events, and they stay aligned with their times."""
    windows = core.EventWindows(5, HOUR, keep_events=True)
    events = [event(n / 60, user_id=f"user-{n}") for n in range(100)]
    for e in reversed(events):  # out of order: every insert lands in the middle or front
        windows.add(IP, e.occurred_at, e.event_id, e)
        kept = windows.contributors(IP)
        assert [e.occurred_at for e in kept] == windows.times(IP)
    assert len(windows.contributors(IP)) == 5


def test_a_distinct_window_keeps_each_values_latest_event() -> None:
    """A user who fails again contributes the newer failure, once."""
    windows = core.DistinctWindows(3, HOUR, keep_events=True)
    events = [
        event(0, user_id="a", event_id="a-first"),
        event(1, user_id="b", event_id="b"),
        event(2, user_id="a", event_id="a-again"),
    ]
    for e in events:
        assert not windows.add(IP, e.occurred_at, e.user_id or "", e)
    last = event(3, user_id="c", event_id="c")
    assert windows.add(IP, last.occurred_at, "c", last)
    kept = [e.event_id for e in windows.contributors(IP)]
    assert sorted(kept) == ["a-again", "b", "c"]


def test_other_rules_keep_no_events() -> None:
    """A rule that locks the key's user keeps times only, and its firing lists nobody."""
    firing = _fire(ruleset(rule()), [event(0), event(1), event(2)])
    assert firing.contributors == ()


def test_each_distinct_user_gets_one_decision() -> None:
    """Five failures for three users give three pending decisions, in order of first failure."""
    rules = ruleset(_address_rule())
    decisions = _decide(rules, _fire(rules, _from_ip("a", "b", "a", "c", "b")))
    assert [(d.user_id, d.outcome) for d in decisions] == [("a", None), ("b", None), ("c", None)]
    assert {(d.key, d.action, d.count, d.org_id) for d in decisions} == {(IP, "lock", 5, "7")}


def test_a_spray_locks_every_user_sprayed() -> None:
    """A distinct rule that locks contributors decides once for each of the twenty users."""
    spray = _address_rule(distinct="user_id", threshold=20, window="5m")
    rules = ruleset(spray)
    users = [f"user-{n}" for n in range(20)]
    events = [event(n / 10, user_id=user, ip=IP) for n, user in enumerate(users)]
    decisions = _decide(rules, _fire(rules, events))
    assert [d.user_id for d in decisions] == users
    assert {d.count for d in decisions} == {20}


def test_an_allowlisted_contributor_is_allowlisted() -> None:
    """A contributor on the global allowlist gets ``allowlisted``; the others are still locked."""
    rules = ruleset(_address_rule(), users=["b"])
    decisions = _decide(rules, _fire(rules, _from_ip("a", "b", "a", "c", "b")))
    assert [(d.user_id, d.outcome) for d in decisions] == [
        ("a", None),
        ("b", Outcome.ALLOWLISTED),
        ("c", None),
    ]


def test_a_contributor_allowlisted_by_the_rule_is_allowlisted() -> None:
    """The rule's own allowlist spares a contributor, by id or by login name."""
    rules = ruleset(_address_rule(allowlist={"users": ["c", "Bob@Example.com"]}))
    events = [
        *_from_ip("a", "c", "a", "c"),
        event(4, user_id=None, login_name="bob@example.com", ip=IP),
    ]
    decisions = _decide(rules, _fire(rules, events))
    assert [(d.user_id, d.login_name, d.outcome) for d in decisions] == [
        ("a", None, None),
        ("c", None, Outcome.ALLOWLISTED),
        (None, "bob@example.com", Outcome.ALLOWLISTED),
    ]


def test_global_dry_run_decides_every_contributor_as_dry_run() -> None:
    """``engine.dry_run`` turns every contributor's lock into a ``dry_run`` decision."""
    rules = ruleset(_address_rule())
    decisions = _decide(rules, _fire(rules, _from_ip("a", "b", "c", "d", "e")), dry_run=True)
    assert {(d.mode, d.outcome) for d in decisions} == {("dry-run", Outcome.DRY_RUN)}
    assert len(decisions) == 5


def test_old_evidence_locks_no_contributor() -> None:
    """A firing on evidence older than ``max_event_age`` is ``stale`` for every contributor."""
    rules = ruleset(_address_rule())
    firing = _fire(rules, _from_ip("a", "b", "c", "d", "e"))
    decisions = _decide(rules, firing, now=firing.last_event_at + 2 * HOUR)
    assert {d.outcome for d in decisions} == {Outcome.STALE}


async def test_every_contributor_is_locked() -> None:
    """The executor carries out each contributor's decision: three users, three locks."""
    rules = ruleset(_address_rule(), users=["b"])
    store = FakeUserStore()
    executor = LockExecutor(store, max_locks_per_minute=60, metrics=Metrics(), clock=lambda: NOW)
    decisions = _decide(rules, _fire(rules, _from_ip("a", "b", "c", "d", "a")))
    done = [
        await executor.carry_out(d, event_time=NOW) if d.outcome is None else d for d in decisions
    ]
    assert [(d.user_id, d.outcome) for d in done] == [
        ("a", Outcome.LOCKED),
        ("b", Outcome.ALLOWLISTED),
        ("c", Outcome.LOCKED),
        ("d", Outcome.LOCKED),
    ]
    assert store.calls_of("lock") == ["a", "c", "d"]
