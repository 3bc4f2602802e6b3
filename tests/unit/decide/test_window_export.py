"""Windows leave a partition as plain per-key records and come back equal (README, Operations:
"Windows survive restarts and rebalances"): what a restored window counts next is what the
original would have counted."""

from __future__ import annotations

import random

import pytest

from lockoutd.decide.windows import DistinctWindows, EventWindows
from lockoutd.decode.event import Event
from tests.unit.helpers import MINUTE, T0, event


def _event(user: str, at: float, **fields: str) -> Event:
    return event((at - T0) / MINUTE, user_id=user, **fields)


def _copy_events(windows: EventWindows) -> EventWindows:
    copy = EventWindows(windows.threshold, windows.window, keep_events=True)
    copy.restore(windows.export())
    return copy


def _copy_distinct(windows: DistinctWindows) -> DistinctWindows:
    copy = DistinctWindows(windows.threshold, windows.window, keep_events=True)
    copy.restore(windows.export())
    return copy


@pytest.mark.parametrize("threshold", [1, 3, 5, 40])
def test_event_windows_come_back_equal_and_count_on_alike(threshold: int) -> None:
    """Packed, full and spilled windows, late events and repeated event ids: after a round trip
    every key holds the same times and contributors, and the next events fire alike."""
    rng = random.Random(threshold)  # noqa: S311 - a reproducible test stream, no secret
    original = EventWindows(threshold, 10 * MINUTE, keep_events=True)
    users = [f"u{n}" for n in range(30)]
    for n in range(600):
        user = rng.choice(users)
        at = T0 + n * 2 - rng.choice([0, 0, 0, 30, 400])  # some late events
        ident = f"e{rng.randrange(400)}"  # some repeats
        original.add(user, at, ident, _event(user, at, event_id=ident))
    copy = _copy_events(original)
    assert set(copy.by_key) == set(original.by_key)
    for user in original.by_key:
        assert copy.times(user) == original.times(user)
        assert copy.contributors(user) == original.contributors(user)
    for n in range(600, 900):
        user = rng.choice(users)
        at = T0 + n * 2 - rng.choice([0, 0, 30])
        ident = f"e{rng.randrange(400)}"
        seen = _event(user, at, event_id=ident)
        assert copy.add(user, at, ident, seen) == original.add(user, at, ident, seen)
    assert copy.evict_idle(T0 + 3000) == original.evict_idle(T0 + 3000)


def test_an_event_id_counted_before_the_round_trip_is_not_counted_again() -> None:
    original = EventWindows(5, 10 * MINUTE)
    for n in range(3):
        original.add("42", T0 + n, f"id-{n}")
    copy = EventWindows(5, 10 * MINUTE)
    copy.restore(original.export())
    assert not copy.add("42", T0 + 1, "id-1")
    assert copy.times("42") == [T0, T0 + 1, T0 + 2]


def test_a_fired_window_does_not_fire_again_after_the_round_trip() -> None:
    original = EventWindows(3, 10 * MINUTE)
    assert [original.add("42", T0 + n, None) for n in range(3)] == [False, False, True]
    copy = EventWindows(3, 10 * MINUTE)
    copy.restore(original.export())
    assert not copy.add("42", T0 + 3, None)


@pytest.mark.parametrize("threshold", [1, 2, 4, 25])
def test_distinct_windows_come_back_equal_and_count_on_alike(threshold: int) -> None:
    rng = random.Random(threshold)  # noqa: S311 - a reproducible test stream, no secret
    original = DistinctWindows(threshold, 10 * MINUTE, keep_events=True)
    addresses = [f"198.51.100.{n}" for n in range(8)]
    for n in range(500):
        ip = rng.choice(addresses)
        user = f"u{rng.randrange(40)}"
        at = T0 + n * 3 - rng.choice([0, 0, 50, 700])
        original.add(ip, at, user, _event(user, at, ip=ip))
    copy = _copy_distinct(original)
    assert set(copy.by_key) == set(original.by_key)
    for ip in original.by_key:
        assert copy.values(ip) == original.values(ip)
        assert sorted(e.subject for e in copy.contributors(ip)) == sorted(
            e.subject for e in original.contributors(ip)
        )
    for n in range(500, 800):
        ip = rng.choice(addresses)
        user = f"u{rng.randrange(40)}"
        at = T0 + n * 3 - rng.choice([0, 0, 50])
        seen = _event(user, at, ip=ip)
        assert copy.add(ip, at, user, seen) == original.add(ip, at, user, seen)


def test_keys_of_several_fields_survive() -> None:
    original = EventWindows(5, 10 * MINUTE)
    original.add(("42", "198.51.100.1"), T0, None)
    copy = EventWindows(5, 10 * MINUTE)
    copy.restore(original.export())
    assert copy.times(("42", "198.51.100.1")) == [T0]
