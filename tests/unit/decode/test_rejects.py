"""The invalid-record policy (README, "Events"): counted, logged once, dead-lettered unchanged."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord
from structlog.testing import capture_logs

from lockoutd.decode.native import InvalidEvent, decode_native
from lockoutd.decode.rejects import Rejects
from lockoutd.report.metrics import Metrics

VALUE = b'{"type": "auth.login.failed", "user_id": 42}\xff trailing bytes'
KEY = b"259242039378444290"


def _consumer_record(value: bytes | None = VALUE) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="auth.events",
        partition=3,
        offset=1207,
        timestamp=1_795_960_987_000,
        timestamp_type=0,
        key=KEY,
        value=value,
        checksum=None,
        serialized_key_size=len(KEY),
        serialized_value_size=len(value or b""),
        headers=[("traceparent", b"00-abc-def-01")],
    )


def _error() -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        decode_native(VALUE, max_bytes=1_048_576)
    return caught.value


def _invalid_count(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("lockoutd_events_total", {"result": "invalid"})


def test_a_rejected_record_is_counted_as_invalid() -> None:
    """Each rejected record adds one to ``lockoutd_events_total{result="invalid"}``."""
    metrics = Metrics()
    rejects = Rejects("auth.events.dlq", metrics=metrics)
    assert _invalid_count(metrics) == 0
    rejects.reject(_consumer_record(), _error())
    rejects.reject(_consumer_record(), _error())
    assert _invalid_count(metrics) == 2


def test_a_rejected_record_is_logged_once_with_where_it_came_from() -> None:
    """One warning names the topic, partition, offset and reason, and never the record body."""
    with capture_logs() as logs:
        Rejects("auth.events.dlq", metrics=Metrics()).reject(_consumer_record(), _error())
    assert len(logs) == 1
    entry = logs[0]
    assert entry["event"] == "event_rejected"
    assert entry["log_level"] == "warning"
    assert (entry["topic"], entry["partition"], entry["offset"]) == ("auth.events", 3, 1207)
    assert entry["reason"] == "invalid_json"
    assert "trailing bytes" not in repr(entry)


def test_the_dead_letter_is_the_record_unchanged_with_reason_headers() -> None:
    """The dead letter carries the original value and key byte for byte, and says why."""
    outgoing = Rejects("auth.events.dlq", metrics=Metrics()).reject(_consumer_record(), _error())
    assert outgoing is not None
    assert outgoing.topic == "auth.events.dlq"
    assert outgoing.value == VALUE
    assert outgoing.key == KEY
    headers = dict(outgoing.headers)
    assert headers["traceparent"] == b"00-abc-def-01"
    assert headers["lockoutd.reason"] == b"invalid_json"
    assert headers["lockoutd.source"] == b"auth.events/3/1207"
    assert headers["lockoutd.error"].startswith(b"not valid UTF-8 JSON")


def test_dead_letters_are_counted_by_reason() -> None:
    """A forwarded record is counted in ``lockoutd_dead_lettered_total`` under its reason."""
    metrics = Metrics()
    Rejects("auth.events.dlq", metrics=metrics).reject(_consumer_record(), _error())
    sample = metrics.registry.get_sample_value(
        "lockoutd_dead_lettered_total", {"reason": "invalid_json"}
    )
    assert sample == 1


def test_a_tombstone_is_dead_lettered_as_an_empty_value() -> None:
    """A record without a value (a tombstone) is forwarded with an empty value."""
    error = InvalidEvent("invalid_json", "not valid UTF-8 JSON: Input data was truncated")
    outgoing = Rejects("dlq", metrics=Metrics()).reject(_consumer_record(value=None), error)
    assert outgoing is not None
    assert outgoing.value == b""


def test_without_a_dead_letter_topic_the_record_is_still_counted_and_logged() -> None:
    """With no dead-letter topic nothing is returned, but the record is counted and logged."""
    metrics = Metrics()
    with capture_logs() as logs:
        outgoing = Rejects(None, metrics=metrics).reject(_consumer_record(), _error())
    assert outgoing is None
    assert _invalid_count(metrics) == 1
    assert [entry["event"] for entry in logs] == ["event_rejected"]
