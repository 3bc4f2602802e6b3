"""What happens to a record that is not an event: counted, logged once, dead-lettered unchanged.

This is the one place that policy lives. A bad record never stops a partition and is never
dropped silently: with a dead-letter topic configured it is forwarded byte for byte, with headers
that say where it came from and why it was refused.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Final

import structlog

from lockoutd.decode.native import InvalidEvent
from lockoutd.report.metrics import Metrics
from lockoutd.source.kafka import OutgoingRecord, Record

log = structlog.get_logger(__name__)

UNEXPECTED: Final = "unexpected"
"""The reason of a record whose handling failed in a way nobody foresaw."""

# Long enough to say what was wrong, short enough that no record body leaks into a header.
_MAX_ERROR_CHARS = 300


class Rejects:
    """Applies the invalid-record policy for the daemon."""

    def __init__(self, dead_letter_topic: str | None, *, metrics: Metrics) -> None:
        self._topic = dead_letter_topic
        self._metrics = metrics

    def reject(self, record: Record, error: InvalidEvent) -> OutgoingRecord | None:
        """Count and log ``record``; return what to publish to the dead-letter topic, if any."""
        log.warning(
            "event_rejected",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=error.reason,
            error=str(error)[:_MAX_ERROR_CHARS],
            dead_letter_topic=self._topic,
        )
        return self._forward(record, error)

    def fail(self, record: Record, error: Exception) -> OutgoingRecord | None:
        """:meth:`reject` for a record whose handling raised what nobody foresaw.

        It is a bug to fix, so it is logged at error level, once, with where the record is and
        what was raised where, but not the exception's message, which may quote the record. The
        dead letter, which holds the record anyway, carries the message.
        """
        raised_at = where_raised(error)
        self._metrics.records_failed.inc()
        log.error(
            "record_failed",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=UNEXPECTED,
            error_type=type(error).__name__,
            raised_at=raised_at,
            dead_letter_topic=self._topic,
        )
        log.debug("record_failed_traceback", offset=record.offset, exc_info=error)
        return self._forward(record, unexpected(error, raised_at))

    def _forward(self, record: Record, error: InvalidEvent) -> OutgoingRecord | None:
        self._metrics.events.labels(result="invalid").inc()
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


def where_raised(error: BaseException) -> str:
    """``file:line in function`` of the innermost frame ``error`` was raised from."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "unknown"
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


def unexpected(error: Exception, raised_at: str | None = None) -> InvalidEvent:
    """The refusal of a record whose handling raised ``error``, which nobody foresaw."""
    where = raised_at or where_raised(error)
    return InvalidEvent(UNEXPECTED, f"{type(error).__name__} at {where}: {error}")
