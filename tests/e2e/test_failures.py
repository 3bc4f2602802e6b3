"""Fault injection with real processes: nothing lost, nothing done twice, nobody locked out by
accident. Each test runs its own daemon(s) against the broker and the ZITADEL emulator and
asserts on the emulator's record of calls, the metrics and the topics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lockoutd.testing.broker import LocalBroker, free_port
from lockoutd.testing.process import DaemonProcess
from lockoutd.testing.proxy import CuttableProxy
from lockoutd.testing.zitadel_emulator import Fault, UserState

from .conftest import ORG_ID, Stack, launch, start_stack, stop_stack
from .kafka_helpers import (
    decisions,
    failure,
    produce,
    produce_at_once,
    wait_committed,
    wait_until,
)

pytestmark = pytest.mark.e2e


def attack(stack: Stack, users: list[str], *, failures: int = 5) -> None:
    """Five wrong passwords within the window for each of ``users``."""
    events = [failure(user, m, org_id=ORG_ID) for user in users for m in range(failures)]
    produce(stack.bootstrap, stack.events_topic, events)


def add_users(stack: Stack, users: list[str]) -> None:
    for user in users:
        stack.emulator.add_user(user, org_id=ORG_ID)


def all_locked(stack: Stack, users: list[str]) -> bool:
    return all(stack.emulator.state_of(user) is UserState.LOCKED for user in users)


@pytest.fixture
def own_stack(broker: LocalBroker, tmp_path: Path) -> Iterator[Stack]:
    stack = start_stack(
        broker,
        tmp_path,
        extra={"zitadel": {"max_concurrency": 1}, "engine": {"drain_timeout": "3s"}},
    )
    yield stack
    stop_stack(stack)


def test_kill_9_in_the_middle_of_a_batch_loses_no_lock(own_stack: Stack, tmp_path: Path) -> None:
    """A daemon killed while locking one user after another: after a restart all are locked."""
    stack = own_stack
    users = [str(3000 + n) for n in range(8)]
    add_users(stack, users)
    stack.emulator.set_fault(Fault.latency(0.5), path_contains="/_lock")
    attack(stack, users)
    wait_until(lambda: stack.emulator.lock_calls(), what="the first lock call")

    assert stack.daemon.kill() == -9
    assert not all_locked(stack, users)  # the kill came before the batch was done

    stack.emulator.clear_faults()
    stack.daemon = launch(stack.config, tmp_path, log_name="restarted.log")
    stack.daemon.wait_ready()
    wait_until(lambda: all_locked(stack, users), what="every attacked user locked")


def test_sigterm_during_a_zitadel_outage_commits_nothing_and_the_next_start_locks(
    own_stack: Stack, tmp_path: Path
) -> None:
    """Stopped while ZITADEL answers 503: exit 0 within the drain time, then the lock happens."""
    stack = own_stack
    stack.emulator.add_user("3100", org_id=ORG_ID)
    stack.emulator.set_fault(Fault.status(503), path_contains="/_lock")
    attack(stack, ["3100"])
    wait_until(lambda: stack.emulator.lock_calls("3100"), what="a refused lock attempt")
    wait_until(
        lambda: httpx.get(f"{stack.daemon.url}/readyz").status_code == 503,
        what="/readyz to say not ready during the outage",
    )

    started = time.monotonic()
    assert stack.daemon.terminate(timeout=20) == 0
    assert time.monotonic() - started < 3 + 5  # drain_timeout plus the time to close
    assert [e for e in stack.daemon.logs() if e.get("event") == "drain_timed_out"]
    assert stack.emulator.state_of("3100") is UserState.ACTIVE

    stack.emulator.clear_faults()
    stack.daemon = launch(stack.config, tmp_path, log_name="restarted.log")
    stack.daemon.wait_ready()
    wait_until(lambda: stack.emulator.state_of("3100") is UserState.LOCKED, what="the lock")


def test_zitadel_faults_are_retried_until_the_lock_happens(own_stack: Stack) -> None:
    """503s, ZITADEL's 429, a proxy's 429 with Retry-After, slow answers and dropped
    connections: every user is locked."""
    stack = own_stack
    faults = {
        "3201": Fault.status(503, times=3),
        "3202": Fault.proxy_rate_limited(times=2, retry_after=1),
        "3203": Fault.latency(1.5, times=1),
        "3204": Fault.drop_connection(times=2),
        "3205": Fault.rate_limited(times=3),
    }
    add_users(stack, list(faults))
    for user, fault in faults.items():
        stack.emulator.set_fault(fault, path_contains=f"/{user}/_lock")
    attack(stack, list(faults))

    wait_until(lambda: all_locked(stack, list(faults)), what="every user locked")
    for user in faults:
        assert stack.emulator.lock_calls(user)[-1].status == 200


def test_a_hostile_proxys_answers_stop_nothing_and_every_user_is_locked(own_stack: Stack) -> None:
    """Answers no ZITADEL sends, each once, from whoever sits on the path: a Retry-After no
    calendar holds, bodies nested a hundred thousand deep, a body that never ends, a 200 that is
    a login page. The daemon keeps running, retries, and locks every user."""
    stack = own_stack
    deep = b"[" * 100_000
    json_type = {"Content-Type": "application/json"}
    faults = {
        "3211": Fault.answer(
            503, b"busy", headers={"Retry-After": "Mon, 01 Jan 99999999999 00:00:00 GMT"}, times=1
        ),
        "3212": Fault.answer(503, deep, headers=json_type, times=1),
        "3213": Fault.answer(200, deep, headers=json_type, times=1),
        "3215": Fault.trickle(0.5, times=1),  # never trips a read timeout
        "3214": Fault.answer(200, b"<html>Sign in</html>", headers={"Content-Type": "text/html"}),
    }
    add_users(stack, list(faults))
    for user, fault in faults.items():
        stack.emulator.set_fault(fault, path_contains=f"/{user}/_lock")
    attack(stack, list(faults))

    wait_until(
        lambda: (
            all_locked(stack, ["3211", "3212", "3213", "3215"])
            or stack.daemon.returncode is not None
        ),
        what="the users of the passing faults locked",
    )
    assert stack.daemon.returncode is None, "the daemon stopped"
    # The login page answers every lock of 3214: nobody is reported locked on its word.
    assert stack.emulator.state_of("3214") is UserState.ACTIVE
    wait_until(lambda: len(stack.emulator.lock_calls("3214")) >= 2, what="3214's lock retried")
    stack.emulator.clear_faults()
    wait_until(lambda: all_locked(stack, ["3214"]), what="3214 locked once ZITADEL answers")
    assert stack.daemon.returncode is None


def test_a_flood_is_capped_and_the_rest_is_reported_as_suppressed(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """100 users attacked at once with a cap of 10 a minute: 10 locked, 90 suppressed."""
    stack = start_stack(broker, tmp_path, max_locks_per_minute=10)
    try:
        users = [str(3300 + n) for n in range(100)]
        add_users(stack, users)
        attack(stack, users)
        wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)

        locked = [u for u in users if stack.emulator.state_of(u) is UserState.LOCKED]
        assert len(locked) == 10
        assert stack.config.decisions_topic is not None
        outcomes = [d["outcome"] for d in decisions(stack.bootstrap, stack.config.decisions_topic)]
        assert (outcomes.count("locked"), outcomes.count("suppressed")) == (10, 90)
        assert (
            stack.daemon.metric(
                "lockoutd_actions_total",
                rule="password-bruteforce",
                action="lock",
                outcome="suppressed",
            )
            == 90
        )
        errors = [e for e in stack.daemon.logs() if e.get("event") == "lock_suppressed"]
        assert len(errors) == 90
        assert {e["level"] for e in errors} == {"error"}
    finally:
        stop_stack(stack)


def test_made_up_user_ids_do_not_use_up_the_safety_cap(broker: LocalBroker, tmp_path: Path) -> None:
    """With a cap of 2 locks a minute, an attacker first fires the rule for ids ZITADEL does
    not know (an id that is no id is refused before it is counted: ``bad_id``). No lock is made
    for them, so they take nothing from the cap (they took a token each, and the real attack
    after them was suppressed): the real users are locked."""
    stack = start_stack(broker, tmp_path, max_locks_per_minute=2)
    try:
        made_up = ["999999000001", "999999000002", "999999000003", "999999000004"]
        real = ["3701", "3702"]
        add_users(stack, real)
        attack(stack, made_up)
        wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)
        attack(stack, real)
        wait_until(lambda: all_locked(stack, real), timeout=30, what="the real users locked")
        assert stack.config.decisions_topic is not None
        outcomes = {
            d["user_id"]: d["outcome"]
            for d in decisions(stack.bootstrap, stack.config.decisions_topic)
        }
        assert (outcomes["3701"], outcomes["3702"]) == ("locked", "locked")
        # Carried out side by side, the made-up ones may also find the cap held by each other
        # while their calls are under way; none of them locks anyone.
        assert {outcomes[user] for user in made_up} <= {"failed", "unknown_user", "suppressed"}
    finally:
        stop_stack(stack)


def test_made_up_users_in_the_same_batch_do_not_suppress_the_real_one(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """With a cap of 2 locks a minute, an attacker who attacks 3802 puts, into the same batch,
    crossings for two ids ZITADEL does not know (their lock calls slow). They took both tokens
    while their calls were under way, and 3802's crossing, in the same batch, was suppressed:
    final for that crossing. It now waits for those calls, which lock nobody and give their
    tokens back, and 3802 is locked."""
    stack = start_stack(broker, tmp_path, partitions=1, max_locks_per_minute=2)
    try:
        made_up = ["999999000011", "999999000012"]
        add_users(stack, ["3802"])
        for user in made_up:
            stack.emulator.set_fault(Fault.latency(1.0), path_contains=f"/{user}/_lock")
        events = [failure(user, m, org_id=ORG_ID) for user in [*made_up, "3802"] for m in range(5)]
        produce_at_once(stack.bootstrap, stack.events_topic, events)

        wait_until(lambda: all_locked(stack, ["3802"]), timeout=30, what="3802 locked")
        assert stack.config.decisions_topic is not None
        outcomes = {
            d["user_id"]: d["outcome"]
            for d in decisions(stack.bootstrap, stack.config.decisions_topic)
        }
        assert outcomes == {
            made_up[0]: "unknown_user",
            made_up[1]: "unknown_user",
            "3802": "locked",
        }
    finally:
        stop_stack(stack)


def test_a_restart_after_an_admin_unlocked_a_user_does_not_lock_again(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """Windows are rebuilt from the topic on start, but old evidence never locks again."""
    stack = start_stack(broker, tmp_path)
    try:
        stack.emulator.add_user("3400", org_id=ORG_ID)
        attack(stack, ["3400"], failures=6)
        wait_until(lambda: stack.emulator.state_of("3400") is UserState.LOCKED, what="the lock")
        wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)
        assert stack.daemon.terminate() == 0

        stack.emulator.set_state("3400", UserState.ACTIVE)  # the administrator's unlock
        stack.daemon = launch(stack.config, tmp_path, log_name="restarted.log")
        stack.daemon.wait_ready()
        produce(stack.bootstrap, stack.events_topic, [failure("3400", 7, org_id=ORG_ID)])
        wait_committed(stack.bootstrap, stack.config.group_id, stack.config.topics)

        assert stack.emulator.state_of("3400") is UserState.ACTIVE
        assert len(stack.emulator.lock_calls("3400")) == 1
        assert [e for e in stack.daemon.logs() if e.get("event") == "partition_rebuilding"]
    finally:
        stop_stack(stack)


def test_two_instances_share_the_work_and_one_takes_over_when_the_other_dies(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """Two daemons in one group; one is killed; every attacked user is still locked."""
    stack = start_stack(broker, tmp_path)
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second_config = stack.config
    first_port = stack.config.metrics_port
    second_config.metrics_port = free_port()
    second: DaemonProcess = launch(second_config, second_dir)
    second_config.metrics_port = first_port
    try:
        second.wait_ready()
        wait_until(
            lambda: (
                [e for e in second.logs() if e.get("event") == "partitions_assigned"]
                and len([e for e in stack.daemon.logs() if e.get("event") == "partitions_assigned"])
                >= 2
            ),
            what="the group to spread the partitions over both instances",
        )
        assert second.kill() == -9

        users = [str(3500 + n) for n in range(9)]
        add_users(stack, users)
        attack(stack, users)
        wait_until(lambda: all_locked(stack, users), timeout=60, what="every user locked")
    finally:
        if second.returncode is None:
            second.kill()
        stop_stack(stack)


def test_partitions_that_move_while_their_batch_waits_stop_nothing(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """A second instance joins while the first waits on slow lock calls, so partitions of the
    batch in flight move to it. The first commits only what it still holds (Kafka refuses a
    commit of a partition held elsewhere, which stopped the daemon), and every user is locked."""
    stack = start_stack(broker, tmp_path, extra={"zitadel": {"max_concurrency": 1}})
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second: DaemonProcess | None = None
    try:
        users = [str(3600 + n) for n in range(9)]
        add_users(stack, users)
        stack.emulator.set_fault(Fault.latency(1.0), path_contains="/_lock")
        attack(stack, users)
        wait_until(
            lambda: any(stack.emulator.lock_calls(user) for user in users),
            what="the first lock call of the batch",
        )
        first_port = stack.config.metrics_port
        stack.config.metrics_port = free_port()
        second = launch(stack.config, second_dir)
        stack.config.metrics_port = first_port
        wait_until(
            lambda: [e for e in second.logs() if e.get("event") == "partitions_assigned"],
            timeout=60,
            what="the second instance to take partitions",
        )
        wait_until(
            lambda: all_locked(stack, users) or stack.daemon.returncode is not None,
            timeout=60,
            what="every user locked",
        )
        assert stack.daemon.returncode is None, "the first instance stopped"
        assert second.returncode is None, "the second instance stopped"
    finally:
        if second is not None and second.returncode is None:
            second.terminate()
        stop_stack(stack)


def test_a_cut_broker_connection_is_survived(cuttable_stack: tuple[Stack, CuttableProxy]) -> None:
    """The network to Kafka drops: /readyz says so, lockoutd reconnects and locks afterwards."""
    stack, proxy = cuttable_stack
    proxy.cut()
    wait_until(
        lambda: httpx.get(f"{stack.daemon.url}/readyz").status_code == 503,
        what="/readyz to report the lost broker",
    )
    time.sleep(2)
    proxy.restore()
    stack.daemon.wait_ready()
    assert stack.daemon.returncode is None

    stack.emulator.add_user("3600", org_id=ORG_ID)
    attack(stack, ["3600"])
    wait_until(lambda: stack.emulator.state_of("3600") is UserState.LOCKED, what="the lock")
