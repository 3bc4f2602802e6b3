"""What the windows hold, in bytes: the measure of the bound on memory (README, "Operations").

A producer that writes to the events topic chooses how long the keys and values are and how
many values a key holds; the count must follow that to the byte, or the bound does not bound
what it lets through."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockoutd.decide import core
from lockoutd.decode.event import Event

WINDOW = 600.0

_keys = st.sampled_from(["a", "k" * 40, "é" * 30, ("x", "y" * 50)])
_values = st.sampled_from(["u1", "u2", "123456789012345678", "v" * 30, "ü" * 20, "w" * 200])
_add = st.tuples(st.just("add"), _keys, st.integers(-120, 400), _values)
_step = st.one_of(
    _add,
    _add,
    _add,
    st.tuples(st.just("forget"), _keys),
    st.tuples(st.just("sweep"), st.integers(0, 1200)),
    st.tuples(st.just("shed"), st.integers(0, 5), st.integers(1, 3)),
    st.tuples(st.just("restore")),
)


def _windows(distinct: bool, threshold: int, keep_events: bool) -> Any:
    kind = core.DistinctWindows if distinct else core.EventWindows
    return kind(threshold, WINDOW, keep_events=keep_events)


def _event(at: float, value: str) -> Event:
    return Event(type="auth.login.failed", occurred_at=at, user_id=value, event_id=f"e-{value}")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    distinct=st.booleans(),
    threshold=st.sampled_from([1, 2, 3, 5, 40, 70]),
    keep_events=st.booleans(),
    steps=st.lists(_step, min_size=5, max_size=80),
)
def test_every_byte_counted_is_given_back(
    distinct: bool, threshold: int, keep_events: bool, steps: list[tuple[Any, ...]]
) -> None:
    """Whatever the windows went through (new keys, windows that fill and spill, values that
    leave, keys forgotten, swept, shed by the bound or replaced from a checkpoint), once every
    window has left they hold nothing: a count that drifted would, over days, either forget
    keys for nothing or let memory grow past the bound."""
    windows = _windows(distinct, threshold, keep_events)
    clock = 0.0
    for step in steps:
        match step:
            case ("add", slot, delta, value):
                clock = max(clock, clock + delta)
                at = clock + min(delta, 0)
                kept = _event(at, value) if keep_events else None
                windows.add(slot, at, value, kept)  # the value is the event id when not distinct
            case ("forget", slot):
                windows.forget(slot)
            case ("sweep", ahead):
                windows.evict_idle(clock + ahead)
            case ("shed", rank, limit):
                for minute in windows.filed_minutes():
                    windows.shed(minute, rank, limit)
            case ("restore",):
                windows.restore(list(windows.export()))
        # A forgotten key may stay filed (compiled: as a ghost record) until its minute passes.
        assert windows.held_bytes() > 0 if len(windows) else windows.held_bytes() >= 0
    windows.evict_idle(clock + 10 * WINDOW)
    assert len(windows) == 0
    assert windows.held_bytes() == 0


def _traced(build: Callable[[], Any]) -> tuple[Any, int]:
    """What ``build`` makes, and the bytes Python's allocators handed out for it and kept."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        made = build()
        gc.collect()
        return made, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def _filled(distinct: bool, keep_events: bool, width: int) -> Callable[[], Any]:
    """1,000 keys of ``width`` characters, each with twenty values (or events) of that width."""

    def build() -> Any:
        windows = _windows(distinct, 20, keep_events)
        for n in range(1_000):
            slot = f"{n:0{width}d}"
            for k in range(20):
                value = f"{n * 20 + k:0{width}d}"
                kept = _event(100.0 + k, value) if keep_events else None
                windows.add(slot, 100.0 + k, value, kept)
        return windows

    return build


@pytest.mark.parametrize("keep_events", [False, True], ids=["times", "kept-events"])
@pytest.mark.parametrize("distinct", [False, True], ids=["events", "distinct"])
def test_long_keys_and_values_are_counted_as_what_they_take(
    distinct: bool, keep_events: bool
) -> None:
    """The same windows filled with 200-character keys and values (as long as decoding lets a
    user id be) instead of 18-digit ones: the count grows by what memory grows by.

    Kept events are counted whole, with texts they may share with a key or a value (a user id
    that is both a distinct value and its event's ``user_id``): more than they take, never less.
    """
    short, short_bytes = _traced(_filled(distinct, keep_events, 18))
    long, long_bytes = _traced(_filled(distinct, keep_events, 200))
    counted = long.held_bytes() - short.held_bytes()
    grown = long_bytes - short_bytes
    assert grown > 1_000 * 180  # at the least, a thousand keys 182 characters longer
    most = 1.6 if keep_events else 1.2
    assert 0.8 * grown <= counted <= most * grown, (counted, grown)
