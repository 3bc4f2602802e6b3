"""What a rule counts per: multi-field keys, the derived ``ip_prefix``, and per-rule allowlists."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from lockoutd.decide.decision import Outcome, decide
from lockoutd.decide.engine import Engine, Firing
from lockoutd.decode.event import Event, ip_prefix
from lockoutd.rules.model import Rule
from tests.unit.helpers import MINUTE, T0, event, rule, ruleset

NOW = T0 + 60 * MINUTE


def _firings(engine: Engine, events: list[Event]) -> list[Firing]:
    return [f for e in events for f in engine.process(e, NOW)]


def _prefix_rule(**overrides: Any) -> Rule:
    fields: dict[str, Any] = {
        "match": {"type": "auth.login.failed"},
        "key": ["ip_prefix"],
        "threshold": 3,
        "window": "10m",
        "action": {"report": {}},
    }
    fields.update(overrides)
    return rule("network-bruteforce", **fields)


def test_a_two_field_key_counts_each_pair_apart() -> None:
    """``key: [user_id, ip]`` counts one user's failures from each address separately."""
    engine = Engine(ruleset(rule(key=["user_id", "ip"])))
    events = [
        event(0, ip="203.0.113.7"),
        event(1, ip="198.51.100.9"),
        event(2, ip="203.0.113.7"),
        event(3, ip="198.51.100.9"),
        event(4, ip="203.0.113.7"),
    ]
    [firing] = _firings(engine, events)
    assert (firing.key, firing.key_text) == (("42", "203.0.113.7"), "42|203.0.113.7")
    assert dict(engine.tracked_keys()) == {"password-bruteforce": 2}


def test_an_event_missing_one_key_field_is_not_counted() -> None:
    """An event without an address cannot be counted per user and address."""
    engine = Engine(ruleset(rule(key=["user_id", "ip"])))
    events = [event(0, ip="203.0.113.7"), event(1), event(2), event(3, ip="203.0.113.7")]
    assert _firings(engine, events) == []
    assert dict(engine.tracked_keys()) == {"password-bruteforce": 1}


def test_an_extra_field_can_be_part_of_a_key() -> None:
    """Fields a producer added (here ``client_id``) key a rule like standard ones."""
    engine = Engine(ruleset(rule(key=["user_id", "client_id"])))
    events = [event(n, client_id="console" if n % 2 else "api") for n in range(5)]
    [firing] = _firings(engine, events)
    assert firing.key == ("42", "api")


def test_a_long_extra_field_is_counted_by_its_digest() -> None:
    """Only the record's size bounds an extra field: a rule keyed on one, or counting its
    distinct values, reads a text over 256 characters (a list or an object as its text) as its
    SHA-256, which keeps long texts apart as well as they were, and the windows small."""
    long_a, long_b = "a" * 300_000, "a" * 299_999 + "b"
    engine = Engine(
        ruleset(
            rule(key=["tenant"], threshold=2, action={"report": {}}),
            rule("spray", key=["ip"], distinct="tenant", threshold=3, action={"report": {}}),
        )
    )
    events = [
        event(0, tenant=long_a, ip="203.0.113.7"),
        event(1, tenant=long_b, ip="203.0.113.7"),
        event(2, tenant=["x" * 300], ip="203.0.113.7"),
        event(3, tenant=long_a, ip="203.0.113.7"),
    ]
    firings = _firings(engine, events)
    assert [(f.rule.name, f.key_text) for f in firings] == [
        ("spray", "203.0.113.7"),
        ("password-bruteforce", "sha256:" + hashlib.sha256(long_a.encode()).hexdigest()),
    ]
    assert dict(engine.tracked_keys()) == {"password-bruteforce": 3, "spray": 1}
    [(_, spray)] = [(n, w) for n, w in engine.rule_windows() if n == "spray"]
    assert all(len(value) == 71 for value in spray.values("203.0.113.7"))
    short = "t" * 256
    assert event(0, tenant=short).value_of("tenant") == short


@pytest.mark.parametrize(
    ("address", "prefix"),
    [
        ("10.1.2.3", "10.1.2.0/24"),
        ("10.1.2.200", "10.1.2.0/24"),
        ("10.1.3.1", "10.1.3.0/24"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ],
)
def test_the_prefix_of_an_address(address: str, prefix: str) -> None:
    """``ip_prefix`` is the /24 of an IPv4 address and the /64 of an IPv6 one."""
    assert ip_prefix(address) == prefix
    assert event(0, ip=address).value_of("ip_prefix") == prefix


def test_an_event_without_an_address_has_no_prefix() -> None:
    """Without ``ip`` there is no ``ip_prefix`` either."""
    assert event(0).value_of("ip_prefix") is None


def test_addresses_of_one_ipv4_network_count_together() -> None:
    """10.1.2.3 and 10.1.2.200 share a /24 and count as one source; 10.1.3.1 stands apart."""
    engine = Engine(ruleset(_prefix_rule()))
    events = [
        event(0, ip="10.1.2.3"),
        event(1, ip="10.1.3.1"),
        event(2, ip="10.1.2.200"),
        event(3, ip="10.1.3.1"),
        event(4, ip="10.1.2.3"),
    ]
    [firing] = _firings(engine, events)
    assert firing.key == ("10.1.2.0/24",)
    assert firing.event.ip == "10.1.2.3"
    assert dict(engine.tracked_keys()) == {"network-bruteforce": 2}


def test_addresses_of_one_ipv6_host_count_together() -> None:
    """Addresses in one /64 (one IPv6 host may use them all) count together; the next /64 apart."""
    engine = Engine(ruleset(_prefix_rule()))
    events = [
        event(0, ip="2001:db8:1:2::1"),
        event(1, ip="2001:db8:1:3::1"),
        event(2, ip="2001:db8:1:2:aaaa::7"),
        event(3, ip="2001:db8:1:2:ffff:ffff:ffff:ffff"),
    ]
    [firing] = _firings(engine, events)
    assert firing.key == ("2001:db8:1:2::/64",)


def test_a_spray_rotating_addresses_in_a_network_is_one_source() -> None:
    """Twenty users from twenty addresses of one /24 are a spray when keyed on ``ip_prefix``."""
    engine = Engine(ruleset(_prefix_rule(distinct="user_id", threshold=20, window="5m")))
    events = [event(n / 10, user_id=f"user-{n}", ip=f"198.51.100.{n + 1}") for n in range(20)]
    [firing] = _firings(engine, events)
    assert (firing.key_text, firing.count) == ("198.51.100.0/24", 20)


def test_a_rule_can_match_on_the_prefix() -> None:
    """``ip_prefix`` is a field like any other in ``match``."""
    engine = Engine(ruleset(rule(match={"ip_prefix": "10.1.2.0/24"})))
    events = [event(0, ip="10.1.2.3"), event(1, ip="10.9.9.9"), event(2, ip="10.1.2.4")]
    assert _firings(engine, events) == []
    assert len(_firings(engine, [event(3, ip="10.1.2.5")])) == 1


def test_an_address_on_a_rule_allowlist_is_not_counted_by_that_rule_only() -> None:
    """The rule that allowlists 10.0.0.0/8 ignores those events; another rule still counts them."""
    sparing = rule("office-tolerant", allowlist={"ips": ["10.0.0.0/8"]})
    strict = rule("strict")
    engine = Engine(ruleset(sparing, strict))
    events = [event(n, ip="10.1.2.3") for n in range(3)]
    assert [f.rule.name for f in _firings(engine, events)] == ["strict"]
    assert dict(engine.tracked_keys()) == {"office-tolerant": 0, "strict": 1}


def test_a_rule_allowlist_does_not_spare_other_addresses() -> None:
    """Events from outside the rule's allowlisted networks are counted as usual."""
    engine = Engine(ruleset(rule(allowlist={"ips": ["10.0.0.0/8", "2001:db8::/32"]})))
    events = [
        event(0, ip="10.1.2.3"),
        event(1, ip="2001:db8::1"),
        event(2, ip="203.0.113.7"),
        event(3),
        event(4, ip="203.0.113.8"),
    ]
    assert len(_firings(engine, events)) == 1


def test_a_user_on_a_rule_allowlist_is_allowlisted_in_that_rule_only() -> None:
    """User 42 is spared by the rule that allowlists it and locked by the other."""
    sparing = rule("sparing", allowlist={"users": ["42"]})
    strict = rule("strict")
    rules = ruleset(sparing, strict)
    engine = Engine(rules)
    firings = _firings(engine, [event(0), event(1), event(2)])
    outcomes = {
        f.rule.name: [d.outcome for d in decide(f, rules, now=NOW, max_event_age=3600.0)]
        for f in firings
    }
    assert outcomes == {"sparing": [Outcome.ALLOWLISTED], "strict": [None]}


def test_a_user_on_a_rule_allowlist_is_still_counted() -> None:
    """A rule-allowlisted user's failures count (the decision is what spares them)."""
    engine = Engine(ruleset(rule(allowlist={"users": ["42"]})))
    assert len(_firings(engine, [event(0), event(1), event(2)])) == 1
