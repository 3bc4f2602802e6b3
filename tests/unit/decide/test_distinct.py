"""Distinct windows (``distinct: FIELD``) as scenario tables of (minute, value, fires?); rules."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from lockoutd.decide import core
from lockoutd.decide.engine import Engine
from lockoutd.decode.event import LOGIN_SUCCEEDED, Event
from lockoutd.rules.model import Rule
from tests.unit.helpers import MINUTE, T0, event, rule, ruleset

NOW = T0 + 60 * MINUTE
IP = "203.0.113.7"


class Scenario(NamedTuple):
    threshold: int
    window_minutes: float
    steps: list[tuple[float, str, bool]]


def _run(scenario: Scenario) -> list[bool]:
    windows = core.DistinctWindows(scenario.threshold, scenario.window_minutes * MINUTE)
    return [windows.add(IP, minute * MINUTE, value) for minute, value, _ in scenario.steps]


# threshold 3, window 10m
#
# t (min)  0    1    2
#          a    b    c
#                    ^ fires: three distinct values inside (t-10m, t]
FIRES_ON_THE_NTH_DISTINCT_VALUE = Scenario(
    3, 10, [(0, "a", False), (1, "b", False), (2, "c", True)]
)

# threshold 3, window 10m
#
# t (min)  0    1    2    3    4    5
#          a    a    a    a    b    c
#               ^    ^    ^ the same value again: still one
#                                   ^ a, b, c: fires
REPEATS_OF_ONE_VALUE_COUNT_ONCE = Scenario(
    3,
    10,
    [
        (0, "a", False),
        (1, "a", False),
        (2, "a", False),
        (3, "a", False),
        (4, "b", False),
        (5, "c", True),
    ],
)

# threshold 3, window 10m
#
# t (min)  0    1    2    3    4
#          a    b    c    d    e
#                    ^ fires
#                         ^    ^ four, five: the same crossing, no firing
ONCE_PER_CROSSING = Scenario(
    3, 10, [(0, "a", False), (1, "b", False), (2, "c", True), (3, "d", False), (4, "e", False)]
)

# threshold 3, window 10m
#
# t (min)  0         5         9    12
#          a         b         a    c
#                              ^ a seen again: it now counts from 9m
#                                   ^ (2m, 12m] holds b (5m), a (9m), c (12m): fires
#          (had a counted from 0m, it would have left and only two would remain)
A_VALUE_COUNTS_FROM_ITS_NEWEST_SIGHTING = Scenario(
    3, 10, [(0, "a", False), (5, "b", False), (9, "a", False), (12, "c", True)]
)

# threshold 2, window 10m
#
# t (min)  0                  10                 19.99
#          a                  b                  c
#                             ^ (0m, 10m]: a is exactly 10m old and out
#                                                ^ b is 9.99m old: b and c fire
HALF_OPEN_BOUNDARY = Scenario(2, 10, [(0, "a", False), (10, "b", False), (19.99, "c", True)])

# threshold 3, window 10m
#
# t (min)  2         8    9
#          c(late)   a    b
#          ^ arrives last, but 2m lies inside (-1m, 9m]: it counts and fires
OUT_OF_ORDER_INSIDE_THE_WINDOW = Scenario(3, 10, [(8, "a", False), (9, "b", False), (2, "c", True)])

# threshold 3, window 10m
#
# t (min)  5           20   21   22
#          c(late)     a    b    c
#          ^ arrives after 21m, and 5m is before (11m, 21m]: adds nothing
#                                ^ c at 22m is the third value: fires
OLDER_THAN_THE_WINDOW_IS_IGNORED = Scenario(
    3, 10, [(20, "a", False), (21, "b", False), (5, "c", False), (22, "c", True)]
)

# threshold 3, window 10m
#
# t (min)  0  1  2                11.5 12  12.5
#          a  b  c                d    e   f
#                ^ fires
#                                 ^ (1.5m, 11.5m] holds c, d: below threshold, re-armed
#                                      ^ (2m, 12m] holds d, e
#                                          ^ d, e, f: a new crossing fires
REARMS_AFTER_FALLING_BELOW = Scenario(
    3,
    10,
    [
        (0, "a", False),
        (1, "b", False),
        (2, "c", True),
        (11.5, "d", False),
        (12, "e", False),
        (12.5, "f", True),
    ],
)


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(FIRES_ON_THE_NTH_DISTINCT_VALUE, id="fires on the nth distinct value"),
        pytest.param(REPEATS_OF_ONE_VALUE_COUNT_ONCE, id="repeats count once"),
        pytest.param(ONCE_PER_CROSSING, id="once per crossing"),
        pytest.param(A_VALUE_COUNTS_FROM_ITS_NEWEST_SIGHTING, id="newest sighting"),
        pytest.param(HALF_OPEN_BOUNDARY, id="half-open boundary"),
        pytest.param(OUT_OF_ORDER_INSIDE_THE_WINDOW, id="out of order inside the window"),
        pytest.param(OLDER_THAN_THE_WINDOW_IS_IGNORED, id="older than the window"),
        pytest.param(REARMS_AFTER_FALLING_BELOW, id="re-arms after falling below"),
    ],
)
def test_scenario(scenario: Scenario) -> None:
    """The distinct window fires on exactly the steps the scenario marks."""
    assert _run(scenario) == [fires for _, _, fires in scenario.steps]


def test_memory_is_bounded_by_the_threshold() -> None:
    """However many distinct values a key sees in the window, it keeps at most ``threshold``."""
    windows = core.DistinctWindows(20, 3600.0, keep_events=True)
    for second in range(1000):
        windows.add(IP, float(second), f"user-{second}", event(0, user_id=f"user-{second}"))
        assert len(windows.values(IP)) <= 20
        assert len(windows.contributors(IP)) <= 20
    assert windows.span(IP)[0] == 20
    assert set(windows.values(IP)) == {f"user-{n}" for n in range(980, 1000)}
    assert [e.user_id for e in windows.contributors(IP)] == [f"user-{n}" for n in range(980, 1000)]


def test_the_bound_keeps_the_most_recently_seen_values() -> None:
    """A value seen again stays among those kept while values seen longer ago are let go."""
    windows = core.DistinctWindows(3, 600.0)
    for minute, value in [(0, "a"), (1, "b"), (2, "c"), (3, "a"), (4, "d")]:
        windows.add(IP, minute * MINUTE, value)
    assert windows.values(IP) == {"c": 120.0, "a": 180.0, "d": 240.0}


def test_the_span_runs_from_the_oldest_sighting_kept_to_the_newest() -> None:
    """``span`` gives the count and the sightings that bound it, oldest and newest."""
    windows = core.DistinctWindows(5, 600.0)
    for minute, value in [(1, "a"), (4, "b"), (3, "c")]:
        windows.add(IP, minute * MINUTE, value)
    assert windows.span(IP) == (3, 60.0, 240.0)


def test_one_value_seen_again_keeps_its_newest_sighting() -> None:
    """A key that saw one value only counts one, from the newest time it was seen."""
    windows = core.DistinctWindows(2, 600.0, keep_events=True)
    first, later, older = event(1, event_id="1"), event(5, event_id="2"), event(3, event_id="3")
    for e in (first, later, older):
        assert not windows.add(IP, e.occurred_at, "a", e)
    assert windows.values(IP) == {"a": later.occurred_at}
    assert windows.contributors(IP) == (later,)
    assert windows.add(IP, T0 + 6 * MINUTE, "b", event(6))


def test_an_idle_distinct_key_is_forgotten() -> None:
    """A distinct key is forgotten once its newest sighting has left the window."""
    windows = core.DistinctWindows(3, 600.0)
    windows.add(IP, 0.0, "a")
    assert windows.evict_idle(599.0) == 0
    assert windows.evict_idle(600.0) == 1
    assert len(windows) == 0


def _spray_rule(**overrides: object) -> Rule:
    fields: dict[str, object] = {
        "match": {"type": "auth.login.failed"},
        "key": ["ip"],
        "distinct": "user_id",
        "threshold": 20,
        "window": "5m",
        "action": {"report": {}},
    }
    fields.update(overrides)
    return rule("spray-from-one-ip", **fields)


def _fired_at(engine: Engine, events: list[Event]) -> list[int]:
    """The positions (from 1) of the events that made a rule fire."""
    return [n for n, e in enumerate(events, 1) if engine.process(e, NOW)]


def test_twenty_users_from_one_address_are_a_spray() -> None:
    """Failures for twenty different users from one address fire once, on the twentieth."""
    engine = Engine(ruleset(_spray_rule()))
    events = [event(n / 10, user_id=f"user-{n}", ip="203.0.113.7") for n in range(25)]
    assert _fired_at(engine, events) == [20]


def test_twenty_failures_of_one_user_from_one_address_are_not() -> None:
    """Twenty failures for one user from one address count one user: no spray."""
    engine = Engine(ruleset(_spray_rule()))
    events = [event(n / 10, user_id="42", ip="203.0.113.7") for n in range(20)]
    assert _fired_at(engine, events) == []


def test_each_address_is_its_own_key() -> None:
    """Ten users from each of two addresses are two keys of ten, not one of twenty."""
    engine = Engine(ruleset(_spray_rule()))
    events = [
        event(n / 10, user_id=f"user-{n}", ip="203.0.113.7" if n % 2 else "198.51.100.9")
        for n in range(20)
    ]
    assert _fired_at(engine, events) == []
    assert dict(engine.tracked_keys()) == {"spray-from-one-ip": 2}


def test_a_spray_slower_than_the_window_does_not_fire() -> None:
    """Twenty users spread over more than five minutes never hold twenty in one window."""
    engine = Engine(ruleset(_spray_rule()))
    events = [event(n * 0.3, user_id=f"user-{n}", ip="203.0.113.7") for n in range(40)]
    assert _fired_at(engine, events) == []


def test_the_firing_of_a_distinct_rule_counts_values() -> None:
    """The firing's count is the number of distinct users, its span their sightings."""
    engine = Engine(ruleset(_spray_rule(threshold=3)))
    events = [
        event(1, user_id="a", ip="203.0.113.7"),
        event(2, user_id="a", ip="203.0.113.7"),
        event(3, user_id="b", ip="203.0.113.7"),
        event(4, user_id="c", ip="203.0.113.7"),
    ]
    firings = [f for e in events for f in engine.process(e, NOW)]
    [firing] = firings
    assert (firing.key_text, firing.count) == ("203.0.113.7", 3)
    assert (firing.first_event_at, firing.last_event_at) == (T0 + 2 * MINUTE, T0 + 4 * MINUTE)
    assert firing.contributors == ()


def test_login_names_stand_in_for_unresolved_users() -> None:
    """Failures known only by login name count each name as one user."""
    engine = Engine(ruleset(_spray_rule(threshold=3)))
    events = [
        event(0, user_id=None, login_name="alice@example.com", ip="203.0.113.7"),
        event(1, user_id=None, login_name="bob@example.com", ip="203.0.113.7"),
        event(2, user_id=None, login_name="alice@example.com", ip="203.0.113.7"),
        event(3, user_id=None, login_name="carol@example.com", ip="203.0.113.7"),
    ]
    assert _fired_at(engine, events) == [4]


def test_events_without_the_distinct_field_are_not_counted() -> None:
    """An event that lacks the counted field (here ``user_agent``) adds no value."""
    engine = Engine(ruleset(_spray_rule(distinct="user_agent", threshold=2)))
    events = [
        event(0, ip="203.0.113.7"),
        event(1, ip="203.0.113.7", user_agent="curl/8.5"),
        event(2, ip="203.0.113.7"),
        event(3, ip="203.0.113.7", user_agent="python-requests/2.32"),
    ]
    assert _fired_at(engine, events) == [4]


def test_a_success_for_the_key_clears_a_distinct_count() -> None:
    """With ``reset_on_success``, a success from the address forgets the users counted."""
    engine = Engine(ruleset(_spray_rule(threshold=3, reset_on_success=True)))
    events = [
        event(0, user_id="a", ip="203.0.113.7"),
        event(1, user_id="b", ip="203.0.113.7"),
        event(2, type=LOGIN_SUCCEEDED, reason=None, user_id="z", ip="203.0.113.7"),
        event(3, user_id="c", ip="203.0.113.7"),
        event(4, user_id="d", ip="203.0.113.7"),
        event(5, user_id="e", ip="203.0.113.7"),
    ]
    assert _fired_at(engine, events) == [6]


def test_idle_distinct_keys_are_evicted() -> None:
    """A spray key whose every sighting has left the window is forgotten by the sweep."""
    engine = Engine(ruleset(_spray_rule()))
    engine.process(event(0, user_id="a", ip="203.0.113.7"), NOW)
    engine.process(event(10, user_id="b", ip="198.51.100.9"), NOW)
    assert dict(engine.tracked_keys()) == {"spray-from-one-ip": 1}
