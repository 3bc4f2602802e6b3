"""The rule model's own behaviour: matching events and the merged allowlist."""

from __future__ import annotations

import pytest

from lockoutd.decode.event import LOGIN_FAILED, LOGIN_SUCCEEDED
from tests.unit.helpers import event, rule, ruleset


def test_a_single_match_value_is_a_list_of_one() -> None:
    """``reason: password`` and ``reason: [password]`` are the same condition."""
    assert rule(match={"reason": "password"}).match == rule(match={"reason": ["password"]}).match


def test_match_values_written_as_numbers_are_text() -> None:
    """YAML numbers and booleans in ``match`` are kept as the text an event would carry."""
    assert rule(match={"org_id": 300, "mfa": False}).match == {"org_id": ["300"], "mfa": ["false"]}


def test_a_rule_without_a_type_matches_failures_only() -> None:
    """The default ``type`` of a rule is a failed login."""
    matcher = rule(match={}).matcher()
    assert matcher(event(0))
    assert not matcher(event(0, type=LOGIN_SUCCEEDED))


def test_a_success_matches_a_rule_whatever_its_failure_conditions() -> None:
    """For a reset, the type and reason conditions are left out; the others still hold."""
    matcher = rule(match={"reason": "otp", "org_id": "7"}).matcher()
    success = event(0, type=LOGIN_SUCCEEDED, reason=None, org_id="7")
    assert matcher.matches_success(success)
    assert not matcher.matches_success(event(0, type=LOGIN_SUCCEEDED, reason=None, org_id="8"))
    assert not matcher(success)


@pytest.mark.parametrize(
    ("address", "allowlisted"),
    [
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        (None, False),
    ],
)
def test_allowlisted_networks(address: str | None, allowlisted: bool) -> None:
    """An address is allowlisted when it lies in one of the allowlist's networks."""
    rules = ruleset(rule(), ips=["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"])
    assert rules.ip_allowlisted(address) is allowlisted


@pytest.mark.parametrize(
    ("user_id", "login_name", "allowlisted"),
    [
        ("259242039378444290", None, True),
        ("259242039378444291", None, False),
        (None, "admin@example.com", True),
        ("1", "admin@example.com", False),
        (None, "someone@example.com", False),
    ],
)
def test_allowlisted_users(user_id: str | None, login_name: str | None, allowlisted: bool) -> None:
    """A user is allowlisted by id or by login name, whatever case the allowlist was written in.
    Beside an id, a login name is the event's claim: the lock acts on the id, and user 1 is not
    spared because an event names admin@example.com with it."""
    rules = ruleset(rule(), users=["259242039378444290", "Admin@Example.COM"])
    assert rules.user_allowlisted(user_id, login_name) is allowlisted


def test_type_and_reason_are_judged_apart_from_the_other_conditions() -> None:
    """``admits`` looks at the type and reason only; ``others`` checks the remaining conditions."""
    matcher = rule(match={"reason": ["otp", "mfa"], "org_id": "7"}).matcher()
    assert matcher.admits(LOGIN_FAILED, "otp")
    assert not matcher.admits(LOGIN_FAILED, "password")
    assert not matcher.admits(LOGIN_SUCCEEDED, "otp")
    assert not matcher.admits(LOGIN_FAILED, None)
    assert matcher.others is not None
    assert matcher.others(event(0, org_id="7"))
    assert not matcher.others(event(0, org_id="8"))
    assert rule(match={"reason": "otp"}).matcher().others is None


def test_a_rule_spares_the_global_allowlist_and_its_own() -> None:
    """allowed_for joins both lists, spelled one way; only a login-name entry needs a user read."""
    sparing = rule("sparing", allowlist={"users": ["  OnCall@Acme.example"]})
    other = rule("other")
    rules = ruleset(sparing, other, users=["2000"])

    assert rules.allowed_for(sparing).users == {"2000", "oncall@acme.example"}
    assert rules.allowed_for(sparing).has_login_names
    assert rules.allowed_for(other).users == {"2000"}
    assert not rules.allowed_for(other).has_login_names
    assert rules.allowed_for(sparing).has_any_login_name(
        ["sre@acme.example", "ONCALL@acme.example"]
    )
