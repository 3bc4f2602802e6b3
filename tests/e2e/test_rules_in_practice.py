"""Rules as operators run them: temporary locks that end on time (across restarts too), locks that
are not lockoutd's to undo, reloading rules, and ZITADEL's own event format.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockoutd.testing.broker import LocalBroker
from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, Stack, launch, start_stack, stop_stack
from .kafka_helpers import at, decisions, failure, produce, wait_committed, wait_until

pytestmark = pytest.mark.e2e

SHORT_LOCKS = """\
rules:
  - name: otp-bruteforce
    match: {{reason: [otp]}}
    key: [user_id]
    threshold: 3
    window: 5m
    action:
      lock:
        duration: {duration}
  - name: password-bruteforce
    match: {{reason: [password]}}
    key: [user_id]
    threshold: 5
    window: 10m
    action:
      lock: {{}}
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    return folder


def start_with_rules(
    broker: LocalBroker, tmp_path: Path, rules_dir: Path, text: str, **overrides: object
) -> Stack:
    (rules_dir / "rules.yaml").write_text(text)
    return start_stack(broker, tmp_path, rule_paths=[rules_dir], **overrides)


@pytest.fixture
def short_locks(broker: LocalBroker, tmp_path: Path, rules_dir: Path) -> Iterator[Stack]:
    """A daemon whose OTP rule locks for three seconds."""
    stack = start_with_rules(broker, tmp_path, rules_dir, SHORT_LOCKS.format(duration="3s"))
    yield stack
    stop_stack(stack)


def decisions_for(stack: Stack, user_id: str) -> list[dict[str, object]]:
    assert stack.config.decisions_topic is not None
    found = decisions(stack.bootstrap, stack.config.decisions_topic)
    return [d for d in found if d["user_id"] == user_id]


def test_a_temporary_lock_is_undone_on_time(short_locks: Stack) -> None:
    """Three wrong codes lock for three seconds; then lockoutd unlocks and says so."""
    stack = short_locks
    stack.emulator.add_user("2001", org_id=ORG_ID)
    produce(
        stack.bootstrap, stack.events_topic, [failure("2001", m, reason="otp") for m in range(3)]
    )

    wait_until(lambda: stack.emulator.state_of("2001") is UserState.LOCKED, what="the lock")
    wait_until(lambda: stack.emulator.state_of("2001") is UserState.ACTIVE, what="the unlock")
    found = wait_until(
        lambda: len(decisions_for(stack, "2001")) == 2 and decisions_for(stack, "2001")
    )
    lock, unlock = sorted(found, key=lambda d: d["action"])
    assert (lock["action"], lock["outcome"]) == ("lock", "locked")
    assert lock["unlock_at"] is not None
    assert (unlock["action"], unlock["outcome"]) == ("unlock", "unlocked")
    unlock_calls = [c for c in stack.emulator.calls if c.path.endswith("/2001/_unlock")]
    assert len(unlock_calls) == 1


def test_a_user_locked_by_someone_else_is_never_unlocked(short_locks: Stack) -> None:
    """A user an administrator had locked stays locked when the temporary rule's time is up."""
    stack = short_locks
    stack.emulator.add_user("2002", org_id=ORG_ID, state=UserState.LOCKED)
    produce(
        stack.bootstrap, stack.events_topic, [failure("2002", m, reason="otp") for m in range(3)]
    )
    wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)

    [decision] = decisions_for(stack, "2002")
    assert decision["outcome"] == "already_locked"
    assert decision["unlock_at"] is None
    time.sleep(5)  # longer than the three-second lock and the unlocker's one-second poll
    assert stack.emulator.state_of("2002") is UserState.LOCKED
    assert not [c for c in stack.emulator.calls if c.path.endswith("/2002/_unlock")]


def test_a_temporary_lock_is_undone_after_a_restart(
    broker: LocalBroker, tmp_path: Path, rules_dir: Path
) -> None:
    """A lock whose time passes while lockoutd is down is undone by the next start."""
    stack = start_with_rules(broker, tmp_path, rules_dir, SHORT_LOCKS.format(duration="4s"))
    try:
        stack.emulator.add_user("2003", org_id=ORG_ID)
        produce(
            stack.bootstrap,
            stack.events_topic,
            [failure("2003", m, reason="otp") for m in range(3)],
        )
        wait_until(lambda: stack.emulator.state_of("2003") is UserState.LOCKED, what="the lock")
        assert stack.daemon.terminate() == 0
        time.sleep(5)  # the unlock falls due while no lockoutd runs
        assert stack.emulator.state_of("2003") is UserState.LOCKED

        stack.daemon = launch(stack.config, tmp_path, log_name="second.log")
        stack.daemon.wait_ready()
        wait_until(lambda: stack.emulator.state_of("2003") is UserState.ACTIVE, what="the unlock")
        # ZITADEL's state changes before its answer reaches lockoutd, which logs after it.
        wait_until(
            lambda: [e for e in stack.daemon.logs() if e.get("event") == "user_unlocked"],
            what="the unlock logged",
        )
        assert stack.emulator.lock_calls("2003")[-1].status == 200
        assert len(stack.emulator.lock_calls("2003")) == 1  # the restart locked nobody again
    finally:
        stop_stack(stack)


def test_sighup_reloads_rules_and_unchanged_rules_keep_their_counts(
    broker: LocalBroker, tmp_path: Path, rules_dir: Path
) -> None:
    """A rule added by SIGHUP acts, counts survive the reload, a bad file changes nothing."""
    stack = start_with_rules(broker, tmp_path, rules_dir, SHORT_LOCKS.format(duration="1h"))
    try:
        stack.emulator.add_user("2004", org_id=ORG_ID)
        produce(stack.bootstrap, stack.events_topic, [failure("2004", m) for m in range(3)])
        wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)

        (rules_dir / "broken.yaml").write_text("rules:\n  - name: Not Valid\n")
        stack.daemon.reload()
        failed = wait_until(
            lambda: [e for e in stack.daemon.logs() if e.get("event") == "rules_reload_failed"]
        )
        assert any("broken.yaml:2" in problem for problem in failed[0]["problems"])
        (rules_dir / "broken.yaml").unlink()

        (rules_dir / "more.yaml").write_text(
            "rules:\n  - name: mfa-bruteforce\n    match: {reason: [mfa]}\n    key: [user_id]\n"
            "    threshold: 2\n    window: 5m\n    action: {report: {}}\n"
        )
        stack.daemon.reload()
        wait_until(lambda: [e for e in stack.daemon.logs() if e.get("event") == "rules_reloaded"])

        produce(stack.bootstrap, stack.events_topic, [failure("2004", m) for m in (3, 4)])
        wait_until(lambda: stack.emulator.state_of("2004") is UserState.LOCKED, what="the lock")
        produce(
            stack.bootstrap,
            stack.events_topic,
            [failure("2004", 5 + m, reason="mfa") for m in range(2)],
        )
        wait_until(
            lambda: any(d["rule"] == "mfa-bruteforce" for d in decisions_for(stack, "2004")),
            what="the new rule's decision",
        )
    finally:
        stop_stack(stack)


PERMANENT_ONLY = """\
rules:
  - name: password-bruteforce
    match: {reason: [password]}
    key: [user_id]
    threshold: 5
    window: 10m
    action:
      lock: {}
"""


def test_a_reload_that_brings_a_temporary_lock_without_a_key_is_refused(
    broker: LocalBroker, tmp_path: Path, rules_dir: Path
) -> None:
    """Without a schedule signing key a daemon runs permanent rules; a SIGHUP that adds a
    temporary lock is refused like a bad rule file, and the rules in force stay in force."""
    stack = start_with_rules(
        broker, tmp_path, rules_dir, PERMANENT_ONLY, schedule_signing_key_file=None
    )
    try:
        (rules_dir / "rules.yaml").write_text(SHORT_LOCKS.format(duration="1h"))
        stack.daemon.reload()
        [failed] = wait_until(
            lambda: [e for e in stack.daemon.logs() if e.get("event") == "rules_reload_failed"],
            what="the refused reload",
        )
        [problem] = failed["problems"]
        assert "rule otp-bruteforce locks temporarily" in problem
        assert "kafka.schedule_signing_key_file" in problem
        assert "LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY" in problem
        assert failed["kept"] == 1

        stack.emulator.add_user("2010", org_id=ORG_ID)
        stack.emulator.add_user("2011", org_id=ORG_ID)
        produce(
            stack.bootstrap,
            stack.events_topic,
            [failure("2010", m, reason="otp") for m in range(3)]
            + [failure("2011", m) for m in range(5)],
        )
        wait_until(lambda: stack.emulator.state_of("2011") is UserState.LOCKED, what="the lock")
        wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)
        assert stack.emulator.state_of("2010") is UserState.ACTIVE  # no OTP rule is in force
        assert not decisions_for(stack, "2010")
        assert not [e for e in stack.daemon.logs() if e.get("event") == "rules_reloaded"]
        assert stack.daemon.returncode is None
    finally:
        stop_stack(stack)


def test_zitadel_action_events_lock_like_native_ones(
    broker: LocalBroker, tmp_path: Path, rules_dir: Path
) -> None:
    """A topic of ZITADEL Actions v2 bodies, read with format zitadel, locks a brute-forced user."""
    stack = start_with_rules(
        broker, tmp_path, rules_dir, SHORT_LOCKS.format(duration="1h"), event_format="zitadel"
    )
    try:
        stack.emulator.add_user("2005", org_id=ORG_ID)
        bodies = [
            {
                "aggregateID": "2005",
                "aggregateType": "user",
                "resourceOwner": ORG_ID,
                "instanceID": "inst-1",
                "version": "v2",
                "sequence": 10 + m,
                "event_type": "user.human.password.check.failed",
                "created_at": at(m),
                "userID": "2005",
                "event_payload": {"userAgent": "curl/8", "remoteIP": "203.0.113.9"},
            }
            for m in range(5)
        ]
        produce(stack.bootstrap, stack.events_topic, [json.dumps(b).encode() for b in bodies])
        wait_until(lambda: stack.emulator.state_of("2005") is UserState.LOCKED, what="the lock")
    finally:
        stop_stack(stack)
