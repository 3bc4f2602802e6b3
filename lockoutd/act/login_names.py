"""A bounded TTL cache from login name to user id, with one lookup in flight per name.

A credential-stuffing storm sends thousands of failures for one login name within seconds; each
needs the user id before it can be locked. The cache makes that storm cost one ZITADEL search:
concurrent callers for the same key await the same lookup, and its answer is kept for
``ttl`` seconds (a user id never changes) or ``miss_ttl`` seconds when there is no such user
(short, so that a user created a moment later is found).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LoginNameCache(Generic[K, V]):
    """Answers ``V | None`` per key; ``None`` (no such user) is cached too, for less time.

    At most ``max_size`` answers are kept; the oldest is evicted first. A lookup that raises is
    not cached: every waiter gets the exception, and the next call tries again.
    """

    def __init__(
        self,
        *,
        ttl: float,
        miss_ttl: float,
        max_size: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._miss_ttl = miss_ttl
        self._max_size = max_size
        self._clock = clock
        self._answers: OrderedDict[K, tuple[float, V | None]] = OrderedDict()
        self._in_flight: dict[K, asyncio.Task[V | None]] = {}

    def __len__(self) -> int:
        return len(self._answers)

    async def get(self, key: K, lookup: Callable[[], Awaitable[V | None]]) -> V | None:
        """The cached answer for ``key``, or the answer of ``lookup()`` (shared by concurrent
        callers for the same key)."""
        cached = self._answers.get(key)
        if cached is not None:
            expires_at, answer = cached
            if self._clock() < expires_at:
                return answer
            del self._answers[key]
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(self._run(key, lookup))
            self._in_flight[key] = task
            task.add_done_callback(_retrieve_exception)
        # shield: one impatient caller being cancelled must not cancel everyone else's lookup.
        return await asyncio.shield(task)

    async def _run(self, key: K, lookup: Callable[[], Awaitable[V | None]]) -> V | None:
        try:
            answer = await lookup()
        finally:
            self._in_flight.pop(key, None)
        ttl = self._ttl if answer is not None else self._miss_ttl
        self._answers[key] = (self._clock() + ttl, answer)
        self._answers.move_to_end(key)
        while len(self._answers) > self._max_size:
            self._answers.popitem(last=False)
        return answer


def _retrieve_exception(task: asyncio.Task[Any]) -> None:
    # Mark a failure as seen even if every waiter was cancelled, so that asyncio does not log
    # "exception was never retrieved" for it.
    if not task.cancelled():
        task.exception()
