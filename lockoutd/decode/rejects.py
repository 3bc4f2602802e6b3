"""What happens to a record that is not an event: counted, logged once, dead-lettered.

This is the one place that policy lives. A bad record never stops a partition and is never
dropped silently: with a dead-letter topic configured it is forwarded byte for byte, with headers
that say where it came from and why it was refused. A record too large to forward whole (over
``kafka.max_event_bytes`` with its key and headers) is forwarded cut down to a size every broker
takes, and one the broker still refuses goes without its value; the headers say what was cut and
how large the original value was, and ``lockoutd.source`` says where the original stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import structlog

from lockoutd.decode.native import InvalidEvent
from lockoutd.report.metrics import Metrics
from lockoutd.source.kafka import OutgoingRecord, Record

log = structlog.get_logger(__name__)

# Long enough to say what was wrong, short enough that no record body leaks into a header.
_MAX_ERROR_CHARS = 300

VALUE_PREFIX_BYTES = 64 * 1024
"""What is kept of a value too large to forward: enough to see what it was. With the key and
headers cut as below, a cut-down dead letter stays far under Kafka's default 1 MiB limit."""
KEY_PREFIX_BYTES = 1024
HEADERS_BUDGET_BYTES = 16 * 1024
"""A cut-down dead letter keeps the original headers only if they fit in this."""

Headers = list[tuple[str, bytes]]


class Rejects:
    """Applies the invalid-record policy for the daemon."""

    def __init__(
        self,
        dead_letter_topic: str | None,
        *,
        metrics: Metrics,
        max_record_bytes: int = 1_048_576,
    ) -> None:
        self._topic = dead_letter_topic
        self._metrics = metrics
        self._max_record_bytes = max_record_bytes
        """The largest record (value, key and headers) forwarded whole: ``max_event_bytes``."""

    def reject(self, record: Record, error: InvalidEvent) -> OutgoingRecord | None:
        """Count and log ``record``; return what to publish to the dead-letter topic, if any."""
        self._metrics.events.labels(result="invalid").inc()
        log.warning(
            "event_rejected",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=error.reason,
            error=str(error)[:_MAX_ERROR_CHARS],
            dead_letter_topic=self._topic,
        )
        if self._topic is None:
            return None
        self._metrics.dead_lettered.labels(reason=error.reason).inc()
        value, key = record.value or b"", record.key
        headers: Headers = list(record.headers or ())
        ours = [
            ("lockoutd.reason", error.reason.encode()),
            ("lockoutd.error", str(error)[:_MAX_ERROR_CHARS].encode()),
            ("lockoutd.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        if len(value) + len(key or b"") + _size(headers) <= self._max_record_bytes:
            first = OutgoingRecord(self._topic, value, key=key, headers=headers + ours)
        else:
            first = self._cut(value, key, headers, ours, keep_value=True)
        return replace(first, fallback=self._cut(value, key, headers, ours, keep_value=False))

    def _cut(
        self, value: bytes, key: bytes | None, headers: Headers, ours: Headers, *, keep_value: bool
    ) -> OutgoingRecord:
        # The dead letter cut down, `lockoutd.truncated` naming what was cut. Kept: the first
        # VALUE_PREFIX_BYTES of the value (or none of it), a short key, headers that are small.
        value_limit, headers_limit = (
            (VALUE_PREFIX_BYTES, HEADERS_BUDGET_BYTES) if keep_value else (0, 0)
        )
        cut = []
        notes: Headers = []
        if len(value) > value_limit:
            cut.append("value")
            notes.append(("lockoutd.original_size", str(len(value)).encode()))
            value = value[:value_limit]
        if key is not None and len(key) > KEY_PREFIX_BYTES:
            cut.append("key")
            key = key[:KEY_PREFIX_BYTES]
        if _size(headers) > headers_limit:
            cut.append("headers")
            headers = []
        if cut:
            notes.insert(0, ("lockoutd.truncated", ",".join(cut).encode()))
        return OutgoingRecord(self._topic or "", value, key=key, headers=headers + ours + notes)


def _size(headers: Sequence[tuple[str, bytes]]) -> int:
    return sum(len(name) + len(value) for name, value in headers)
