"""The engine: which events a rule counts, per which key, and what a reload keeps."""

from __future__ import annotations

from lockoutd.decide.engine import Engine, Firing
from lockoutd.decode.event import LOGIN_SUCCEEDED, Event
from lockoutd.rules.model import Rule, RuleSet
from tests.unit.helpers import MINUTE, T0, event, rule, ruleset

NOW = T0 + 60 * MINUTE
"""Wall-clock time in these tests: an hour after the origin of the timelines."""


def _feed(engine: Engine, *events: Event) -> list[list[str]]:
    """The names of the rules each event made fire, one list per event."""
    return [[firing.rule.name for firing in engine.process(e, NOW)] for e in events]


def _fired(engine: Engine, *events: Event) -> list[Firing]:
    return [firing for e in events for firing in engine.process(e, NOW)]


def _tracked(engine: Engine) -> dict[str, int]:
    return dict(engine.tracked_keys())


def _engine(*rules: Rule, users: list[str] | None = None, ips: list[str] | None = None) -> Engine:
    return Engine(ruleset(*rules, users=users, ips=ips))


def test_a_firing_describes_the_crossing() -> None:
    """The firing carries the rule, the key, the firing event, the count and its time span."""
    engine = _engine(rule())
    third = event(4, org_id="7")
    (firing,) = _fired(engine, event(1), event(2), third)
    assert firing.rule.name == "password-bruteforce"
    assert (firing.key, firing.key_text) == (("42",), "42")
    assert firing.event is third
    assert firing.count == 3
    assert (firing.first_event_at, firing.last_event_at) == (T0 + 1 * MINUTE, T0 + 4 * MINUTE)


def test_a_list_in_match_means_any_of() -> None:
    """``reason: [otp, mfa]`` counts both reasons towards one window, and nothing else."""
    engine = _engine(rule("otp-bruteforce", match={"reason": ["otp", "mfa"]}))
    assert _feed(
        engine,
        event(0, reason="otp"),
        event(1, reason="password"),
        event(2, reason="mfa"),
        event(3, reason=None),
        event(4, reason="otp"),
    ) == [[], [], [], [], ["otp-bruteforce"]]


def test_all_match_conditions_must_hold() -> None:
    """An event that satisfies one condition but not another is not counted."""
    engine = _engine(rule(match={"reason": "password", "org_id": "7"}))
    assert _feed(
        engine,
        event(0, org_id="7"),
        event(1, org_id="8"),
        event(2, org_id="7"),
        event(3, org_id="7"),
    ) == [[], [], [], ["password-bruteforce"]]


def test_a_rule_without_a_type_counts_failures_only() -> None:
    """With no ``type`` in ``match``, successes and other types are never counted as failures."""
    engine = _engine(rule(match={"reason": "password"}))
    assert _feed(
        engine,
        event(0),
        event(1, type=LOGIN_SUCCEEDED),
        event(2, type="auth.logout"),
        event(3, type=LOGIN_SUCCEEDED),
        event(4),
        event(5),
    ) == [[], [], [], [], [], ["password-bruteforce"]]


def test_numbers_and_booleans_in_extra_fields_match() -> None:
    """``attempt: 3`` and ``mfa: true`` in a rule match the JSON number and boolean of an event."""
    engine = _engine(rule(match={"attempt": 3, "mfa": True}, threshold=1))
    assert _feed(
        engine,
        event(0, user_id="1", attempt=3, mfa=False),
        event(0, user_id="2", attempt=4, mfa=True),
        event(0, user_id="3", attempt=3, mfa=True),
        event(0, user_id="4", attempt="3", mfa="true"),
    ) == [[], [], ["password-bruteforce"], ["password-bruteforce"]]


def test_a_structured_extra_field_matches_nothing() -> None:
    """An extra field holding a list or an object does not match, and does not break the engine."""
    engine = _engine(rule(match={"client": "web"}, threshold=1))
    assert _feed(engine, event(0, client=["web"]), event(1, client={"name": "web"})) == [[], []]


def test_a_key_of_several_fields_counts_each_combination_apart() -> None:
    """Keyed on user and address, failures from two addresses count separately."""
    engine = _engine(rule(key=["user_id", "ip"]))
    firings = _fired(
        engine,
        event(0, ip="192.0.2.1"),
        event(1, ip="192.0.2.2"),
        event(2, ip="192.0.2.1"),
        event(3, ip="192.0.2.2"),
        event(4, ip="192.0.2.1"),
    )
    assert [firing.key_text for firing in firings] == ["42|192.0.2.1"]
    assert _tracked(engine) == {"password-bruteforce": 2}


def test_an_event_missing_a_key_field_is_not_counted() -> None:
    """Without the ``ip`` the rule is keyed on, an event cannot be counted and holds no state."""
    engine = _engine(rule(key=["user_id", "ip"], threshold=1))
    assert _feed(engine, event(0), event(1, ip="")) == [[], []]
    assert _tracked(engine) == {"password-bruteforce": 0}


def test_keys_on_extra_fields_are_text() -> None:
    """A key on a numeric extra field counts per its value, written as text."""
    engine = _engine(rule(key=["user_id", "tenant"], threshold=2))
    (firing,) = _fired(engine, event(0, tenant=5), event(1, tenant=5))
    assert firing.key == ("42", "5")


def test_the_login_name_stands_in_for_the_user_id() -> None:
    """Failures for a login name without a user id count per name in a rule keyed on user_id."""
    engine = _engine(rule())
    firings = _fired(
        engine,
        event(0, user_id=None, login_name="alice@example.com"),
        event(1, user_id=None, login_name="alice@example.com"),
        event(2, user_id=None, login_name="bob@example.com"),
        event(3, user_id=None, login_name="alice@example.com"),
    )
    assert [firing.key for firing in firings] == [("login_name:alice@example.com",)]


def test_a_login_name_that_spells_an_id_counts_apart_from_that_id() -> None:
    """Two failures of user 42 and one of the login name "42": nobody reaches three. The name's
    event crossing in 42's window would have made the lock look the name up, not lock 42."""
    engine = _engine(rule())
    firings = _fired(
        engine,
        event(0, user_id="42"),
        event(1, user_id="42"),
        event(2, user_id=None, login_name="42"),
        event(3, user_id="42"),
    )
    assert [(firing.key, firing.event.user_id) for firing in firings] == [(("42",), "42")]


def test_a_login_name_event_keyed_by_its_login_name_is_keyed_by_its_user() -> None:
    """Producers key an event without a user id by its login name (README, "Scaling out"): that
    is its user's key, and only a record keyed otherwise counts as a key mismatch."""
    engine = _engine(rule())
    named = event(0, user_id=None, login_name="alice@x", org_id="300")
    engine.process(named, NOW, record_key=b"alice@x")
    engine.process(event(1), NOW, record_key=b"42")
    assert engine.take_key_mismatches() == {}
    engine.process(named, NOW, record_key=b"bob@x")
    engine.process(event(2), NOW, record_key=b"alice@x")
    assert engine.take_key_mismatches() == {"password-bruteforce": 2}


def test_a_login_name_counts_apart_in_each_org_its_events_claim() -> None:
    """The lock looks a name up in the org its event claims: one name in two orgs, two windows."""
    engine = _engine(rule())
    firings = _fired(
        engine,
        *(event(m, user_id=None, login_name="alice@x", org_id="300") for m in range(2)),
        event(2, user_id=None, login_name="alice@x", org_id="301"),
        event(3, user_id=None, login_name="alice@x", org_id="300"),
    )
    assert [(firing.key, firing.event.org_id) for firing in firings] == [
        (("org_id:300 login_name:alice@x",), "300")
    ]


def test_a_success_resets_the_count_of_rules_that_ask_for_it() -> None:
    """After a success, a reset rule starts again at zero; a rule without reset keeps counting."""
    engine = _engine(
        rule("resets", reset_on_success=True),
        rule("keeps-counting", reset_on_success=False),
    )
    assert _feed(
        engine,
        event(0),
        event(1),
        event(2, type=LOGIN_SUCCEEDED, reason=None),
        event(3),
        event(4),
        event(5),
    ) == [[], [], [], ["keeps-counting"], [], ["resets"]]


def test_a_success_older_than_the_newest_failure_resets_nothing() -> None:
    """A success from before a failure cannot have ended it. Such a success arrives late, or is
    a real one written to the topic again: the failures after it still count."""
    engine = _engine(rule(reset_on_success=True))
    assert _feed(
        engine,
        event(0),
        event(2),
        event(1, type=LOGIN_SUCCEEDED, reason=None),
        event(3),
        event(4, type=LOGIN_SUCCEEDED, reason=None),
        event(5),
    ) == [[], [], [], ["password-bruteforce"], [], []]


def test_a_success_for_another_user_does_not_reset() -> None:
    """Only the key of the succeeding user is cleared."""
    engine = _engine(rule(reset_on_success=True))
    assert _feed(
        engine,
        event(0),
        event(1),
        event(2, type=LOGIN_SUCCEEDED, reason=None, user_id="43"),
        event(3),
    ) == [[], [], [], ["password-bruteforce"]]


def test_a_success_elsewhere_does_not_reset() -> None:
    """A success in another organization than the one the rule counts does not clear the count."""
    engine = _engine(rule(match={"reason": "password", "org_id": "7"}, reset_on_success=True))
    assert _feed(
        engine,
        event(0, org_id="7"),
        event(1, org_id="7"),
        event(2, type=LOGIN_SUCCEEDED, reason=None, org_id="8"),
        event(3, org_id="7"),
    ) == [[], [], [], ["password-bruteforce"]]


def test_a_success_is_never_counted_by_a_reset_rule() -> None:
    """A success resets the count and is not itself counted."""
    engine = _engine(rule(reset_on_success=True, threshold=1))
    assert _feed(engine, event(0, type=LOGIN_SUCCEEDED)) == [[]]
    assert _tracked(engine) == {"password-bruteforce": 0}


def test_events_from_allowlisted_networks_are_not_counted() -> None:
    """Failures from allowlisted IPv4 and IPv6 networks never count; others do."""
    engine = _engine(rule(), ips=["10.0.0.0/8", "2001:db8::/32"])
    assert _feed(
        engine,
        event(0, ip="10.20.30.40"),
        event(1, ip="2001:db8::beef"),
        event(2, ip="10.0.0.1"),
        event(3, ip="192.0.2.1"),
        event(4, ip="2001:db9::1"),
        event(5),
    ) == [[], [], [], [], [], ["password-bruteforce"]]


def test_several_rules_can_fire_on_one_event() -> None:
    """An event that completes two rules' windows fires both."""
    engine = _engine(rule("three", threshold=3), rule("one", threshold=1))
    assert _feed(engine, event(0), event(1), event(2)) == [["one"], [], ["three"]]


def test_a_repeated_event_id_is_counted_once() -> None:
    """A producer's retry of the same ``event_id`` does not count as another failure."""
    engine = _engine(rule())
    assert _feed(
        engine,
        event(0, event_id="e1"),
        event(0, event_id="e1"),
        event(0, event_id="e1"),
        event(1, event_id="e2"),
        event(2, event_id="e3"),
    ) == [[], [], [], [], ["password-bruteforce"]]


def test_idle_keys_are_evicted() -> None:
    """A key whose events have all left the window is forgotten once event time moves on."""
    engine = _engine(rule())
    _feed(engine, event(0, user_id="1"), event(1, user_id="2"))
    assert _tracked(engine) == {"password-bruteforce": 2}
    _feed(engine, event(10.5, user_id="3"))  # user 1 is idle, user 2 not yet
    assert _tracked(engine) == {"password-bruteforce": 2}
    _feed(engine, event(12, user_id="3"))
    assert _tracked(engine) == {"password-bruteforce": 1}


def test_evict_idle_reports_how_many_keys_it_forgot() -> None:
    """An explicit sweep between the automatic ones returns the number of keys it dropped."""
    engine = _engine(rule())
    # t (min)  0.5         10          10.9
    #          user 1      user 2      user 3
    #                      ^ a sweep: user 1 still inside (0m, 10m]
    #                                  ^ no sweep yet (less than a minute later); user 1 is idle
    _feed(engine, event(0.5, user_id="1"), event(10, user_id="2"), event(10.9, user_id="3"))
    assert _tracked(engine) == {"password-bruteforce": 3}
    assert engine.evict_idle() == 1
    assert _tracked(engine) == {"password-bruteforce": 2}


def test_a_far_future_event_cannot_evict_live_keys() -> None:
    """An event stamped a year ahead moves the watermark only to ``now``."""
    engine = _engine(rule())
    live = [event(55, user_id="1"), event(56, user_id="1")]
    _feed(engine, *live)
    _feed(engine, event(365 * 24 * 60, user_id="2"))
    assert _tracked(engine) == {"password-bruteforce": 2}
    assert _feed(engine, event(57, user_id="1")) == [["password-bruteforce"]]


def test_a_reload_keeps_the_counts_of_unchanged_rules() -> None:
    """After a reload, a rule that did not change still remembers its failures."""
    engine = _engine(rule("same"), rule("changed", threshold=3))
    _feed(engine, event(0), event(1))
    engine = engine.reloaded(ruleset(rule("same"), rule("changed", threshold=2), rule("new")))
    assert _feed(engine, event(2)) == [["same"]]
    assert _tracked(engine) == {"same": 1, "changed": 1, "new": 1}


def test_a_reload_resets_the_counts_of_changed_rules() -> None:
    """A rule whose definition changed starts from zero, even under the same name."""
    engine = _engine(rule("changed", threshold=3))
    _feed(engine, event(0), event(1))
    engine = engine.reloaded(ruleset(rule("changed", threshold=3, window="11m")))
    assert _feed(engine, event(2), event(3)) == [[], []]
    assert _feed(engine, event(4)) == [["changed"]]


def test_a_reload_uses_the_new_allowlist() -> None:
    """Addresses allowlisted by the reloaded rules stop counting at once."""
    engine = _engine(rule(threshold=1))
    engine = engine.reloaded(ruleset(rule(threshold=1), ips=["192.0.2.0/24"]))
    assert _feed(engine, event(0, ip="192.0.2.9")) == [[]]


def test_a_rule_set_with_no_allowlist_counts_every_address() -> None:
    """Without an allowlist, no address is excluded."""
    rules: RuleSet = ruleset(rule(threshold=1))
    assert not rules.ip_allowlisted("10.0.0.1")
    assert _feed(Engine(rules), event(0, ip="10.0.0.1")) == [["password-bruteforce"]]


def test_endless_new_reasons_do_not_change_what_counts() -> None:
    """Thousands of made-up reasons (attacker-chosen text) leave the matching of others as is."""
    engine = _engine(rule(threshold=3))
    noise = [event(1, reason=f"made-up-{n}") for n in range(3000)]
    fired = _feed(engine, event(0), *noise, event(2), event(3))
    assert fired == [[]] * 3002 + [["password-bruteforce"]]
    assert _tracked(engine) == {"password-bruteforce": 1}
