"""Lock actions: permanent or temporary, escalation, targets, and the rule fields beside them."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lockoutd.errors import ConfigError
from lockoutd.rules.loader import load_rules
from lockoutd.rules.model import AllowedSet, Allowlist, LockAction
from tests.unit.helpers import rule

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


def _lock(**fields: Any) -> LockAction:
    return LockAction.model_validate(fields)


def test_a_lock_is_permanent_and_targets_the_key_by_default() -> None:
    """``lock: {}`` locks the key's user until an administrator unlocks."""
    lock = _lock()
    assert (lock.duration, lock.escalate, lock.targets) == (None, None, "key")
    assert lock.duration_for(0) is None
    assert lock.duration_for(3) is None


def test_a_temporary_lock_without_escalation_always_lasts_its_duration() -> None:
    """Without ``escalate``, every repeat lasts the same."""
    lock = _lock(duration="15m")
    assert [lock.duration_for(n) for n in range(4)] == [15 * MINUTE] * 4


# duration 15m, factor 2, max 1h
#
# strikes before   0      1      2      3      4
# lock lasts       15m    30m    1h     1h     1h   (2h and 4h are capped at max)
@pytest.mark.parametrize(
    ("strikes", "minutes"),
    [(0, 15), (1, 30), (2, 60), (3, 60), (4, 60), (-1, 15)],
)
def test_escalation_doubles_up_to_the_maximum(strikes: int, minutes: float) -> None:
    """Each earlier lock within the memory doubles the duration, never beyond ``max``."""
    lock = _lock(duration="15m", escalate={"factor": 2, "max": "1h", "memory": "1d"})
    assert lock.duration_for(strikes) == minutes * MINUTE


def test_the_factor_may_be_fractional() -> None:
    """A factor of 1.5 makes 10m, 15m, 22.5m."""
    lock = _lock(duration="10m", escalate={"factor": 1.5, "max": "1d", "memory": "1d"})
    assert [lock.duration_for(n) for n in range(3)] == [600.0, 900.0, 1350.0]


def test_the_default_factor_is_two() -> None:
    """``escalate`` without ``factor`` doubles."""
    lock = _lock(duration="15m", escalate={"max": "24h", "memory": "1d"})
    assert lock.escalate is not None
    assert (lock.escalate.factor, lock.escalate.max, lock.escalate.memory) == (2.0, DAY, DAY)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"escalate": {"max": "1h", "memory": "1d"}},
            "escalate needs a duration",
            id="escalation of a permanent lock",
        ),
        pytest.param(
            {"duration": "1h", "escalate": {"max": "15m", "memory": "1d"}},
            "escalate.max is shorter than the duration",
            id="max below the duration",
        ),
        pytest.param(
            {"duration": "15m", "escalate": {"factor": 0.5, "max": "1h", "memory": "1d"}},
            "greater than or equal to 1",
            id="a factor that shrinks",
        ),
        pytest.param(
            {"duration": "15m", "escalate": {"max": "1h"}},
            "memory",
            id="escalation without memory",
        ),
        pytest.param({"duration": "0s"}, "longer than zero", id="zero duration"),
        pytest.param({"duration": "soon"}, "expected a duration", id="not a duration"),
        pytest.param({"targets": "everyone"}, "'key' or 'contributors'", id="unknown target"),
        pytest.param({"cooldown": "5m"}, "Extra inputs", id="unknown key"),
    ],
)
def test_a_bad_lock_action_is_refused(fields: dict[str, Any], message: str) -> None:
    """Each malformed lock action is a validation error that says what is wrong."""
    with pytest.raises(ValidationError, match=message):
        _lock(**fields)


def test_locking_the_key_needs_a_user_in_the_key() -> None:
    """A rule keyed on an address cannot lock ``the key``: there is no user to lock."""
    with pytest.raises(ValidationError, match="targets: contributors"):
        rule(key=["ip"], action={"lock": {}})


def test_locking_contributors_needs_no_user_in_the_key() -> None:
    """A rule keyed on an address may lock every user it counted."""
    spray = rule(key=["ip"], distinct="user_id", action={"lock": {"targets": "contributors"}})
    assert spray.action.lock is not None
    assert (spray.action.lock.targets, spray.distinct) == ("contributors", "user_id")


def test_a_rule_counts_events_unless_told_distinct() -> None:
    """``distinct`` is unset by default, and the rule allowlist is empty."""
    plain = rule()
    assert plain.distinct is None
    assert plain.allowlist == Allowlist()


def test_a_rule_allowlist_reads_users_and_networks() -> None:
    """Numeric user ids become text and addresses become networks."""
    allowlist = rule(allowlist={"users": [259242039378444290], "ips": ["10.0.0.0/8", "::1"]})
    assert allowlist.allowlist.users == ["259242039378444290"]
    assert allowlist.allowlist.ips == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    ]


def test_a_rule_allowlist_refuses_what_is_not_an_address() -> None:
    """An allowlist entry that is not an address or network is a validation error."""
    with pytest.raises(ValidationError, match="not an address or network"):
        rule(allowlist={"ips": ["office"]})


def test_allowed_sets_merge_and_ignore_case() -> None:
    """Users match by id or login name whatever their case; addresses match their networks."""
    allowed = AllowedSet.of(
        [
            Allowlist.model_validate({"users": ["Alice@Example.com"], "ips": ["10.0.0.0/8"]}),
            Allowlist.model_validate({"users": ["42"], "ips": ["2001:db8::/32"]}),
        ]
    )
    assert allowed.has_user(None, "alice@example.COM")
    assert allowed.has_user("42", None)
    assert not allowed.has_user("43", "bob@example.com")
    assert not allowed.has_user(None, None)
    assert allowed.has_ip("10.200.0.1")
    assert allowed.has_ip("2001:db8::7")
    assert not allowed.has_ip("192.0.2.1")
    assert not allowed.has_ip(None)
    assert not AllowedSet().has_ip("10.0.0.1")


def test_a_rule_file_with_every_new_field_loads(tmp_path: Path) -> None:
    """Durations, escalation, targets, ``distinct`` and a rule allowlist load from YAML."""
    (tmp_path / "rules.yaml").write_text(
        textwrap.dedent(
            """\
            rules:
              - name: otp-bruteforce
                match: {type: auth.login.failed, reason: [otp]}
                key: [user_id]
                threshold: 3
                window: 5m
                action:
                  lock:
                    duration: 15m
                    escalate: {factor: 2, max: 24h, memory: 1d}
              - name: spray-from-one-network
                key: [ip_prefix]
                distinct: user_id
                threshold: 20
                window: 5m
                action: {lock: {targets: contributors, duration: 1h}}
                allowlist:
                  users: [svc-monitor]
                  ips: [192.0.2.0/24]
            """
        ),
        encoding="utf-8",
    )
    otp, spray = load_rules([tmp_path]).rules
    assert otp.action.lock is not None
    assert otp.action.lock.duration_for(1) == 30 * MINUTE
    assert spray.action.lock is not None
    assert (spray.distinct, spray.action.lock.targets, spray.action.lock.duration) == (
        "user_id",
        "contributors",
        HOUR,
    )
    assert spray.allowlist.users == ["svc-monitor"]


def test_a_bad_escalation_in_a_file_names_its_line(tmp_path: Path) -> None:
    """An escalation without a duration is reported at the lock's line in its file."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            rules:
              - name: a
                key: [user_id]
                threshold: 3
                window: 5m
                action:
                  lock:
                    escalate: {max: 1h, memory: 1d}
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_rules([tmp_path])
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}:7: rules.0.action.lock: ")
    assert "escalate needs a duration" in problem


def test_any_number_of_strikes_stays_within_the_max() -> None:
    """A hundred thousand strikes (say, from a forged schedule entry) is the max, not an
    OverflowError."""
    lock = LockAction.model_validate(
        {"duration": "15m", "escalate": {"factor": 2, "max": "1h", "memory": "1d"}}
    )
    assert lock.duration_for(100_000) == 60 * MINUTE
    flat = LockAction.model_validate(
        {"duration": "15m", "escalate": {"factor": 1, "max": "1h", "memory": "1d"}}
    )
    assert flat.duration_for(100_000) == 15 * MINUTE
