"""Sliding event-time windows, as scenario tables: each step is (minute, event_id, fires?)."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from lockoutd.decide import core
from lockoutd.decide.windows import EventWindows

MINUTE = 60.0


class Scenario(NamedTuple):
    threshold: int
    window_minutes: float
    steps: list[tuple[float, str | None, bool]]


def _run(scenario: Scenario) -> tuple[EventWindows, list[bool]]:
    windows = core.EventWindows(scenario.threshold, scenario.window_minutes * MINUTE)
    fired = [windows.add("42", minute * MINUTE, event_id) for minute, event_id, _ in scenario.steps]
    return windows, fired


# threshold 5, window 10m
#
# t (min)  0    2    4    6    8
#          x    x    x    x    x
#                              ^ fires: the fifth inside (t-10m, t]
FIRES_AT_THRESHOLD = Scenario(
    5,
    10,
    [(0, None, False), (2, None, False), (4, None, False), (6, None, False), (8, None, True)],
)

# threshold 5, window 10m
#
# t (min)  0    1    2    3    4    5    6
#          x    x    x    x    x    x    x
#                              ^ fires
#                                   ^    ^ a sixth and a seventh: the same crossing, no firing
ONCE_PER_CROSSING = Scenario(
    5,
    10,
    [
        (0, None, False),
        (1, None, False),
        (2, None, False),
        (3, None, False),
        (4, None, True),
        (5, None, False),
        (6, None, False),
    ],
)

# threshold 3, window 10m
#
# t (min)  0  1  2                11.5 12  12.5
#          x  x  x                x    x   x
#                ^ fires
#                                 ^ (1.5m, 11.5m] holds two: below threshold, re-armed
#                                      ^ (2m, 12m] holds two: the event at 2m is out
#                                          ^ three again: a new crossing fires
REARMS_AFTER_FALLING_BELOW = Scenario(
    3,
    10,
    [
        (0, None, False),
        (1, None, False),
        (2, None, True),
        (11.5, None, False),
        (12, None, False),
        (12.5, None, True),
    ],
)

# threshold 3, window 10m
#
# t (min)  0  1  2                      30 31 32
#          x  x  x                      x  x  x
#                ^ fires                ^ the window holds one: re-armed
#                                             ^ fires again
FIRES_AGAIN_AFTER_A_QUIET_SPELL = Scenario(
    3,
    10,
    [
        (0, None, False),
        (1, None, False),
        (2, None, True),
        (30, None, False),
        (31, None, False),
        (32, None, True),
    ],
)

# threshold 5, window 10m
#
# t (min)  0     3     6     9     12    15    18
#          x     x     x     x     x     x     x
#                                  ^ (2m, 12m] holds four; never five in any 10 minutes
SPREAD_WIDER_THAN_THE_WINDOW = Scenario(
    5,
    10,
    [(minute, None, False) for minute in (0, 3, 6, 9, 12, 15, 18)],
)

# threshold 2, window 10m
#
# t (min)  0                  10                 19.99
#          x                  x                  x
#                             ^ (0m, 10m]: the event at 0m is exactly 10m old and out
#                                                ^ 9.99m after the previous one: fires
HALF_OPEN_BOUNDARY = Scenario(
    2,
    10,
    [(0, None, False), (10, None, False), (19.99, None, True)],
)

# threshold 3, window 10m
#
# t (min)  2         8    9
#          x(late)   x    x
#                         ^ the newest so far
#          ^ arrives last, but 2m lies inside (-1m, 9m]: it counts and fires
OUT_OF_ORDER_INSIDE_THE_WINDOW = Scenario(
    3,
    10,
    [(8, None, False), (9, None, False), (2, None, True)],
)

# threshold 3, window 10m
#
# t (min)  5           20   21   22
#          x(late)     x    x    x
#          ^ arrives after 21m, and 5m is before (11m, 21m]: adds nothing
#                                ^ the third that counts fires
OLDER_THAN_THE_WINDOW_IS_IGNORED = Scenario(
    3,
    10,
    [(20, None, False), (21, None, False), (5, None, False), (22, None, True)],
)

# threshold 3, window 10m
#
# t (min)  0    0    1    2
#          a    a    b    c
#               ^ a again (a producer's retry): counted once
#                         ^ a, b, c: three distinct events fire
REPEATED_EVENT_ID_COUNTS_ONCE = Scenario(
    3,
    10,
    [(0, "a", False), (0, "a", False), (1, "b", False), (2, "c", True)],
)

# threshold 3, window 10m
#
# t (min)  0    1    2
#          -    -    -
#                    ^ events without an id are all distinct
EVENTS_WITHOUT_ID_ARE_DISTINCT = Scenario(
    3,
    10,
    [(0, None, False), (0, None, False), (0, None, True)],
)


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(FIRES_AT_THRESHOLD, id="fires exactly at the threshold"),
        pytest.param(ONCE_PER_CROSSING, id="once per crossing"),
        pytest.param(REARMS_AFTER_FALLING_BELOW, id="re-arms after falling below"),
        pytest.param(FIRES_AGAIN_AFTER_A_QUIET_SPELL, id="fires again after a quiet spell"),
        pytest.param(SPREAD_WIDER_THAN_THE_WINDOW, id="spread wider than the window"),
        pytest.param(HALF_OPEN_BOUNDARY, id="half-open boundary"),
        pytest.param(OUT_OF_ORDER_INSIDE_THE_WINDOW, id="out of order inside the window"),
        pytest.param(OLDER_THAN_THE_WINDOW_IS_IGNORED, id="older than the window"),
        pytest.param(REPEATED_EVENT_ID_COUNTS_ONCE, id="repeated event id"),
        pytest.param(EVENTS_WITHOUT_ID_ARE_DISTINCT, id="events without id"),
    ],
)
def test_scenario(scenario: Scenario) -> None:
    """The window fires on exactly the steps the scenario marks."""
    _, fired = _run(scenario)
    assert fired == [fires for _, _, fires in scenario.steps]


def test_memory_is_bounded_by_the_threshold() -> None:
    """However many events a key gets inside the window, it keeps at most ``threshold`` times."""
    windows = core.EventWindows(5, 3600.0)
    for second in range(1000):
        windows.add("42", float(second), None)
        assert len(windows.times("42")) <= 5
    assert windows.times("42") == [995.0, 996.0, 997.0, 998.0, 999.0]
    assert windows.span("42") == (5, 995.0, 999.0)


def test_the_kept_times_are_sorted_whatever_the_arrival_order() -> None:
    """Out-of-order events are kept in event-time order, so the oldest is always first."""
    windows = core.EventWindows(10, 600.0)
    for minute in (5, 3, 9, 1, 7):
        windows.add("42", minute * MINUTE, None)
    assert windows.times("42") == [60.0, 180.0, 300.0, 420.0, 540.0]


@pytest.mark.parametrize(
    ("watermark_minutes", "idle"),
    [(1, False), (10.5, False), (11, True), (12, True)],
)
def test_a_key_is_forgotten_once_its_newest_time_has_left(
    watermark_minutes: float, idle: bool
) -> None:
    """A key is idle when even its newest event is outside the window ending at the watermark."""
    windows = core.EventWindows(3, 600.0)
    windows.add("42", 0 * MINUTE, None)
    windows.add("42", 1 * MINUTE, None)
    assert windows.evict_idle(watermark_minutes * MINUTE) == (1 if idle else 0)
    assert len(windows) == (0 if idle else 1)


def test_a_key_counted_again_is_kept_until_its_new_newest_has_left() -> None:
    """A sweep that finds a key in use keeps it, and forgets it once its last event has left."""
    # t (min)  0    9              19.5   20
    #          x    x
    #               ^ newest: the key is idle from 19m on
    #                              ^ a sweep at 19.5m forgets it (a sweep at 10m kept it)
    windows = core.EventWindows(3, 600.0)
    windows.add("42", 0 * MINUTE, None)
    windows.add("42", 9 * MINUTE, None)
    assert windows.evict_idle(10 * MINUTE) == 0
    assert windows.evict_idle(18.5 * MINUTE) == 0
    assert windows.evict_idle(19.5 * MINUTE) == 1
    assert len(windows) == 0


def test_a_key_reset_and_counted_again_is_forgotten_once() -> None:
    """A key forgotten by a success and counted again is swept like any other key."""
    windows = core.EventWindows(3, 600.0)
    windows.add("42", 0 * MINUTE, None)
    windows.forget("42")
    windows.add("42", 2 * MINUTE, None)
    windows.add("43", 2 * MINUTE, None)
    assert windows.evict_idle(11 * MINUTE) == 0
    assert windows.evict_idle(12 * MINUTE) == 2
    assert len(windows) == 0
    assert windows.evict_idle(30 * MINUTE) == 0


def test_a_window_that_fills_up_fires_and_rearms_as_a_small_one() -> None:
    """A key keeps firing once per crossing across the change from packed to full storage."""
    # threshold 2, window 10m: fires at 1m (full), re-arms at 30m (one left), fires at 31m
    windows = core.EventWindows(2, 600.0)
    fired = [windows.add("42", minute * MINUTE, None) for minute in (0, 1, 2, 30, 31, 32)]
    assert fired == [False, True, False, False, True, False]
