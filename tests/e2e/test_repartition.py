"""Rules keyed on something other than the user, across several instances (README, Operations:
"Scaling out"): a spray from one address over users on every partition is seen whole, once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient

from lockoutd.testing.broker import LocalBroker, free_port
from lockoutd.testing.process import DaemonProcess
from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, Stack, launch, start_stack, stop_stack
from .kafka_helpers import decisions, failure, produce, wait_committed, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

SPRAYER = "198.51.100.7"
PARTITIONS = 6

RULES = {
    "rules": [
        {
            "name": "spray-report",
            "key": ["ip"],
            "distinct": "user_id",
            "threshold": 20,
            "window": "30m",
            "action": {"report": {}},
        },
        {
            "name": "spray-lock-contributors",
            "key": ["ip"],
            "distinct": "user_id",
            "threshold": 30,
            "window": "30m",
            "action": {"lock": {"targets": "contributors"}},
        },
        {
            # Never fires here; with it, the address rules are counted on the network's topic,
            # as with the shipped rules (README, Operations: "Scaling out").
            "name": "spray-from-network",
            "key": ["ip_prefix"],
            "distinct": "user_id",
            "threshold": 1000,
            "window": "30m",
            "action": {"report": {}},
        },
    ]
}


def assigned(daemon: DaemonProcess) -> list[str]:
    """The partitions ``daemon`` was given at its latest assignment."""
    lines = [e for e in daemon.logs() if e.get("event") == "partitions_assigned"]
    partitions: list[str] = lines[-1]["partitions"] if lines else []
    return partitions


@contextmanager
def instances(
    broker: LocalBroker, tmp_path: Path, count: int
) -> Iterator[tuple[Stack, list[DaemonProcess]]]:
    """``count`` daemons in one group over a topic of six partitions keyed by user."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "spray.yaml").write_text(yaml.safe_dump(RULES), encoding="utf-8")
    # A cap far above the 30 locks: these tests are about where the spray is counted.
    stack = start_stack(
        broker, tmp_path, rule_paths=[rules], partitions=PARTITIONS, max_locks_per_minute=600
    )
    daemons = [stack.daemon]
    first_port = stack.config.metrics_port
    try:
        for n in range(1, count):
            folder = tmp_path / f"instance-{n}"
            folder.mkdir()
            stack.config.metrics_port = free_port()
            daemons.append(launch(stack.config, folder))
        stack.config.metrics_port = first_port
        for daemon in daemons[1:]:
            daemon.wait_ready()
        wait_until(
            lambda: (
                all(
                    sum(p.startswith(stack.events_topic + "[") for p in assigned(d)) >= 1
                    for d in daemons
                )
                and sum(len(assigned(d)) for d in daemons) >= PARTITIONS
            ),
            timeout=120,
            what=f"the group to spread the partitions over {count} instances",
        )
        yield stack, daemons
    finally:
        for daemon in daemons[1:]:
            if daemon.returncode is None:
                daemon.kill()
        stop_stack(stack)


def spray(stack: Stack, users: list[str], start: int) -> None:
    """One failure from the sprayer for each user, a few seconds apart in event time."""
    for user in users:
        stack.emulator.add_user(user, org_id=ORG_ID)
    produce(
        stack.bootstrap,
        stack.events_topic,
        [
            failure(user, (start + n) / 20, ip=SPRAYER, org_id=ORG_ID)
            for n, user in enumerate(users)
        ],
    )


def internal_topic(stack: Stack) -> str:
    return f"{stack.config.group_id}.repartition.ip_prefix"


def settle(stack: Stack) -> None:
    """Wait until the group has read everything: the source, then what it repartitioned."""
    wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics, timeout=90)
    wait_committed(stack.bootstrap, stack.config.group_id, [internal_topic(stack)], timeout=90)


def partition_count(bootstrap: str, topic: str) -> int:
    async def describe() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            [described] = await admin.describe_topics([topic])
            return len(described["partitions"])
        finally:
            await admin.close()

    return asyncio.run(describe())


def outcomes(stack: Stack) -> list[dict[str, Any]]:
    assert stack.config.decisions_topic is not None
    return decisions(stack.bootstrap, stack.config.decisions_topic)


def assert_reported_once_and_each_user_locked_once(stack: Stack, users: list[str]) -> None:
    """Every sprayed user ends up locked; once the group has read everything, the decisions
    topic holds one report of the sprayer and one lock decision per user."""
    wait_until(
        lambda: all(stack.emulator.state_of(u) is UserState.LOCKED for u in users),
        timeout=120,
        what="every sprayed user locked",
    )
    settle(stack)
    published = outcomes(stack)
    reported = [d for d in published if d["outcome"] == "reported"]
    assert [(d["rule"], d["key"]) for d in reported] == [("spray-report", SPRAYER)]
    locked = Counter(d["user_id"] for d in published if d["outcome"] == "locked")
    assert sorted(locked) == users
    assert set(locked.values()) == {1}


def test_a_spray_over_every_partition_is_reported_once_and_every_contributor_locked_once(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """Two instances, six partitions, 30 users sprayed from one address: each instance reads
    about half of the failures, yet the address is reported once and all 30 users are locked,
    each by one decision."""
    users = [str(4100 + n) for n in range(30)]
    with instances(broker, tmp_path, 2) as (stack, daemons):
        spray(stack, users, 0)
        assert_reported_once_and_each_user_locked_once(stack, users)
        for daemon in daemons:
            assert daemon.metric("lockoutd_key_mismatches_total", rule="spray-report") == 0
        # As many partitions as the source topic: as many instances can share the address rules.
        assert partition_count(stack.bootstrap, internal_topic(stack)) == PARTITIONS


def test_a_spray_straddling_the_death_of_one_of_three_instances_acts_once(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """Three instances over six partitions; 22 users sprayed (the report crosses), the instance
    that holds the address's repartitioned window is killed, 8 more users sprayed (the lock of
    every contributor crosses): still one report, and each of the 30 users locked once."""
    users = [str(4200 + n) for n in range(30)]
    with instances(broker, tmp_path, 3) as (stack, daemons):
        spray(stack, users[:22], 0)
        wait_until(
            lambda: [d for d in outcomes(stack) if d["outcome"] == "reported"],
            timeout=120,
            what="the spray reported",
        )
        settle(stack)
        # The instance that reported holds the address's window: it is the one to kill.
        holder = next(d for d in daemons if any(e.get("outcome") == "reported" for e in d.logs()))
        assert holder.kill() == -9
        survivors = [d for d in daemons if d is not holder]
        wait_until(
            lambda: sum(len(assigned(d)) for d in survivors) >= 2 * PARTITIONS,
            timeout=120,
            what="the survivors to take over every partition",
        )
        spray(stack, users[22:], 22)
        assert_reported_once_and_each_user_locked_once(stack, users)
