"""A day-long window survives the death of its instance through a checkpoint, with real
processes (README, Operations: "Windows survive restarts and rebalances"): the instance that
takes the partition over restores the window from the checkpoint topic and replays only the
records after it, and a forged or corrupt checkpoint is refused, counted and costs nothing but
the rewind."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from lockoutd.decide.engine import Engine
from lockoutd.decide.snapshot import FORMAT_VERSION, encode_snapshot
from lockoutd.rules import load_rules
from lockoutd.source.checkpoints import Chunk
from lockoutd.source.schedule_seal import HEADER, ScheduleSeal
from lockoutd.testing.broker import LocalBroker
from lockoutd.testing.process import DaemonProcess
from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, Stack, launch, start_stack, stop_stack
from .kafka_helpers import decisions, failure, produce, wait_committed, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

USER = "4242"
DAY_RULE = """\
rules:
  - name: slow-bruteforce
    description: five wrong passwords for one user within a day
    match:
      type: auth.login.failed
      reason: [password]
    key: [user_id]
    threshold: 5
    window: 1d
    action:
      lock: {}
"""


def _stack(broker: LocalBroker, tmp_path: Path, checkpoint_topic: str) -> Stack:
    rules = tmp_path / "rules.yaml"
    rules.write_text(DAY_RULE, encoding="utf-8")
    stack = start_stack(
        broker,
        tmp_path,
        partitions=1,
        rule_paths=[rules],
        checkpoint_topic=checkpoint_topic,
        # One checkpoint at the first commit, then none for the length of the test: the
        # records after it are what the next owner replays. Small records: the state is split.
        extra={"kafka": {"checkpoint_interval": "1h", "checkpoint_chunk_bytes": 1024}},
    )
    stack.emulator.add_user(USER, org_id=ORG_ID)
    return stack


OTHERS = 300
BEFORE = OTHERS + 3
"""Records before the checkpoint."""


def _hours_ago_failures(stack: Stack) -> None:
    """Other users fail once, and the user three times, five hours ago; all in one produce
    request, so that the daemon reads them in one batch and checkpoints after all of them."""
    others = [failure(str(5000 + n), -300 + n / 100, org_id=ORG_ID) for n in range(OTHERS)]
    mine = [failure(USER, -290 + n, org_id=ORG_ID) for n in range(3)]

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, max_batch_size=1 << 20)
        await producer.start()
        try:
            for value in others + mine:
                key = value["user_id"].encode()
                await producer.send(stack.events_topic, json.dumps(value).encode(), key=key)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())
    wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)


def _take_over(stack: Stack, tmp_path: Path) -> DaemonProcess:
    """Kill the daemon (-9) and start its successor in the same group."""
    assert stack.daemon.kill() == -9
    successor = launch(stack.config, tmp_path, log_name="successor.log")
    stack.daemon = successor
    successor.wait_ready()
    return successor


def _lines(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    return [e for e in daemon.logs() if e.get("event") == event]


def _locked_once(stack: Stack) -> None:
    produce(stack.bootstrap, stack.events_topic, [failure(USER, n, org_id=ORG_ID) for n in (8, 9)])
    wait_until(
        lambda: stack.emulator.state_of(USER) is UserState.LOCKED,
        timeout=60,
        what="the user locked by the fourth and fifth failures of the day",
    )
    wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics, timeout=60)
    assert stack.config.decisions_topic is not None
    locked = [
        d
        for d in decisions(stack.bootstrap, stack.config.decisions_topic)
        if d["outcome"] == "locked"
    ]
    assert [d["user_id"] for d in locked] == [USER]


def test_a_day_window_survives_failover_through_a_checkpoint(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """Three failures five hours ago, a checkpoint, more records, a SIGKILL: the successor
    restores the window from the checkpoint, replays only the records after it, and two more
    failures lock the user."""
    stack = _stack(broker, tmp_path, f"lockoutd-checkpoints-{uuid.uuid4().hex[:8]}")
    try:
        _hours_ago_failures(stack)
        [written] = wait_until(
            lambda: _lines(stack.daemon, "checkpoint_written"), what="a checkpoint written"
        )
        assert written["offset"] == BEFORE
        assert written["records"] > 1
        # Records after the checkpoint: acted on, committed, not in it.
        produce(
            stack.bootstrap,
            stack.events_topic,
            [failure(str(6000 + n), -5, org_id=ORG_ID) for n in range(5)],
        )
        wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)
        assert stack.emulator.lock_calls() == []

        successor = _take_over(stack, tmp_path)
        [restored] = wait_until(
            lambda: _lines(successor, "partition_restored"), what="the partition restored"
        )
        assert restored["checkpoint_offset"] == BEFORE
        assert restored["committed"] == BEFORE + 5
        assert restored["records_replayed"] == 5
        assert restored["rewind_would_replay"] == BEFORE + 5
        assert not _lines(successor, "partition_rebuilding")
        assert successor.metric("lockoutd_partitions_restored_total", source="checkpoint") == 1
        assert (
            successor.metric("lockoutd_partition_rebuild_records_total", source="checkpoint") == 5
        )

        _locked_once(stack)
    finally:
        stop_stack(stack)


def _forge(stack: Stack, committed: int) -> None:
    """Write three checkpoints for the partition: an empty window state (which would blind the
    user) without a signature, the same with a signature header of no value (Kafka allows a
    null header), and a signed record that is not a checkpoint."""
    topic = stack.config.checkpoint_topic
    assert topic is not None
    rules = load_rules(stack.config.rule_paths)
    empty = encode_snapshot(
        Engine(rules),
        group=stack.config.group_id,
        topic=stack.events_topic,
        partition=0,
        offset=committed,
        written_at=0.0,
    )
    key = f"{stack.config.group_id}/{stack.events_topic}/0".encode()
    forged = msgspec.msgpack.encode(Chunk(FORMAT_VERSION, "f0", 0, 1, committed, empty))
    corrupt = msgspec.msgpack.encode(Chunk(FORMAT_VERSION, "c0", 0, 1, committed, b"garbage"))
    assert stack.config.schedule_signing_key_file is not None
    seal = ScheduleSeal(SecretStr(stack.config.schedule_signing_key_file.read_text().strip()))

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, forged, key=key)
            await producer.send_and_wait(topic, forged, key=key, headers=[(HEADER, None)])
            await producer.send_and_wait(
                topic, corrupt, key=key, headers=seal.headers(key, corrupt)
            )
        finally:
            await producer.stop()

    asyncio.run(send())


def test_a_forged_or_corrupt_checkpoint_is_refused_and_the_partition_rewound(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """The checkpoint topic holds only a forged empty state and a corrupt record: both are
    counted and ignored, the successor rewinds by the day, and the user is still locked."""
    suffix = uuid.uuid4().hex[:8]
    # The first instance checkpoints elsewhere: the successor's topic holds the forgeries alone.
    stack = _stack(broker, tmp_path, f"lockoutd-checkpoints-elsewhere-{suffix}")
    try:
        _hours_ago_failures(stack)
        stack.config.checkpoint_topic = f"lockoutd-checkpoints-{suffix}"
        asyncio.run(broker.create_topics(stack.config.checkpoint_topic, partitions=1))
        _forge(stack, committed=BEFORE)

        successor = _take_over(stack, tmp_path)
        wait_until(lambda: _lines(successor, "partition_rebuilding"), what="the rewind")
        assert not _lines(successor, "partition_restored")
        rejected = [e["reason"] for e in _lines(successor, "checkpoint_rejected")]
        assert sorted(rejected) == ["bad_signature", "bad_signature", "malformed"]
        for reason in set(rejected):
            assert successor.metric(
                "lockoutd_checkpoints_rejected_total", reason=reason
            ) == rejected.count(reason)
        assert successor.metric("lockoutd_partitions_restored_total", source="rewind") == 1

        _locked_once(stack)
    finally:
        stop_stack(stack)
