"""The right person, with real processes: allowlists that hold however events name a user, per-org
caps that events cannot steer, and Keycloak events that lock the ZITADEL user they name.

README sections: "Rules" (the allowlist), "Operations" ("Mass-lockout safety") and "Other
producers' formats".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from lockoutd.testing.broker import LocalBroker
from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, REPO, Stack, start_stack, stop_stack
from .kafka_helpers import at, decisions, failure, produce, wait_committed

pytestmark = pytest.mark.e2e

PER_ORG_CAP = 2


def settle(stack: Stack) -> None:
    wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)


def published(stack: Stack) -> list[dict[str, Any]]:
    assert stack.config.decisions_topic is not None
    return decisions(stack.bootstrap, stack.config.decisions_topic)


def by_name(name: str, minutes: float, **fields: Any) -> dict[str, Any]:
    """A wrong password for a login name alone, as a producer that knows no user id sends it."""
    event = failure("", minutes, login_name=name, **fields)
    del event["user_id"]
    return event


# -- one notion of "this user": the allowlist -------------------------------------------------


@pytest.fixture(scope="module")
def allowlist_stack(
    broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("allowlist")
    rules = tmp / "rules"
    rules.mkdir()
    shipped = yaml.safe_load((REPO / "rules" / "bruteforce.yaml").read_text())
    shipped["allowlist"] = {"users": ["2000", "breakglass@acme.example", "oncall@acme.example"]}
    (rules / "bruteforce.yaml").write_text(yaml.safe_dump(shipped))
    stack = start_stack(broker, tmp, rule_paths=[rules])
    yield stack
    stop_stack(stack)


@pytest.mark.parametrize(
    ("user", "known_as", "events_say"),
    [
        pytest.param("2000", "admin@acme.example", "admin@acme.example", id="an allowlisted id"),
        pytest.param(
            "2001",
            "breakglass@acme.example",
            " BreakGlass@acme.example",
            id="an allowlisted login name, spaced and capitalised",
        ),
    ],
)
def test_an_allowlisted_user_named_by_login_name_is_spared(
    allowlist_stack: Stack, user: str, known_as: str, events_say: str
) -> None:
    """The allowlist holds 2000 and breakglass@acme.example; events carry only a login name."""
    stack = allowlist_stack
    stack.emulator.add_user(user, org_id=ORG_ID, login_name=known_as)
    produce(
        stack.bootstrap,
        stack.events_topic,
        [by_name(events_say, m, org_id=ORG_ID) for m in range(5)],
        key_field="login_name",
    )
    settle(stack)

    assert stack.emulator.state_of(user) is UserState.ACTIVE
    assert stack.emulator.lock_calls(user) == []
    [decision] = [
        d for d in published(stack) if d["key"] == f"org_id:{ORG_ID} login_name:{known_as}"
    ]
    assert decision["outcome"] == "allowlisted"


def test_an_allowlisted_login_name_spares_the_user_however_else_the_events_name_them(
    allowlist_stack: Stack,
) -> None:
    """The allowlist holds oncall@acme.example, user 2002's second login name; events name 2002
    by id and by its first login name, and it is spared both ways."""
    stack = allowlist_stack
    stack.emulator.add_user("2002", org_id=ORG_ID, login_name="sre-2002@acme.example")
    stack.emulator.add_login_name("2002", "OnCall@acme.example")
    stack.emulator.add_user("2003", org_id=ORG_ID, login_name="someone@acme.example")
    produce(
        stack.bootstrap,
        stack.events_topic,
        [failure(user, m, org_id=ORG_ID) for user in ("2002", "2003") for m in range(5)]
        + [by_name("SRE-2002@acme.example ", m, org_id=ORG_ID) for m in range(5)],
    )
    settle(stack)

    assert stack.emulator.state_of("2002") is UserState.ACTIVE
    assert stack.emulator.lock_calls("2002") == []
    assert stack.emulator.state_of("2003") is UserState.LOCKED  # the allowlist spares no one else
    outcomes = [(d["key"], d["user_id"], d["outcome"]) for d in published(stack)]
    assert ("2002", "2002", "allowlisted") in outcomes
    assert (f"org_id:{ORG_ID} login_name:sre-2002@acme.example", "2002", "allowlisted") in outcomes
    assert ("2003", "2003", "locked") in outcomes


def test_an_allowlisted_login_name_beside_another_users_id_spares_nobody(
    allowlist_stack: Stack,
) -> None:
    """The lock acts on the id an event names. An attacker who sends user 2004's fifth failure
    with an allowlisted login name beside 2004's id (breakglass@acme.example is someone else's)
    used to make the crossing "allowlisted", and the window fires once per crossing: 2004 stayed
    unlocked under the attack that followed. 2004 is locked."""
    stack = allowlist_stack
    stack.emulator.add_user("2004", org_id=ORG_ID, login_name="victim@acme.example")
    crossing = failure("2004", 4, org_id=ORG_ID, login_name="breakglass@acme.example")
    produce(
        stack.bootstrap,
        stack.events_topic,
        [failure("2004", m, org_id=ORG_ID) for m in range(4)] + [crossing],
    )
    settle(stack)

    assert stack.emulator.state_of("2004") is UserState.LOCKED
    outcomes = [(d["user_id"], d["outcome"]) for d in published(stack) if d["key"] == "2004"]
    assert outcomes == [("2004", "locked")]


# -- one window, one person ---------------------------------------------------------------------
# An event names its user by id, or by login name (and org) when it has no id. Every event a window
# counts names the same person, so the event that happens to cross the threshold, whichever it is,
# locks that person: an attacker who writes the crossing event cannot point it elsewhere.


def test_a_login_name_that_spells_a_users_id_does_not_blind_that_user(stack: Stack) -> None:
    """A failure naming only the login name "2500" used to count in user 2500's window. Sent as
    the fifth, it crossed the threshold, the lock looked the name up and found nobody, and the
    window had fired: 2500's own failures after it locked no one. 2500 is locked."""
    stack.emulator.add_user("2500", org_id=ORG_ID, login_name="erin@acme.example")
    produce(
        stack.bootstrap,
        stack.events_topic,
        [failure("2500", m, org_id=ORG_ID) for m in range(4)]
        + [by_name("2500", 4, org_id=ORG_ID)]
        + [failure("2500", 5 + m / 10, org_id=ORG_ID) for m in range(3)],
    )
    settle(stack)

    assert stack.emulator.state_of("2500") is UserState.LOCKED
    outcomes = {(d["key"], d["outcome"]) for d in published(stack) if "2500" in d["key"]}
    assert outcomes == {("2500", "locked")}


def test_a_login_name_event_claiming_another_org_does_not_blind_the_name(stack: Stack) -> None:
    """Failures for frank@acme.example in its org, the fifth claiming an org it is not in: that
    one used to cross the threshold, the name was looked up in the wrong org, and nobody was
    locked for the rest of the attack. The name is counted per org, and frank is locked."""
    stack.emulator.add_user("2501", org_id=ORG_ID, login_name="frank@acme.example")
    stack.emulator.add_org("990001")
    name = "frank@acme.example"
    produce(
        stack.bootstrap,
        stack.events_topic,
        [by_name(name, m, org_id=ORG_ID) for m in range(4)]
        + [by_name(name, 4, org_id="990001")]
        + [by_name(name, 5 + m / 10, org_id=ORG_ID) for m in range(3)],
    )
    settle(stack)

    assert stack.emulator.state_of("2501") is UserState.LOCKED
    [locked] = [d for d in published(stack) if d["user_id"] == "2501"]
    assert (locked["key"], locked["outcome"]) == (
        f"org_id:{ORG_ID} login_name:frank@acme.example",
        "locked",
    )


def test_a_user_id_that_spells_a_login_name_is_refused_and_blinds_nobody(stack: Stack) -> None:
    """A failure whose user_id is gina@acme.example, no ZITADEL id, used to count in the window
    of that login name; sent as the fifth it crossed, its lock failed for want of an id, and
    gina stayed unlocked. It is dead-lettered as bad_id, and gina is locked."""
    stack.emulator.add_user("2502", org_id=ORG_ID, login_name="gina@acme.example")
    name = "gina@acme.example"
    produce(
        stack.bootstrap,
        stack.events_topic,
        [by_name(name, m) for m in range(4)]
        + [failure(name, 4)]
        + [by_name(name, 5 + m / 10) for m in range(3)],
    )
    settle(stack)

    assert stack.emulator.state_of("2502") is UserState.LOCKED
    assert stack.daemon.metric("lockoutd_dead_lettered_total", reason="bad_id") == 1


# -- caps that hold -----------------------------------------------------------------------------


def capped_stack(broker: LocalBroker, tmp: Path, *, api: str) -> Stack:
    return start_stack(
        broker,
        tmp,
        extra={
            "zitadel": {"api": api},
            "safety": {"max_locks_per_minute_per_org": PER_ORG_CAP},
        },
    )


def attack_and_count(stack: Stack, users: list[str], org_ids: list[str | None]) -> Counter[str]:
    """Five wrong passwords for each user, the i-th user's events claiming ``org_ids[i]``."""
    events = [
        failure(user, m, **({"org_id": org} if org is not None else {}))
        for user, org in zip(users, org_ids, strict=True)
        for m in range(5)
    ]
    produce(stack.bootstrap, stack.events_topic, events)
    settle(stack)
    return Counter(d["outcome"] for d in published(stack) if d["user_id"] in users)


@pytest.fixture(scope="module")
def v1_capped(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = capped_stack(broker, tmp_path_factory.mktemp("v1-capped"), api="v1")
    yield stack
    stop_stack(stack)


@pytest.fixture(scope="module")
def v2_capped(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = capped_stack(broker, tmp_path_factory.mktemp("v2-capped"), api="v2")
    yield stack
    stop_stack(stack)


def test_v1_events_without_an_org_count_against_the_org_lockoutd_acts_in(v1_capped: Stack) -> None:
    """v1 acts in the service account's org when an event names none: that org's cap holds."""
    users = [str(2100 + n) for n in range(6)]
    for user in users:
        v1_capped.emulator.add_user(user, org_id=ORG_ID)  # the service account's org

    outcomes = attack_and_count(v1_capped, users, [None] * 6)

    assert outcomes == {"locked": PER_ORG_CAP, "suppressed": 6 - PER_ORG_CAP}
    locked = [u for u in users if v1_capped.emulator.state_of(u) is UserState.LOCKED]
    assert len(locked) == PER_ORG_CAP


def test_v2_events_without_an_org_count_against_the_users_org(v2_capped: Stack) -> None:
    """v2 locks instance-wide: the users' org, as ZITADEL reports it, is what the cap counts."""
    users = [str(2200 + n) for n in range(6)]
    for user in users:
        v2_capped.emulator.add_user(user, org_id="302")

    outcomes = attack_and_count(v2_capped, users, [None] * 6)

    assert outcomes == {"locked": PER_ORG_CAP, "suppressed": 6 - PER_ORG_CAP}


def test_v2_events_that_invent_an_org_each_cannot_mint_budget(v2_capped: Stack) -> None:
    """Six users of one org, each event claiming a different made-up org: the real org's cap."""
    users = [str(2300 + n) for n in range(6)]
    for user in users:
        v2_capped.emulator.add_user(user, org_id="303")

    outcomes = attack_and_count(v2_capped, users, [str(990000 + n) for n in range(6)])

    assert outcomes == {"locked": PER_ORG_CAP, "suppressed": 6 - PER_ORG_CAP}
    suppressed = [
        d for d in published(v2_capped) if d["user_id"] in users and d["outcome"] == "suppressed"
    ]
    assert all("303" in d["error"] for d in suppressed)


# -- Keycloak events that can lock ----------------------------------------------------------


def keycloak_failure(username: str, minutes: float, **details: Any) -> dict[str, Any]:
    """A Keycloak LOGIN_ERROR as an event listener publishes it."""
    millis = round(datetime.fromisoformat(at(minutes)).timestamp() * 1000)
    return {
        "id": f"kc-{username}-{minutes}",
        "time": millis,
        "type": "LOGIN_ERROR",
        "realmId": "acme",
        "clientId": "account-console",
        "userId": "0b6f1c3e-8a5d-4f7b-9e2c-1d4a6b8c0e2f",
        "ipAddress": "203.0.113.7",
        "error": "invalid_user_credentials",
        "details": {
            "auth_method": "openid-connect",
            "auth_type": "code",
            "username": username,
            **details,
        },
    }


@pytest.fixture(scope="module")
def keycloak_stack(
    broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    stack = start_stack(broker, tmp_path_factory.mktemp("keycloak"), event_format="keycloak")
    yield stack
    stop_stack(stack)


def test_a_keycloak_password_brute_force_locks_the_zitadel_user_of_that_login_name(
    keycloak_stack: Stack,
) -> None:
    """Five wrong passwords in Keycloak lock the ZITADEL user whose login name is the username."""
    stack = keycloak_stack
    stack.emulator.add_user("2400", org_id=ORG_ID, login_name="carol@acme.example")
    produce(
        stack.bootstrap,
        stack.events_topic,
        [keycloak_failure("Carol@acme.example", m) for m in range(5)],
        key_field="userId",
    )
    settle(stack)

    assert stack.emulator.state_of("2400") is UserState.LOCKED
    [decision] = [d for d in published(stack) if d["user_id"] == "2400"]
    assert (decision["rule"], decision["outcome"]) == ("password-bruteforce", "locked")


def test_a_keycloak_otp_brute_force_is_seen_by_the_otp_rule(keycloak_stack: Stack) -> None:
    """Keycloak reports a wrong code as invalid_user_credentials of an OTP credential."""
    stack = keycloak_stack
    stack.emulator.add_user("2401", org_id=ORG_ID, login_name="dave@acme.example")
    produce(
        stack.bootstrap,
        stack.events_topic,
        [keycloak_failure("dave@acme.example", m, credential_type="otp") for m in range(3)],
        key_field="userId",
    )
    settle(stack)

    assert stack.emulator.state_of("2401") is UserState.LOCKED
    [decision] = [d for d in published(stack) if d["user_id"] == "2401"]
    assert (decision["rule"], decision["outcome"]) == ("otp-bruteforce", "locked")
    assert decision["unlock_at"] is not None
