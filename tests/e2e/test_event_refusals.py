"""One forged record cannot stop lockoutd, end to end: the broker, the emulator, the daemon.

An event names an org and a user. ZITADEL refusing that claim (an org it does not know, a user of
an org the service account may not act in) fails that one decision, with what to grant or that the
org is unknown; a real attack behind it is still locked. ZITADEL refusing lockoutd itself (a token
it rejects) still stops the daemon at once. README sections: "Operations" ("ZITADEL refusing
lockoutd itself") and "Limits and risks".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lockoutd.cli import EXIT_FAILED
from lockoutd.testing.broker import LocalBroker
from lockoutd.testing.zitadel_emulator import DEFAULT_SERVICE_ACCOUNT_ID, UserState

from .conftest import ORG_ID, PAT, Stack, start_stack, stop_stack
from .kafka_helpers import decisions, failure, produce, wait_committed, wait_until

pytestmark = pytest.mark.e2e

OTHER_ORG = "700"
INVENTED_ORG = "999999999"
VICTIM = "7000"  # a real user of the service account's org, under a real attack
FORGED_ORG_USER = "7001"  # a user of another org, named with an org id nobody has
FORGED_USER = "7002"  # a user of an org the service account may not write
FORGED_NAME = "mallory@nowhere.example"
FORGED_NAME_KEY = f"org_id:{INVENTED_ORG} login_name:{FORGED_NAME}"  # its decision's key


def by_login_name(login_name: str, minutes: float, **fields: Any) -> dict[str, Any]:
    event = failure("", minutes, login_name=login_name, **fields)
    del event["user_id"]
    return event


def published(stack: Stack) -> dict[str, dict[str, Any]]:
    assert stack.config.decisions_topic is not None
    return {d["key"]: d for d in decisions(stack.bootstrap, stack.config.decisions_topic)}


def last_lines(stack: Stack) -> str:
    return "\n".join(stack.daemon.output().splitlines()[-5:])


def settle(stack: Stack) -> None:
    """Wait until the daemon has committed every event produced, and is still running."""
    try:
        wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics, timeout=60)
    except AssertionError:
        pytest.fail(f"the batch was never committed; the daemon said:\n{last_lines(stack)}")
    assert stack.daemon.returncode is None, last_lines(stack)


@pytest.fixture(params=["v1", "v2"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_forged_orgs_and_users_fail_their_decision_and_the_attack_behind_them_is_locked(
    broker: LocalBroker, tmp_path: Path, api: str
) -> None:
    """The service account manages the users of its own org only. Three forged attacks come
    first (an invented org id with a user id, a user of an org the account may not write, an
    invented org id with a login name), then a real one: the daemon keeps running, the real
    victim is locked and each forged decision is ``failed`` with an error that says why."""
    stack = start_stack(broker, tmp_path, extra={"zitadel": {"api": api}})
    try:
        emu = stack.emulator
        emu.set_roles(DEFAULT_SERVICE_ACCOUNT_ID, {ORG_ID: {"ORG_USER_MANAGER"}})
        emu.add_org(OTHER_ORG)
        emu.add_user(VICTIM, org_id=ORG_ID)
        emu.add_user(FORGED_ORG_USER, org_id=OTHER_ORG)
        emu.add_user(FORGED_USER, org_id=OTHER_ORG)
        forged = (
            [failure(FORGED_ORG_USER, m, org_id=INVENTED_ORG) for m in range(5)]
            + [failure(FORGED_USER, m, org_id=OTHER_ORG) for m in range(5)]
            + [by_login_name(FORGED_NAME, m, org_id=INVENTED_ORG) for m in range(5)]
        )
        produce(stack.bootstrap, stack.events_topic, forged)
        produce(
            stack.bootstrap,
            stack.events_topic,
            [failure(VICTIM, m, org_id=ORG_ID) for m in range(5)],
        )
        settle(stack)

        assert emu.state_of(VICTIM) is UserState.LOCKED
        assert emu.state_of(FORGED_ORG_USER) is UserState.ACTIVE
        assert emu.state_of(FORGED_USER) is UserState.ACTIVE
        outcomes = published(stack)
        assert outcomes[VICTIM]["outcome"] == "locked"
        org_user, user = outcomes[FORGED_ORG_USER], outcomes[FORGED_USER]
        assert org_user["outcome"] == user["outcome"] == "failed"
        grant = "grant it ORG_USER_MANAGER in {} or IAM_USER_MANAGER"
        if api == "v1":  # the event's org is the org header
            assert f"ZITADEL knows no org {INVENTED_ORG}" in org_user["error"]
            assert grant.format(f"org {OTHER_ORG}") in user["error"]
            assert outcomes[FORGED_NAME_KEY]["outcome"] == "failed"
            assert f"ZITADEL knows no org {INVENTED_ORG}" in outcomes[FORGED_NAME_KEY]["error"]
            expected = {"unknown_org": 2.0, "no_permission": 1.0}
        else:  # v2 acts on the user's own org, which the account may not write
            for decision in (org_user, user):
                assert grant.format("the user's org") in decision["error"]
            assert outcomes[FORGED_NAME_KEY]["outcome"] == "unknown_user"
            expected = {"unknown_org": 0.0, "no_permission": 2.0}
        counted = {
            reason: stack.daemon.metric("lockoutd_refused_actions_total", reason=reason)
            for reason in expected
        }
        assert counted == expected
        logs = stack.daemon.logs()
        for key in (FORGED_ORG_USER, FORGED_USER):
            said = [line for line in logs if line.get("key") == key and line["level"] == "error"]
            assert len(said) == 1, said
        assert not [
            line for line in logs if line.get("event") in ("daemon_failed", "daemon_crashed")
        ]
        assert stack.daemon.returncode is None
    finally:
        stop_stack(stack)


def test_an_account_granted_in_another_org_than_its_own_is_not_stopped_by_one_event(
    broker: LocalBroker, tmp_path: Path, api: str
) -> None:
    """The service account lives in one org and manages the users of another (a tenant's) only.
    A user of a third org, named by one event, is refused: that decision fails. It used to stop
    the daemon (the account holds nothing in its own org), and every restart met the event."""
    stack = start_stack(broker, tmp_path, extra={"zitadel": {"api": api}})
    tenant = "701"
    try:
        emu = stack.emulator
        emu.add_org(tenant)
        emu.add_org(OTHER_ORG)
        emu.set_roles(DEFAULT_SERVICE_ACCOUNT_ID, {tenant: {"ORG_USER_MANAGER"}})
        emu.add_user(VICTIM, org_id=tenant)
        emu.add_user(FORGED_USER, org_id=OTHER_ORG)
        produce(
            stack.bootstrap,
            stack.events_topic,
            [failure(FORGED_USER, m, org_id=OTHER_ORG) for m in range(5)]
            + [failure(VICTIM, m, org_id=tenant) for m in range(5)],
        )
        settle(stack)
        assert emu.state_of(VICTIM) is UserState.LOCKED
        assert emu.state_of(FORGED_USER) is UserState.ACTIVE
        outcomes = published(stack)
        assert outcomes[VICTIM]["outcome"] == "locked"
        assert outcomes[FORGED_USER]["outcome"] == "failed"
        assert f"holds it in org {tenant}" in outcomes[FORGED_USER]["error"]
    finally:
        stop_stack(stack)


def test_a_token_zitadel_rejects_still_stops_the_daemon_at_once(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """A rejected token is lockoutd's own fault, whatever the event claims: the first event that
    needs ZITADEL stops the daemon with the token's message, and nobody is locked."""
    stack = start_stack(broker, tmp_path)
    try:
        stack.emulator.add_user(VICTIM, org_id=ORG_ID)
        stack.emulator.revoke_token(PAT)
        produce(
            stack.bootstrap,
            stack.events_topic,
            [failure(VICTIM, m, org_id=INVENTED_ORG) for m in range(5)],
        )
        code = wait_until(
            lambda: stack.daemon.returncode is not None and [stack.daemon.returncode],
            timeout=60,
            what="the daemon to stop",
        )[0]
        assert code == EXIT_FAILED
        assert "ZITADEL rejected lockoutd's token for lock" in stack.daemon.output()
        assert stack.emulator.state_of(VICTIM) is UserState.ACTIVE
    finally:
        stop_stack(stack)
