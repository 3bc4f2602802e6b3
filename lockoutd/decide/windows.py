"""Sliding event-time windows, one per rule and key.

A window holds the event times of the most recent matching events of one key and fires when the
count of those within ``window`` seconds of the newest reaches ``threshold``::

    threshold 5, window 10m; each x is a failure for user 42

    t (min)   0    2    4    6    8    10   12   14   16   18   20   22   24
              x    x    x    x    x    x    x                        x
                                  ^ fires: five within (t-10m, t]
                                       ^    ^ still five or more: no second firing
                                                                     ^ the window (12m, 22m]
                                                                       holds one: re-armed

Rules of the window:

- The window is half-open, ``(newest - window, newest]``: an event exactly ``window`` older than
  the newest no longer counts.
- It fires once per crossing: when the count reaches the threshold it fires, and only fires again
  after the count has fallen below the threshold (or a success reset it).
- Only the newest ``threshold`` times are kept: the count can never need more to decide, so a key
  costs the same however hard it is attacked.
- Event time, not arrival time: an event older than the newest seen for its key still counts if it
  falls inside the window; one older than that adds nothing.
- An ``event_id`` already held by the window is counted once (a producer's retry is not a second
  attempt). Only the ids of the times kept are remembered, which is enough: a repeat of an event
  that was let go is no newer than the times kept, so it cannot change the count.
"""

from __future__ import annotations

from bisect import bisect_right


class KeyWindow:
    """The window state of one key of one rule."""

    __slots__ = ("fired", "ids", "times")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.ids: list[str | None] = []
        """The ``event_id`` of each time in ``times`` (``None`` when the event had none)."""
        self.fired = False

    @property
    def newest(self) -> float:
        return self.times[-1] if self.times else float("-inf")

    def add(self, at: float, *, threshold: int, window: float, event_id: str | None = None) -> bool:
        """Count an event at ``at``; return True when this event makes the window fire."""
        times, ids = self.times, self.ids
        newest = max(self.newest, at)
        start = newest - window
        if at <= start:
            return False  # too old to count in any window that still matters
        if event_id is not None and event_id in ids:
            return False  # the same event delivered again
        if not times or at >= times[-1]:
            times.append(at)
            ids.append(event_id)
        else:
            index = bisect_right(times, at)
            times.insert(index, at)
            ids.insert(index, event_id)
        drop = 0
        while drop < len(times) and times[drop] <= start:
            drop += 1
        # Beyond the threshold the oldest times cannot change a decision.
        drop = max(drop, len(times) - threshold)
        if drop:
            del times[:drop]
            del ids[:drop]
        if len(times) >= threshold:
            if not self.fired:
                self.fired = True
                return True
            return False
        self.fired = False
        return False

    @property
    def count(self) -> int:
        return len(self.times)

    def idle_since(self, watermark: float, window: float) -> bool:
        """True when every time held has left the window ending at ``watermark``."""
        return self.newest <= watermark - window
