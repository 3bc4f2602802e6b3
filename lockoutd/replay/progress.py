"""Progress of a long replay on standard error.

On a terminal one line is redrawn a few times a second; otherwise (a log file, CI) a line is
written every ``every`` records, so that a long replay is visibly alive without flooding the log.
"""

from __future__ import annotations

import time
from typing import TextIO

_REDRAW_SECONDS = 0.2


class Progress:
    """Counts records read; ``position`` out of ``total`` (bytes or offsets) gives a percentage."""

    def __init__(self, stream: TextIO, *, total: int | None, every: int) -> None:
        self._stream = stream
        self._total = total or None
        self._every = every
        self._tty = stream.isatty()
        self._started = time.monotonic()
        self._drawn_at = self._started
        self._drawn = False
        self.records = 0

    def advance(self, position: int | None = None, *, records: int = 1) -> None:
        """``records`` more records read; ``position`` is how far into ``total`` the input is."""
        before = self.records
        self.records += records
        if self._tty:
            now = time.monotonic()
            if now - self._drawn_at >= _REDRAW_SECONDS:
                self._drawn_at = now
                self._stream.write("\r\033[K" + self._line(self.records, position, now))
                self._stream.flush()
                self._drawn = True
        elif self._every:
            # A line for every multiple of ``every`` passed, however many records came at once.
            first = (before // self._every + 1) * self._every
            for reached in range(first, self.records + 1, self._every):
                self._stream.write(self._line(reached, position, time.monotonic()) + "\n")
                self._stream.flush()

    def close(self) -> None:
        """Clear the terminal line, so that what is written next starts on a clean one."""
        if self._drawn:
            self._stream.write("\r\033[K")
            self._stream.flush()
            self._drawn = False

    def _line(self, records: int, position: int | None, now: float) -> str:
        rate = records / max(now - self._started, 1e-9)
        line = f"replay: {records:,} records read ({rate:,.0f}/s)"
        if self._total is not None and position is not None:
            line += f", {min(100.0, 100.0 * position / self._total):.0f}%"
        return line
