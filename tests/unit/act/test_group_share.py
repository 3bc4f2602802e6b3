"""An instance's share of the group's safety cap: the arithmetic of the share, the fractional
bucket that follows it, and what a rebalance may (not) do to the tokens (README, Operations:
"Mass-lockout safety")."""

from __future__ import annotations

import pytest

from lockoutd.act.group_share import ShareBucket
from lockoutd.source.kafka import partition_share


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drain(bucket: ShareBucket) -> int:
    """Take every whole token the bucket has; how many."""
    taken = 0
    while bucket.has_token():
        bucket.take()
        taken += 1
    return taken


def locks_over(buckets: list[ShareBucket], clock: Clock, *, seconds: int) -> int:
    """Locks the buckets allow together when every one of them is drained each second."""
    total = sum(drain(bucket) for bucket in buckets)
    for _ in range(seconds):
        clock.now += 1
        total += sum(drain(bucket) for bucket in buckets)
    return total


# The share: each partition of the consumed topics weighs the same.


def test_a_partition_is_worth_one_over_every_partition_consumed() -> None:
    counts = {"events": 6}
    assert partition_share([("events", 0)], counts) == pytest.approx(1 / 6)
    assert partition_share([("events", 0), ("events", 3)], counts) == pytest.approx(2 / 6)
    assert partition_share([("events", p) for p in range(6)], counts) == 1.0
    assert partition_share([], counts) == 0.0


def test_several_topics_share_by_their_partitions() -> None:
    """Four partitions of one topic and two of another: each of the six weighs one sixth."""
    counts = {"zitadel": 4, "keycloak": 2}
    assert partition_share([("zitadel", 0), ("keycloak", 1)], counts) == pytest.approx(2 / 6)
    everything = [("zitadel", p) for p in range(4)] + [("keycloak", p) for p in range(2)]
    assert partition_share(everything, counts) == 1.0


def test_a_partition_of_a_topic_without_a_count_is_worth_nothing() -> None:
    """Unknown partitions never inflate the share (the safe side: fewer locks, not more)."""
    assert partition_share([("events", 0), ("other", 0)], {"events": 2}) == pytest.approx(1 / 2)
    assert partition_share([("events", 0)], {}) == 0.0


# The bucket: fractional rates that add up to the group's cap.


def test_three_equal_shares_lock_what_one_cap_allows_and_no_more() -> None:
    """Cap 5, three instances of two partitions each: 1.67 locks a minute each; over ten
    minutes the group locks no more than one instance with the whole cap would."""
    clock = Clock()
    whole = ShareBucket(5, now=clock)
    alone = locks_over([whole], clock, seconds=600)
    clock = Clock()
    group = [ShareBucket(5, now=clock) for _ in range(3)]
    for bucket in group:
        bucket.set_share(2 / 6)
    together = locks_over(group, clock, seconds=600)
    assert alone == 5 + 50
    assert alone - len(group) <= together <= alone


def test_a_share_below_one_lock_a_minute_still_locks_at_its_rate() -> None:
    """One partition of six under a cap of 5 is 0.83 locks a minute: none at once, one after
    twelve seconds, nine in ten minutes."""
    clock = Clock()
    bucket = ShareBucket(5, now=clock)
    bucket.set_share(1 / 6)
    assert drain(bucket) == 0
    clock.now += 12
    assert drain(bucket) == 1
    assert bucket.per_minute == pytest.approx(5 / 6)
    clock = Clock()
    bucket = ShareBucket(5, now=clock)
    bucket.set_share(1 / 6)
    assert locks_over([bucket], clock, seconds=600) == 9


def test_a_share_below_one_lock_saves_up_one_lock_at_most() -> None:
    """Idle for an hour on one partition of twelve, an instance holds one lock, not five."""
    clock = Clock()
    bucket = ShareBucket(5, now=clock)
    bucket.set_share(1 / 12)
    clock.now += 3600
    assert drain(bucket) == 1


def test_no_partitions_no_locks() -> None:
    """An instance holding no partition has no budget, however long it waits."""
    clock = Clock()
    bucket = ShareBucket(5, now=clock)
    bucket.set_share(0.0)
    assert drain(bucket) == 0
    clock.now += 3600
    assert drain(bucket) == 0
    assert bucket.per_minute == 0.0


# Rebalances: a bucket never starts with the whole burst, and no rebalance mints tokens.


def test_the_first_assignment_gives_the_share_of_the_burst_not_all_of_it() -> None:
    """A new instance given two partitions of six starts with a third of the burst of 6."""
    bucket = ShareBucket(6, now=Clock())
    bucket.set_share(2 / 6)
    assert drain(bucket) == 2


def test_a_smaller_share_keeps_at_most_its_share_of_the_burst() -> None:
    """An instance that held everything, unspent, keeps a third of it when two others join."""
    bucket = ShareBucket(6, now=Clock())
    bucket.set_share(1.0)
    bucket.set_share(2 / 6)
    assert drain(bucket) == 2


def test_a_larger_share_mints_no_tokens() -> None:
    """An instance that spent its budget and takes over the partitions of one that died has
    nothing more at once; only the rate grows (the dead one may have spent its share)."""
    clock = Clock()
    bucket = ShareBucket(6, now=clock)
    bucket.set_share(1 / 2)
    assert drain(bucket) == 3
    bucket.set_share(1.0)
    assert drain(bucket) == 0
    clock.now += 10  # the whole rate now: one lock every ten seconds
    assert drain(bucket) == 1


def test_what_accrued_before_a_rebalance_accrued_at_the_old_rate() -> None:
    """Thirty seconds at half of 6 a minute earn 1.5 locks, not 3."""
    clock = Clock()
    bucket = ShareBucket(6, now=clock)
    bucket.set_share(1 / 2)
    drain(bucket)
    clock.now += 30
    bucket.set_share(1.0)
    assert drain(bucket) == 1
