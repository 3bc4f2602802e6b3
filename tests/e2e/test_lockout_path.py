"""The lockout path end to end: Kafka records in, ZITADEL locks, decisions and metrics out.

The daemon runs the shipped ``rules/``: password-bruteforce fires on five wrong passwords for one
user within ten minutes. Every test uses users of its own, so they share one daemon.
"""

from __future__ import annotations

import json

import pytest

from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, Stack
from .kafka_helpers import decisions, failure, produce, read_all, wait_committed, wait_until

pytestmark = pytest.mark.e2e


def decisions_for(stack: Stack, user_id: str) -> list[dict[str, object]]:
    assert stack.config.decisions_topic is not None
    return [
        d
        for d in decisions(stack.bootstrap, stack.config.decisions_topic)
        if d["user_id"] == user_id
    ]


def settle(stack: Stack) -> None:
    """Wait until the daemon has acted on and committed everything produced so far."""
    wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)


def test_five_failures_in_the_window_lock_the_user_exactly_once(stack: Stack) -> None:
    """Six wrong passwords within ten minutes lock the user with one call and one decision."""
    stack.emulator.add_user("1001", org_id=ORG_ID, login_name="alice@example.com")
    produce(
        stack.bootstrap, stack.events_topic, [failure("1001", m, org_id=ORG_ID) for m in range(6)]
    )
    settle(stack)

    assert stack.emulator.state_of("1001") is UserState.LOCKED
    assert len(stack.emulator.lock_calls("1001")) == 1
    [decision] = decisions_for(stack, "1001")
    assert decision["rule"] == "password-bruteforce"
    assert decision["outcome"] == "locked"
    assert decision["action"] == "lock"
    assert decision["mode"] == "enforce"
    assert decision["count"] == 5
    assert decision["window_seconds"] == 600
    assert decision["org_id"] == ORG_ID
    lock_call = stack.emulator.lock_calls("1001")[0]
    assert lock_call.headers.get("x-zitadel-orgid") == ORG_ID
    assert (
        stack.daemon.metric(
            "lockoutd_actions_total", rule="password-bruteforce", action="lock", outcome="locked"
        )
        >= 1
    )
    assert stack.daemon.metric("lockoutd_rule_fired_total", rule="password-bruteforce") >= 1
    assert stack.daemon.metric("lockoutd_lock_latency_seconds_count") >= 1


def test_four_failures_do_not_lock(stack: Stack) -> None:
    """Four wrong passwords stay under the threshold: no call, no decision."""
    stack.emulator.add_user("1002", org_id=ORG_ID)
    produce(stack.bootstrap, stack.events_topic, [failure("1002", m) for m in range(4)])
    settle(stack)

    assert stack.emulator.state_of("1002") is UserState.ACTIVE
    assert stack.emulator.lock_calls("1002") == []
    assert decisions_for(stack, "1002") == []


def test_five_failures_spread_wider_than_the_window_do_not_lock(stack: Stack) -> None:
    """Five wrong passwords three minutes apart span twelve minutes: never five in ten."""
    stack.emulator.add_user("1003", org_id=ORG_ID)
    produce(
        stack.bootstrap,
        stack.events_topic,
        [failure("1003", -5 + m * 3) for m in range(5)],
    )
    settle(stack)

    assert stack.emulator.lock_calls("1003") == []
    assert decisions_for(stack, "1003") == []


def test_an_already_locked_user_is_a_success(stack: Stack) -> None:
    """A user someone else locked gives already_locked, and no error is logged."""
    stack.emulator.add_user("1004", org_id=ORG_ID, state=UserState.LOCKED)
    produce(
        stack.bootstrap, stack.events_topic, [failure("1004", m, org_id=ORG_ID) for m in range(5)]
    )
    settle(stack)

    [decision] = decisions_for(stack, "1004")
    assert decision["outcome"] == "already_locked"
    assert stack.emulator.state_of("1004") is UserState.LOCKED
    errors = [
        e for e in stack.daemon.logs() if e.get("level") == "error" and e.get("user_id") == "1004"
    ]
    assert errors == []


def test_a_deactivated_user_is_not_reported_as_locked(stack: Stack) -> None:
    """A deactivated user answers like a locked one; lockoutd reads its state: not_lockable."""
    stack.emulator.add_user("1005", org_id=ORG_ID, state=UserState.INACTIVE)
    produce(
        stack.bootstrap, stack.events_topic, [failure("1005", m, org_id=ORG_ID) for m in range(5)]
    )
    settle(stack)

    [decision] = decisions_for(stack, "1005")
    assert decision["outcome"] == "not_lockable"
    assert stack.emulator.state_of("1005") is UserState.INACTIVE


def test_invalid_records_are_dead_lettered_unchanged_and_the_valid_ones_still_act(
    stack: Stack,
) -> None:
    """Bad records reach the dead-letter topic byte for byte; the good ones around still lock."""
    stack.emulator.add_user("1006", org_id=ORG_ID)
    bad = [
        b"{not json",
        b"\xff\xfe\x00 binary",
        json.dumps({"type": "auth.login.failed", "user_id": "1006"}).encode(),  # no occurred_at
        json.dumps([1, 2, 3]).encode(),
    ]
    invalid_before = stack.daemon.metric("lockoutd_events_total", result="invalid")
    good = [failure("1006", m) for m in range(5)]
    produce(
        stack.bootstrap,
        stack.events_topic,
        [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3], bad[3], good[4]],
    )
    settle(stack)

    assert stack.emulator.state_of("1006") is UserState.LOCKED
    assert stack.config.dead_letter_topic is not None
    dead = read_all(stack.bootstrap, stack.config.dead_letter_topic)
    values = [record.value for record in dead]
    for value in bad:
        assert value in values
    reasons = {dict(record.headers)["lockoutd.reason"] for record in dead if record.value in bad}
    assert reasons == {b"invalid_json", b"missing_field", b"not_an_object"}
    assert stack.daemon.metric("lockoutd_events_total", result="invalid") - invalid_before == len(
        bad
    )
    rejected = [e for e in stack.daemon.logs() if e.get("event") == "event_rejected"]
    assert all({"topic", "partition", "offset"} <= set(e) for e in rejected)


def test_other_event_types_are_ignored_and_counted(stack: Stack) -> None:
    """A record of another type is counted as ignored and never counts towards a rule."""
    stack.emulator.add_user("1007", org_id=ORG_ID)
    before = stack.daemon.metric("lockoutd_events_total", result="ignored")
    produce(
        stack.bootstrap,
        stack.events_topic,
        [{**failure("1007", m), "type": "auth.password.changed"} for m in range(6)],
    )
    settle(stack)

    assert stack.emulator.lock_calls("1007") == []
    assert stack.daemon.metric("lockoutd_events_total", result="ignored") - before == 6


def test_health_and_readiness_answer(stack: Stack) -> None:
    """/healthz answers while alive and /readyz once the consumer has joined its group."""
    import httpx

    assert httpx.get(f"{stack.daemon.url}/healthz").status_code == 200
    ready = httpx.get(f"{stack.daemon.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"kafka": True, "zitadel": True}
    assert (
        stack.daemon.metric("lockoutd_build_info", version=__import__("lockoutd").__version__) == 1
    )


def test_sigterm_stops_the_daemon_cleanly(broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM drains, commits and exits 0 with one summary line."""
    from .conftest import start_stack, stop_stack

    own = start_stack(broker, tmp_path)
    try:
        own.emulator.add_user("1100", org_id=ORG_ID)
        produce(own.bootstrap, own.events_topic, [failure("1100", m) for m in range(5)])
        wait_until(lambda: own.emulator.state_of("1100") is UserState.LOCKED, what="the lock")
        assert own.daemon.terminate() == 0
        stopped = [e for e in own.daemon.logs() if e.get("event") == "daemon_stopped"]
        assert len(stopped) == 1
        assert stopped[0]["outcomes"] == {"locked": 1}
    finally:
        stop_stack(own)
