"""The login-name cache: TTLs, size bound and shared lookups."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from lockoutd.act.login_names import LoginNameCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lookup:
    """Answers from a dict and counts how often it was asked."""

    def __init__(self, answers: dict[str, str | None], *, delay: float = 0.0) -> None:
        self.answers = answers
        self.delay = delay
        self.calls: list[str] = []

    def __call__(self, name: str) -> Callable[[], Awaitable[str | None]]:
        async def run() -> str | None:
            self.calls.append(name)
            await asyncio.sleep(self.delay)
            return self.answers.get(name)

        return run


def _cache(clock: Clock, *, max_size: int = 100) -> LoginNameCache[str, str]:
    return LoginNameCache(ttl=300, miss_ttl=30, max_size=max_size, clock=clock)


async def test_a_hit_is_kept_for_the_ttl() -> None:
    """A found user id is answered from the cache until the hit TTL runs out."""
    clock, lookup = Clock(), Lookup({"alice": "1"})
    cache = _cache(clock)
    assert await cache.get("alice", lookup("alice")) == "1"
    clock.now += 299
    assert await cache.get("alice", lookup("alice")) == "1"
    assert lookup.calls == ["alice"]
    clock.now += 2
    assert await cache.get("alice", lookup("alice")) == "1"
    assert lookup.calls == ["alice", "alice"]


async def test_a_miss_is_kept_for_the_shorter_miss_ttl() -> None:
    """No such user is cached too, but only for the miss TTL."""
    clock, lookup = Clock(), Lookup({})
    cache = _cache(clock)
    assert await cache.get("bob", lookup("bob")) is None
    lookup.answers["bob"] = "2"
    clock.now += 29
    assert await cache.get("bob", lookup("bob")) is None
    clock.now += 2
    assert await cache.get("bob", lookup("bob")) == "2"
    assert lookup.calls == ["bob", "bob"]


async def test_the_oldest_answer_is_evicted_first() -> None:
    """Past max_size the entry stored first goes first."""
    clock, lookup = Clock(), Lookup({"a": "1", "b": "2", "c": "3"})
    cache = _cache(clock, max_size=2)
    for name in ("a", "b", "c"):
        await cache.get(name, lookup(name))
    assert len(cache) == 2
    await cache.get("b", lookup("b"))
    await cache.get("a", lookup("a"))
    assert lookup.calls == ["a", "b", "c", "a"]


async def test_concurrent_callers_share_one_lookup() -> None:
    """Many callers for one key while a lookup is in flight cost one lookup."""
    clock, lookup = Clock(), Lookup({"alice": "1"}, delay=0.05)
    cache = _cache(clock)
    answers = await asyncio.gather(*(cache.get("alice", lookup("alice")) for _ in range(50)))
    assert answers == ["1"] * 50
    assert lookup.calls == ["alice"]


async def test_a_failed_lookup_reaches_every_waiter_and_is_not_cached() -> None:
    """An exception goes to all waiters; the next call asks again."""
    calls = 0

    async def failing() -> str | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("zitadel down")

    cache = _cache(Clock())
    results = await asyncio.gather(
        *(cache.get("x", failing) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert calls == 1
    with pytest.raises(RuntimeError):
        await cache.get("x", failing)
    assert calls == 2


async def test_one_cancelled_caller_does_not_cancel_the_others() -> None:
    """Cancelling one waiter leaves the shared lookup running for the rest."""
    lookup = Lookup({"alice": "1"}, delay=0.05)
    cache = _cache(Clock())
    first = asyncio.create_task(cache.get("alice", lookup("alice")))
    second = asyncio.create_task(cache.get("alice", lookup("alice")))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == "1"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert lookup.calls == ["alice"]
