"""Dead letters that always fit (README, Operations: "Poison records"): a record too large to
forward whole goes cut down, and every dead letter carries a fallback without its value for a
broker that refuses it anyway; the headers say what was cut and where the original is."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord

from lockoutd.decode.native import InvalidEvent
from lockoutd.decode.rejects import VALUE_PREFIX_BYTES, Rejects
from lockoutd.report.metrics import Metrics
from lockoutd.source.kafka import OutgoingRecord
from tests.unit.helpers import record

MAX = 1_048_576
TOO_LARGE = InvalidEvent("too_large", f"record of {3 * MAX} bytes exceeds {MAX}")


def _record(
    value: bytes, *, key: bytes = b"1001", headers: list[tuple[str, bytes]] | None = None
) -> ConsumerRecord[bytes, bytes]:
    return record(
        77, value, partition=2, key=key, headers=headers or [("traceparent", b"00-abc-def-01")]
    )


def _reject(record: ConsumerRecord[bytes, bytes]) -> OutgoingRecord:
    outgoing = Rejects("dlq", metrics=Metrics(), max_record_bytes=MAX).reject(record, TOO_LARGE)
    assert outgoing is not None
    return outgoing


def _size(record: OutgoingRecord) -> int:
    headers = sum(len(name) + len(value) for name, value in record.headers)
    return len(record.value) + len(record.key or b"") + headers


def test_a_record_within_the_limit_goes_whole() -> None:
    value = b"{" * 1000
    outgoing = _reject(_record(value))
    assert (outgoing.value, outgoing.key) == (value, b"1001")
    headers = dict(outgoing.headers)
    assert "lockoutd.truncated" not in headers
    assert headers["traceparent"] == b"00-abc-def-01"


def test_an_oversize_value_is_cut_and_the_headers_say_so() -> None:
    value = b"x" * (2 * MAX)
    outgoing = _reject(_record(value))
    assert outgoing.value == value[:VALUE_PREFIX_BYTES]
    assert outgoing.key == b"1001"
    headers = dict(outgoing.headers)
    assert headers["lockoutd.truncated"] == b"value"
    assert headers["lockoutd.original_size"] == str(2 * MAX).encode()
    assert headers["lockoutd.source"] == b"auth.events/2/77"
    assert headers["lockoutd.reason"] == b"too_large"
    assert headers["traceparent"] == b"00-abc-def-01"


def test_the_fallback_has_no_value_and_says_where_the_original_is() -> None:
    value = b"{" * 1000
    outgoing = _reject(_record(value))
    assert outgoing.fallback is not None
    fallback = outgoing.fallback
    assert (fallback.topic, fallback.value, fallback.key) == ("dlq", b"", b"1001")
    headers = dict(fallback.headers)
    assert headers["lockoutd.truncated"] == b"value,headers"
    assert headers["lockoutd.original_size"] == b"1000"
    assert headers["lockoutd.source"] == b"auth.events/2/77"
    assert fallback.fallback is None


@pytest.mark.parametrize(
    ("value_size", "key_size", "header_size", "cut"),
    [
        (10, 3 * MAX, 10, b"key"),
        (10, 10, 3 * MAX, b"headers"),
        (3 * MAX, 3 * MAX, 3 * MAX, b"value,key,headers"),
    ],
)
def test_a_huge_key_or_huge_headers_are_cut_too(
    value_size: int, key_size: int, header_size: int, cut: bytes
) -> None:
    """Whatever part of a record is huge, the dead letter is small."""
    outgoing = _reject(
        _record(b"v" * value_size, key=b"k" * key_size, headers=[("h", b"h" * header_size)])
    )
    assert dict(outgoing.headers)["lockoutd.truncated"] == cut
    assert _size(outgoing) < 100 * 1024
