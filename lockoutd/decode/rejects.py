"""What happens to a record that is not an event: counted, logged once, dead-lettered unchanged.

This is the one place that policy lives. A bad record never stops a partition and is never
dropped silently: with a dead-letter topic configured it is forwarded byte for byte, with headers
that say where it came from and why it was refused.
"""

from __future__ import annotations

import structlog

from lockoutd.decode.native import InvalidEvent
from lockoutd.report.metrics import Metrics
from lockoutd.source.kafka import OutgoingRecord, Record

log = structlog.get_logger(__name__)

# Long enough to say what was wrong, short enough that no record body leaks into a header.
_MAX_ERROR_CHARS = 300


class Rejects:
    """Applies the invalid-record policy for the daemon."""

    def __init__(self, dead_letter_topic: str | None, *, metrics: Metrics) -> None:
        self._topic = dead_letter_topic
        self._metrics = metrics

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
        headers = [
            *(record.headers or ()),
            ("lockoutd.reason", error.reason.encode()),
            ("lockoutd.error", str(error)[:_MAX_ERROR_CHARS].encode()),
            ("lockoutd.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        return OutgoingRecord(self._topic, record.value or b"", key=record.key, headers=headers)
