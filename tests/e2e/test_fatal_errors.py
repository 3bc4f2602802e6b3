"""ZITADEL refusing lockoutd itself stops the daemon with one plain line (README, "Operations").

Whichever task meets the refusal (the consumer's lock calls, the unlocker's unlock calls), the
daemon exits with the documented code and its log ends with exactly one ``daemon_failed`` line
that carries the message, never with a ``daemon_crashed`` traceback of a task group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lockoutd.cli import EXIT_FAILED
from lockoutd.testing.broker import LocalBroker
from lockoutd.testing.zitadel import DEFAULT_SERVICE_ACCOUNT_ID
from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, PAT, Stack, start_stack, stop_stack
from .kafka_helpers import failure, produce, wait_until

pytestmark = pytest.mark.e2e

TEMPORARY_LOCKS = """\
rules:
  - name: otp-bruteforce
    match: {reason: [otp]}
    key: [user_id]
    threshold: 3
    window: 5m
    action:
      lock:
        duration: 3s
"""


def wait_for_exit(stack: Stack) -> int:
    code: int = wait_until(
        lambda: stack.daemon.returncode is not None and [stack.daemon.returncode],
        timeout=60,
        what="the daemon to stop",
    )[0]
    return code


def fatal_lines(stack: Stack) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    logs = stack.daemon.logs()
    failed = [line for line in logs if line.get("event") == "daemon_failed"]
    crashed = [line for line in logs if line.get("event") == "daemon_crashed"]
    return failed, crashed


def assert_one_plain_failure(stack: Stack, message: str) -> None:
    assert wait_for_exit(stack) == EXIT_FAILED
    failed, crashed = fatal_lines(stack)
    assert crashed == [], stack.daemon.output()
    [line] = failed
    assert message in line["error"]
    assert line["error_type"] == "ZitadelConfigError"
    assert line["level"] == "error"
    assert stack.daemon.logs()[-1]["event"] == "daemon_failed"


@pytest.mark.parametrize(
    ("refusal", "message"),
    [
        ("revoked token", "ZITADEL rejected lockoutd's token"),
        ("no user.write at home", "holds user.write neither in its own org nor on the instance"),
    ],
)
def test_a_refused_lock_stops_the_daemon_with_one_daemon_failed_line(
    broker: LocalBroker, tmp_path: Path, refusal: str, message: str
) -> None:
    """A lock call ZITADEL refuses because of lockoutd itself: exit 1, one plain line."""
    stack = start_stack(broker, tmp_path)
    try:
        stack.emulator.add_user("5001", org_id=ORG_ID)
        if refusal == "revoked token":
            stack.emulator.revoke_token(PAT)
        else:
            # The account may only view its own org: lockoutd itself cannot lock anyone.
            stack.emulator.set_roles(DEFAULT_SERVICE_ACCOUNT_ID, {ORG_ID: {"ORG_OWNER_VIEWER"}})
        produce(
            stack.bootstrap,
            stack.events_topic,
            [failure("5001", m, org_id=ORG_ID) for m in range(5)],
        )
        assert_one_plain_failure(stack, message)
    finally:
        stop_stack(stack)


def test_a_refused_unlock_stops_the_daemon_with_one_daemon_failed_line(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """The unlocker meets the refusal (the token was revoked while a user was locked)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(TEMPORARY_LOCKS)
    stack = start_stack(broker, tmp_path, rule_paths=[rules])
    try:
        stack.emulator.add_user("5101", org_id=ORG_ID)
        produce(
            stack.bootstrap,
            stack.events_topic,
            [failure("5101", m, reason="otp", org_id=ORG_ID) for m in range(3)],
        )
        wait_until(lambda: stack.emulator.state_of("5101") is UserState.LOCKED, what="the lock")
        stack.emulator.revoke_token(PAT)
        assert_one_plain_failure(stack, "ZITADEL rejected lockoutd's token")
        assert stack.emulator.state_of("5101") is UserState.LOCKED
    finally:
        stop_stack(stack)
