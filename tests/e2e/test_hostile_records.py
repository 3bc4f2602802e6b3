"""A hostile producer's records, with real processes: the poison is dead-lettered and the attack
queued behind it is still acted on (README, "Events" and "Operations")."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lockoutd.testing.broker import LocalBroker
from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, REPO, Stack, start_stack, stop_stack
from .kafka_helpers import failure, produce, read_all, wait_until

pytestmark = pytest.mark.e2e

DEEP = 1000


# For the tests that measure what the daemon keeps: the C library maps every allocation of 128 KiB
# or more and gives it back when freed (by default it raises that threshold as large blocks are
# freed, and keeps later ones in its heap). What stays resident is then what the daemon holds.
MEASURED = {"MALLOC_MMAP_THRESHOLD_": "131072"}


@pytest.fixture
def own_stack(broker: LocalBroker, tmp_path: Path) -> Iterator[Stack]:
    """A daemon of its own: a test whose poison stops the daemon must not take others down."""
    stack = start_stack(broker, tmp_path, env=MEASURED)
    yield stack
    stop_stack(stack)


def deeply_nested(user: str) -> bytes:
    """A 2 KB failure whose extra field is an array nested a thousand deep."""
    head = json.dumps(failure(user, 0, org_id=ORG_ID))[:-1]
    return f'{head}, "x": {"[" * DEEP}{"]" * DEEP}}}'.encode()


def dated(user: str, occurred_at: str) -> dict[str, str]:
    return {**failure(user, 0, org_id=ORG_ID), "occurred_at": occurred_at}


def dead_letter_reasons(stack: Stack) -> list[bytes]:
    assert stack.config.dead_letter_topic is not None
    records = read_all(stack.bootstrap, stack.config.dead_letter_topic)
    return [dict(record.headers)["lockoutd.reason"] for record in records]


def attack_locks(stack: Stack, user: str) -> None:
    """Five wrong passwords for ``user``, who is then locked, with the daemon still running."""
    produce(
        stack.bootstrap, stack.events_topic, [failure(user, m, org_id=ORG_ID) for m in range(5)]
    )
    wait_until(
        lambda: (
            stack.emulator.state_of(user) is UserState.LOCKED or stack.daemon.returncode is not None
        ),
        what=f"user {user} locked",
    )
    assert stack.daemon.returncode is None, "the daemon stopped"
    assert stack.emulator.state_of(user) is UserState.LOCKED


def test_a_deeply_nested_record_is_dead_lettered_and_the_attack_behind_it_locks(
    own_stack: Stack,
) -> None:
    """The record that crash-looped the daemon is an invalid record; the next attack still locks."""
    stack = own_stack
    stack.emulator.add_user("7001", org_id=ORG_ID)
    poison = deeply_nested("7000")
    assert len(poison) < 2200
    produce(stack.bootstrap, stack.events_topic, [poison])

    attack_locks(stack, "7001")

    assert stack.config.dead_letter_topic is not None
    dead = read_all(stack.bootstrap, stack.config.dead_letter_topic)
    assert [record.value for record in dead] == [poison]
    assert dead_letter_reasons(stack) == [b"too_deep"]
    assert stack.daemon.metric("lockoutd_dead_lettered_total", reason="too_deep") == 1


def test_times_outside_the_calendar_are_dead_lettered_and_the_attack_behind_them_locks(
    own_stack: Stack,
) -> None:
    """Five failures stamped in year 10000 (UTC) and five in year 0 would each fire a rule whose
    decision cannot be written; they are refused, and a real attack after them locks."""
    stack = own_stack
    stack.emulator.add_user("7101", org_id=ORG_ID)
    poison = [dated("7100", "9999-12-31T23:59:59-23:59") for _ in range(5)]
    poison += [dated("7102", "0001-01-01T00:30:00+01:00") for _ in range(5)]
    produce(stack.bootstrap, stack.events_topic, poison)

    attack_locks(stack, "7101")

    assert dead_letter_reasons(stack) == [b"time_out_of_range"] * 10


def test_a_failure_dated_a_year_ahead_does_not_blind_its_user(own_stack: Stack) -> None:
    """One failure from a year in the future, then real failures of the same user: locked."""
    stack = own_stack
    stack.emulator.add_user("7200", org_id=ORG_ID)
    ahead = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    produce(stack.bootstrap, stack.events_topic, [dated("7200", ahead)])

    attack_locks(stack, "7200")

    assert dead_letter_reasons(stack) == [b"future_time"]


def test_a_refused_record_with_a_header_of_no_value_is_dead_lettered_and_the_attack_behind_it_locks(
    own_stack: Stack,
) -> None:
    """Kafka lets a header carry no value at all (null). On a record that is refused, such a header
    stopped the daemon while the dead letter was made, and every restart met the record again."""
    stack = own_stack
    stack.emulator.add_user("7301", org_id=ORG_ID)
    headers = [("trace", None), ("origin", b"gateway-1")]
    produce(stack.bootstrap, stack.events_topic, [b"not json"], headers=headers)

    attack_locks(stack, "7301")

    assert stack.config.dead_letter_topic is not None
    [dead] = read_all(stack.bootstrap, stack.config.dead_letter_topic)
    assert dead.value == b"not json"
    assert [h for h in dead.headers if not h[0].startswith("lockoutd.")] == headers
    assert dead_letter_reasons(stack) == [b"invalid_json"]


def test_a_forged_bundle_of_many_non_events_is_one_dead_letter_and_the_attack_behind_it_locks(
    own_stack: Stack,
) -> None:
    """Anyone who can write an internal topic can write a bundle of 200,000 elements that are no
    events, with a thousand headers. Dead-lettered element by element, each with the record's
    headers, it took gigabytes before anything was published or committed. It is refused as
    one record, and the attack behind it still locks."""
    stack = own_stack
    stack.emulator.add_user("7401", org_id=ORG_ID)
    internal = f"{stack.config.group_id}.repartition.ip_prefix"
    poison = b"[" + b",".join([b"0"] * 200_000) + b"]"
    produce(stack.bootstrap, internal, [poison], headers=[("h", b"")] * 1_000)

    attack_locks(stack, "7401")

    assert dead_letter_reasons(stack) == [b"bad_bundle"]


def test_replay_reports_hostile_records_as_invalid_and_goes_on(tmp_path: Path) -> None:
    """``lockoutd replay`` over a file holding each poison exits normally, names each record
    invalid with its reason and line, and still decides on the attack after them."""
    events = tmp_path / "events.jsonl"
    ahead = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    lines = [
        deeply_nested("7300"),
        *(json.dumps(dated("7301", "9999-12-31T23:59:59-23:59")).encode() for _ in range(5)),
        *(json.dumps(dated("7302", "0001-01-01T00:30:00+01:00")).encode() for _ in range(5)),
        json.dumps(dated("7303", ahead)).encode(),
        *(json.dumps(failure("7303", m, org_id=ORG_ID)).encode() for m in range(5)),
    ]
    events.write_bytes(b"\n".join(lines) + b"\n")
    config = tmp_path / "lockoutd.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            engine:
              rule_paths: [{REPO / "rules"}]
            """
        ),
        encoding="utf-8",
    )

    done = subprocess.run(  # noqa: S603 - the test's own interpreter and arguments
        [sys.executable, "-m", "lockoutd", "replay", str(events), "-c", str(config)],
        capture_output=True,
        timeout=60,
        check=False,
    )

    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert f"{events}:1: too_deep:" in stderr
    for line in range(2, 12):
        assert f"{events}:{line}: time_out_of_range:" in stderr
    assert f"{events}:12: future_time:" in stderr
    assert "(12 invalid, 0 ignored)" in stderr
    decisions = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(d["rule"], d["user_id"], d["outcome"]) for d in decisions] == [
        ("password-bruteforce", "7303", "dry_run")
    ]


HUGE = 600_000
"""Characters of a user id or login name no identity server issues (a record holds one)."""


def resident_bytes(stack: Stack) -> int:
    pid = stack.daemon.pid
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    return (
        int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
        * 1024
    )


def test_user_ids_and_login_names_of_hundreds_of_kilobytes_are_dead_lettered_and_hold_nothing(
    own_stack: Stack,
) -> None:
    """Counted, each of these records would keep its 600 KB user id or login name for ten
    minutes, as a window's key and as a value in both spray rules' windows: 40 of them grew the
    daemon by 77 MB, whose memory limit is a few hundred. They are refused as no login event
    (``field_too_long``) and cost nothing once dead-lettered; an attack after them still locks,
    and an attacker's user agent of the same length hides none of their failures."""
    stack = own_stack
    stack.emulator.add_user("7301", org_id=ORG_ID)
    stack.emulator.add_user("7302", org_id=ORG_ID)
    wait_until(lambda: stack.daemon.metric("lockoutd_tracked_keys_limit"), what="metrics")
    before = resident_bytes(stack)
    poison = [
        json.dumps(failure(f"{n:02d}{'7' * HUGE}", 5, org_id=ORG_ID, ip=f"198.18.9.{n + 1}"))
        for n in range(20)
    ]
    poison += [
        json.dumps(
            {
                "type": "auth.login.failed",
                "occurred_at": failure("", 5)["occurred_at"],
                "login_name": f"{n:02d}{'x' * HUGE}@example.com",
                "reason": "unknown_user",
                "ip": f"198.18.8.{n + 1}",
            }
        )
        for n in range(20)
    ]
    produce(stack.bootstrap, stack.events_topic, [p.encode() for p in poison])

    attack_locks(stack, "7301")
    long_agent = "Mozilla/5.0 " + "A" * HUGE
    produce(
        stack.bootstrap,
        stack.events_topic,
        [failure("7302", m, org_id=ORG_ID, user_agent=long_agent) for m in range(5)],
    )
    wait_until(lambda: stack.emulator.state_of("7302") is UserState.LOCKED, what="7302 locked")

    grown = resident_bytes(stack) - before
    # Kept, they would take three times their size; gone, less than their size is left, in
    # buffers the records went through.
    assert grown < len(poison) * HUGE
    assert dead_letter_reasons(stack) == [b"field_too_long"] * 40
    assert stack.daemon.metric("lockoutd_dead_lettered_total", reason="field_too_long") == 40


CUSTOM_RULES = """
rules:
  - name: spray-locks-its-users
    match: {type: auth.login.failed}
    key: [ip]
    distinct: user_id
    threshold: 3
    window: 10m
    action:
      lock: {targets: contributors}
  - name: spray-per-tenant
    match: {type: auth.login.failed}
    key: [tenant]
    distinct: user_id
    threshold: 100
    window: 10m
    action:
      report: {}
"""


@pytest.fixture
def custom_stack(broker: LocalBroker, tmp_path: Path) -> Iterator[Stack]:
    """A daemon of its own with rules that keep what their windows count: the events, to lock
    their users, and the values of an extra field as keys."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(CUSTOM_RULES)
    stack = start_stack(broker, tmp_path, rule_paths=[rules], env=MEASURED)
    yield stack
    stop_stack(stack)


def test_extra_fields_of_hundreds_of_kilobytes_are_not_kept_by_the_windows(
    custom_stack: Stack,
) -> None:
    """Extra fields are kept as they come (only the record's size bounds them). A window that
    locks contributors keeps their events, and a rule keyed on an extra field keeps its value:
    40 records, each with 300 KB in a field a rule is keyed on and 300 KB in one nobody reads,
    grew the daemon by 40 MB that way. The windows now keep who and when of an event, and a long key
    as its digest; the attack after them locks every user it sprayed."""
    stack = custom_stack
    for user in ("7401", "7402", "7403"):
        stack.emulator.add_user(user, org_id=ORG_ID)
    wait_until(lambda: stack.daemon.metric("lockoutd_tracked_keys_limit"), what="metrics")
    before = resident_bytes(stack)
    size = HUGE // 2
    flood = [
        failure(
            f"88{n:04d}",
            5,
            org_id=ORG_ID,
            ip=f"198.18.6.{n // 2 + 1}",  # two users an address: under the threshold
            tenant=f"{n:02d}{'t' * size}",
            payload="p" * size,
        )
        for n in range(40)
    ]
    produce(stack.bootstrap, stack.events_topic, flood)
    attack = [
        failure(user, 6, org_id=ORG_ID, ip="198.18.6.200", tenant="acme")
        for user in ("7401", "7402", "7403")
    ]
    produce(stack.bootstrap, stack.events_topic, attack)

    for user in ("7401", "7402", "7403"):
        wait_until(lambda u=user: stack.emulator.state_of(u) is UserState.LOCKED, what=user)
    assert stack.daemon.returncode is None
    # Every tenant apart, none merged (the rule is counted on an internal topic: it may lag).
    wait_until(
        lambda: stack.daemon.metric("lockoutd_tracked_keys", rule="spray-per-tenant") == 41,
        what="41 tenants tracked",
    )
    grown = resident_bytes(stack) - before
    # Kept, the fields would take more than the records' own size; gone, less is left, in
    # buffers the records went through.
    assert grown < len(flood) * 2 * size


def test_failures_whose_address_is_none_still_lock_their_user(own_stack: Stack) -> None:
    """A client can write the address a producer passes on (a proxy's X-Forwarded-For taken as it
    came). Five wrong passwords whose ``ip`` is no address, one of them 600 KB long, lock their
    user all the same: the events count without an address, are counted as such, and none is
    dead-lettered."""
    stack = own_stack
    stack.emulator.add_user("7501", org_id=ORG_ID)
    forged = ["unknown", "127.0.0.1.evil", "::g", "<script>", "9" * HUGE]
    produce(
        stack.bootstrap,
        stack.events_topic,
        [failure("7501", m, org_id=ORG_ID, ip=ip) for m, ip in enumerate(forged)],
    )

    wait_until(lambda: stack.emulator.state_of("7501") is UserState.LOCKED, what="7501 locked")
    assert stack.daemon.metric("lockoutd_unparsed_addresses_total") == 5
    assert dead_letter_reasons(stack) == []
