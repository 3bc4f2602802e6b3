"""Property-based tests: whatever a hostile producer writes, nothing escapes a record (README,
"Events" and "Operations").

Hypothesis throws random bytes, random JSON and valid records with random field values at every
input format, at the daemon's pipeline and at replay. Every record must be accepted, ignored or
refused as invalid, never raise, and a real attack after the garbage must still be acted on.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockoutd.decide.decision import rfc3339
from lockoutd.decode.event import Event
from lockoutd.decode.formats import FormatName, decoder_for
from lockoutd.decode.limits import EARLIEST_EVENT_TIME, MAX_NESTING, Horizon
from lockoutd.decode.native import InvalidEvent
from lockoutd.replay.runner import Replay
from lockoutd.rules import load_rules
from lockoutd.settings import Settings
from tests.unit.decode.test_formats import CLOUD_EVENT, KEYCLOAK_EVENT, ZITADEL_BODY
from tests.unit.test_pipeline import NOW, REPO, FakeStore, failure, make_pipeline

FORMATS: list[FormatName] = ["native", "zitadel", "keycloak", "cloudevents"]
TOPICS: dict[FormatName, str] = {name: f"{name}.events" for name in FORMATS}
SKEW = 300.0

# Fast enough for every run of the suite; no example database written next to the sources.
FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NATIVE: dict[str, Any] = {
    "type": "auth.login.failed",
    "occurred_at": "2026-11-29T14:03:07Z",
    "user_id": "259242039378444290",
    "org_id": "300",
    "ip": "203.0.113.7",
    "reason": "password",
    "event_id": "e-1",
    "user_agent": "curl/8",
    "client": "web",
}
SAMPLES: dict[FormatName, dict[str, Any]] = {
    "native": NATIVE,
    "zitadel": ZITADEL_BODY,
    "keycloak": KEYCLOAK_EVENT,
    "cloudevents": CLOUD_EVENT,
}

# JSON values, shallow and deep, and the texts that look almost like what a field expects.
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
times = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.timezones() | st.just(UTC),
).map(datetime.isoformat)
epoch_millis = st.integers(min_value=-(10**16), max_value=10**16)
addresses = st.ip_addresses().map(str) | st.sampled_from(
    ["::ffff:10.0.0.1", "1.2.3", "2001:DB8::1"]
)
field_values = json_values | times | epoch_millis | addresses


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """A value nested around the limit, or far beyond it, as arrays or objects."""
    depth = draw(st.sampled_from([MAX_NESTING - 2, MAX_NESTING - 1, MAX_NESTING, 40, 2000]))
    value: Any = draw(scalars)
    as_object = draw(st.booleans())
    for _ in range(depth):
        value = {"a": value} if as_object else [value]
    return value


def _dumps(document: Any) -> bytes:
    """JSON of ``document``, even nested deeper than ``json.dumps`` goes."""
    try:
        return json.dumps(document).encode()
    except (RecursionError, ValueError):
        return b'{"x": ' + b"[" * 3000 + b"]" * 3000 + b"}"


@st.composite
def changed(draw: st.DrawFn, name: FormatName) -> bytes:
    """A valid record of format ``name`` with some fields, nested ones too, set to odd values."""
    document = json.loads(json.dumps(SAMPLES[name]))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        target = document
        path = [draw(st.sampled_from([*document, "extra"]))]
        inner = target.get(path[0])
        if isinstance(inner, dict) and inner and draw(st.booleans()):
            target = inner
            path.append(draw(st.sampled_from([*inner, "extra"])))
        value = draw(field_values | deep())
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            target.pop(path[-1], None)
        else:
            target[path[-1]] = value
    return _dumps(document)


TIME_FIELDS: dict[FormatName, str] = {
    "native": "occurred_at",
    "zitadel": "created_at",
    "keycloak": "time",
    "cloudevents": "time",
}


@st.composite
def retimed(draw: st.DrawFn, name: FormatName) -> bytes:
    """A valid record of format ``name`` at any time a producer could write, sane or not."""
    when = draw(epoch_millis if name == "keycloak" else times)
    return _dumps({**SAMPLES[name], TIME_FIELDS[name]: when})


def records(name: FormatName) -> st.SearchStrategy[bytes]:
    """Random bytes, random JSON, and valid records of format ``name`` with odd fields."""
    return (
        st.binary(max_size=300)
        | json_values.map(_dumps)
        | deep().map(_dumps)
        | changed(name)
        | retimed(name)
        | changed(name).map(lambda raw: raw[: len(raw) // 2])
    )


def _decoder(name: FormatName) -> Any:
    return decoder_for(name, max_bytes=4096, horizon=Horizon(SKEW, clock=lambda: NOW))


@FUZZ
@given(data=st.data())
def test_no_record_escapes_decoding_in_any_format(data: st.DataObject) -> None:
    """Decoding gives an event fit for the engine, or ``InvalidEvent``; never anything else."""
    name = data.draw(st.sampled_from(FORMATS))
    raw = data.draw(records(name))
    try:
        event = _decoder(name)(raw)
    except InvalidEvent:
        return  # refused, with a reason: the other outcome allowed
    assert isinstance(event, Event)
    assert event.subject
    assert EARLIEST_EVENT_TIME <= event.occurred_at <= NOW + SKEW
    assert math.isfinite(event.occurred_at)
    rfc3339(event.occurred_at)  # a decision can always be written for it


def _consumer_record(topic: str, offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"1001",
        value=value,
        checksum=None,
        serialized_key_size=4,
        serialized_value_size=len(value),
        headers=(),
    )


@st.composite
def hostile_batches(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    batch = []
    for _ in range(draw(st.integers(min_value=1, max_value=12))):
        name = draw(st.sampled_from(FORMATS))
        batch.append((TOPICS[name], draw(records(name))))
    return batch


@FUZZ
@given(garbage=hostile_batches())
def test_the_pipeline_accounts_for_every_record_and_still_locks_the_attack_after_them(
    garbage: list[tuple[str, bytes]],
) -> None:
    """Garbage on every format's topic, then five wrong passwords: every record is accepted,
    ignored or invalid, and the attacked user is locked."""
    store = FakeStore()
    pipeline, metrics = make_pipeline(
        store, topics=list(TOPICS.values()), formats={t: n for n, t in TOPICS.items()}
    )
    attack = [(TOPICS["native"], failure("1001", 60 - i)) for i in range(5)]
    batch = [
        _consumer_record(topic, offset, value)
        for offset, (topic, value) in enumerate([*garbage, *attack])
    ]

    outgoing = asyncio.run(pipeline.process(batch))

    assert ("1001", None) in store.lock_calls
    counted = sum(
        metrics.registry.get_sample_value("lockoutd_events_total", {"result": result}) or 0
        for result in ("accepted", "ignored", "invalid")
    )
    assert counted == len(batch)
    dead = [record for record in outgoing if record.topic == "dlq"]
    invalid = metrics.registry.get_sample_value("lockoutd_events_total", {"result": "invalid"})
    assert len(dead) == invalid
    assert {value for _, value in garbage} >= {record.value for record in dead}


@FUZZ
@given(garbage=st.lists(records("native"), min_size=1, max_size=12))
def test_replay_reports_every_bad_line_and_still_decides_the_attack(garbage: list[bytes]) -> None:
    """Replay over garbage and then an attack: no exception, the attack is decided."""
    config = Settings(engine={"rule_paths": [REPO / "rules"]})
    replay = Replay(
        config, load_rules(config.engine.rule_paths), topic="auth.events", event_format="native"
    )
    recent = NOW - time.time()  # the replay refuses the future by the real clock
    attack = [failure("1001", recent + 60 - i) for i in range(5)]

    fed = asyncio.run(replay.feed_lines([*garbage, *attack]))

    assert all(index < len(garbage) for index, _ in fed.invalid)
    outcomes = [json.loads(value) for value in fed.decisions]
    assert ("1001", "dry_run") in [(d["user_id"], d["outcome"]) for d in outcomes]
    events = replay.finish().events
    assert sum(events.values()) == len(garbage) + len(attack)
