"""How ZITADEL really finds and hides users, end to end: the broker, the emulator, the daemon.

The daemon runs the shipped ``rules/`` (five wrong passwords in ten minutes lock the user) with
the service account of ``conftest.start_stack``: it lives in org ``ORG_ID`` and holds
``IAM_USER_MANAGER`` unless a test changes its roles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lockoutd.testing.broker import LocalBroker
from lockoutd.testing.zitadel_emulator import DEFAULT_SERVICE_ACCOUNT_ID, UserState

from .conftest import ORG_ID, Stack, start_stack, stop_stack
from .kafka_helpers import at, decisions, produce, wait_committed

pytestmark = pytest.mark.e2e

OTHER_ORG = "700"


def by_login_name(login_name: str, minutes: float, **fields: Any) -> dict[str, Any]:
    """A wrong password for a user known only by login name."""
    return {
        "type": "auth.login.failed",
        "occurred_at": at(minutes),
        "login_name": login_name,
        "reason": "password",
        **fields,
    }


def decisions_named(stack: Stack, login_name: str) -> list[dict[str, Any]]:
    assert stack.config.decisions_topic is not None
    return [
        d
        for d in decisions(stack.bootstrap, stack.config.decisions_topic)
        if d.get("login_name") == login_name
    ]


def test_v1_locks_a_login_name_of_another_org_without_org_id(stack: Stack) -> None:
    """v1, no org in the events, the user in another org than the service account's: the
    instance-wide lookup finds them and the lock names their org."""
    assert OTHER_ORG != ORG_ID
    stack.emulator.add_user("5101", org_id=OTHER_ORG, login_name="carol@globex.example")
    produce(
        stack.bootstrap,
        stack.events_topic,
        [by_login_name("carol@globex.example", m) for m in range(5)],
        key_field="login_name",
    )
    wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)

    assert stack.emulator.state_of("5101") is UserState.LOCKED
    [decision] = decisions_named(stack, "carol@globex.example")
    assert (decision["outcome"], decision["user_id"], decision["org_id"]) == (
        "locked",
        "5101",
        OTHER_ORG,
    )
    [lock] = stack.emulator.lock_calls("5101")
    assert lock.headers.get("x-zitadel-orgid") == OTHER_ORG


def test_v2_says_what_to_grant_when_zitadel_hides_the_user(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """v2, a service account that may read only its own org, events naming a user of another
    org: ZITADEL's search answers nothing. The decision is ``failed`` with an error naming
    ``user.read``, not a cached ``unknown_user``; once the role is granted, names resolve."""
    stack = start_stack(broker, tmp_path, extra={"zitadel": {"api": "v2"}})
    try:
        stack.emulator.set_roles(DEFAULT_SERVICE_ACCOUNT_ID, {ORG_ID: {"ORG_USER_MANAGER"}})
        stack.emulator.add_user("5201", org_id=OTHER_ORG, login_name="dave@globex.example")
        events = [by_login_name("dave@globex.example", m, org_id=OTHER_ORG) for m in range(5)]
        produce(stack.bootstrap, stack.events_topic, events, key_field="login_name")
        wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)

        [decision] = decisions_named(stack, "dave@globex.example")
        assert decision["outcome"] == "failed"
        assert "user.read" in decision["error"]
        assert stack.emulator.state_of("5201") is UserState.ACTIVE
        assert stack.daemon.metric("lockoutd_zitadel_hidden_users_total") == 1
        assert stack.daemon.returncode is None

        stack.emulator.set_roles(
            DEFAULT_SERVICE_ACCOUNT_ID,
            {ORG_ID: {"ORG_USER_MANAGER"}, OTHER_ORG: {"ORG_USER_MANAGER"}},
        )
        stack.emulator.add_user("5202", org_id=OTHER_ORG, login_name="erin@globex.example")
        events = [by_login_name("erin@globex.example", m, org_id=OTHER_ORG) for m in range(5)]
        produce(stack.bootstrap, stack.events_topic, events, key_field="login_name")
        wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)
        assert stack.emulator.state_of("5202") is UserState.LOCKED
    finally:
        stop_stack(stack)
