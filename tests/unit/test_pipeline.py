"""The daemon's batch pipeline with a fake user store: no broker, no HTTP."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path

from aiokafka import TopicPartition

from lockoutd.act.zitadel import LockOutcome, ResolvedUser, UnlockOutcome
from lockoutd.decide.decision import rfc3339
from lockoutd.decode.limits import Horizon
from lockoutd.decode.native import decode_native
from lockoutd.pipeline import Judged, Pipeline
from lockoutd.report.metrics import Metrics
from lockoutd.rules import load_rules
from lockoutd.settings import Settings
from tests.unit.helpers import record

NOW = 1_800_000_000.0
REPO = Path(__file__).resolve().parents[2]


class FakeStore:
    """Locks users in memory; already locked users answer like ZITADEL does."""

    def __init__(self, locked: set[str] | None = None) -> None:
        self.locked = set(locked or ())
        self.lock_calls: list[tuple[str, str | None]] = []

    async def lock(self, user_id: str, org_id: str | None) -> LockOutcome:
        self.lock_calls.append((user_id, org_id))
        if user_id in self.locked:
            return LockOutcome.ALREADY_LOCKED
        self.locked.add(user_id)
        return LockOutcome.LOCKED

    async def unlock(self, user_id: str, org_id: str | None) -> UnlockOutcome:
        raise AssertionError("the lockout path never unlocks")

    async def resolve_login_name(self, login_name: str, org_id: str | None) -> ResolvedUser | None:
        user_id = {"alice@example.com": "1001"}.get(login_name)
        return ResolvedUser(user_id, org_id) if user_id is not None else None


def failure(user: str, seconds_ago: float, **fields: str) -> bytes:
    event = {
        "type": "auth.login.failed",
        "occurred_at": rfc3339(NOW - seconds_ago),
        "reason": "password",
        **fields,
    }
    if user.isdigit():
        event["user_id"] = user
    else:
        event["login_name"] = user
    return json.dumps(event).encode()


def make_pipeline(store: FakeStore, **kafka: object) -> tuple[Pipeline, Metrics]:
    settings = Settings(
        kafka={"decisions_topic": "decisions", "dead_letter_topic": "dlq", **kafka},
        engine={"rule_paths": [REPO / "rules"]},
    )
    metrics = Metrics()
    rules = load_rules(settings.engine.rule_paths)
    return Pipeline(settings, rules, store=store, metrics=metrics, clock=lambda: NOW), metrics


async def test_a_batch_that_crosses_a_threshold_locks_once_and_publishes_one_decision() -> None:
    """Six failures in one batch give one lock call and one audit record."""
    store = FakeStore()
    pipeline, metrics = make_pipeline(store)
    batch = [record(i, failure("1001", 300 - i * 10, org_id="300")) for i in range(6)]

    outgoing = await pipeline.process(batch)

    assert store.lock_calls == [("1001", "300")]
    [audit] = outgoing
    assert audit.topic == "decisions"
    assert audit.key == b"1001"
    decision = json.loads(audit.value)
    assert decision["outcome"] == "locked"
    assert decision["rule"] == "password-bruteforce"
    sample = metrics.registry.get_sample_value
    assert sample("lockoutd_events_total", {"result": "accepted"}) == 6
    assert (
        sample(
            "lockoutd_actions_total",
            {"rule": "password-bruteforce", "action": "lock", "outcome": "locked"},
        )
        == 1
    )


async def test_counts_carry_over_from_one_batch_to_the_next() -> None:
    """Three failures in one batch and two in the next still make five."""
    store = FakeStore()
    pipeline, _ = make_pipeline(store)

    await pipeline.process([record(i, failure("1001", 100 - i)) for i in range(3)])
    assert store.lock_calls == []
    await pipeline.process([record(i, failure("1001", 50 - i)) for i in range(3, 5)])

    assert store.lock_calls == [("1001", None)]


async def test_invalid_records_are_dead_lettered_next_to_the_decisions() -> None:
    """A bad record becomes a dead letter in the same batch as the valid decisions around it."""
    store = FakeStore()
    pipeline, metrics = make_pipeline(store)
    batch = [record(0, b"{broken")] + [record(i, failure("1001", 60 - i)) for i in range(1, 6)]

    outgoing = await pipeline.process(batch)

    topics = sorted(r.topic for r in outgoing)
    assert topics == ["decisions", "dlq"]
    [dead] = [r for r in outgoing if r.topic == "dlq"]
    assert dead.value == b"{broken"
    assert metrics.registry.get_sample_value("lockoutd_events_total", {"result": "invalid"}) == 1


async def test_a_login_name_is_resolved_only_when_a_lock_is_due() -> None:
    """Failures for a login name lock the resolved user id; unknown names lock nobody."""
    store = FakeStore()
    pipeline, _ = make_pipeline(store)
    batch = [record(i, failure("alice@example.com", 60 - i)) for i in range(5)]
    batch += [record(5 + i, failure("nobody@example.com", 60 - i)) for i in range(5)]

    outgoing = await pipeline.process(batch)

    assert store.lock_calls == [("1001", None)]
    outcomes = {json.loads(r.value)["login_name"]: json.loads(r.value)["outcome"] for r in outgoing}
    assert outcomes == {"alice@example.com": "locked", "nobody@example.com": "unknown_user"}


async def test_old_evidence_is_stale_and_calls_nothing() -> None:
    """Failures older than max_event_age fire the rule but never lock."""
    store = FakeStore()
    pipeline, _ = make_pipeline(store)

    outgoing = await pipeline.process([record(i, failure("1001", 7200 - i)) for i in range(5)])

    assert store.lock_calls == []
    assert json.loads(outgoing[0].value)["outcome"] == "stale"


async def test_records_below_the_rebuild_mark_count_but_never_act() -> None:
    """Rebuilt records refill the windows silently; the first record past the mark acts."""
    store = FakeStore()
    pipeline, metrics = make_pipeline(store)
    batch = [record(0, b"{broken")] + [record(i, failure("1001", 60 - i)) for i in range(1, 6)]
    mark = {TopicPartition("auth.events", 0): 5}

    outgoing = await pipeline.process(batch, rebuild_until=mark)

    # Offsets 1-4 only rebuild; offset 5 is the fifth failure: it crosses, and it acts.
    assert store.lock_calls == [("1001", None)]
    assert [r.topic for r in outgoing] == ["decisions"]
    sample = metrics.registry.get_sample_value
    assert sample("lockoutd_events_total", {"result": "accepted"}) == 1
    assert sample("lockoutd_events_total", {"result": "invalid"}) == 0


async def test_each_partition_counts_its_own_records_however_they_interleave() -> None:
    """Three failures in each of two partitions, interleaved, never make five in one window."""
    store = FakeStore()
    pipeline, _ = make_pipeline(store)
    batch = [record(i, failure("1001", 60 - i), partition=i % 2) for i in range(6)]

    assert await pipeline.process(batch) == []
    assert store.lock_calls == []


def _never_fails(index: int, error: Exception) -> None:
    raise AssertionError(f"record {index} failed") from error


async def test_judge_decides_each_event_at_the_time_it_is_given() -> None:
    """``judge`` (replay's entry) takes each event's own time: the crossing is decided then."""
    store = FakeStore()
    pipeline, _ = make_pipeline(store, dead_letter_topic=None)
    decode = functools.partial(decode_native, max_bytes=1 << 20, horizon=Horizon(clock=lambda: NOW))
    events = [decode(failure("1001", 600 - i * 60)) for i in range(5)]
    crossing_at = NOW - 300.0
    batch: list[Judged[int]] = [
        (("auth.events", 0), None, event, event.occurred_at, True, index)
        for index, event in enumerate(events[:4])
    ]
    batch.append((("auth.events", 0), None, events[4], crossing_at, True, 4))

    [audit] = await pipeline.judge(batch, _never_fails)

    decision = json.loads(audit.value)
    assert (decision["outcome"], decision["decided_at"]) == ("locked", rfc3339(crossing_at))


async def test_a_partition_lost_while_its_batch_is_judged_is_counted_no_further() -> None:
    """The loop gives other tasks their turn while a batch is judged, and a rebalance may take
    the batch's partition then. Its remaining records are left to whoever reads it now: counted
    here, they would leave windows behind for a partition this instance no longer reads."""
    store = FakeStore()
    pipeline, metrics = make_pipeline(store)
    tp = TopicPartition("auth.events", 0)
    lost: set[TopicPartition] = set()

    def lose() -> None:  # what a rebalance does, at the first turn the judging gives
        lost.add(tp)
        pipeline.forget([tp])

    batch = [record(i, failure(str(2000 + i), 60)) for i in range(3000)]
    asyncio.get_running_loop().call_soon(lose)

    await pipeline.process(batch, held=lambda partition: partition not in lost)

    assert pipeline.engine_of(tp) is None
    accepted = metrics.registry.get_sample_value("lockoutd_events_total", {"result": "accepted"})
    assert accepted is not None
    assert 0 < accepted < len(batch)
