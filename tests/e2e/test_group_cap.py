"""The safety cap holds for the whole group (README, Operations: "Mass-lockout safety" and
"Scaling out"): several instances in one consumer group lock no more users together than
``safety.max_locks_per_minute`` allows one."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from lockoutd.testing.broker import LocalBroker, free_port
from lockoutd.testing.process import DaemonProcess
from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, Stack, launch, start_stack, stop_stack
from .kafka_helpers import assigned, decisions, failure, produce, wait_committed, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CAP = 5
PARTITIONS = 6


def spread_over(daemons: list[DaemonProcess], topic: str) -> bool:
    """True once every instance holds partitions of ``topic`` and together they hold each of
    them exactly once."""
    held = [assigned(daemon, topic) for daemon in daemons]
    every = [partition for partitions in held for partition in partitions]
    return all(held) and len(every) == len(set(every)) == PARTITIONS


def locked_of(stack: Stack, users: list[str]) -> list[str]:
    return [u for u in users if stack.emulator.state_of(u) is UserState.LOCKED]


def allowed_since(started: float) -> int:
    """What one bucket of the whole cap allows from ``started`` until now: its burst, and CAP a
    minute."""
    return CAP + math.floor(CAP * (time.monotonic() - started) / 60)


def assert_every_decision_locked_or_suppressed(stack: Stack, users: list[str]) -> None:
    """One decision per user: ``locked`` for those locked, ``suppressed`` for all the others."""
    assert stack.config.decisions_topic is not None
    outcomes = [d["outcome"] for d in decisions(stack.bootstrap, stack.config.decisions_topic)]
    locked = len(locked_of(stack, users))
    assert (outcomes.count("locked"), outcomes.count("suppressed")) == (
        locked,
        len(users) - locked,
    )


def attack(stack: Stack, users: list[str]) -> None:
    """Five wrong passwords for each of ``users``, spread over the partitions by user id."""
    for user in users:
        stack.emulator.add_user(user, org_id=ORG_ID)
    events = [failure(user, m, org_id=ORG_ID) for user in users for m in range(5)]
    produce(stack.bootstrap, stack.events_topic, events)
    wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics, timeout=90)


def test_three_instances_lock_no_more_than_the_cap_together_and_after_one_dies(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """Three instances over six partitions with ``max_locks_per_minute: 5``; 20 users attacked
    across the partitions: at most 5 locked by the group, the rest suppressed, and the
    instances' budgets add up to the cap. One is killed; its partitions' new owners take over
    its share, but no fresh budget: 20 more users attacked, the group still keeps to the cap."""
    stack = start_stack(broker, tmp_path, partitions=PARTITIONS, max_locks_per_minute=CAP)
    daemons = [stack.daemon]
    first_port = stack.config.metrics_port
    try:
        for name in ("second", "third"):
            directory = tmp_path / name
            directory.mkdir()
            stack.config.metrics_port = free_port()
            daemons.append(launch(stack.config, directory))
        stack.config.metrics_port = first_port
        for daemon in daemons:
            daemon.wait_ready()
        wait_until(
            lambda: spread_over(daemons, stack.events_topic),
            timeout=90,
            what="the group to spread the six partitions over the three instances",
        )

        started = time.monotonic()
        users = [str(3800 + n) for n in range(20)]
        attack(stack, users)

        # The cap is a rate: besides its burst, the group earns CAP a minute while the attack
        # is worked through (seconds here; with a cap per instance, each instance had CAP).
        assert 1 <= len(locked_of(stack, users)) <= allowed_since(started)
        assert_every_decision_locked_or_suppressed(stack, users)
        budgets = [daemon.metric("lockoutd_lock_budget_per_minute") for daemon in daemons]
        assert budgets == pytest.approx([CAP / 3] * 3)  # two partitions of six each

        assert daemons[2].kill() == -9
        survivors = daemons[:2]
        wait_until(
            lambda: spread_over(survivors, stack.events_topic),
            timeout=90,
            what="the two survivors to take over the partitions of the killed instance",
        )
        assert [d.metric("lockoutd_lock_budget_per_minute") for d in survivors] == (
            pytest.approx([CAP / 2] * 2)
        )
        more = [str(3900 + n) for n in range(20)]
        attack(stack, more)
        assert len(locked_of(stack, users + more)) <= allowed_since(started)
        assert_every_decision_locked_or_suppressed(stack, users + more)
    finally:
        for daemon in daemons[1:]:
            if daemon.returncode is None:
                daemon.kill()
        stop_stack(stack)
