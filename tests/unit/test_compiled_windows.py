"""The compiled windows against the pure-Python reference, on the same randomized streams.

Hypothesis draws streams of late and tied events, repeated ids, resets, idle sweeps and rounds of
the bound on tracked keys, for keys of one and two fields, thresholds from 1 to 10,000, counts of
events and of distinct values, with and without contributors. Both implementations must fire
at the same events and hold the same state after every batch: the keys, each key's times or
values (in order), span and contributors, and the filing the sweep and the bound read, in order,
and export the same records; the records either exports restore alike in both.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lockoutd.decide import windows as reference
from lockoutd.decide.windows import TIERS

compiled: Any
try:
    from lockoutd.decide import _cwindows as compiled
except ImportError:  # built without a compiler
    compiled = None

pytestmark = pytest.mark.skipif(
    compiled is None, reason="the compiled windows are not built here (no C compiler at install)"
)

WINDOW = 60.0

_keys = st.one_of(
    st.sampled_from(["u1", "u2", "u3"]),
    st.tuples(st.just("o1"), st.sampled_from(["10.0.0.1", "10.0.0.2"])),
    # Keys the compiled windows hold out of line, beyond ASCII, or alike but for where the
    # fields of a key of several fields part.
    st.sampled_from(["u" * 30, "Jürgen", "\ud800", ("ab", "c"), ("a", "bc"), ("o1", "x" * 200)]),
    # Keys they hold as numbers (digits without a leading zero, up to 19), and digits that are
    # none: a leading zero, 20 of them, a text of 8 bytes like a number's.
    st.sampled_from(["0", "7", "07", "280000000000491668", "9" * 19, "1" + "0" * 19, "12345678"]),
)
_add = st.tuples(
    st.just("add"),
    _keys,
    # Seconds after the stream's clock: late, tied or new, now and then past the window.
    st.sampled_from([-70, -30, -5, -1, 0, 0, 0, 1, 2, 5, 30, 61, 120]),
    st.one_of(
        st.none(),
        st.sampled_from([f"e{n}" for n in range(8)]),
        # Values the compiled distinct windows keep in their cell (as bytes, or as a number when
        # they are digits without a leading zero), out of line, beyond ASCII, or as lone
        # surrogates (a pair of them is no character: it is another value than the one the pair
        # would make).
        st.sampled_from(
            [
                *("x" * 9, "x" * 10, "x" * 11, "x" * 12, "ü" * 5, "ü" * 10, "Jürgen"),
                *("\ud800", "\ud83d\ude00", "😀"),
                *("0", "00", "7", "07", "9" * 19, "1" + "0" * 19, "280000000000491668"),
            ]
        ),
    ),
)
# Mostly events; now and then a reset, a sweep, a round of the bound.
_step = st.one_of(
    _add,
    _add,
    _add,
    _add,
    _add,
    st.tuples(st.just("forget"), _keys),
    st.tuples(st.just("sweep"), st.integers(0, 200)),
    st.tuples(st.just("shed"), st.integers(0, TIERS - 1), st.integers(1, 4)),
)
_thresholds = st.one_of(
    st.integers(1, 6), st.integers(1, 40), st.sampled_from([64, 65, 100, 1_000, 10_000])
)


def _state(windows: Any, distinct: bool) -> dict[str, Any]:
    keys = sorted(windows, key=repr)
    per_key: dict[Any, Any] = {}
    for key in keys:
        held = list(windows.values(key).items()) if distinct else windows.times(key)
        per_key[key] = (held, windows.span(key), windows.contributors(key))
    filing = [(minute, windows._filed_under(minute)) for minute in windows.filed_minutes()]
    return {"len": len(windows), "keys": per_key, "filing": filing, "floors": windows._floors}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    threshold=_thresholds,
    distinct=st.booleans(),
    keep_events=st.booleans(),
    batches=st.lists(st.lists(_step, max_size=40), min_size=1, max_size=8),
)
# Ties, which random streams seldom produce: of two values seen at the same time the one seen
# first goes first; a late event tied with a kept time goes after it (its contributor too).
@example(
    threshold=2,
    distinct=True,
    keep_events=False,
    batches=[[("add", "k", 0, "a"), ("add", "k", 0, "b"), ("add", "k", 0, "c")]],
)
@example(
    threshold=5,
    distinct=False,
    keep_events=True,
    batches=[[("add", "k", 0, "a"), ("add", "k", 1, "b"), ("add", "k", -1, "c")]],
)
# A key forgotten and counted again, in its first minute and in a later one, while still filed
# under both: it keeps its place in each.
@example(
    threshold=3,
    distinct=False,
    keep_events=False,
    batches=[
        [("add", "k", 0, None), ("forget", "k"), ("add", "k", 61, None), ("forget", "k")],
        [("add", "k", 0, None), ("add", "j", 0, None), ("add", "k", -5, None)],
        [("shed", 0, 1), ("add", "k", 0, None), ("sweep", 0), ("sweep", 200)],
    ],
)
def test_the_compiled_windows_decide_and_keep_what_the_reference_does(
    threshold: int, distinct: bool, keep_events: bool, batches: list[list[tuple[Any, ...]]]
) -> None:
    pure, fast = _pair(threshold, distinct, keep_events)
    clock = 0.0
    for batch in batches:
        clock, outcomes = _play(batch, (pure, fast), distinct, clock)
        assert outcomes[1] == outcomes[0]
        assert _state(fast, distinct) == _state(pure, distinct)
        assert _exported(fast) == _exported(pure)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    threshold=_thresholds,
    distinct=st.booleans(),
    keep_events=st.booleans(),
    before=st.lists(_step, max_size=60),
    after=st.lists(_step, max_size=40),
)
def test_a_checkpoint_of_either_windows_restores_alike_in_the_other(
    threshold: int,
    distinct: bool,
    keep_events: bool,
    before: list[tuple[Any, ...]],
    after: list[tuple[Any, ...]],
) -> None:
    """Instances of one group may run different builds (README, "Windows survive restarts and
    rebalances"): the records either implementation exports are restored by both into the same
    windows, which then fire at the same events, and export the records they took."""
    pure, fast = _pair(threshold, distinct, keep_events)
    clock, _ = _play(before, (pure, fast), distinct, 0.0)
    for source in (pure, fast):
        records = list(source.export())
        into_pure, into_fast = _pair(threshold, distinct, keep_events)
        for _ in range(2):  # the second time, each key's window is replaced
            into_pure.restore(records)
            into_fast.restore(records)
        assert _exported(into_fast) == _exported(into_pure) == _exported(source)
        assert _state(into_fast, distinct) == _state(into_pure, distinct)
        _, outcomes = _play(after, (into_pure, into_fast), distinct, clock)
        assert outcomes[1] == outcomes[0]
        assert _state(into_fast, distinct) == _state(into_pure, distinct)


def _pair(threshold: int, distinct: bool, keep_events: bool) -> tuple[Any, Any]:
    kind = "DistinctWindows" if distinct else "EventWindows"
    return (
        getattr(reference, kind)(threshold, WINDOW, keep_events=keep_events),
        getattr(compiled, kind)(threshold, WINDOW, keep_events=keep_events),
    )


def _exported(windows: Any) -> dict[Any, Any]:
    """The records of ``windows`` by key (the order of keys is each implementation's own)."""
    return {record.slot: record for record in windows.export()}


def _play(
    steps: list[tuple[Any, ...]], pair: tuple[Any, Any], distinct: bool, clock: float
) -> tuple[float, list[list[Any]]]:
    """Run ``steps`` on both windows of ``pair``: the clock after them, and each one's outcomes."""
    outcomes: list[list[Any]] = [[], []]
    for step in steps:
        if step[0] == "add":
            _, key, offset, ident = step
            at = clock + offset
            clock = max(clock, at)
            # For a distinct count the id stands for the value (a user), for events the id.
            value = ident if ident is not None else "none"
            event = ("event", key, at, ident)
            for out, windows in zip(outcomes, pair, strict=True):
                seen = value if distinct else ident
                out.append(windows.add(key, at, seen, event))
        elif step[0] == "forget":
            for out, windows in zip(outcomes, pair, strict=True):
                windows.forget(step[1])
                out.append(None)
        elif step[0] == "sweep":
            clock += step[1]
            for out, windows in zip(outcomes, pair, strict=True):
                out.append(windows.evict_idle(clock))
        else:
            _, rank, limit = step
            for out, windows in zip(outcomes, pair, strict=True):
                out.append([windows.shed(m, rank, limit) for m in sorted(windows.filed_minutes())])
    return clock, outcomes


@pytest.mark.parametrize("distinct", [False, True])
def test_thousands_of_keys_coming_and_going_agree(distinct: bool) -> None:
    """Many keys, most forgotten again (resets, sweeps, the bound): the table grows, fills with
    the places of forgotten keys and is rebuilt, and both sides still hold the same windows."""
    rng = random.Random(11)  # noqa: S311 - a reproducible test stream, no secret
    kind = "DistinctWindows" if distinct else "EventWindows"
    pure = getattr(reference, kind)(3, WINDOW, keep_events=True)
    fast = getattr(compiled, kind)(3, WINDOW, keep_events=True)
    clock = 0.0
    for n in range(20_000):
        clock += rng.choice([0.0, 0.01, 0.5])
        key: Any = f"u{rng.randrange(4_000)}"
        if rng.random() < 0.2:
            key = (key, f"10.0.{rng.randrange(3)}.1")
        roll, rank, late = rng.random(), rng.randrange(TIERS), rng.choice([0.0, 0.0, 5.0])
        outcomes = []
        for windows in (pure, fast):
            if roll < 0.05:
                windows.forget(key)
            elif roll < 0.051:
                outcomes.append(windows.evict_idle(clock))
            elif roll < 0.052:
                for minute in sorted(windows.filed_minutes()):
                    outcomes.append(windows.shed(minute, rank, 50))
            else:
                outcomes.append(windows.add(key, clock - late, f"v{n % 7}", n))
        assert outcomes[: len(outcomes) // 2] == outcomes[len(outcomes) // 2 :]
        if n % 2_000 == 0:
            assert _state(fast, distinct) == _state(pure, distinct)
    assert len(fast) > 300
    assert _state(fast, distinct) == _state(pure, distinct)


# Distinct windows kept full: a spray brings a new value with nearly every event, with ties,
# late sightings and values seen again, so the value seen longest ago leaves all the time.
_sighting = st.tuples(
    st.sampled_from(["k", "k", "k", ("o1", "10.0.0.1")]),
    st.sampled_from([-61, -59, -30, -2, -1, -1, 0, 0, 0, 0, 0, 1, 1, 2, 61]),
    st.integers(0, 1_000_000),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    threshold=st.sampled_from([1, 2, 3, 7, 8, 9, 16, 17, 20, 50, 64, 65, 200, 1_000, 10_000]),
    keep_events=st.booleans(),
    pool=st.integers(1, 400),
    batches=st.lists(st.lists(_sighting, max_size=150), min_size=1, max_size=5),
    round_trips=st.lists(st.sampled_from(["none", "pure", "fast"]), min_size=5, max_size=5),
    # Short values kept in their cells, long ones out of line, beyond ASCII, lone surrogates.
    prefix=st.sampled_from(
        ["v", "28000000000000000", "user-0000000000000000-", "Jürgen-", "\udcff"]
    ),
)
def test_full_distinct_windows_agree_through_sightings_ties_and_checkpoints(
    threshold: int,
    keep_events: bool,
    pool: int,
    prefix: str,
    batches: list[list[tuple[Any, float, int]]],
    round_trips: list[str],
) -> None:
    """Values come from a pool larger or smaller than the threshold; after a batch, both windows
    may be replaced by the restored checkpoint of one of them, and counting goes on from there."""
    pure, fast = _pair(threshold, True, keep_events)
    clock = 0.0
    for batch, source in zip(batches, round_trips, strict=False):
        steps = [("add", key, offset, f"{prefix}{n % pool}") for key, offset, n in batch]
        clock, outcomes = _play(steps, (pure, fast), True, clock)
        assert outcomes[1] == outcomes[0]
        assert _state(fast, True) == _state(pure, True)
        assert _exported(fast) == _exported(pure)
        if source != "none":
            records = list((pure if source == "pure" else fast).export())
            pure, fast = _pair(threshold, True, keep_events)
            pure.restore(records)
            fast.restore(records)
            assert _exported(fast) == _exported(pure)


# Values as the compiled windows keep them: a str of digits as its number in its cell (without a
# leading zero, at most 19 of them; the others are text), the UTF-8 of a str in its cell (up to 11
# bytes) or out of line, a lone surrogate passed through; and values that are no str, which the
# API also takes: an int and a float equal to it, and bytes, whose hash is that of the str of the
# same letters.
_VALUES = [
    "a",
    "x" * 11,
    "x" * 12,
    "ü" * 5 + "x",
    "ü" * 6,
    "280000000000491668",
    "0",
    "00",
    "7",
    "07",
    "-7",
    "+7",
    "7 ",
    "\u0667",  # ARABIC-INDIC DIGIT SEVEN: a digit, but not an ASCII one
    "9" * 19,
    "1" + "0" * 19,
    "18446744073709551615",
    "1" * 11,
    "1" * 12,
    "Jürgen",
    "a\x00b",
    "\ud800",
    "\udcff" * 50,
    "\ud83d\ude00",
    "😀",
    "漢字" * 40,
]
_OTHERS = [7, 7.0, 280000000000491668, b"a", b"7", b"x" * 20, ("t", 1)]


@pytest.mark.parametrize("threshold", [3, 40])  # 40: values found through an index
@pytest.mark.parametrize("others", [False, True])
def test_values_come_back_as_the_values_counted(threshold: int, others: bool) -> None:
    """Every value the API gives out (values, export) is the str counted, and a str counted
    again, or restored from a checkpoint, is found as the same value, whatever its letters."""
    values = _VALUES + (_OTHERS if others else [])
    pure, fast = _pair(threshold, True, True)
    for n, value in enumerate(values + values[::-1]):
        at = float(n // 3)
        outcomes = [windows.add("k", at, value, ("event", n)) for windows in (pure, fast)]
        assert outcomes[0] == outcomes[1], value
        held = list(fast.values("k"))
        assert held == list(pure.values("k"))
        assert [type(v) for v in held] == [type(v) for v in pure.values("k")]
        assert _state(fast, True) == _state(pure, True)
        assert _exported(fast) == _exported(pure)
    records = list(fast.export())
    for source in (records, list(pure.export())):
        pure, fast = _pair(threshold, True, True)
        pure.restore(source)
        fast.restore(source)
        assert _exported(fast) == _exported(pure) == {r.slot: r for r in records}
        for n, value in enumerate(values):
            at = 100.0 + n
            outcomes = [windows.add("k", at, value, ("again", n)) for windows in (pure, fast)]
            assert outcomes[0] == outcomes[1], value
            assert _state(fast, True) == _state(pure, True)


@pytest.mark.parametrize("threshold", [1_000, 10_000])
def test_thousands_of_distinct_values_leave_in_the_same_order(threshold: int) -> None:
    """A window of thousands of values, kept full by a stream of new ones and by values seen
    again, late and at the same time as others: both keep the same values, fire alike, and
    restore each other's checkpoint midway."""
    rng = random.Random(threshold)  # noqa: S311 - a reproducible test stream, no secret
    pure, fast = _pair(threshold, True, True)
    clock = 0.0
    for n in range(3 * threshold + 2_000):
        clock += rng.choice([0.0, 0.0, 0.0, 0.001, 0.01])
        at = clock - rng.choice([0.0, 0.0, 0.0, 0.002, 0.5])
        value = f"v{rng.randrange(threshold + threshold // 2)}"
        event = ("event", n)
        outcomes = [windows.add("k", at, value, event) for windows in (pure, fast)]
        assert outcomes[0] == outcomes[1], n
        if n == 2 * threshold:
            records = list(fast.export())
            pure, fast = _pair(threshold, True, True)
            pure.restore(records)
            fast.restore(records)
    assert len(fast.values("k")) == threshold
    assert _state(fast, True) == _state(pure, True)
    assert _exported(fast) == _exported(pure)


@pytest.fixture
def orders_limited_to_three() -> Any:
    previous = compiled._limit_orders(3)
    yield
    compiled._limit_orders(previous)


@pytest.mark.parametrize("threshold", [2, 5, 40])
def test_values_numbered_again_keep_their_order(
    threshold: int, orders_limited_to_three: Any
) -> None:
    """A key whose values' orders run out (32,767 of them counted; here three) numbers them again
    in the order they had: ties, the order values come back in and checkpoints stay the
    reference's."""
    rng = random.Random(threshold)  # noqa: S311 - a reproducible test stream, no secret
    pure, fast = _pair(threshold, True, True)
    clock = 0.0
    for n in range(40 * threshold):
        clock += rng.choice([0.0, 0.0, 0.0, 1.0])
        at = clock - rng.choice([0.0, 0.0, 1.0])
        value = str(rng.randrange(2 * threshold))
        outcomes = [windows.add("k", at, value, ("event", n)) for windows in (pure, fast)]
        assert outcomes[0] == outcomes[1], n
        assert _state(fast, True) == _state(pure, True), n
    assert _exported(fast) == _exported(pure)


@pytest.mark.parametrize("threshold", [20, 10_000])
def test_a_key_that_counts_more_values_than_sixteen_bits_number_keeps_the_references_order(
    threshold: int,
) -> None:
    """Orders and slots are 16 bits: 70,000 values for one key, at the real limit and the
    largest threshold a rule may have, with ties at every time, leave the same window, fire at
    the same events and export the same record as the reference (compared after every value
    while the window is small, at intervals when it holds ten thousand)."""
    pure, fast = _pair(threshold, True, False)
    every = 1 if threshold < 100 else 5_000
    for n in range(70_000):
        at = float(n // 3)  # three values a second: ties that only the orders part
        outcomes = [windows.add("k", at, f"user-{n}") for windows in (pure, fast)]
        assert outcomes[0] == outcomes[1], n
        if n % every == 0:
            assert fast.values("k") == pure.values("k"), n
    assert _state(fast, True) == _state(pure, True)
    assert _exported(fast) == _exported(pure)


def test_a_full_window_of_the_largest_threshold_keeps_the_references_times() -> None:
    """A key under a steady attack at the largest threshold a rule may have: its block of times
    moves and grows past 30,000 slots' room as the window turns over (events come later than
    the window keeps them); after 60,000 events it holds the reference's times and fires with
    it."""
    pure, fast = _pair(10_000, False, False)
    for n in range(60_000):
        at = n * 0.001
        outcomes = [windows.add("k", at, f"e{n}") for windows in (pure, fast)]
        assert outcomes[0] == outcomes[1], n
        if n % 5_000 == 0:
            assert fast.times("k") == pure.times("k"), n
    assert _state(fast, False) == _state(pure, False)
    assert _exported(fast) == _exported(pure)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    threshold=st.integers(1, 8),
    lowered_by=st.integers(0, 4),
    keep_events=st.booleans(),
    before=st.lists(_add, max_size=60),
    after=st.lists(_add, max_size=40),
)
def test_a_distinct_checkpoint_restored_under_a_lower_threshold_fires_alike(
    threshold: int,
    lowered_by: int,
    keep_events: bool,
    before: list[tuple[Any, ...]],
    after: list[tuple[Any, ...]],
) -> None:
    """A rule's threshold lowered across a restart: windows restored full but not fired fire
    at the same event in both, whether a new value comes or a value held leaves."""
    pure, fast = _pair(threshold + lowered_by, True, keep_events)
    clock, _ = _play(before, (pure, fast), True, 0.0)
    records = [r for r in pure.export() if len(r.seen) <= threshold]
    into_pure, into_fast = _pair(threshold, True, keep_events)
    into_pure.restore(records)
    into_fast.restore(records)
    _, outcomes = _play(after, (into_pure, into_fast), True, clock)
    assert outcomes[1] == outcomes[0]
    assert _state(into_fast, True) == _state(into_pure, True)
    assert _exported(into_fast) == _exported(into_pure)


@pytest.mark.parametrize("threshold", [65, 100, 1_000, 10_000])
def test_large_windows_of_events_refuse_the_ids_they_keep_while_full(threshold: int) -> None:
    """A window of more than 64 times kept full by a stream of ids from a pool larger than the
    threshold: an id it keeps is refused, one that left is counted again, late events go in
    between, and now and then the clock jumps so that many times leave at once. Both keep the
    same times, fire alike, and restore each other's checkpoint midway."""
    rng = random.Random(threshold + 1)  # noqa: S311 - a reproducible test stream, no secret
    pure, fast = _pair(threshold, False, False)
    clock = 0.0
    events = 5 * threshold + 3_000
    for n in range(events):
        roll = rng.random()
        clock += rng.choice([30.0, 59.99]) if roll < 0.0001 else rng.choice([0.0, 0.001, 0.002])
        at = clock - rng.choice([0.0, 0.0, 0.0, 0.003, 0.5, 61.0])
        ident = None if roll > 0.9 else f"e{rng.randrange(2 * threshold)}"
        outcomes = [windows.add("k", at, ident) for windows in (pure, fast)]
        assert outcomes[0] == outcomes[1], n
        if n % 997 == 0 or n == events - 1:
            assert fast.times("k") == pure.times("k"), n
        if n == 2 * threshold:
            records = list((pure if threshold % 2 else fast).export())
            pure, fast = _pair(threshold, False, False)
            pure.restore(records)
            fast.restore(records)
    assert fast.span("k")[0] > 64
    assert _state(fast, False) == _state(pure, False)
    assert _exported(fast) == _exported(pure)
