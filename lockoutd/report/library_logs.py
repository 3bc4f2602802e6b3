"""Client libraries' log lines, at a level and a rate that fit a condition lockoutd retries.

aiokafka logs a lost broker at error level, once per fetch attempt (thousands of lines a minute),
beside lockoutd's own ``kafka_fetch_failed`` warning and ``/readyz``. lockoutd waits such an
outage out and says so itself, so these lines are warnings, and each distinct message is shown
at most once per :data:`REPEAT_SECONDS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

REPEAT_SECONDS = 30.0
_RETRIED_BY_LOCKOUTD = ("aiokafka",)


class LibraryLogFilter(logging.Filter):
    """Downgrades the errors of retried clients to warnings and drops quick repeats."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._last_shown: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_RETRIED_BY_LOCKOUTD):
            return True
        if record.levelno == logging.ERROR:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        # The message template, not its arguments: "Failed fetch messages from %s" repeats for
        # every node, every attempt.
        key = (record.name, str(record.msg))
        now = self._clock()
        last = self._last_shown.get(key)
        if last is not None and now - last < REPEAT_SECONDS:
            return False
        self._last_shown[key] = now
        return True
