"""Crossings whose events were partly replayed (a partition's windows rebuilt after a restart or a
rebalance): a crossing acts when any of its events was not acted on before, in whatever order the
replayed and the new events arrive (README, Operations: "Windows survive restarts and
rebalances")."""

from __future__ import annotations

from lockoutd.decide.engine import Engine, Firing
from lockoutd.decode.event import LOGIN_SUCCEEDED, Event
from tests.unit.helpers import MINUTE, T0, event, rule, ruleset

NOW = T0 + 60 * MINUTE

REPLAYED, NEW = True, False


def _engine(**overrides: object) -> Engine:
    return Engine(ruleset(rule(**overrides)))  # three password failures per user in 10m


def _firings(engine: Engine, *feed: tuple[Event, bool]) -> list[tuple[int, Firing]]:
    """Each firing with the index of the event that made it."""
    return [
        (index, firing)
        for index, (e, replayed) in enumerate(feed)
        for firing in engine.process(e, NOW, replayed=replayed)
    ]


def test_replayed_then_new_fires_on_the_new_event_and_acts() -> None:
    [(index, firing)] = _firings(
        _engine(), (event(1), REPLAYED), (event(2), REPLAYED), (event(3), NEW)
    )
    assert index == 2
    assert not firing.replayed_only


def test_new_then_replayed_fires_on_a_replayed_event_and_still_acts() -> None:
    """The new events came first (the rewind came late): the crossing holds a new event."""
    [(index, firing)] = _firings(
        _engine(), (event(3), NEW), (event(1), REPLAYED), (event(2), REPLAYED)
    )
    assert index == 2
    assert not firing.replayed_only


def test_interleaved_events_act_when_any_is_new() -> None:
    [(index, firing)] = _firings(
        _engine(threshold=4),
        (event(1), REPLAYED),
        (event(4), NEW),
        (event(2), REPLAYED),
        (event(3), REPLAYED),
    )
    assert index == 3
    assert not firing.replayed_only


def test_a_crossing_made_of_replayed_events_alone_acted_before() -> None:
    """It fires (the window must know it fired) but says it is replayed only; a new event after
    it is part of the same crossing and does not fire again."""
    firings = _firings(
        _engine(), (event(1), REPLAYED), (event(2), REPLAYED), (event(3), REPLAYED), (event(4), NEW)
    )
    assert [(index, firing.replayed_only) for index, firing in firings] == [(2, True)]


def test_a_new_event_that_left_the_window_does_not_make_a_replayed_crossing_new() -> None:
    firings = _firings(
        _engine(),
        (event(0), NEW),
        (event(11), REPLAYED),
        (event(12), REPLAYED),
        (event(13), REPLAYED),
    )
    assert [(index, firing.replayed_only) for index, firing in firings] == [(3, True)]


def test_a_new_event_at_the_same_time_as_a_replayed_one_is_still_new() -> None:
    firings = _firings(_engine(), (event(1), REPLAYED), (event(2), REPLAYED), (event(2), NEW))
    assert [(index, firing.replayed_only) for index, firing in firings] == [(2, False)]


def test_a_replayed_success_and_new_failures_after_it() -> None:
    """A success resets the window whatever its origin; the crossing after it is new."""
    success = event(2, type=LOGIN_SUCCEEDED, reason=None)
    firings = _firings(
        _engine(reset_on_success=True),
        (event(1), REPLAYED),
        (success, REPLAYED),
        (event(3), REPLAYED),
        (event(4), NEW),
        (event(5), NEW),
    )
    assert [(index, firing.replayed_only) for index, firing in firings] == [(4, False)]


def test_distinct_counts_follow_the_same_rule() -> None:
    spray = {"key": ["ip"], "distinct": "user_id", "action": {"report": {}}, "match": {}}
    firings = _firings(
        _engine(**spray),
        (event(1, user_id="a", ip="192.0.2.1"), NEW),
        (event(2, user_id="b", ip="192.0.2.1"), REPLAYED),
        (event(3, user_id="c", ip="192.0.2.1"), REPLAYED),
    )
    assert [(index, firing.replayed_only) for index, firing in firings] == [(2, False)]
    replayed_only = _firings(
        _engine(**spray),
        (event(1, user_id="a", ip="192.0.2.2"), REPLAYED),
        (event(2, user_id="b", ip="192.0.2.2"), REPLAYED),
        (event(3, user_id="c", ip="192.0.2.2"), REPLAYED),
    )
    assert [(index, firing.replayed_only) for index, firing in replayed_only] == [(2, True)]


def test_replayed_times_are_forgotten_with_their_keys() -> None:
    """Nothing is kept for a replayed key once its events have all left the window."""
    engine = _engine()
    _firings(engine, (event(1), REPLAYED), (event(2), REPLAYED))
    engine.process(event(60, user_id="other"), NOW)
    engine.evict_idle()
    assert dict(engine.tracked_keys()) == {"password-bruteforce": 1}
    assert engine.replayed_keys() == 0
