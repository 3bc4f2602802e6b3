"""Client libraries' lines during an outage: warnings, not errors, and not one per attempt."""

from __future__ import annotations

import logging

from lockoutd.report.library_logs import REPEAT_SECONDS, LibraryLogFilter


def record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_aiokafka_errors_become_warnings_and_repeats_are_dropped() -> None:
    now = [0.0]
    keep = LibraryLogFilter(clock=lambda: now[0])
    first = record("aiokafka.consumer.fetcher", logging.ERROR, "Failed fetch from %s", "node 1")
    assert keep.filter(first)
    assert first.levelname == "WARNING"
    assert not keep.filter(
        record("aiokafka.consumer.fetcher", logging.ERROR, "Failed fetch from %s", "node 2")
    )
    now[0] += REPEAT_SECONDS
    assert keep.filter(
        record("aiokafka.consumer.fetcher", logging.ERROR, "Failed fetch from %s", "node 1")
    )


def test_other_loggers_pass_untouched() -> None:
    keep = LibraryLogFilter(clock=lambda: 0.0)
    line = record("lockoutd.daemon", logging.ERROR, "same")
    assert keep.filter(line)
    assert keep.filter(record("lockoutd.daemon", logging.ERROR, "same"))
    assert line.levelname == "ERROR"
