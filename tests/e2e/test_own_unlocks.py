"""lockoutd undoes only its own locks: not an administrator's, not one a forged schedule entry
names, and still its own when ZITADEL's reply to the lock was lost (README, "Temporary locks and
escalation").
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from lockoutd.settings import KafkaSettings
from lockoutd.source.schedule_seal import HEADER as SIGNATURE_HEADER
from lockoutd.source.schedule_seal import schedule_seal
from lockoutd.testing.broker import LocalBroker, free_port
from lockoutd.testing.zitadel.faults import Fault
from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, PAT, Stack, launch, start_stack, stop_stack
from .kafka_helpers import decisions, failure, produce, read_all, wait_until

pytestmark = pytest.mark.e2e

RULES = """\
rules:
  - name: otp-bruteforce
    match: {reason: [otp]}
    key: [user_id]
    threshold: 3
    window: 5m
    action:
      lock:
        duration: 4s
        escalate: {factor: 2, max: 8s, memory: 1h}
"""


@pytest.fixture
def temporary_locks(broker: LocalBroker, tmp_path: Path) -> Iterator[Stack]:
    """A daemon whose OTP rule locks for four seconds, doubling on repeats (up to eight); its
    schedule entries are signed with the key every test stack has."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES)
    stack = start_stack(broker, tmp_path, rule_paths=[rules])
    yield stack
    stop_stack(stack)


def decisions_for(stack: Stack, user_id: str, action: str | None = None) -> list[dict[str, Any]]:
    assert stack.config.decisions_topic is not None
    return [
        d
        for d in decisions(stack.bootstrap, stack.config.decisions_topic)
        if d["user_id"] == user_id and (action is None or d["action"] == action)
    ]


def three_wrong_codes(stack: Stack, user_id: str) -> None:
    produce(
        stack.bootstrap, stack.events_topic, [failure(user_id, m, reason="otp") for m in range(3)]
    )


def write_schedule(stack: Stack, entries: list[tuple[str, bytes]], *, signed: bool) -> None:
    """Write raw records to the schedule topic as anyone with write access could; ``signed``
    with the daemon's key, as one who also holds the key (or a bug of lockoutd's own) would."""
    key_file = stack.config.schedule_signing_key_file if signed else None
    seal = schedule_seal(KafkaSettings(schedule_signing_key_file=key_file))

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for key, value in entries:
                await producer.send_and_wait(
                    stack.config.schedule_topic,
                    value,
                    key=key.encode(),
                    headers=seal.headers(key.encode(), value),
                )
        finally:
            await producer.stop()

    asyncio.run(send())


def locked_entry(user_id: str, *, at: float, unlock_at: float, **fields: Any) -> dict[str, Any]:
    """A schedule entry as lockoutd writes one: ``user_id`` locked by the OTP rule at ``at``
    until ``unlock_at``."""
    return {
        "user_id": user_id,
        "org_id": ORG_ID,
        "rule": "otp-bruteforce",
        "state": "locked",
        "strikes": 1,
        "updated_at": at,
        "locked_at": at,
        "unlock_at": unlock_at,
        **fields,
    }


def unlock_calls(stack: Stack, user_id: str) -> list[object]:
    return [c for c in stack.emulator.calls if c.user_id == user_id and "nlock" in c.path]


def test_an_administrators_relock_is_not_undone(temporary_locks: Stack) -> None:
    """Unlocked early and locked again on purpose by an administrator: lockoutd leaves it."""
    stack = temporary_locks
    stack.emulator.add_user("6100", org_id=ORG_ID)
    three_wrong_codes(stack, "6100")
    wait_until(lambda: stack.emulator.state_of("6100") is UserState.LOCKED, what="the lock")

    stack.emulator.set_state("6100", UserState.ACTIVE)  # the administrator unlocks early...
    stack.emulator.set_state("6100", UserState.LOCKED)  # ...and locks again, for good

    [unlock] = wait_until(lambda: decisions_for(stack, "6100", "unlock"), what="the unlock")
    assert unlock["outcome"] == "not_ours"
    assert stack.emulator.state_of("6100") is UserState.LOCKED
    assert not unlock_calls(stack, "6100")
    samples = stack.daemon.metrics()
    label = (("action", "unlock"), ("outcome", "not_ours"), ("rule", "otp-bruteforce"))
    assert samples[("lockoutd_actions_total", label)] == 1


def test_a_forged_schedule_entry_unlocks_nobody_and_cannot_outrank_lockoutd(
    temporary_locks: Stack,
) -> None:
    """Entries written to the schedule topic, even with the key, neither unlock an
    administrator's lock nor, dated far in the future, stop lockoutd's own later entries from
    counting."""
    stack = temporary_locks
    stack.emulator.add_user("6000", org_id=ORG_ID, state=UserState.LOCKED)  # an admin's lock
    stack.emulator.add_user("6001", org_id=ORG_ID)
    past = time.time() - 60
    forged = {"org_id": ORG_ID, "rule": "otp-bruteforce", "strikes": 1, "updated_at": 4e10}
    write_schedule(
        stack,
        [
            (
                "6000",
                json.dumps(
                    {"user_id": "6000", "state": "locked", "unlock_at": past, **forged}
                ).encode(),
            ),
            ("6001", json.dumps({"user_id": "6001", "state": "kept", **forged}).encode()),
        ],
        signed=True,
    )

    # lockoutd's own temporary lock of 6001 is undone on time: the forged entry did not win.
    three_wrong_codes(stack, "6001")
    [unlock] = wait_until(lambda: decisions_for(stack, "6001", "unlock"), what="6001's unlock")
    assert unlock["outcome"] == "unlocked"
    assert stack.emulator.state_of("6001") is UserState.ACTIVE

    assert stack.emulator.state_of("6000") is UserState.LOCKED
    assert not unlock_calls(stack, "6000")
    assert stack.daemon.returncode is None
    rejected = [e for e in stack.daemon.logs() if e.get("event") == "schedule_entry_rejected"]
    assert len(rejected) == 2


def test_forged_values_out_of_range_crash_nothing(temporary_locks: Stack) -> None:
    """A lock time of -1e300 and a hundred thousand strikes are refused, not computed with, even
    in entries signed with the key."""
    stack = temporary_locks
    stack.emulator.add_user("6002", org_id=ORG_ID, state=UserState.LOCKED)
    stack.emulator.add_user("6003", org_id=ORG_ID)
    now = time.time()
    base = {"org_id": ORG_ID, "rule": "otp-bruteforce", "updated_at": now - 5}
    write_schedule(
        stack,
        [
            (
                "6002",
                json.dumps(
                    {
                        "user_id": "6002",
                        "state": "locked",
                        "strikes": 1,
                        "locked_at": -1e300,
                        "unlock_at": now - 1,
                        **base,
                    }
                ).encode(),
            ),
            (
                "6003",
                json.dumps(
                    {
                        "user_id": "6003",
                        "state": "unlocked",
                        "strikes": 100000,
                        "locked_at": now - 10,
                        "unlock_at": now - 6,
                        **base,
                    }
                ).encode(),
            ),
        ],
        signed=True,
    )

    three_wrong_codes(stack, "6003")
    [lock] = wait_until(lambda: decisions_for(stack, "6003", "lock"), what="6003's lock")
    assert lock["outcome"] == "locked"
    wait_until(lambda: decisions_for(stack, "6003", "unlock"), what="6003's unlock")
    assert stack.emulator.state_of("6003") is UserState.ACTIVE
    assert stack.emulator.state_of("6002") is UserState.LOCKED
    assert stack.daemon.returncode is None


def test_a_lock_whose_reply_was_lost_is_still_lockoutds_and_is_undone_on_time(
    temporary_locks: Stack,
) -> None:
    """ZITADEL locks, the reply is lost, the retry hears "already locked": that lock is ours."""
    stack = temporary_locks
    stack.emulator.add_user("6004", org_id=ORG_ID)
    stack.emulator.set_fault(Fault.drop_after_applying(times=1), path_contains="/6004/_lock")
    three_wrong_codes(stack, "6004")

    [lock] = wait_until(lambda: decisions_for(stack, "6004", "lock"), what="6004's lock")
    assert (lock["outcome"], lock["unlock_at"] is not None) == ("locked", True)
    lock_calls = stack.emulator.lock_calls("6004")
    assert [c.status for c in lock_calls] == [None, 400]  # applied but unanswered, then refused
    [unlock] = wait_until(lambda: decisions_for(stack, "6004", "unlock"), what="6004's unlock")
    assert unlock["outcome"] == "unlocked"
    assert stack.emulator.state_of("6004") is UserState.ACTIVE


def test_with_a_signing_key_a_well_formed_forgery_is_refused(temporary_locks: Stack) -> None:
    """An entry that names an administrator's lock by its very version, as lockoutd's own
    entries do, unlocks nobody when it is not signed; lockoutd's signed entries still work."""
    stack = temporary_locks
    stack.emulator.add_user("6005", org_id=ORG_ID, state=UserState.LOCKED)
    stack.emulator.add_user("6006", org_id=ORG_ID)
    read = httpx.get(
        f"{stack.emulator.base_url}/management/v1/users/6005",
        headers={"authorization": f"Bearer {PAT}", "x-zitadel-orgid": ORG_ID},
    )
    details = read.json()["user"]["details"]  # what someone who may read users can see
    now = time.time()
    forged = locked_entry(
        "6005",
        at=now - 5,
        unlock_at=now - 1,
        lock_sequence=int(details["sequence"]),
        lock_changed_at=details["changeDate"],
    )
    write_schedule(stack, [("6005", json.dumps(forged).encode())], signed=False)

    three_wrong_codes(stack, "6006")
    [unlock] = wait_until(lambda: decisions_for(stack, "6006", "unlock"), what="6006's unlock")
    assert unlock["outcome"] == "unlocked"
    assert stack.emulator.state_of("6005") is UserState.LOCKED
    assert not unlock_calls(stack, "6005")
    samples = stack.daemon.metrics()
    rejected = {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "lockoutd_schedule_entries_rejected_total"
    }
    assert rejected == {"bad_signature": 1, "malformed": 0, "invalid": 0, "wrong_key": 0}


def test_a_schedule_record_whose_signature_header_has_no_value_is_refused(
    temporary_locks: Stack,
) -> None:
    """Kafka lets a header carry no value (null). A schedule record whose signature header is
    such a null is refused as unsigned, and the daemon goes on locking and unlocking."""
    stack = temporary_locks
    stack.emulator.add_user("6007", org_id=ORG_ID, state=UserState.LOCKED)
    stack.emulator.add_user("6008", org_id=ORG_ID)
    now = time.time()
    entry = locked_entry("6007", at=now - 5, unlock_at=now - 1)

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            await producer.send_and_wait(
                stack.config.schedule_topic,
                json.dumps(entry).encode(),
                key=b"6007",
                headers=[(SIGNATURE_HEADER, None)],
            )
        finally:
            await producer.stop()

    asyncio.run(send())

    three_wrong_codes(stack, "6008")
    [unlock] = wait_until(lambda: decisions_for(stack, "6008", "unlock"), what="6008's unlock")
    assert unlock["outcome"] == "unlocked"
    assert stack.daemon.returncode is None
    assert stack.emulator.state_of("6007") is UserState.LOCKED
    assert not unlock_calls(stack, "6007")
    assert (
        stack.daemon.metric("lockoutd_schedule_entries_rejected_total", reason="bad_signature") == 1
    )


def test_a_replayed_older_entry_is_answered_with_the_newer_one(temporary_locks: Stack) -> None:
    """Anyone who can write the schedule topic can append an old entry lockoutd signed itself,
    byte for byte. Running instances ignore it (it is older), but compaction keeps the last
    record per user, and the next instance to start would load the replay as the user's entry
    (an unlock an hour early, a permanent lock undone). Seeing an older entry arrive, lockoutd
    writes the newer one again, so that the last record per user stays the newest."""
    stack = temporary_locks
    now = time.time()
    newer = locked_entry("6010", at=now - 1, unlock_at=now + 3600)
    older = locked_entry("6010", at=now - 100, unlock_at=now - 50)
    write_schedule(stack, [("6010", json.dumps(newer).encode())], signed=True)
    write_schedule(stack, [("6010", json.dumps(older).encode())], signed=True)

    def last_entry() -> dict[str, Any]:
        records = read_all(stack.bootstrap, stack.config.schedule_topic)
        return json.loads([r for r in records if r.key == b"6010"][-1].value)

    wait_until(lambda: last_entry()["updated_at"] == newer["updated_at"], what="the newer entry")
    assert last_entry()["unlock_at"] == newer["unlock_at"]
    assert not unlock_calls(stack, "6010")


def test_an_administrators_lock_made_while_lockoutd_retries_is_not_taken_for_its_own(
    temporary_locks: Stack,
) -> None:
    """ZITADEL answers lockoutd's lock with 503 a few times, and meanwhile an administrator locks
    the user. lockoutd's next attempt finds the user locked. Every earlier attempt was answered,
    so none of them locked anyone: the lock is the administrator's, and it is never undone
    (it used to be taken for lockoutd's own, its reply lost, and unlocked four seconds later)."""
    stack = temporary_locks
    stack.emulator.add_user("6011", org_id=ORG_ID)
    stack.emulator.set_fault(Fault.latency(0.5, times=4), path_contains="/6011/_lock")
    stack.emulator.set_fault(Fault.status(503, times=4), path_contains="/6011/_lock")
    three_wrong_codes(stack, "6011")
    wait_until(lambda: stack.emulator.lock_calls("6011"), what="lockoutd's first attempt")
    stack.emulator.set_state("6011", UserState.LOCKED)  # the administrator

    [lock] = wait_until(lambda: decisions_for(stack, "6011", "lock"), what="the lock decision")
    assert lock["outcome"] == "already_locked"
    assert lock.get("unlock_at") is None
    entries = [
        json.loads(r.value)
        for r in read_all(stack.bootstrap, stack.config.schedule_topic)
        if r.key == b"6011"
    ]
    assert entries[-1]["state"] == "cancelled"
    assert stack.emulator.state_of("6011") is UserState.LOCKED
    assert not unlock_calls(stack, "6011")


def test_a_locking_note_left_by_a_killed_instance_makes_no_later_lock_its_own(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """An instance writes its ``locking`` note, ZITADEL answers the lock with 503, and the
    instance is killed. Its batch, read again once the evidence is older than
    ``engine.max_event_age``, is stale, and the note stays. Then an administrator locks the
    user, and three more wrong codes cross the threshold again. That lock used to be taken for
    the one the note was written for, its reply lost, and was undone four seconds later. It is
    the administrator's, and stays."""
    rules = tmp_path / "rules"
    rules.mkdir()
    # A window of five seconds: the wrong codes of the first crossing have left it by the time
    # the second crossing comes.
    (rules / "rules.yaml").write_text(RULES.replace("window: 5m", "window: 5s"))
    stack = start_stack(
        broker,
        tmp_path,
        rule_paths=[rules],
        partitions=1,
        extra={"engine": {"max_event_age": "5s"}},
    )
    restarted = None
    try:
        stack.emulator.add_user("6021", org_id=ORG_ID)
        stack.emulator.set_fault(Fault.status(503), path_contains="/6021/_lock")
        now = datetime.now(UTC)
        produce(
            stack.bootstrap,
            stack.events_topic,
            [failure("6021", 0, reason="otp", occurred_at=now.isoformat()) for _ in range(3)],
        )
        wait_until(lambda: stack.emulator.lock_calls("6021"), what="lockoutd's first attempt")
        stack.daemon.kill()
        stack.emulator.clear_faults()
        time.sleep(6)  # past engine.max_event_age: the batch read again is stale
        stack.config.metrics_port = free_port()
        (tmp_path / "restarted").mkdir()
        restarted = launch(stack.config, tmp_path / "restarted")
        restarted.wait_ready()
        wait_until(
            lambda: [d["outcome"] for d in decisions_for(stack, "6021", "lock")] == ["stale"],
            what="the stale replay",
        )
        stack.emulator.set_state("6021", UserState.LOCKED)  # the administrator
        later = datetime.now(UTC).isoformat()
        produce(
            stack.bootstrap,
            stack.events_topic,
            [failure("6021", 0, reason="otp", occurred_at=later) for _ in range(3)],
        )
        wait_until(
            lambda: len(decisions_for(stack, "6021", "lock")) == 2, what="the second lock decision"
        )
        time.sleep(6)  # past the four seconds a lock of lockoutd's would have lasted

        assert [d["outcome"] for d in decisions_for(stack, "6021", "lock")] == [
            "stale",
            "already_locked",
        ]
        assert stack.emulator.state_of("6021") is UserState.LOCKED
        assert not unlock_calls(stack, "6021")
    finally:
        if restarted is not None and restarted.returncode is None:
            restarted.terminate()
        stop_stack(stack)


def test_an_unlock_answered_503_reads_the_user_again_before_it_tries_again(
    temporary_locks: Stack,
) -> None:
    """lockoutd's four-second lock is due: it reads the user, finds its own lock and calls
    unlock, which ZITADEL answers 503 a few times. Meanwhile an administrator unlocks the user
    and locks them again. The call used to be retried as it was, and the retry that got through
    undid the administrator's lock. An unlock is now tried once per read: the next try reads
    the user first, finds another lock, and leaves it (``not_ours``)."""
    stack = temporary_locks
    stack.emulator.add_user("6031", org_id=ORG_ID)
    three_wrong_codes(stack, "6031")
    [lock] = wait_until(lambda: decisions_for(stack, "6031", "lock"), what="the lock")
    assert lock["outcome"] == "locked"
    stack.emulator.set_fault(Fault.status(503, times=3), path_contains="/6031/_unlock")
    wait_until(lambda: unlock_calls(stack, "6031"), what="lockoutd's first unlock call")
    stack.emulator.set_state("6031", UserState.ACTIVE)  # the administrator unlocks,
    stack.emulator.set_state("6031", UserState.LOCKED)  # and locks again, for good

    [unlock] = wait_until(
        lambda: decisions_for(stack, "6031", "unlock"), timeout=60, what="the unlock decision"
    )
    assert unlock["outcome"] == "not_ours"
    assert stack.emulator.state_of("6031") is UserState.LOCKED
