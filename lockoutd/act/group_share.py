"""This instance's share of the group's safety caps: a token bucket that follows the share.

``safety.max_locks_per_minute`` (and the per-org cap) is a budget for the whole consumer group.
Each instance holds the share of it that the partitions it holds are of all the partitions
consumed (``partition_share`` in the Kafka source), set again at every assignment; the shares of
the group's members add up to one, so their rates add up to the cap. Other ways to share one
budget were weighed (README, "Scaling out"): taking tokens from a Kafka topic or a coordinator
would put a round trip and a new failure mode in front of every lock; a share by partitions
needs no traffic at all and moves with the work, as Kafka Streams moves state with tasks.

The bucket is fractional, so that shares that do not divide the cap evenly still add up to it
(one partition of six under a cap of 5 is 0.83 locks a minute), and a rebalance never mints
tokens: a new share keeps the tokens the bucket had, at most its share of the burst, and only
the refill rate follows the new share at once. A bucket's first share (a new instance's first
assignment) therefore starts it with its share of the burst, never all of it.

The bucket is lockoutd's own because it must change its rate while it runs and hold fractions
of a token, which general-purpose rate limiters do not offer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Floating-point slack: two thirds of three tokens must be worth two whole ones.
_EPSILON = 1e-9


class ShareBucket:
    """``group_per_minute`` locks a minute for the whole group, of which this instance has
    ``share``.

    It holds at most its share of one minute's locks (the burst), but always room for one whole
    lock: a share worth less than one lock a minute locks at its fractional rate instead of
    never. That room is the one place the group can exceed its cap, by at most one lock per
    such instance, and only when more instances hold partitions than the cap allows a minute.
    """

    def __init__(
        self,
        group_per_minute: float,
        *,
        share: float = 1.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._whole = group_per_minute
        self._share = share
        self._now = now
        self._tokens = self._burst()
        self._at = now()

    @property
    def per_minute(self) -> float:
        """This instance's budget: its share of the group's locks a minute."""
        return self._whole * self._share

    def set_share(self, share: float) -> None:
        """Hold ``share`` of the group's budget from now on; mints no tokens."""
        self._refill()  # what accrued until now accrued at the old rate
        self._share = share
        self._tokens = min(self._tokens, self._burst())

    def has_token(self) -> bool:
        """True when one lock may be taken now."""
        self._refill()
        return self._tokens >= 1 - _EPSILON

    def take(self) -> None:
        """Spend one token; call right after :meth:`has_token` said there is one."""
        self._tokens -= 1

    def give_back(self) -> None:
        """Return the token of a lock that locked nobody (an unknown user, one already locked):
        the cap counts the locks made, and events that name made-up users must not spend the
        locks real accounts need."""
        self._refill()
        self._tokens = min(self._room(), self._tokens + 1)

    def is_full(self) -> bool:
        """True when the bucket has refilled completely: as good as a new one at this share."""
        self._refill()
        return self._tokens >= self._room() - _EPSILON

    def _burst(self) -> float:
        return self._whole * self._share

    def _room(self) -> float:
        return max(self._burst(), 1.0) if self._share > 0 else 0.0

    def _refill(self) -> None:
        now = self._now()
        earned = max(0.0, now - self._at) * self.per_minute / 60
        self._tokens = min(self._room(), self._tokens + earned)
        self._at = now
