"""The per-org buckets of the safety cap: bounded, and no new org brings fresh budget once full."""

from __future__ import annotations

from lockoutd.act.org_caps import SHARED, OrgCaps


def test_each_org_has_a_bucket_of_its_own() -> None:
    """Two orgs, two buckets: one org's locks do not spend the other's budget."""
    caps = OrgCaps(1)
    name, first = caps.bucket("300")
    first.take()
    assert name == "300"
    assert not first.has_token()
    assert caps.bucket("301")[1].has_token()
    assert caps.bucket("300")[1] is first


def test_an_unknown_org_counts_against_the_shared_bucket() -> None:
    """A user whose org ZITADEL did not report shares one bucket with every other such user."""
    caps = OrgCaps(1)
    name, shared = caps.bucket(None)
    shared.take()
    assert name == SHARED
    assert not caps.bucket(None)[1].has_token()


def test_orgs_beyond_the_bound_share_one_bucket_and_the_map_stops_growing() -> None:
    """With room for two orgs in use, a third and a fourth share one budget."""
    caps = OrgCaps(1, max_orgs=2)
    for org in ("1", "2"):
        caps.bucket(org)[1].take()
    third_name, third = caps.bucket("3")
    third.take()
    assert third_name == SHARED
    assert not caps.bucket("4")[1].has_token()  # a fresh org id mints nothing
    assert len(caps) == 2


def test_a_bucket_that_has_refilled_makes_room_for_a_new_org() -> None:
    """A full bucket is the same as a new one: forgetting it frees a place without minting."""
    caps = OrgCaps(1, max_orgs=1)
    caps.bucket("1")  # never spent: as good as new
    name, _ = caps.bucket("2")
    assert name == "2"
    assert len(caps) == 1


def test_an_org_seen_first_after_a_rebalance_starts_at_the_share() -> None:
    """Holding a third of the partitions, a new org's bucket holds a third of its burst."""
    caps = OrgCaps(6)
    caps.set_share(1 / 3)
    _, bucket = caps.bucket("300")
    taken = 0
    while bucket.has_token():
        bucket.take()
        taken += 1
    assert taken == 2
