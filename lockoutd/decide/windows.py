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

A million tracked keys is a common sight, so a window is small and invisible to the cycle
collector: a ``msgspec.Struct`` with ``gc=False`` (nothing it holds refers back to it) keeping
its times and ids in tuples, which the collector stops tracking too. With a plain object per key
every full collection walked them all: over a second at a million keys, a pause that every lock
behind it waited for.
"""

from __future__ import annotations

from bisect import bisect_right
from heapq import heappop, heappush, heapreplace

import msgspec

from lockoutd.decode.event import Event

_NEVER = float("-inf")


_SPILL_AT = 32
"""A window that holds more times than this moves them from tuples to lists and a set of ids:
rebuilding a tuple and scanning the ids is cheap for a few times and ruinous for thousands (a
rule such as 10,000 failures per org per minute)."""


class _Spill:
    """The times and ids of a large window, with a set of its ids for the duplicate check."""

    __slots__ = ("id_set", "ids", "times")

    def __init__(self, times: tuple[float, ...], ids: tuple[str | None, ...]) -> None:
        self.times = list(times)
        self.ids = list(ids)
        self.id_set = {i for i in ids if i is not None}


class KeyWindow(msgspec.Struct, gc=False, kw_only=True):
    """Counts the events of one key of one rule.

    ``events`` keeps the counted events themselves only for rules that lock every contributor;
    other rules keep just the times and ids.
    """

    keep_events: bool = False
    fired: bool = False
    """Fired at the last crossing and not re-armed since (the count has not fallen below)."""
    times_kept: tuple[float, ...] = ()
    """The kept event times, oldest first (while the window is small: see ``spill``)."""
    newest: float = _NEVER
    """The newest time kept (the sweep for idle keys reads it for every key)."""
    ids: tuple[str | None, ...] = ()
    """The ``event_id`` of each kept time, in the same order (``None`` when it had none)."""
    events: list[Event] | None = None
    spill: _Spill | None = None
    """Times and ids once more than ``_SPILL_AT`` were kept; ``times_kept`` and ``ids`` are
    empty from then on."""

    def __post_init__(self) -> None:
        if self.keep_events:
            self.events = []

    @property
    def times(self) -> list[float]:
        """The kept event times, oldest first."""
        return list(self.spill.times if self.spill is not None else self.times_kept)

    @property
    def oldest(self) -> float:
        return self.spill.times[0] if self.spill is not None else self.times_kept[0]

    def add(
        self,
        at: float,
        threshold: int,
        window: float,
        event_id: str | None = None,
        event: Event | None = None,
    ) -> bool:
        """Count an event at ``at``; return True when this event makes the window fire."""
        if self.spill is not None:
            return self._add_spilled(self.spill, at, threshold, window, event_id, event)
        times, ids, events = self.times_kept, self.ids, self.events
        size = len(times)
        last = self.newest
        start = (last if last > at else at) - window
        if at <= start:
            return False  # too old to count in any window that still matters
        if event_id is not None and event_id in ids:
            return False  # the same event delivered again
        if at >= last:
            index = size
            times += (at,)
            ids += (event_id,)
            self.newest = at
        else:
            index = bisect_right(times, at)
            times = (*times[:index], at, *times[index:])
            ids = (*ids[:index], event_id, *ids[index:])
        if events is not None and event is not None:
            events.insert(index, event)
        size += 1
        drop = 0
        while drop < size and times[drop] <= start:
            drop += 1
        # Beyond the threshold the oldest times cannot change a decision.
        if size - threshold > drop:
            drop = size - threshold
        if drop:
            times, ids = times[drop:], ids[drop:]
            if events is not None:
                del events[:drop]
            size -= drop
        if size > _SPILL_AT:
            self.spill = _Spill(times, ids)
            self.times_kept, self.ids = (), ()
        else:
            self.times_kept, self.ids = times, ids
        return self._crossed(size, threshold)

    def _add_spilled(
        self,
        spill: _Spill,
        at: float,
        threshold: int,
        window: float,
        event_id: str | None,
        event: Event | None,
    ) -> bool:
        # add(), the same steps on lists and a set: no step copies or scans every time kept.
        times, ids, events = spill.times, spill.ids, self.events
        last = self.newest
        start = (last if last > at else at) - window
        if at <= start:
            return False
        if event_id is not None and event_id in spill.id_set:
            return False
        if at >= last:
            index = len(times)
            times.append(at)
            ids.append(event_id)
            self.newest = at
        else:
            index = bisect_right(times, at)
            times.insert(index, at)
            ids.insert(index, event_id)
        if event_id is not None:
            spill.id_set.add(event_id)
        if events is not None and event is not None:
            events.insert(index, event)
        size = len(times)
        drop = 0
        while drop < size and times[drop] <= start:
            drop += 1
        if size - threshold > drop:
            drop = size - threshold
        if drop:
            spill.id_set.difference_update(ids[:drop])
            del times[:drop], ids[:drop]
            if events is not None:
                del events[:drop]
            size -= drop
        return self._crossed(size, threshold)

    def _crossed(self, count: int, threshold: int) -> bool:
        # Fires once when the count reaches the threshold, re-arms when it falls below it.
        if count >= threshold:
            if self.fired:
                return False
            self.fired = True
            return True
        self.fired = False
        return False

    @property
    def count(self) -> int:
        return len(self.spill.times) if self.spill is not None else len(self.times_kept)

    def contributors(self) -> tuple[Event, ...]:
        return tuple(self.events or ())

    def idle_since(self, watermark: float, window: float) -> bool:
        """True when every time held has left the window ending at ``watermark``."""
        return self.newest <= watermark - window


class DistinctWindow(msgspec.Struct, gc=False, kw_only=True):
    """Counts the distinct values of one field for one key of one rule.

    Beside ``last_seen``, a heap of ``(time, order, value)`` finds the value seen longest ago
    without a scan of every value: a spray keeps its window full, and each new value pushes the
    oldest out. ``order`` is the value's place in ``last_seen``, so that of two values seen at the
    same time the one that came first goes first (as ``sorted`` would have it). A value seen
    again keeps its entry, which may then show an older time than ``last_seen``: such an entry
    is brought up to date when it reaches the top, so the heap holds one entry per value.
    """

    keep_events: bool = False
    fired: bool = False
    last_seen: dict[str, float] = msgspec.field(default_factory=dict)
    events: dict[str, Event] | None = None
    newest: float = _NEVER
    heap: list[tuple[float, int, str]] = msgspec.field(default_factory=list)
    orders: int = 0
    """How many values were ever added: the next one's ``order``."""

    def __post_init__(self) -> None:
        if self.keep_events:
            self.events = {}

    def add(
        self, at: float, value: str, threshold: int, window: float, event: Event | None = None
    ) -> bool:
        """Count ``value`` seen at ``at``; return True when this makes the window fire."""
        seen, heap = self.last_seen, self.heap
        if at > self.newest:
            self.newest = at
        start = self.newest - window
        if at <= start:
            return False
        previous = seen.get(value)
        if previous is None or at > previous:
            seen[value] = at
            if previous is None:
                self.orders += 1
                heappush(heap, (at, self.orders, value))
            if self.events is not None and event is not None:
                self.events[value] = event
        while heap and heap[0][0] <= start:
            self._pop_oldest()  # left the window (or its entry is out of date)
        # Only the most recently seen `threshold` values can matter for a decision.
        while len(seen) > threshold:
            self._pop_oldest()
        count = len(seen)
        if count >= threshold:
            if self.fired:
                return False
            self.fired = True
            return True
        self.fired = False
        return False

    def _pop_oldest(self) -> None:
        # Forget the value of the heap's first entry, or bring the entry up to date when the
        # value was seen again since it was pushed.
        heap = self.heap
        at, order, value = heap[0]
        current = self.last_seen[value]
        if current == at:
            heappop(heap)
            self._forget(value)
        else:
            heapreplace(heap, (current, order, value))

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
