"""The engine's compiled loop over the rules (and its compiled front, which hands each event to
the loop) against the pure-Python ones, on the same events.

Hypothesis draws rule sets from a pool that covers what the compiled loop reads itself (keys of one
and two fields, ``user_id`` falling back to the login name, ``ip_prefix`` of canonical and other
spellings, extra fields of any type, distinct values, small and large thresholds, contributors)
and what it hands back to Python (other conditions, ip allowlists), and streams of failures and
successes, late, tied and future-dated, with repeated ids, missing fields and record keys that
differ from the rule's. Both engines must return the same firings for every event, in order, and
hold the same keys and key mismatches after every batch.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockoutd.decide import core
from lockoutd.decide import windows as reference
from lockoutd.decide.engine import Engine, Firing, key_reader
from lockoutd.decode.event import LOGIN_FAILED, LOGIN_SUCCEEDED, Event, field_reader
from lockoutd.rules.model import Rule, RuleSet
from tests.unit.decode.test_addresses import any_text
from tests.unit.helpers import T0, rule, ruleset

compiled: Any
try:
    from lockoutd.decide import _cdispatch as dispatch
    from lockoutd.decide import _cwindows as compiled
except ImportError:  # built without a compiler
    compiled = dispatch = None

pytestmark = pytest.mark.skipif(
    dispatch is None, reason="the compiled loop is not built here (no C compiler at install)"
)


class _TaggedEvent(Event, frozen=True, gc=False):
    """An event of another class: the compiled loop reads its fields by attribute lookup."""

    tag: str = ""


_REPORT = {"report": {}}
_CONTRIBUTORS = {"lock": {"targets": "contributors"}}

_POOL: list[dict[str, Any]] = [
    {"key": ["user_id"], "action": _CONTRIBUTORS, "reset_on_success": True},
    {"key": ["org_id", "user_id"], "action": _REPORT, "reset_on_success": True},
    {"key": ["ip"], "action": _REPORT},
    {"key": ["ip_prefix"], "action": _REPORT, "match": {"reason": ["password", "otp"]}},
    {"key": ["tenant"], "action": _REPORT},
    {"key": ["ip_prefix", "tenant"], "action": _REPORT, "reset_on_success": True},
    {"key": ["login_name"], "action": _REPORT, "allowlist": {"ips": ["10.0.0.0/24"]}},
    {"key": ["user_id"], "action": _REPORT, "match": {"org_id": ["o1"]}, "reset_on_success": True},
    {"key": ["user_id"], "distinct": "ip", "action": _CONTRIBUTORS, "reset_on_success": True},
    {"key": ["ip_prefix"], "distinct": "login_name", "action": _REPORT},
    {"key": ["org_id"], "distinct": "tenant", "action": _REPORT, "match": {"user_agent": ["curl"]}},
    {"key": ["user_agent"], "distinct": "user_id", "action": _REPORT},
    {"key": ["occurred_at"], "action": _REPORT},
    {
        "key": ["user_id", "ip"],
        "action": _REPORT,
        "allowlist": {"ips": ["2001:db8::/64"]},
        "match": {"reason": ["otp"], "org_id": ["o2"]},
    },
]

_IPS = [
    None,
    "",
    "10.0.0.1",
    "10.0.0.2",
    "10.0.1.9",
    "10.0.0.255",
    "192.168.0.1",
    "2001:db8::1",
    "2001:db8::2",
    "2001:DB8:0:1::1",
    "::ffff:10.0.0.1",
]

_events = st.builds(
    lambda kind, seconds, user, name, org, ip, reason, event_id, agent, tenant: (
        kind,
        seconds,
        {
            "user_id": user,
            "login_name": name,
            "org_id": org,
            "ip": ip,
            "reason": reason,
            "event_id": event_id,
            "user_agent": agent,
        },
        tenant,
    ),
    kind=st.sampled_from([LOGIN_FAILED] * 6 + [LOGIN_SUCCEEDED]),
    # Seconds after the stream's clock: late, tied or new, past the window, and in the future.
    seconds=st.sampled_from([-400, -30, -1, 0, 0, 0, 1, 2, 5, 30, 120, 700]),
    user=st.sampled_from([None, "", "u1", "u2", "u3"]),
    name=st.sampled_from([None, "", "alice", "bob"]),
    org=st.sampled_from([None, "o1", "o2"]),
    ip=st.sampled_from(_IPS),
    reason=st.sampled_from(["password", "password", "otp", None]),
    event_id=st.one_of(st.none(), st.sampled_from([f"e{n}" for n in range(6)])),
    agent=st.sampled_from([None, "curl", "firefox"]),
    # Absent, or of the types a producer's JSON may give an extra field.
    tenant=st.sampled_from(["absent", None, "", "t1", "t2", 7, 7.5, True, ["x"]]),
)
_steps = st.tuples(
    st.sampled_from([Event, Event, Event, _TaggedEvent]),
    _events,
    st.sampled_from([None, None, b"u1", b"alice", b"10.0.0.1", b"\xff"]),
    st.booleans(),  # whether the event's record is replayed
)


def _engines(rules: RuleSet) -> tuple[Engine, Engine]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core, "EventWindows", compiled.EventWindows)
        patch.setattr(core, "DistinctWindows", compiled.DistinctWindows)
        patch.setattr(core, "DISPATCH", dispatch)
        fast = Engine(rules)
        patch.setattr(core, "EventWindows", reference.EventWindows)
        patch.setattr(core, "DistinctWindows", reference.DistinctWindows)
        patch.setattr(core, "DISPATCH", None)
        slow = Engine(rules)
    return fast, slow


def _seen(firings: list[Firing]) -> list[tuple[Any, ...]]:
    return [
        (
            f.rule.name,
            f.key,
            f.event,
            f.count,
            f.first_event_at,
            f.last_event_at,
            f.contributors,
            f.replayed_only,
        )
        for f in firings
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chosen=st.lists(st.integers(0, len(_POOL) - 1), min_size=1, max_size=6, unique=True),
    thresholds=st.lists(st.sampled_from([1, 2, 3, 5, 65, 100]), min_size=6, max_size=6),
    batches=st.lists(st.lists(_steps, max_size=30), min_size=1, max_size=6),
)
def test_the_compiled_loop_fires_as_the_python_loop(
    chosen: list[int], thresholds: list[int], batches: list[list[Any]]
) -> None:
    rules: list[Rule] = [
        rule(f"rule-{index}", threshold=threshold, window="5m", **_POOL[index])
        for index, threshold in zip(chosen, thresholds, strict=False)
    ]
    fast, slow = _engines(ruleset(*rules))
    clock = T0
    for batch in batches:
        for cls, (kind, seconds, fields, tenant), record_key, replayed in batch:
            clock += max(seconds, 0) / 10
            extra = {} if tenant == "absent" else {"tenant": tenant}
            event = cls(type=kind, occurred_at=clock + seconds, extra=extra, **fields)
            now = clock + 60
            got = fast.process(event, now, record_key=record_key, replayed=replayed)
            want = slow.process(event, now, record_key=record_key, replayed=replayed)
            assert _seen(got) == _seen(want)
        assert dict(fast.tracked_keys()) == dict(slow.tracked_keys())
        assert fast.take_key_mismatches() == slow.take_key_mismatches()
        assert fast.watermark == slow.watermark
    assert type(fast._front).__module__ == dispatch.__name__, "the compiled engine ran no front"
    assert all(
        type(getattr(plan, "__self__", None)).__module__ == dispatch.__name__
        for plan in fast._front.plans.values()
    ), "the compiled engine ran the Python loop"


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "0.0.0.9",
        "255.255.255.255",
        "1.22.133.4",
        "2001:db8::1",
        "::ffff:10.0.0.1",
        "fe80::1%eth0",
    ],
)
def test_the_compiled_prefix_is_the_reference_prefix(address: str) -> None:
    """Addresses the compiled loop reads itself, and those it leaves to ``ip_prefix``."""
    rules = ruleset(rule(key=["ip_prefix"], threshold=1, action=_REPORT))
    fast, slow = _engines(rules)
    event = Event(type=LOGIN_FAILED, occurred_at=T0, ip=address, reason="password")
    assert _seen(fast.process(event, T0)) == _seen(slow.process(event, T0))


@pytest.mark.parametrize("address", ["010.0.0.1", "1.2.3", "1.2.3.256", "1.2.3.4.5", "1.2.3.4 "])
def test_an_address_the_reference_refuses_is_refused_alike(address: str) -> None:
    """Spellings close to canonical IPv4 are not read as such: ``ip_prefix`` refuses them."""
    rules = ruleset(rule(key=["ip_prefix"], threshold=1, action=_REPORT))
    event = Event(type=LOGIN_FAILED, occurred_at=T0, ip=address, reason="password")
    for engine in _engines(rules):
        with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
            engine.process(event, T0)


def _network_or_error(read: Any, event: Event) -> tuple[str, Any]:
    try:
        return ("network", read(event))
    except ValueError as exc:
        return ("refused", str(exc))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), any_text), st.booleans())
def test_the_forwarded_key_is_the_network_the_reference_reads(
    address: str | None, tagged: bool
) -> None:
    """The key an event is forwarded under to an ``[ip_prefix]`` topic (README, Operations:
    "Scaling out") is the network the reference reads, or the same refusal: else an address's
    events would be counted in a partition its rules' windows are not in."""
    kind = _TaggedEvent if tagged else Event
    event = kind(type=LOGIN_FAILED, occurred_at=T0, user_id="u", ip=address)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core, "DISPATCH", dispatch)  # as where the compiled loop runs
        forwarded = key_reader(["ip_prefix"])
    assert forwarded is dispatch.ip_prefix_of
    assert _network_or_error(forwarded, event) == _network_or_error(
        field_reader("ip_prefix"), event
    )
