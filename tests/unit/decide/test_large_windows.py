"""Large windows against a plain reference: the compact storage must not change a decision.

A window that keeps more than a few dozen times moves them from tuples to lists and a set of ids,
and a distinct window finds its oldest value through a heap. Both are checked, event by event,
against a direct transcription of the window rules over lists, on seeded random streams with
out-of-order times, repeated ids and ties.
"""

from __future__ import annotations

import random
from bisect import bisect_right

import pytest

from lockoutd.decide.windows import DistinctWindow, KeyWindow

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


def _reference_counts(steps: list[Step], threshold: int, window: float) -> list[bool]:
    times: list[float] = []
    ids: list[str | None] = []
    fired, out = False, []
    for at, event_id in steps:
        start = max(times[-1] if times else float("-inf"), at) - window
        if at <= start or (event_id is not None and event_id in ids):
            out.append(False)
            continue
        index = bisect_right(times, at)
        times.insert(index, at)
        ids.insert(index, event_id)
        drop = max(sum(1 for t in times if t <= start), len(times) - threshold)
        del times[:drop], ids[:drop]
        crossed = len(times) >= threshold and not fired
        fired = len(times) >= threshold
        out.append(crossed)
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


@pytest.mark.parametrize(("threshold", "window"), [(40, 30.0), (100, 120.0), (400, 600.0)])
def test_a_large_key_window_decides_as_the_reference(threshold: int, window: float) -> None:
    """Past the point where it moves to lists, a window fires exactly where the rules say."""
    steps = _stream(threshold, 4000, values=100_000)
    key_window = KeyWindow()
    fired = [
        key_window.add(at, threshold=threshold, window=window, event_id=event_id)
        for at, event_id in steps
    ]
    assert fired == _reference_counts(steps, threshold, window)
    assert key_window.count <= threshold
    assert key_window.times == sorted(key_window.times)


@pytest.mark.parametrize(("threshold", "window"), [(5, 20.0), (50, 60.0), (300, 600.0)])
def test_a_distinct_window_decides_as_the_reference(threshold: int, window: float) -> None:
    """The heap picks the same values to let go as sorting every value would."""
    steps = _stream(threshold + 1, 4000, values=threshold * 2)
    distinct = DistinctWindow()
    fired = [
        distinct.add(at, value, threshold=threshold, window=window) if value is not None else False
        for at, value in steps
    ]
    assert fired == _reference_distinct(steps, threshold, window)
