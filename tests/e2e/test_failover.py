"""Failover with real processes: a crossing whose events straddle the death of an instance is
acted on by the instance that takes the partition over (README, Operations: "Windows survive
restarts and rebalances")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lockoutd.testing.broker import LocalBroker, free_port
from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, launch, start_stack, stop_stack
from .kafka_helpers import assigned, decisions, failure, produce, wait_committed, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_the_survivor_locks_users_whose_failures_straddle_the_death_of_an_instance(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """Two instances share four partitions; 20 users fail three times (below the threshold of
    five), one instance is killed, each user fails twice more: every user is locked once, with
    one decision each, the killed instance's users by the survivor."""
    stack = start_stack(broker, tmp_path, partitions=4)
    survivor = stack.daemon
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    first_port = stack.config.metrics_port
    stack.config.metrics_port = free_port()
    doomed = launch(stack.config, second_dir)
    stack.config.metrics_port = first_port
    try:
        doomed.wait_ready()
        wait_until(
            # Of the events topic: the internal topics of the address rules are shared too.
            lambda: (
                assigned(doomed, stack.events_topic)
                and len(assigned(survivor, stack.events_topic))
                + len(assigned(doomed, stack.events_topic))
                == 4
            ),
            timeout=60,
            what="the group to spread the four partitions over both instances",
        )
        users = [str(3700 + n) for n in range(20)]
        for user in users:
            stack.emulator.add_user(user, org_id=ORG_ID)

        def failures(seconds: list[int]) -> list[dict[str, Any]]:
            return [failure(user, s / 60, org_id=ORG_ID) for s in seconds for user in users]

        produce(stack.bootstrap, stack.events_topic, failures([0, 10, 20]))
        wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)
        assert stack.emulator.lock_calls() == []

        assert doomed.kill() == -9
        produce(stack.bootstrap, stack.events_topic, failures([30, 40]))

        wait_until(
            lambda: all(stack.emulator.state_of(u) is UserState.LOCKED for u in users),
            timeout=120,
            what="every user locked, those of the killed instance by the survivor",
        )
        wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics, timeout=60)
        assert stack.config.decisions_topic is not None
        locked = sorted(
            d["user_id"]
            for d in decisions(stack.bootstrap, stack.config.decisions_topic)
            if d["outcome"] == "locked"
        )
        assert locked == users
        assert [e for e in survivor.logs() if e.get("event") == "partition_rebuilding"]
    finally:
        if doomed.returncode is None:
            doomed.kill()
        stop_stack(stack)
