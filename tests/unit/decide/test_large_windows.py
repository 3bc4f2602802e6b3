"""Windows against a plain reference: the compact storage must not change a decision.

A window of events is packed bytes while it has room, tuples once it fills up, lists and a set
of id hashes once it keeps more than a few dozen times; a distinct window is a tuple while it has
seen one value, then finds its oldest value through a heap. Each is checked, event by event,
against a direct transcription of the window rules over lists, on seeded random streams with
out-of-order times, repeated ids and ties, with thresholds small enough for a key to move between
forms again and again.
"""

from __future__ import annotations

import random
from bisect import bisect_right

import pytest

from lockoutd.decide import core
from lockoutd.decode.event import LOGIN_FAILED, Event

Step = tuple[float, str | None]


def _stream(seed: int, length: int, values: int) -> list[Step]:
    rng = random.Random(seed)  # noqa: S311 - a reproducible test stream, no secret
    steps: list[Step] = []
    for n in range(length):
        # Half a second apart, some late, some at the same second, a long pause every 500.
        jitter = rng.choice([0.0, 0.0, -rng.uniform(0, 90), 0.2])
        at = float(round(n * 0.5 + (n // 500) * 700 + jitter))
        ident = f"v{rng.randrange(values)}" if rng.random() < 0.95 else None
        steps.append((at, ident))
    return steps


def _reference_counts(
    steps: list[Step], threshold: int, window: float
) -> list[tuple[bool, list[float]]]:
    # After each step: whether it fired, and the times the window keeps.
    times: list[float] = []
    ids: list[str | None] = []
    fired, out = False, []
    for at, event_id in steps:
        start = max(times[-1] if times else float("-inf"), at) - window
        if at <= start or (event_id is not None and event_id in ids):
            out.append((False, list(times)))
            continue
        index = bisect_right(times, at)
        times.insert(index, at)
        ids.insert(index, event_id)
        drop = max(sum(1 for t in times if t <= start), len(times) - threshold)
        del times[:drop], ids[:drop]
        crossed = len(times) >= threshold and not fired
        fired = len(times) >= threshold
        out.append((crossed, list(times)))
    return out


def _reference_distinct(steps: list[Step], threshold: int, window: float) -> list[bool]:
    seen: dict[str, float] = {}
    newest, fired, out = float("-inf"), False, []
    for at, value in steps:
        newest = max(newest, at)
        start = newest - window
        if value is None or at <= start:
            out.append(False)
            continue
        if at > seen.get(value, float("-inf")):
            seen[value] = at
        for gone in [v for v, t in seen.items() if t <= start]:
            del seen[gone]
        for gone in sorted(seen, key=seen.__getitem__)[: max(0, len(seen) - threshold)]:
            del seen[gone]
        crossed = len(seen) >= threshold and not fired
        fired = len(seen) >= threshold
        out.append(crossed)
    return out


@pytest.mark.parametrize(
    ("threshold", "window"), [(1, 5.0), (2, 3.0), (5, 20.0), (40, 30.0), (100, 120.0), (400, 600.0)]
)
def test_a_window_of_events_decides_as_the_reference(threshold: int, window: float) -> None:
    """Packed, full or spilled, a window fires exactly where the rules say and keeps the times
    they say (the times a lock reports as the first and last event)."""
    steps = _stream(threshold, 4000, values=100_000 if threshold > 5 else 300)
    windows = core.EventWindows(threshold, window)
    observed = [(windows.add("k", at, event_id), windows.times("k")) for at, event_id in steps]
    assert observed == _reference_counts(steps, threshold, window)


@pytest.mark.parametrize(("threshold", "window"), [(5, 20.0), (40, 30.0), (400, 600.0)])
def test_the_events_kept_for_contributors_are_those_of_the_times_kept(
    threshold: int, window: float
) -> None:
    """A rule that locks every contributor reports the events of exactly the times counted."""
    windows = core.EventWindows(threshold, window, keep_events=True)
    for at, event_id in _stream(threshold, 4000, values=100_000):
        windows.add("k", at, event_id, Event(LOGIN_FAILED, at, event_id=event_id))
        kept = windows.contributors("k")
        assert [event.occurred_at for event in kept] == windows.times("k")


@pytest.mark.parametrize(("threshold", "window"), [(1, 5.0), (5, 20.0), (50, 60.0), (300, 600.0)])
def test_a_distinct_window_decides_as_the_reference(threshold: int, window: float) -> None:
    """The heap picks the same values to let go as sorting every value would."""
    steps = _stream(threshold + 1, 4000, values=threshold * 2)
    distinct = core.DistinctWindows(threshold, window)
    fired = [distinct.add("k", at, value) if value is not None else False for at, value in steps]
    assert fired == _reference_distinct(steps, threshold, window)


def test_a_distinct_window_of_one_value_decides_as_the_reference() -> None:
    """Long runs of one value (kept as a tuple) between others decide as the reference."""
    rng = random.Random(5)  # noqa: S311 - a reproducible test stream, no secret
    steps: list[Step] = [
        (float(n // 3) - rng.choice([0.0, 0.0, 30.0]), "a" if rng.random() < 0.9 else "b")
        for n in range(3000)
    ]
    distinct = core.DistinctWindows(2, 20.0)
    fired = [distinct.add("k", at, value) for at, value in steps if value is not None]
    assert fired == _reference_distinct(steps, 2, 20.0)
