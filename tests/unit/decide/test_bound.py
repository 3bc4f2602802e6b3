"""The bound on what the windows hold: which windows go when there are too many keys or bytes
(README, "Operations")."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from lockoutd.decide.bound import KeyBound, held_bytes
from lockoutd.decide.engine import Engine
from lockoutd.decide.windows import TIERS, tier
from lockoutd.decode.event import Event
from tests.unit.helpers import MINUTE, T0, event, rule, ruleset


def _tracked(*engines: Engine) -> int:
    return sum(count for engine in engines for _, count in engine.tracked_keys())


def _held(*engines: Engine) -> int:
    return held_bytes(pair for engine in engines for pair in engine.rule_windows())


def _flood(count: int, *, seed: int = 7, start: float = 0.0, span: float = 5.0) -> list[Event]:
    """``count`` made-up users with one failure each, spread over ``span`` minutes."""
    return [
        event(start + span * n / count, user_id=f"made-up-{seed}-{n:06d}") for n in range(count)
    ]


class Fed(NamedTuple):
    fired: list[str]
    """The keys that fired, in order."""
    most_keys: int
    """The most keys tracked after any batch."""
    most_bytes: int
    """The most bytes held after any batch."""
    evicted: int
    """Live windows the bound forgot, all batches together."""


def _feed(engine: Engine, bound: KeyBound, events: list[Event], batch: int) -> Fed:
    """Feed ``events`` in batches, the bound enforced after each, as the pipeline does."""
    fed = Fed([], 0, 0, 0)
    for first in range(0, len(events), batch):
        for item in events[first : first + batch]:
            fed.fired.extend(f.key_text for f in engine.process(item, item.occurred_at))
        evicted = sum(bound.enforce([engine]).values())
        fed = Fed(
            fed.fired,
            max(fed.most_keys, _tracked(engine)),
            max(fed.most_bytes, _held(engine)),
            fed.evicted + evicted,
        )
    return fed


def test_a_flood_of_one_failure_keys_cannot_blind_a_user_under_attack() -> None:
    """20,000 made-up users at a bound of 1,000, and a real attack on one user among them: the
    user fires, and the keys never exceed the bound after a batch."""
    engine = Engine(ruleset(rule(threshold=5, window="10m")))
    bound = KeyBound(1_000)
    flood = _flood(20_000)
    stream: list[Event] = []
    for n, item in enumerate(flood):
        stream.append(item)
        if n % 500 == 250 and n < 5_000:  # a failure for the victim every 500 made-up ones
            stream.append(event((item.occurred_at - T0) / MINUTE, user_id="victim"))
    fed = _feed(engine, bound, stream, batch=250)
    assert fed.fired == ["victim"]
    assert fed.most_keys <= 1_000
    assert _tracked(engine) < 1_000


def test_without_a_bound_the_flood_is_all_kept() -> None:
    """What the bound is for: one window per made-up key, for as long as the window lasts."""
    engine = Engine(ruleset(rule(threshold=5, window="10m")))
    assert _feed(engine, KeyBound(10**9), _flood(20_000), batch=250).most_keys == 20_000


_LONG_FLOOD_RULES = ruleset(
    rule(threshold=5, window="10m"),
    rule("spray", key=["ip"], distinct="user_id", threshold=20, action={"report": {}}),
)
"""A rule per user and a spray rule per address: each long id is a key of one and a value of
the other."""


def _long_flood(count: int) -> list[Event]:
    """``count`` made-up users with one failure each, their ids as long as decoding lets them
    be (200 characters), from an address each: what makes a key cost the most bytes."""
    return [
        event(5 * n / count, user_id=f"{n:0200d}", ip=f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}")
        for n in range(count)
    ]


def test_a_flood_of_long_keys_stays_within_the_byte_bound_and_cannot_blind_a_user() -> None:
    """A bound of a million keys lets 20,000 keys through, and each of those costs what its
    200-character id and its values cost: past a megabyte, windows go by the same order as for
    keys, and the user under attack among them still fires."""
    engine = Engine(_LONG_FLOOD_RULES)
    stream: list[Event] = []
    for n, item in enumerate(_long_flood(20_000)):
        stream.append(item)
        if n % 500 == 250 and n < 5_000:
            stream.append(event((item.occurred_at - T0) / MINUTE, user_id="victim"))
    fed = _feed(engine, KeyBound(1_000_000, max_bytes=1 << 20), stream, batch=250)
    assert fed.most_bytes <= 1 << 20
    assert fed.fired == ["victim"]
    assert fed.evicted > 20_000


def test_without_a_byte_bound_long_keys_take_what_they_cost() -> None:
    """What the bound on bytes is for: the flood above holds over ten megabytes under the bound
    on keys alone, two keys of 300 to 400 bytes for each failure."""
    engine = Engine(_LONG_FLOOD_RULES)
    for item in _long_flood(20_000):
        engine.process(item, item.occurred_at)
    assert KeyBound(1_000_000).enforce([engine]) == {}
    assert _held(engine) > 20_000 * 2 * 300


def test_a_key_near_its_threshold_outlives_keys_with_fewer_events() -> None:
    """Made-up keys with two failures each go before the user with four of five."""
    engine = Engine(ruleset(rule(threshold=5, window="10m")))
    bound = KeyBound(100)
    for at in (0, 0.1, 0.2, 0.3):
        engine.process(event(at, user_id="victim"), T0 + at * MINUTE)
    twice = [e for item in _flood(300, start=0.5) for e in (item, item)]
    assert _feed(engine, bound, twice, batch=50).most_keys <= 100
    (firing,) = engine.process(event(6, user_id="victim"), T0 + 6 * MINUTE)
    assert firing.count == 5


def test_the_windows_that_end_soonest_go_first() -> None:
    """Among windows of one event, the oldest are forgotten and the newest kept."""
    engine = Engine(ruleset(rule(threshold=5, window="10m")))
    bound = KeyBound(160)
    old, new = _flood(100, seed=1, start=0), _flood(100, seed=2, start=6)
    _feed(engine, bound, old + new, batch=200)
    (windows,) = (w for _, w in engine.rule_windows())
    assert {e.user_id for e in new} <= set(windows)
    assert len(set(windows) & {e.user_id for e in old}) == 150 - 100


def test_within_the_bound_nothing_is_forgotten() -> None:
    engine = Engine(ruleset(rule(threshold=5, window="10m")))
    for item in _flood(100):
        engine.process(item, item.occurred_at)
    assert KeyBound(100).enforce([engine]) == {}
    assert _tracked(engine) == 100


def test_the_bound_counts_every_rule_and_partition_and_says_which_rule_lost_keys() -> None:
    """One bound for the instance: the rules' windows of every partition share it."""
    rules = ruleset(
        rule("per-user", threshold=5),
        rule("per-address", key=["ip"], threshold=5, action={"report": {}}),
    )
    partitions = [Engine(rules), Engine(rules)]
    for n, item in enumerate(_flood(400)):
        spread = event((item.occurred_at - T0) / MINUTE, user_id=item.user_id, ip=f"10.0.{n}.1")
        partitions[n % 2].process(spread, spread.occurred_at)
    assert _tracked(*partitions) == 1_600 - 800
    evicted = KeyBound(500).enforce(partitions)
    assert _tracked(*partitions) == 500 - 500 // 16
    assert set(evicted) == {"per-user", "per-address"}
    assert sum(evicted.values()) == 800 - (500 - 500 // 16)


def test_distinct_windows_of_one_value_go_before_those_of_several() -> None:
    """A spray counts distinct users per address: an address seen with one user goes first."""
    spray = rule(
        "spray", key=["ip"], distinct="user_id", threshold=5, window="10m", action={"report": {}}
    )
    engine = Engine(ruleset(spray))
    for user in ("1", "2", "3"):
        engine.process(event(0, user_id=user, ip="203.0.113.50"), T0)
    for n in range(200):
        engine.process(event(1, user_id=str(n), ip=f"198.51.{n}.1"), T0 + MINUTE)
    KeyBound(100).enforce([engine])
    assert _tracked(engine) == 100 - 100 // 16
    for user in ("4", "5"):
        fired = engine.process(event(2, user_id=user, ip="203.0.113.50"), T0 + 2 * MINUTE)
    assert [f.key_text for f in fired] == ["203.0.113.50"]


def test_evicted_keys_leave_the_sweep_filing() -> None:
    """A flood must not stay referenced by the idle sweep's filing after its windows went."""
    engine = Engine(ruleset(rule(threshold=5, window="1h")))
    _feed(engine, KeyBound(1_000), _flood(20_000, span=30), batch=500)
    (windows,) = (w for _, w in engine.rule_windows())
    assert sum(len(windows._filed_under(m)) for m in windows.filed_minutes()) == len(windows)


def test_a_minute_read_before_is_read_again_once_a_key_is_filed_there() -> None:
    """A round remembers that a minute held nothing emptier than two events, and skips it
    while looking for one-event windows; a one-event key filed there since is still found."""
    engine = Engine(ruleset(rule(threshold=5, window="10m")))

    def fail(user: str, *minutes: float) -> None:
        for at in minutes:
            engine.process(event(at, user_id=user), T0 + at * MINUTE)

    for n in range(14):  # every key below ends its window in the same minute
        fail(f"victim-{n}", 0, 0.1, 0.2, 0.3)
    fail("twice-1", 0.35, 0.36)
    fail("twice-2", 0.35, 0.36)
    fail("once", 0.4)
    bound = KeyBound(16)
    assert bound.enforce([engine]) == {"password-bruteforce": 2}  # "once" and a "twice"
    fail("late-1", 0.5)
    fail("late-2", 0.5)
    assert bound.enforce([engine]) == {"password-bruteforce": 2}
    (windows,) = (w for _, w in engine.rule_windows())
    assert {f"victim-{n}" for n in range(14)} <= set(windows)
    assert "late-1" not in windows


@pytest.mark.parametrize(
    ("kept", "threshold", "fired", "rank"),
    [
        (1, 5, False, 0),
        (2, 5, False, 2),
        (4, 5, False, 4),
        (2, 20, False, 1),
        (19, 20, False, 4),
        (2, 3, False, 3),
        (1, 1, True, TIERS - 1),
        (5, 5, True, TIERS - 1),
    ],
)
def test_ranks(kept: int, threshold: int, fired: bool, rank: int) -> None:
    """One event ranks lowest, then a quarter of the threshold at a time; fired ranks highest."""
    assert tier(kept, threshold, fired) == rank
