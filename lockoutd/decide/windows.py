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
- ``distinct: FIELD`` counts distinct values of the field instead of events: twenty failures
  from one address for twenty different users is a spray, twenty for one user is not. A value
  counts from the newest time it was seen.
- Event time, not arrival time: an event older than the newest seen for its key still counts if it
  falls inside the window; one older than that adds nothing.
- An ``event_id`` already held by the window is counted once (a producer's retry is not a second
  attempt). Only the ids of the times kept are remembered, which is enough: a repeat of an event
  that was let go is no newer than the times kept, so it cannot change the count.
"""

from __future__ import annotations

from bisect import bisect_right

from lockoutd.decode.event import Event


class _Crossing:
    """Fires once when a count reaches the threshold and re-arms when it falls below it."""

    __slots__ = ("fired",)

    def __init__(self) -> None:
        self.fired = False

    def _crossed(self, count: int, threshold: int) -> bool:
        if count >= threshold:
            if self.fired:
                return False
            self.fired = True
            return True
        self.fired = False
        return False


class KeyWindow(_Crossing):
    """Counts the events of one key of one rule.

    ``events`` keeps the counted events themselves only for rules that lock every contributor;
    other rules keep just the times and ids.
    """

    __slots__ = ("events", "ids", "times")

    def __init__(self, *, keep_events: bool = False) -> None:
        super().__init__()
        self.times: list[float] = []
        self.ids: list[str | None] = []
        """The ``event_id`` of each time in ``times`` (``None`` when the event had none)."""
        self.events: list[Event] | None = [] if keep_events else None

    @property
    def newest(self) -> float:
        return self.times[-1] if self.times else float("-inf")

    @property
    def oldest(self) -> float:
        return self.times[0]

    def add(
        self,
        at: float,
        *,
        threshold: int,
        window: float,
        event_id: str | None = None,
        event: Event | None = None,
    ) -> bool:
        """Count an event at ``at``; return True when this event makes the window fire."""
        times, ids, events = self.times, self.ids, self.events
        newest = max(self.newest, at)
        start = newest - window
        if at <= start:
            return False  # too old to count in any window that still matters
        if event_id is not None and event_id in ids:
            return False  # the same event delivered again
        index = len(times) if not times or at >= times[-1] else bisect_right(times, at)
        times.insert(index, at)
        ids.insert(index, event_id)
        if events is not None and event is not None:
            events.insert(index, event)
        drop = 0
        while drop < len(times) and times[drop] <= start:
            drop += 1
        # Beyond the threshold the oldest times cannot change a decision.
        drop = max(drop, len(times) - threshold)
        if drop:
            del times[:drop]
            del ids[:drop]
            if events is not None:
                del events[:drop]
        return self._crossed(len(times), threshold)

    @property
    def count(self) -> int:
        return len(self.times)

    def contributors(self) -> tuple[Event, ...]:
        return tuple(self.events or ())

    def idle_since(self, watermark: float, window: float) -> bool:
        """True when every time held has left the window ending at ``watermark``."""
        return self.newest <= watermark - window


class DistinctWindow(_Crossing):
    """Counts the distinct values of one field for one key of one rule."""

    __slots__ = ("events", "last_seen", "newest")

    def __init__(self, *, keep_events: bool = False) -> None:
        super().__init__()
        self.last_seen: dict[str, float] = {}
        self.events: dict[str, Event] | None = {} if keep_events else None
        self.newest = float("-inf")

    def add(
        self, at: float, value: str, *, threshold: int, window: float, event: Event | None = None
    ) -> bool:
        """Count ``value`` seen at ``at``; return True when this makes the window fire."""
        seen = self.last_seen
        self.newest = max(self.newest, at)
        start = self.newest - window
        if at <= start:
            return False
        if at > seen.get(value, float("-inf")):
            seen[value] = at
            if self.events is not None and event is not None:
                self.events[value] = event
        for gone in [v for v, t in seen.items() if t <= start]:
            self._forget(gone)
        if len(seen) > threshold:
            # Only the most recently seen `threshold` values can matter for a decision.
            for gone in sorted(seen, key=seen.__getitem__)[: len(seen) - threshold]:
                self._forget(gone)
        return self._crossed(len(seen), threshold)

    def _forget(self, value: str) -> None:
        del self.last_seen[value]
        if self.events is not None:
            self.events.pop(value, None)

    @property
    def count(self) -> int:
        return len(self.last_seen)

    @property
    def oldest(self) -> float:
        return min(self.last_seen.values())

    def contributors(self) -> tuple[Event, ...]:
        return tuple((self.events or {}).values())

    def idle_since(self, watermark: float, window: float) -> bool:
        return self.newest <= watermark - window
