"""Repartitioning (README, Operations: "Scaling out"): which rules are counted on an internal
topic, the records that carry events there, and the pipeline counting each rule in one place."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from pathlib import Path

import hypothesis
import msgspec
import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import strategies as st
from pydantic import ValidationError

from lockoutd.daemon import Daemon
from lockoutd.decide.engine import key_reader
from lockoutd.decode.event import LOGIN_SUCCEEDED, Event
from lockoutd.decode.native import (
    MAX_REFUSED_ELEMENTS,
    InvalidEvent,
    bundle_decoder,
    bundle_element,
    decode_native,
)
from lockoutd.pipeline import Pipeline
from lockoutd.repartition import (
    _MAX_PLACED,
    Repartitioning,
    derived_event_id,
    encode_event,
    internal_topic,
    is_repartitioned,
    topic_prefix,
)
from lockoutd.report.metrics import Metrics
from lockoutd.rules import load_rules
from lockoutd.rules.model import Rule
from lockoutd.settings import KafkaSettings, Settings
from lockoutd.source.kafka import BUNDLE_BYTES, OutgoingRecord
from lockoutd.source.schedule_seal import schedule_seal
from tests.unit.helpers import T0, engines_failing_for, event, record, rule, ruleset
from tests.unit.test_hostile_input import json_values
from tests.unit.test_pipeline import FakeStore

SPRAY = rule(
    "spray",
    match={"type": "auth.login.failed"},
    key=["ip"],
    distinct="user_id",
    threshold=3,
    action={"report": {}},
)
BRUTEFORCE = rule("bruteforce", threshold=3)
PER_IP = rule(
    "per-ip",
    key=["ip"],
    threshold=3,
    reset_on_success=True,
    action={"lock": {"targets": "contributors"}},
)


def test_only_a_rule_keyed_on_the_user_alone_is_counted_where_its_events_arrive() -> None:
    assert not is_repartitioned(rule(key=["user_id"]))
    for key in (["ip"], ["ip_prefix"], ["user_id", "ip"], ["login_name"], ["org_id"]):
        assert is_repartitioned(rule(key=key, action={"lock": {"targets": "contributors"}}))


def test_rules_sharing_a_key_share_one_internal_topic_named_after_the_group() -> None:
    plan = Repartitioning(
        ruleset(BRUTEFORCE, SPRAY, PER_IP), topic_prefix(KafkaSettings(group_id="lockoutd"))
    )
    assert list(plan.topics) == ["lockoutd.repartition.ip"]
    assert [r.name for r in plan.rules_for("lockoutd.repartition.ip").rules] == ["spray", "per-ip"]
    assert [r.name for r in plan.rules_for("auth.events").rules] == ["bruteforce"]
    longer = rule("longer", key=["ip"], window="1d", action={"report": {}})
    [route] = Repartitioning(ruleset(SPRAY, longer), "p").routes
    assert route.retention_seconds(3600) == 86_400 + 3600  # the longest window, then late
    assert topic_prefix(KafkaSettings(repartition_prefix="sec.lockoutd")) == "sec.lockoutd"
    assert topic_prefix(KafkaSettings(group_id="team a/lockoutd")) == "team_a_lockoutd.repartition"


PER_NETWORK = rule(
    "per-network",
    match={"type": "auth.login.failed"},
    key=["ip_prefix"],
    distinct="user_id",
    threshold=3,
    action={"report": {}},
)


def test_a_key_that_determines_a_coarser_one_is_counted_on_the_coarser_keys_topic() -> None:
    """An address lies in one network, so the partition that holds a network's events holds
    every event of each of its addresses: one internal copy of an event serves both keys."""
    pair = rule("pair", key=["user_id", "ip"], action={"report": {}})
    per_org = rule("per-org", key=["org_id"], action={"report": {}})
    plan = Repartitioning(ruleset(BRUTEFORCE, SPRAY, pair, PER_NETWORK, per_org), "p")
    assert list(plan.topics) == ["p.ip_prefix", "p.org_id"]
    assert [r.name for r in plan.rules_for("p.ip_prefix").rules] == ["spray", "pair", "per-network"]
    [to_network, to_org] = plan.forward(event(ip="10.0.0.1", org_id="300"), "auth.events", 0, 1)
    assert (to_network.topic, to_network.key) == ("p.ip_prefix", b"10.0.0.0/24")
    assert (to_org.topic, to_org.key) == ("p.org_id", b"300")
    # Without the coarser key's rules, each key keeps a topic of its own.
    assert list(Repartitioning(ruleset(SPRAY, pair), "p").topics) == ["p.ip"]
    assert list(Repartitioning(ruleset(pair), "p").topics) == ["p.user_id.ip"]


def test_the_coarser_topic_carries_what_any_of_its_rules_counts_or_resets_on() -> None:
    plan = Repartitioning(
        ruleset(
            PER_IP,
            rule(
                "otp-net",
                match={"type": "auth.login.failed", "reason": ["otp"]},
                key=["ip_prefix"],
                action={"report": {}},
            ),
        ),
        "p",
    )
    for sent in (
        plan.forward(event(ip="10.0.0.1"), "auth.events", 0, 1),  # counted by per-ip
        plan.forward(event(type=LOGIN_SUCCEEDED, ip="10.0.0.1"), "auth.events", 0, 2),  # resets it
        plan.forward(event(reason="otp", ip="10.0.0.1"), "auth.events", 0, 3),  # counted by otp-net
    ):
        assert [r.topic for r in sent] == ["p.ip_prefix"]


_FIELDS = ["ip", "ip_prefix", "user_id", "login_name", "org_id"]


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    keys=st.lists(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=3, unique=True)),
    ips=st.lists(st.ip_addresses().map(str), min_size=2, max_size=6),
    users=st.lists(st.sampled_from(["u1", "u2", None]), min_size=6, max_size=6),
)
def test_events_that_share_a_rules_key_share_the_record_key_of_its_topic(
    keys: list[list[str]], ips: list[str], users: list[str | None]
) -> None:
    """Whatever keys the rules have, every event of one key value reaches one partition of the
    topic its rule is counted on, and each rule is counted on exactly one topic."""
    rules = [
        rule(f"r{n}", key=key, action={"report": {}})
        for n, key in enumerate(keys)
        if key != ["user_id"]
    ]
    plan = Repartitioning(ruleset(*rules), "p")
    assert sorted(r.name for route in plan.routes for r in route.rules.rules) == sorted(
        r.name for r in rules
    )
    events = [
        event(ip=str(ipaddress.ip_address(ip)), user_id=user, login_name="name", org_id="300")
        for ip, user in zip(ips * 3, users, strict=False)
    ]
    for route in plan.routes:
        for counted in route.rules.rules:
            read = key_reader(counted.key)
            where: dict[object, set[bytes]] = {}
            for e in events:
                if (value := read(e)) is not None:
                    [sent] = [r for r in plan.forward(e, "t", 0, 1) if r.topic == route.topic]
                    where.setdefault(value, set()).add(sent.key or b"")
            assert all(len(keys) == 1 for keys in where.values()), (counted.key, route.key)


def test_keys_kafka_cannot_spell_get_distinct_valid_topic_names() -> None:
    assert internal_topic("p", ["user_id", "ip"]) == "p.user_id.ip"
    odd = [internal_topic("p", [name]) for name in ("a.b", "a/b", "a b", "x" * 300)]
    assert len(set(odd)) == len(odd)
    for name in odd:
        assert len(name) <= 249
        assert all(c.isalnum() or c in "._-" for c in name)


def test_the_event_id_of_an_event_without_one_is_where_it_was_read() -> None:
    assert derived_event_id("auth.events", 3, 1234) == derived_event_id("auth.events", 3, 1234)
    assert derived_event_id("auth.events", 3, 1234) != derived_event_id("auth.events", 3, 1235)
    assert derived_event_id("auth.events", 3, 1234) != derived_event_id("auth.events", 4, 1234)


def test_an_event_decodes_from_its_internal_record_as_it_was_with_an_event_id() -> None:
    original = decode_native(
        json.dumps(
            {
                "type": "auth.login.failed",
                "occurred_at": "2026-11-02T09:03:00.123456789+02:00",
                "login_name": " Alice@Example.COM",
                "ip": "2001:DB8:0::1",
                "org_id": "300",
                "reason": "otp",
                "user_agent": "",
                "attempt": 3,
                "nested": {"a": [1, True, None]},
            }
        ).encode(),
        max_bytes=1 << 20,
    )
    encoded = encode_event(original, event_id="lockoutd:t/0/7")
    decoded = decode_native(encoded, max_bytes=1 << 20)
    assert decoded == Event(**{**_fields(original), "event_id": "lockoutd:t/0/7"})
    # An event's own id is kept.
    own = Event(**{**_fields(original), "event_id": "zitadel:1:9"})
    assert decode_native(encode_event(own, event_id="other"), max_bytes=1 << 20) == own


def _fields(e: Event) -> dict[str, object]:
    return {name: getattr(e, name) for name in e.__struct_fields__}


def test_events_go_to_their_keys_topic_only_when_a_rule_there_may_count_them() -> None:
    plan = Repartitioning(ruleset(BRUTEFORCE, SPRAY), "p")
    [sent] = plan.forward(event(ip="10.0.0.1"), "auth.events", 2, 9)
    assert (sent.topic, sent.key) == ("p.ip", b"10.0.0.1")
    assert json.loads(sent.value)[7] == derived_event_id("auth.events", 2, 9)  # its event_id
    assert plan.forward(event(ip=None), "auth.events", 2, 9) == []  # no key to count it under
    # The spray rule counts no success and resets on none: nothing to carry.
    assert plan.forward(event(type=LOGIN_SUCCEEDED, ip="10.0.0.1"), "auth.events", 2, 9) == []
    assert plan.forward(event(type="auth.other", ip="10.0.0.1"), "auth.events", 2, 9) == []
    allowlisted = Repartitioning(ruleset(SPRAY, ips=["10.0.0.0/8"]), "p")
    assert allowlisted.forward(event(ip="10.0.0.1"), "auth.events", 2, 9) == []


def test_successes_go_to_the_topic_of_a_rule_that_resets_on_them() -> None:
    plan = Repartitioning(ruleset(PER_IP), "p")
    [sent] = plan.forward(event(type=LOGIN_SUCCEEDED, ip="10.0.0.1"), "auth.events", 0, 1)
    assert sent.topic == "p.ip"
    assert plan.forward(event(reason="otp", ip="10.0.0.1"), "auth.events", 0, 1) == []


def test_a_key_of_several_fields_is_one_record_key() -> None:
    plan = Repartitioning(ruleset(rule("pair", key=["user_id", "ip"], action={"report": {}})), "p")
    [sent] = plan.forward(event(ip="10.0.0.1"), "auth.events", 0, 1)
    assert (sent.topic, sent.key) == ("p.user_id.ip", b"42|10.0.0.1")


def _pipeline(
    store: FakeStore,
    *,
    repartition: bool,
    rules: tuple[Rule, ...] = (BRUTEFORCE, PER_IP),
    partitions: int = 0,
) -> tuple[Pipeline, Metrics]:
    """The pipeline of group ``g``, dead letters to ``dlq``, ten minutes after :data:`T0`;
    its sink knows that every internal topic has ``partitions`` partitions (0: not yet)."""
    settings = Settings(
        kafka={"decisions_topic": "decisions", "dead_letter_topic": "dlq", "group_id": "g"}
    )
    metrics = Metrics()
    clock = lambda: T0 + 600  # noqa: E731
    pipeline = Pipeline(
        settings,
        ruleset(*rules),
        store=store,
        metrics=metrics,
        clock=clock,
        repartition=repartition,
        partitions_of=lambda _: partitions,
    )
    return pipeline, metrics


def _failures(users: list[str], *, partition: int = 0) -> list[object]:
    return [
        record(
            n,
            encode_event(event(n / 10, user_id=user, ip="10.0.0.1", org_id="300")),
            partition=partition,
            key=user.encode(),
        )
        for n, user in enumerate(users)
    ]


def _internal(outgoing: list[OutgoingRecord], topic: str = "g.repartition.ip") -> list[object]:
    """Each record for ``topic`` as the sink sends one alone: a bundle of one."""
    sent = [r for r in outgoing if r.topic == topic]
    return [
        record(n, b"[" + r.value + b"]", topic=topic, partition=0, key=r.key)
        for n, r in enumerate(sent)
    ]


async def test_a_rule_keyed_on_an_address_counts_on_its_internal_topic_and_nowhere_else() -> None:
    store = FakeStore()
    pipeline, metrics = _pipeline(store, repartition=True)
    outgoing = await pipeline.process(_failures(["1", "2", "3"]))  # type: ignore[arg-type]
    assert store.lock_calls == []  # not on the source topic
    forwarded = _internal(outgoing)
    assert len(forwarded) == 3
    await pipeline.process(forwarded)  # type: ignore[arg-type]
    assert sorted(store.lock_calls) == [("1", "300"), ("2", "300"), ("3", "300")]
    assert metrics.key_mismatches.labels(rule="per-ip")._value.get() == 0


async def test_an_address_rule_counted_on_the_network_topic_counts_each_address_apart() -> None:
    """Two addresses of one /24 share a partition of the network's topic, not a window: the
    per-address rule fires for the address that failed three times, not for the network."""
    store = FakeStore()
    pipeline, _ = _pipeline(store, repartition=True, rules=(PER_IP, PER_NETWORK))
    addresses = ["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2", "10.0.0.1"]
    source = [
        record(n, encode_event(event(n / 10, user_id=f"{7000 + n}", ip=ip, org_id="300")), key=b"u")
        for n, ip in enumerate(addresses)
    ]
    outgoing = await pipeline.process(source)  # type: ignore[arg-type]
    assert {r.topic for r in outgoing} == {"g.repartition.ip_prefix"}
    await pipeline.process(_internal(outgoing, "g.repartition.ip_prefix"))  # type: ignore[arg-type]
    # 10.0.0.1 failed for 7000, 7002 and 7004; its contributors are locked, 10.0.0.2's are not.
    assert sorted(store.lock_calls) == [("7000", "300"), ("7002", "300"), ("7004", "300")]
    assert pipeline.outcomes["reported"] == 1  # the network: three distinct users


def _bundle(values: list[bytes], topic: str = "g.repartition.ip", offset: int = 0) -> object:
    """One internal record carrying ``values``, as the sink publishes them (a JSON array)."""
    return record(offset, b"[" + b",".join(values) + b"]", topic=topic, partition=0, key=None)


async def test_events_bundled_in_one_internal_record_count_as_if_each_came_alone() -> None:
    store = FakeStore()
    pipeline, _ = _pipeline(store, repartition=True)
    outgoing = await pipeline.process(_failures(["1", "2", "3"]))  # type: ignore[arg-type]
    forwarded = [r.value for r in outgoing if r.topic == "g.repartition.ip"]
    assert len(forwarded) == 3
    await pipeline.process([_bundle(forwarded)])  # type: ignore[list-item]
    assert sorted(store.lock_calls) == [("1", "300"), ("2", "300"), ("3", "300")]


async def test_a_bad_event_in_a_bundle_is_dead_lettered_alone_and_the_others_count() -> None:
    store = FakeStore()
    pipeline, _ = _pipeline(store, repartition=True, rules=(PER_IP,))
    outgoing = await pipeline.process(_failures(["1", "2", "3"]))  # type: ignore[arg-type]
    good = [r.value for r in outgoing if r.topic == "g.repartition.ip"]
    at = T0 + 60
    bad = [
        f'["auth.login.failed", {at}, null, null, null, null, null, null, null, {{}}]'.encode(),
        f'["auth.login.failed", {at}, "9", null, null, null, null, null, null, '.encode()
        + b'{"nested": '
        + b"[" * 40
        + b"]" * 40
        + b"}]",
        b'{"type": "auth.login.failed", "user_id": "9"}',
    ]
    published = await pipeline.process(
        [_bundle([good[0], bad[0], good[1], bad[1], good[2], bad[2]])]
    )  # type: ignore[list-item]
    dead = [r for r in published if r.topic == "dlq"]
    assert sorted(store.lock_calls) == [("1", "300"), ("2", "300"), ("3", "300")]
    assert [(r.topic, r.value) for r in dead] == [("dlq", value) for value in bad]
    reasons = [dict(r.headers)["lockoutd.reason"] for r in dead]
    assert reasons == [b"missing_subject", b"too_deep", b"bad_field"]


@pytest.mark.parametrize("refused", [MAX_REFUSED_ELEMENTS, MAX_REFUSED_ELEMENTS + 1])
async def test_a_bundle_of_more_refused_elements_than_the_limit_is_one_dead_letter(
    refused: int,
) -> None:
    """Up to the limit, each element that is no event is a dead letter of its own and the events
    count; past it the record is refused whole, once, and none of it counts."""
    store = FakeStore()
    pipeline, _ = _pipeline(store, repartition=True, rules=(PER_IP,))
    outgoing = await pipeline.process(_failures(["1", "2", "3"]))  # type: ignore[arg-type]
    good = [r.value for r in outgoing if r.topic == "g.repartition.ip"]
    bundle = _bundle([*good, *[b"0"] * refused])
    published = await pipeline.process([bundle])  # type: ignore[list-item]
    reasons = [dict(r.headers)["lockoutd.reason"] for r in published if r.topic == "dlq"]
    if refused <= MAX_REFUSED_ELEMENTS:
        assert len(reasons) == refused
        assert sorted(store.lock_calls) == [("1", "300"), ("2", "300"), ("3", "300")]
    else:
        assert reasons == [b"bad_bundle"]
        assert store.lock_calls == []


async def test_an_event_of_a_bundle_whose_counting_fails_is_dead_lettered_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug met by one event of a bundle costs that event, not the bundle: its dead letter holds
    it alone, and the events around it count."""
    store = FakeStore()
    pipeline, _ = _pipeline(store, repartition=True, rules=(PER_IP,))
    outgoing = await pipeline.process(_failures(["1", "666", "2", "3"]))  # type: ignore[arg-type]
    forwarded = [r.value for r in outgoing if r.topic == "g.repartition.ip"]
    engines_failing_for(monkeypatch, "666", RuntimeError("a bug"))
    published = await pipeline.process([_bundle(forwarded, offset=9)])  # type: ignore[list-item]
    assert sorted(store.lock_calls) == [("1", "300"), ("2", "300"), ("3", "300")]
    [dead] = [r for r in published if r.topic == "dlq"]
    assert decode_native(dead.value, max_bytes=1 << 20).user_id == "666"
    assert dict(dead.headers)["lockoutd.source"] == b"g.repartition.ip/0/9"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"[{}, ", b"invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, b"too_deep"),
        (b"[1, 2]", b"bad_field"),
    ],
)
async def test_an_internal_record_that_is_no_bundle_of_objects_is_dead_lettered_whole(
    value: bytes, reason: bytes
) -> None:
    pipeline, _ = _pipeline(FakeStore(), repartition=True, rules=(PER_IP,))
    internal = record(7, value, topic="g.repartition.ip", partition=0, key=None)
    dead = await pipeline.process([internal])  # type: ignore[list-item]
    if reason == b"bad_field":  # each element is refused on its own
        assert [dict(r.headers)["lockoutd.reason"] for r in dead] == [reason, reason]
    else:
        assert [(r.value, dict(r.headers)["lockoutd.reason"]) for r in dead] == [(value, reason)]


async def test_an_event_is_counted_once_in_the_events_metric_however_many_topics_carry_it() -> None:
    """``lockoutd_events_total`` counts the events read, not their internal copies: three
    failures written to an internal topic and read back are three accepted events."""
    pipeline, metrics = _pipeline(FakeStore(), repartition=True)
    outgoing = await pipeline.process(_failures(["1", "2", "3"]))  # type: ignore[arg-type]
    await pipeline.process(_internal(outgoing))  # type: ignore[arg-type]
    assert metrics.events.labels(result="accepted")._value.get() == 3


async def test_a_source_batch_read_again_after_a_crash_counts_once() -> None:
    """The same three source records read twice (no commit in between) are written twice with
    the same event ids: the internal topic holds six records, the window two events."""
    store = FakeStore()
    pipeline, _ = _pipeline(store, repartition=True)
    first = await pipeline.process(_failures(["1", "2"]))  # type: ignore[arg-type]
    again = await pipeline.process(_failures(["1", "2"]))  # type: ignore[arg-type]
    both = _internal(first + again)
    assert len(both) == 4
    await pipeline.process(both)  # type: ignore[arg-type]
    assert store.lock_calls == []


IP_TOPIC = "g.repartition.ip"


async def test_a_batchs_copies_bound_for_one_partition_are_written_as_one_bundle() -> None:
    """Once the sink knows the internal topic's partitions, the copies of a batch go out as one
    bundle per partition, in the partition the default partitioner gives their key (as any
    instance of the group writes them), and read back as the same events, in order, each with
    the id it was given where it was read."""
    addresses = [f"10.0.{n % 5}.1" for n in range(20)]
    source = [
        record(n, encode_event(event(n / 10, user_id=f"{7000 + n}", ip=ip, org_id="300")), key=b"u")
        for n, ip in enumerate(addresses)
    ]
    pipeline, _ = _pipeline(FakeStore(), repartition=True, partitions=3)
    outgoing = await pipeline.process(source)  # type: ignore[arg-type]
    bundles = [r for r in outgoing if r.topic == IP_TOPIC]
    assert len(bundles) == len({b.partition for b in bundles}) > 1
    decode = bundle_decoder(max_bytes=BUNDLE_BYTES)
    for bundle in bundles:
        assert bundle.key is None
        assert not bundle.bundled
        events = decode(bundle.value)
        for e in events:
            assert isinstance(e, Event)
            assert e.ip is not None
            assert DefaultPartitioner()(e.ip.encode(), [0, 1, 2], [0, 1, 2]) == bundle.partition
        numbers = [int(e.user_id[1:]) for e in events]  # type: ignore[union-attr]
        assert numbers == sorted(numbers)
        assert [e.event_id for e in events] == [  # type: ignore[union-attr]
            derived_event_id("auth.events", 0, n) for n in numbers
        ]
    assert sum(len(decode(b.value)) for b in bundles) == len(source)


async def test_gathered_copies_count_as_the_copies_the_sink_placed_would() -> None:
    """Read back, the bundles made here lock the same users as the copies written one by one
    for the sink to place and bundle."""
    addresses = [f"10.0.{n % 6}.1" for n in range(16)]  # four reach the threshold, two not
    source = [
        record(n, encode_event(event(n / 10, user_id=f"{7000 + n}", ip=ip, org_id="300")), key=b"u")
        for n, ip in enumerate(addresses)
    ]
    placed_store, gathered_store = FakeStore(), FakeStore()
    placed, _ = _pipeline(placed_store, repartition=True)
    outgoing = await placed.process(source)  # type: ignore[arg-type]
    await placed.process(_internal(outgoing))  # type: ignore[arg-type]
    gathering, _ = _pipeline(gathered_store, repartition=True, partitions=3)
    written = await gathering.process(source)  # type: ignore[arg-type]
    read_back = [
        record(n, r.value, topic=IP_TOPIC, partition=r.partition or 0)
        for n, r in enumerate(r for r in written if r.topic == IP_TOPIC)
    ]
    await gathering.process(read_back)
    assert placed_store.lock_calls
    assert sorted(gathered_store.lock_calls) == sorted(placed_store.lock_calls)


async def test_gathered_copies_are_written_in_bundles_within_the_size_limit() -> None:
    """Many large events bound for one partition: several bundles, none over the limit, which
    read back as every event in order."""
    users = [str(7000 + n) for n in range(300)]
    source = [
        record(n, encode_event(event(n / 100, user_id=user, ip="10.0.0.1", pad="x" * 900)))
        for n, user in enumerate(users)
    ]
    pipeline, _ = _pipeline(FakeStore(), repartition=True, partitions=1)
    outgoing = await pipeline.process(source)  # type: ignore[arg-type]
    bundles = [r for r in outgoing if r.topic == IP_TOPIC]
    assert len(bundles) > 1
    assert all(len(b.value) <= BUNDLE_BYTES and b.partition == 0 for b in bundles)
    decode = bundle_decoder(max_bytes=BUNDLE_BYTES)
    assert [e.user_id for b in bundles for e in decode(b.value)] == users  # type: ignore[union-attr]


def test_the_partitions_remembered_for_key_values_are_bounded() -> None:
    """Key values come from events: an attacker sending a new address with every event must not
    grow what an internal topic remembers of where each goes, and a new partition count places
    every key value again."""
    [route] = Repartitioning(ruleset(PER_IP), "g").routes
    for n in range(_MAX_PLACED + 10):
        assert route.place(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 3)[1] in range(3)
    assert len(route.placed) <= _MAX_PLACED
    where = route.place("10.0.0.1", 3)
    assert where == (route.topic, DefaultPartitioner()(b"10.0.0.1", [0, 1, 2], [0, 1, 2]))
    assert route.place("10.0.0.1", 7) == (
        route.topic,
        DefaultPartitioner()(b"10.0.0.1", list(range(7)), list(range(7))),
    )


async def test_replay_without_repartitioning_counts_every_rule_in_place() -> None:
    store = FakeStore()
    pipeline, _ = _pipeline(store, repartition=False)
    outgoing = await pipeline.process(_failures(["1", "2", "3"]))  # type: ignore[arg-type]
    assert sorted(store.lock_calls) == [("1", "300"), ("2", "300"), ("3", "300")]
    assert not [r for r in outgoing if r.topic.startswith("g.repartition")]


async def test_records_replayed_to_rebuild_windows_are_not_written_again() -> None:
    store = FakeStore()
    pipeline, _ = _pipeline(store, repartition=True)
    outgoing = await pipeline.process(
        _failures(["1", "2", "3"]),  # type: ignore[arg-type]
        rebuild_until={TopicPartition("auth.events", 0): 2},
    )
    assert len(_internal(outgoing)) == 1


async def test_a_record_that_cannot_be_repartitioned_is_dead_lettered_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = FakeStore()
    settings = Settings(kafka={"decisions_topic": "decisions", "dead_letter_topic": "dlq"})
    pipeline = Pipeline(
        settings,
        ruleset(BRUTEFORCE, PER_IP),
        store=store,
        metrics=Metrics(),
        clock=lambda: T0 + 600,
        repartition=True,
    )
    plan = pipeline.repartitioning
    assert plan is not None
    real = plan.forward

    def fails_on_the_second(event: Event, topic: str, partition: int, offset: int) -> list[object]:
        if offset == 1:
            raise RuntimeError("a bug")
        return real(event, topic, partition, offset)  # type: ignore[return-value]

    monkeypatch.setattr(plan, "forward", fails_on_the_second)
    outgoing = await pipeline.process(_failures(["1", "2", "3"]))  # type: ignore[arg-type]
    assert [r.topic for r in outgoing].count("dlq") == 1
    assert len(_internal(outgoing, "lockoutd.repartition.ip")) == 2


def test_a_reload_that_needs_an_internal_topic_not_read_since_start_is_refused(
    tmp_path: Path,
) -> None:
    """A rule keyed anew on ``org_id`` would need a topic the group does not read: the old rules
    stay, until a restart creates and subscribes to it."""
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "r.yaml").write_text(
        "rules:\n  - {name: per-ip, key: [ip], threshold: 3, window: 10m, action: {report: {}}}\n",
        encoding="utf-8",
    )
    settings = Settings(kafka={"group_id": "g"}, engine={"rule_paths": [folder]})
    rules = load_rules([folder])
    daemon = Daemon(settings, rules)
    pipeline = Pipeline(settings, rules, store=FakeStore(), metrics=Metrics(), repartition=True)
    assert pipeline.repartitioning is not None
    daemon._internal_topics = frozenset(pipeline.repartitioning.topics)
    seal = schedule_seal(settings.kafka)  # no key: these rules lock nobody temporarily

    (folder / "r.yaml").write_text(
        "rules:\n"
        "  - {name: per-ip, key: [ip], threshold: 5, window: 10m, action: {report: {}}}\n"
        "  - {name: per-org, key: [org_id], threshold: 3, window: 10m, action: {report: {}}}\n",
        encoding="utf-8",
    )
    daemon._reload(pipeline, seal)
    assert [r.name for r in pipeline.rules.rules] == ["per-ip"]

    (folder / "r.yaml").write_text(
        "rules:\n  - {name: per-ip, key: [ip], threshold: 5, window: 10m, action: {report: {}}}\n",
        encoding="utf-8",
    )
    daemon._reload(pipeline, seal)
    assert [r.threshold for r in pipeline.rules.rules] == [5]


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    at=st.floats(min_value=946_684_800, max_value=4_000_000_000),
    user=st.from_regex(r"[0-9]{1,18}", fullmatch=True),
    ip=st.ip_addresses().map(str),
    extra=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    own_id=st.none() | st.text(min_size=1, max_size=8),
)
def test_any_decodable_event_reads_back_from_its_bundle_and_its_dead_letter_unchanged(
    at: float, user: str, ip: str, extra: dict[str, object], own_id: str | None
) -> None:
    """An event counted on an internal topic is the event read at the source, to the bit of its
    time: the same windows see the same times wherever a rule is counted. Its dead letter, a
    native record, decodes to it too."""
    raw = json.dumps(
        {
            **extra,
            "type": "auth.login.failed",
            "occurred_at": datetime.fromtimestamp(at, UTC).isoformat(),  # to the microsecond
            "user_id": user,
            "ip": ip,
            **({"event_id": own_id} if own_id else {}),
        }
    ).encode()
    try:
        original = decode_native(raw, max_bytes=1 << 20)
    except InvalidEvent:
        return  # refused at the source: never repartitioned
    element = msgspec.json.encode(bundle_element(original, event_id="made"))
    [decoded] = bundle_decoder(max_bytes=1 << 20)(b"[" + element + b"]")
    with_id = Event(**{**_fields(original), "event_id": original.event_id or "made"})
    assert decoded == with_id
    assert decode_native(encode_event(original, event_id="made"), max_bytes=1 << 20) == with_id


def test_a_prefix_kafka_cannot_name_a_topic_with_is_refused() -> None:
    with pytest.raises(ValidationError, match="repartition_prefix"):
        Settings(kafka={"repartition_prefix": "lockoutd repartition"})
    with pytest.raises(ValidationError, match="repartition_partitions"):
        Settings(kafka={"repartition_partitions": 0})
