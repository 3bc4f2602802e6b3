"""The per-org safety cap: one token bucket per org, in bounded memory, that events cannot steer.

The org a lock counts against is the org ZITADEL reports for the user, never the one an event
claims (README, "Mass-lockout safety"). Still, nothing here trusts the number of orgs: at most
``max_orgs`` orgs get a bucket of their own, and every org beyond them, or a user whose org is
unknown, shares one more bucket. A new org can therefore never bring fresh budget once the map is
full, and the map never grows past ``max_orgs``.

Like the cap over all locks, each bucket holds this instance's share of the group's budget
(:mod:`lockoutd.act.group_share`); a bucket made after a rebalance starts at that share.
"""

from __future__ import annotations

from typing import Final

from lockoutd.act.group_share import ShareBucket

MAX_ORG_BUCKETS: Final = 1024
"""Orgs with a bucket of their own; more than almost any instance has, and a few kilobytes."""

SHARED: Final = "(shared)"
"""How the shared bucket is named in a suppressed decision's error."""


class OrgCaps:
    """``rate`` locks a minute per org; see the module docstring for the bounds."""

    def __init__(self, rate: int, *, max_orgs: int = MAX_ORG_BUCKETS) -> None:
        self._rate = rate
        self._share = 1.0
        self._max_orgs = max_orgs
        self._buckets: dict[str, ShareBucket] = {}
        self._shared = ShareBucket(rate)

    def __len__(self) -> int:
        """Orgs with a bucket of their own (the shared one not counted)."""
        return len(self._buckets)

    def set_share(self, share: float) -> None:
        """Hold ``share`` of each org's budget from now on (see :class:`ShareBucket`)."""
        self._share = share
        self._shared.set_share(share)
        for bucket in self._buckets.values():
            bucket.set_share(share)

    def bucket(self, org_id: str | None) -> tuple[str, ShareBucket]:
        """The bucket a lock in ``org_id`` takes its token from, and the name it goes by."""
        if org_id is None:
            return SHARED, self._shared
        bucket = self._buckets.get(org_id)
        if bucket is not None:
            return org_id, bucket
        if len(self._buckets) >= self._max_orgs:
            self._forget_full_buckets()
            if len(self._buckets) >= self._max_orgs:
                return SHARED, self._shared
        bucket = self._buckets[org_id] = ShareBucket(self._rate, share=self._share)
        return org_id, bucket

    def _forget_full_buckets(self) -> None:
        # A bucket that has refilled completely is the same as a new one: forgetting it gives no
        # org more budget than it would have had anyway.
        for org_id in [o for o, b in self._buckets.items() if b.is_full()]:
            del self._buckets[org_id]
