"""Keys a hostile producer controls, with real processes: events stamped in the future, and
floods of made-up user ids against the bounds on tracked keys and on the bytes their windows hold
(README, "How a window counts" and "Operations").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockoutd.testing.broker import LocalBroker
from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, Stack, start_stack, stop_stack
from .kafka_helpers import failure, produce, wait_until

pytestmark = pytest.mark.e2e

BOUND = 200
BYTES = 2 << 20


@pytest.fixture
def bounded_stack(broker: LocalBroker, tmp_path: Path) -> Iterator[Stack]:
    """A daemon that keeps at most ``BOUND`` windows and reads small batches, so that the bound
    is enforced many times while the flood goes by."""
    stack = start_stack(
        broker,
        tmp_path,
        extra={"engine": {"max_tracked_keys": BOUND}, "kafka": {"max_batch_records": 50}},
    )
    yield stack
    stop_stack(stack)


@pytest.fixture
def byte_bounded_stack(broker: LocalBroker, tmp_path: Path) -> Iterator[Stack]:
    """A daemon whose windows may hold ``BYTES`` (and the default million keys), reading small
    batches."""
    stack = start_stack(
        broker,
        tmp_path,
        extra={"engine": {"max_window_bytes": BYTES}, "kafka": {"max_batch_records": 100}},
    )
    yield stack
    stop_stack(stack)


@pytest.fixture
def own_stack(broker: LocalBroker, tmp_path: Path) -> Iterator[Stack]:
    stack = start_stack(broker, tmp_path)
    yield stack
    stop_stack(stack)


def test_failures_stamped_in_the_future_do_not_blind_their_user(own_stack: Stack) -> None:
    """Five wrong passwords in ten minutes lock the user, whether a failure stamped a year ahead
    came first or one stamped two minutes ahead (a fast clock, inside any skew decoding allows)
    would have pushed the earlier ones out of the window."""
    stack = own_stack
    for user in ("4001", "4002"):
        stack.emulator.add_user(user, org_id=ORG_ID)
    # at(m) is ten minutes ago plus m: 10 is now, 12 two minutes from now.
    year_ahead = failure("4001", 365 * 24 * 60, org_id=ORG_ID)
    real = [failure("4001", m, org_id=ORG_ID) for m in (5, 6, 7, 8, 9)]
    # Counted at their stamps, the one at 12 would make the window (2m, 12m]: the real ones
    # at 0.5 to 1.7 would all be out of it. Counted when read, it leaves them in.
    two_minutes_ahead = failure("4002", 12, org_id=ORG_ID)
    earlier = [failure("4002", m, org_id=ORG_ID) for m in (0.5, 0.8, 1.1, 1.4, 1.7)]
    produce(stack.bootstrap, stack.events_topic, [year_ahead, *real, two_minutes_ahead, *earlier])

    wait_until(lambda: stack.emulator.state_of("4001") is UserState.LOCKED, what="4001 locked")
    wait_until(lambda: stack.emulator.state_of("4002") is UserState.LOCKED, what="4002 locked")


def _summed(stack: Stack, metric: str) -> float:
    """A metric's value summed over all its labels (every rule)."""
    return sum(value for (name, _), value in stack.daemon.metrics().items() if name == metric)


def _consumed_and_locked(stack: Stack, events: list[dict[str, Any]], user: str) -> None:
    """Produce ``events``; wait until the daemon has read every one and ``user`` is locked."""
    produce(stack.bootstrap, stack.events_topic, events)
    wait_until(
        lambda: stack.daemon.metric("lockoutd_events_total", result="accepted") >= len(events),
        timeout=120,
        what="every event consumed",
    )
    wait_until(lambda: stack.emulator.state_of(user) is UserState.LOCKED, what=f"{user} locked")


def test_a_flood_of_made_up_users_is_bounded_and_the_user_under_attack_is_locked(
    bounded_stack: Stack,
) -> None:
    """3,000 made-up user ids with one failure each, and among them five real failures of one
    user: the user is locked, the daemon keeps at most the bound, and says it forgot keys."""
    stack = bounded_stack
    stack.emulator.add_user("4100", org_id=ORG_ID)
    events: list[dict[str, Any]] = []
    for n in range(3_000):
        events.append(failure(f"{900_000_000_000 + n}", 9 + n / 3_000, org_id=ORG_ID))
        if n % 40 == 20 and n < 200:  # five failures of the user, 40 made-up ones apart
            events.append(failure("4100", 9 + n / 3_000, org_id=ORG_ID))
    _consumed_and_locked(stack, events, "4100")
    assert 0 < _summed(stack, "lockoutd_tracked_keys") <= BOUND
    assert stack.daemon.metric("lockoutd_tracked_keys_limit") == BOUND
    evicted = stack.daemon.metric("lockoutd_evicted_keys_total", rule="password-bruteforce")
    assert evicted >= 3_000 - BOUND
    assert [e for e in stack.daemon.logs() if e.get("event") == "tracked_keys_evicted"]


def test_windows_filled_with_the_longest_ids_stay_within_the_byte_bound(
    byte_bounded_stack: Stack,
) -> None:
    """300 addresses each spraying 20 made-up login names of 200 characters (an event without
    a user id is counted by its login name), and among them five failures of one real user. Far
    below the bound on keys, each address fills a spray window of kilobytes and each name a
    window of its own: over 3 MB held, past a bound of 2 MB. The daemon forgets windows to stay
    within it, says so, and locks the user."""
    stack = byte_bounded_stack
    stack.emulator.add_user("4200", org_id=ORG_ID)
    events: list[dict[str, Any]] = []
    for n in range(6_000):
        address = f"10.42.{n // 20 // 250}.{n // 20 % 250 + 1}"
        made_up = failure("", 9 + n / 6_000, login_name=f"{n:0200d}", org_id=ORG_ID, ip=address)
        del made_up["user_id"]
        events.append(made_up)
        if n % 500 == 250 and n < 2_500:  # five failures of the user among them
            events.append(failure("4200", 9 + n / 6_000, org_id=ORG_ID))
    _consumed_and_locked(stack, events, "4200")
    assert stack.daemon.metric("lockoutd_window_bytes_limit") == BYTES
    assert 0 < _summed(stack, "lockoutd_window_bytes") <= BYTES
    assert _summed(stack, "lockoutd_evicted_keys_total") > 0
    assert _summed(stack, "lockoutd_tracked_keys") < len(events)
    logged = [e for e in stack.daemon.logs() if e.get("event") == "tracked_keys_evicted"]
    assert logged
    assert logged[-1]["max_window_bytes"] == BYTES
