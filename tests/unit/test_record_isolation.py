"""Failure isolation per record (README, "Operations"): a record whose handling fails in a way
nobody foresaw is dead-lettered as ``unexpected``, counted and logged once; the batch goes on."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import TopicPartition
from structlog.testing import capture_logs

import lockoutd.pipeline
from lockoutd.decode.event import Event
from lockoutd.decode.formats import Decoder, FormatName
from lockoutd.replay.runner import Replay
from lockoutd.rules import load_rules
from lockoutd.settings import Settings
from tests.unit.helpers import engines_failing_for, record
from tests.unit.test_pipeline import NOW, REPO, FakeStore, failure, make_pipeline

POISON_USER = "666"
SECRET = "s3cret-field-value"


class Unforeseen(Exception):
    """What no code path expects."""


@pytest.fixture
def engine_fails_for_the_poison_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine raises for events of :data:`POISON_USER`, as an unknown bug would."""
    engines_failing_for(monkeypatch, POISON_USER, Unforeseen(f"quoting the record: {SECRET}"))


@pytest.fixture
def decoding_fails_for_the_poison_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder raises for records naming :data:`POISON_USER`."""
    decoder_for = lockoutd.pipeline.decoder_for

    def failing_decoder_for(name: FormatName, **kwargs: Any) -> Decoder:
        decode = decoder_for(name, **kwargs)

        def failing(raw: bytes) -> Event:
            if POISON_USER.encode() in raw:
                raise Unforeseen(f"quoting the record: {SECRET}")
            return decode(raw)

        return failing

    monkeypatch.setattr(lockoutd.pipeline, "decoder_for", failing_decoder_for)


def _poison() -> bytes:
    return failure(POISON_USER, 100, note=SECRET)


def _sample(metrics: Any) -> Callable[..., float | None]:
    return metrics.registry.get_sample_value  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "fails", ["engine_fails_for_the_poison_user", "decoding_fails_for_the_poison_user"]
)
async def test_an_unforeseen_failure_is_dead_lettered_and_the_attack_after_it_locks(
    fails: str, request: pytest.FixtureRequest
) -> None:
    """The poison becomes a dead letter with reason ``unexpected``; the failures around it lock."""
    request.getfixturevalue(fails)
    store = FakeStore()
    pipeline, metrics = make_pipeline(store)
    batch = [record(0, _poison())]
    batch += [record(i, failure("1001", 60 - i)) for i in range(1, 6)]

    with capture_logs() as logs:
        outgoing = await pipeline.process(batch)

    assert store.lock_calls == [("1001", None)]
    [dead] = [r for r in outgoing if r.topic == "dlq"]
    assert dead.value == _poison()
    headers = dict(dead.headers)
    assert headers["lockoutd.reason"] == b"unexpected"
    assert headers["lockoutd.source"] == b"auth.events/0/0"
    assert b"Unforeseen" in headers["lockoutd.error"]
    sample = _sample(metrics)
    assert sample("lockoutd_events_total", {"result": "invalid"}) == 1
    assert sample("lockoutd_events_total", {"result": "accepted"}) == 5
    assert sample("lockoutd_dead_lettered_total", {"reason": "unexpected"}) == 1
    assert sample("lockoutd_records_failed_total", {}) == 1
    [failed] = [entry for entry in logs if entry["log_level"] == "error"]
    assert failed["event"] == "record_failed"
    assert (failed["topic"], failed["partition"], failed["offset"]) == ("auth.events", 0, 0)
    assert failed["error_type"] == "Unforeseen"
    assert SECRET not in repr([e for e in logs if e["log_level"] != "debug"])


@pytest.mark.usefixtures("engine_fails_for_the_poison_user")
async def test_the_next_batch_is_decided_as_usual() -> None:
    """A failure is contained in its record: the pipeline's state serves the next batch."""
    store = FakeStore()
    pipeline, _ = make_pipeline(store)
    await pipeline.process([record(0, _poison()), record(1, failure("1001", 60))])
    await pipeline.process([record(i, failure("1001", 60 - i)) for i in range(2, 6)])
    assert store.lock_calls == [("1001", None)]


@pytest.mark.usefixtures("engine_fails_for_the_poison_user")
async def test_a_failure_while_rebuilding_is_not_dead_lettered_again() -> None:
    """Records below the rebuild mark were dead-lettered when first read: not twice."""
    store = FakeStore()
    pipeline, metrics = make_pipeline(store)
    mark = {TopicPartition("auth.events", 0): 1}

    outgoing = await pipeline.process([record(0, _poison())], rebuild_until=mark)

    assert outgoing == []
    assert _sample(metrics)("lockoutd_events_total", {"result": "invalid"}) == 0


@pytest.mark.usefixtures("engine_fails_for_the_poison_user")
async def test_replay_reports_an_unforeseen_failure_as_invalid_and_goes_on() -> None:
    """``lockoutd replay`` names the record (by its place in the batch) and keeps deciding."""
    settings = Settings(engine={"rule_paths": [REPO / "rules"]})
    replay = Replay(
        settings,
        load_rules(settings.engine.rule_paths),
        topic="auth.events",
        event_format="native",
    )

    # Replay refuses the future against the real clock: these events are of the last minutes.
    def recent(user: str, seconds_ago: float) -> bytes:
        return failure(user, seconds_ago + NOW - time.time())

    lines = [recent("1001", 60 - i) for i in range(2)] + [recent(POISON_USER, 60), b"{broken"]
    lines += [recent("1001", 50 - i) for i in range(3)]

    fed = await replay.feed_lines(lines)

    assert [(index, error.reason) for index, error in fed.invalid] == [
        (2, "unexpected"),
        (3, "invalid_json"),
    ]
    [decision] = [json.loads(value) for value in fed.decisions]
    assert (decision["user_id"], decision["outcome"]) == ("1001", "dry_run")
    assert replay.finish().events == {"accepted": 5, "ignored": 0, "invalid": 2}
