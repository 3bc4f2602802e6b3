"""The per-org safety cap: one token bucket per org, in bounded memory, that events cannot steer.

The org a lock counts against is the org ZITADEL reports for the user, never the one an event
claims (README, "Mass-lockout safety"). Still, nothing here trusts the number of orgs: at most
``max_orgs`` orgs get a bucket of their own, and every org beyond them, or a user whose org is
unknown, shares one more bucket. A new org can therefore never bring fresh budget once the map is
full, and the map never grows past ``max_orgs``.
"""

from __future__ import annotations

from typing import Final

from aiolimiter import AsyncLimiter

MAX_ORG_BUCKETS: Final = 1024
"""Orgs with a bucket of their own; more than almost any instance has, and a few kilobytes."""

SHARED: Final = "(shared)"
"""How the shared bucket is named in a suppressed decision's error."""


class OrgCaps:
    """``rate`` locks a minute per org; see the module docstring for the bounds."""

    def __init__(self, rate: int, *, max_orgs: int = MAX_ORG_BUCKETS) -> None:
        self._rate = rate
        self._max_orgs = max_orgs
        self._buckets: dict[str, AsyncLimiter] = {}
        self._shared = AsyncLimiter(rate, time_period=60)

    def __len__(self) -> int:
        """Orgs with a bucket of their own (the shared one not counted)."""
        return len(self._buckets)

    def bucket(self, org_id: str | None) -> tuple[str, AsyncLimiter]:
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
        bucket = self._buckets[org_id] = AsyncLimiter(self._rate, time_period=60)
        return org_id, bucket

    def _forget_full_buckets(self) -> None:
        # A bucket that has refilled completely is the same as a new one: forgetting it gives no
        # org more budget than it would have had anyway.
        for org_id in [o for o, b in self._buckets.items() if b.has_capacity(self._rate)]:
            del self._buckets[org_id]
