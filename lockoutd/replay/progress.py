"""Progress of a long replay on standard error.

On a terminal one line is redrawn a few times a second; otherwise (a log file, CI) a line is
written every ``every`` records, so that a long replay is visibly alive without flooding the log.
"""

from __future__ import annotations

import time
from typing import TextIO

_REDRAW_SECONDS = 0.2
_CHECK_EVERY = 256  # records between two looks at the clock on a terminal


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

    def advance(self, position: int | None = None) -> None:
        """One more record read; ``position`` is how far into ``total`` the input now is."""
        self.records += 1
        if self._tty:
            if self.records % _CHECK_EVERY == 0:
                now = time.monotonic()
                if now - self._drawn_at >= _REDRAW_SECONDS:
                    self._drawn_at = now
                    self._stream.write("\r\033[K" + self._line(position, now))
                    self._stream.flush()
                    self._drawn = True
        elif self._every and self.records % self._every == 0:
            self._stream.write(self._line(position, time.monotonic()) + "\n")
            self._stream.flush()

    def close(self) -> None:
        """Clear the terminal line, so that what is written next starts on a clean one."""
        if self._drawn:
            self._stream.write("\r\033[K")
            self._stream.flush()
            self._drawn = False

    def _line(self, position: int | None, now: float) -> str:
        rate = self.records / max(now - self._started, 1e-9)
        line = f"replay: {self.records:,} records read ({rate:,.0f}/s)"
        if self._total is not None and position is not None:
            line += f", {min(100.0, 100.0 * position / self._total):.0f}%"
        return line
