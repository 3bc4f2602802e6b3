"""What happens to a record that is not an event: counted, logged once, dead-lettered.

This is the one place that policy lives. A bad record never stops a partition and is never
dropped silently: with a dead-letter topic configured it is forwarded byte for byte, with headers
that say where it came from and why it was refused. A record too large to forward whole (over
``kafka.max_event_bytes`` with its key and headers) is forwarded cut down to a size every broker
takes, and one the broker still refuses goes without its value; the headers say what was cut and
how large the original value was, and ``lockoutd.source`` says where the original stays.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import structlog
from msgspec.structs import replace

from lockoutd.decode.native import InvalidEvent
from lockoutd.report.metrics import Metrics
from lockoutd.source.kafka import OutgoingRecord, Record

log = structlog.get_logger(__name__)

UNEXPECTED: Final = "unexpected"
"""The reason of a record whose handling failed in a way nobody foresaw."""

# Long enough to say what was wrong, short enough that no record body leaks into a header.
_MAX_ERROR_CHARS = 300

VALUE_PREFIX_BYTES = 64 * 1024
"""What is kept of a value too large to forward: enough to see what it was. With the key and
headers cut as below, a cut-down dead letter stays far under Kafka's default 1 MiB limit."""
KEY_PREFIX_BYTES = 1024
HEADERS_BUDGET_BYTES = 16 * 1024
"""A cut-down dead letter keeps the original headers only if they fit in this."""

Headers = list[tuple[str, bytes | None]]
"""A record's headers: Kafka lets a header carry no value at all (None), and the dead letter
keeps such a header as it came."""


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

    def refuse(self, record: Record, error: Exception) -> OutgoingRecord | None:
        """:meth:`reject` for an :class:`InvalidEvent`, :meth:`fail` for anything else."""
        if isinstance(error, InvalidEvent):
            return self.reject(record, error)
        return self.fail(record, error)

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
        value, key = record.value or b"", record.key
        headers: Headers = list(record.headers or ())
        ours: Headers = [
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


def _size(headers: Sequence[tuple[str, bytes | None]]) -> int:
    return sum(len(name) + len(value or b"") for name, value in headers)


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
