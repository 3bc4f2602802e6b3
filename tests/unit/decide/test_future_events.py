"""Events stamped later than the moment lockoutd reads them (README, "How a window counts").

Scenario tables: each step is ``(read at, stamped at, fires?)`` in minutes after the origin; the
event is read when the wall clock says ``read at`` and carries ``stamped at`` as its time. A step
whose stamp lies ahead of its reading is an event from its key's future.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockoutd.decide.engine import Engine
from lockoutd.decode.event import Event
from tests.unit.helpers import MINUTE, T0, event, rule, ruleset

YEAR_MINUTES = 365 * 24 * 60.0


class Scenario(NamedTuple):
    threshold: int
    window: str
    steps: list[tuple[float, float, bool]]


def _run(scenario: Scenario) -> list[bool]:
    engine = Engine(ruleset(rule(threshold=scenario.threshold, window=scenario.window)))
    return [
        bool(engine.process(event(stamped), T0 + read * MINUTE))
        for read, stamped, _ in scenario.steps
    ]


# threshold 5, window 10m; read when stamped, but for the second, stamped a year ahead
#
# read (min)   0    1    2    3    4
# stamped      0    +1y  2    3    4
#                   ^ counted at 1, when it was read
#                                  ^ fires: five within (-6m, 4m]
# Counted at its stamp, it would have made the window (1y - 10m, 1y]: the real failures
# before and after it would never have counted again.
A_YEAR_AHEAD_COUNTS_WHEN_READ = Scenario(
    5,
    "10m",
    [
        (0, 0, False),
        (1, YEAR_MINUTES, False),
        (2, 2, False),
        (3, 3, False),
        (4, 4, True),
    ],
)

# threshold 3, window 5m; a clock a few minutes fast, inside any skew a decoder would allow
#
# read (min)   0    1    1.5       3
# stamped      0    1    6.5       2.5
#                        ^ counted at 1.5: three within (-3.5m, 1.5m]: fires
# Counted at its stamp, its window (1.5m, 6.5m] would have pushed out the failures at 0 and 1,
# and the late one stamped 2.5 would have been the only other one in it.
A_FEW_MINUTES_AHEAD_CANNOT_PUSH_OUT_EARLIER_FAILURES = Scenario(
    3,
    "5m",
    [(0, 0, False), (1, 1, False), (1.5, 6.5, True), (3, 2.5, False)],
)

# threshold 3, window 10m; the wall clock moves on between the events
#
# read (min)   0      12     13     14
# stamped      20     12     13     14
#              ^ counted at 0; (-10m, 0] has left by 12
#                                   ^ fires: 12, 13, 14 (the one read at 0 is out of the window)
A_FUTURE_EVENT_LEAVES_WITH_THE_TIME_IT_WAS_READ = Scenario(
    3,
    "10m",
    [(0, 20, False), (12, 12, False), (13, 13, False), (14, 14, True)],
)


@pytest.mark.parametrize(
    "scenario",
    [
        A_YEAR_AHEAD_COUNTS_WHEN_READ,
        A_FEW_MINUTES_AHEAD_CANNOT_PUSH_OUT_EARLIER_FAILURES,
        A_FUTURE_EVENT_LEAVES_WITH_THE_TIME_IT_WAS_READ,
    ],
    ids=lambda s: str(s.steps),
)
def test_scenario(scenario: Scenario) -> None:
    assert _run(scenario) == [fires for _, _, fires in scenario.steps]


def test_fifty_real_failures_after_one_a_year_ahead_fire() -> None:
    """The reported case: one failure dated a year ahead, then real ones, read as they come."""
    engine = Engine(ruleset(rule(threshold=5)))
    fired = [bool(engine.process(event(YEAR_MINUTES, user_id="7"), T0))]
    for failure in range(1, 51):
        minutes = failure * 0.1  # one every six seconds
        fired.append(bool(engine.process(event(minutes, user_id="7"), T0 + minutes * MINUTE)))
    assert fired.index(True) == 4


def test_a_key_holding_a_future_event_is_forgotten_like_any_other() -> None:
    """Keys whose one event was stamped far ahead are idle once the window has passed since
    they were read, however far ahead they were stamped."""
    engine = Engine(ruleset(rule(window="10m")))
    for user in range(100):
        engine.process(event(YEAR_MINUTES, user_id=f"u{user}"), T0)
    assert dict(engine.tracked_keys()) == {"password-bruteforce": 100}
    engine.process(event(11, user_id="someone-else"), T0 + 11 * MINUTE)
    assert dict(engine.tracked_keys()) == {"password-bruteforce": 1}


def test_the_firing_tells_when_the_event_was_counted() -> None:
    """A firing made by a future event reports the time it was counted at, never the stamp."""
    engine = Engine(ruleset(rule(threshold=2)))
    engine.process(event(0), T0)
    (firing,) = engine.process(event(YEAR_MINUTES), T0 + MINUTE)
    assert (firing.first_event_at, firing.last_event_at) == (T0, T0 + MINUTE)
    assert firing.event.occurred_at == T0 + MINUTE


# Property: a stream that makes a key fire still makes it fire with one future-dated event added.
# The wall clock when an event is read is the newest time read before it, or the event's own if
# that is newer and not from the future: a stream read live, as replay reads it.

_RULES = {
    "events": rule(threshold=4, window="10m"),
    "distinct": rule(
        "spray", key=["ip"], distinct="user_id", threshold=3, window="5m", action={"report": {}}
    ),
}
_FUTURE = "from-the-future"


def _read(engine: Engine, stream: list[Event]) -> set[tuple[str, ...]]:
    """Feed ``stream`` as read live; return the keys that fired."""
    clock = T0
    fired: set[tuple[str, ...]] = set()
    for item in stream:
        if item.event_id != _FUTURE:
            clock = max(clock, item.occurred_at)
        fired.update(firing.key for firing in engine.process(item, clock))
    return fired


_minutes = st.floats(min_value=0, max_value=30, allow_nan=False).map(lambda m: round(m, 2))
_users = st.sampled_from(["1", "2", "3", "4"])
_ips = st.sampled_from(["192.0.2.1", "192.0.2.2"])


@st.composite
def _streams(draw: st.DrawFn) -> tuple[str, list[Event], list[Event]]:
    """A rule, a stream, and the stream with one event from the future added anywhere.

    Either several keys in time order, or one key in any order (its own late events)."""
    kind = draw(st.sampled_from(sorted(_RULES)))
    times = draw(st.lists(_minutes, min_size=1, max_size=30))
    if draw(st.booleans()):
        stream = [event(at, user_id=draw(_users), ip=draw(_ips)) for at in sorted(times)]
    else:
        stream = [event(at, user_id=draw(_users), ip="192.0.2.1") for at in times]
        if kind == "events":
            stream = [event(at, ip="192.0.2.1") for at in times]
    victim = draw(st.sampled_from(stream))
    ahead = draw(st.floats(min_value=1 / 60, max_value=10 * YEAR_MINUTES, allow_nan=False))
    stamped = max(times) + ahead
    if kind == "events":
        future = event(stamped, user_id=victim.user_id, event_id=_FUTURE)
    else:
        future = event(stamped, user_id=draw(_users), ip=victim.ip, event_id=_FUTURE)
    position = draw(st.integers(min_value=0, max_value=len(stream)))
    return kind, stream, [*stream[:position], future, *stream[position:]]


@settings(max_examples=400, deadline=None)
@given(_streams())
def test_one_future_event_never_stops_a_key_from_firing(
    case: tuple[str, list[Event], list[Event]],
) -> None:
    kind, stream, with_future = case
    fired = _read(Engine(ruleset(_RULES[kind])), stream)
    assert fired <= _read(Engine(ruleset(_RULES[kind])), with_future)
