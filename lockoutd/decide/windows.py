"""Sliding event-time windows: the windows of one rule, by key.

This module is the reference and the fallback: where ``pip install`` could compile it,
``lockoutd.decide._cwindows`` counts by the same rules in compact memory, and
``lockoutd.decide.core`` says which of the two the engine builds (README, "Installing").

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
  that was let go is no newer than the times kept, so it cannot change the count. A window
  remembers an id as its 64-bit ``hash()``, not as the string: two different ids of one window
  have a 2⁻⁶⁴ chance of being taken for one, and the second then does not count. The hash is
  random per process, which is harmless: windows live in one process and are rebuilt from Kafka
  after a restart. A window restored from a checkpoint (:meth:`EventWindows.restore`) keeps the
hashes of the process that wrote it: in another process they match no new id, so a repeat of an
event counted before the checkpoint counts again there (README, "Windows survive restarts and
rebalances").

A million tracked keys is a common sight, so a window is small and invisible to the cycle
collector. A window of events is one ``bytes`` value until it fills up (the times and the
id hashes packed as 64-bit numbers: 16 bytes an event, against about 100 for a float, an int
and their tuple slots); a distinct window that has seen one value is a tuple of atoms. With
a plain object per key every full collection walked them all: over a second at a million keys,
a pause that every lock behind it waited for. The few windows that grow large (a rule such as
10,000 failures per org per minute) move to lists and sets, whose updates do not copy every time.

A partition's windows leave the process as plain per-key records (:meth:`EventWindows.export`,
:meth:`DistinctWindows.export`: an ``EventRecord`` or a ``DistinctRecord`` per key) and come back
with ``restore``, which checks what it is given: records are read from a checkpoint topic that
someone else may have written.

Idle keys (whose newest time has left the window) are forgotten by :meth:`Windows.evict_idle`.
A sweep must not visit every key (at a million keys that is most of the engine's time), so each
key is filed under the minute its window would end if it saw nothing more; a sweep reads only
the minutes that have passed, forgets the keys that are idle and files the others again under
their new end.

The same filing serves the bound on tracked keys (:mod:`lockoutd.decide.bound`): keys are shed
minute by minute, the windows that end soonest first, rank by rank (:func:`tier`), and a minute
remembers the lowest rank it held when last read, so that the fuller windows a round keeps are
not read again by every round.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from heapq import heapify, heappop, heappush, heapreplace
from struct import Struct
from typing import Generic, TypeVar

import msgspec

from lockoutd.decode.event import Event

Slot = str | tuple[str, ...]
"""How a key is held: its one value for a key of one field (no tuple to allocate and keep per
key), the tuple of its values otherwise."""

_NO_ID = -1
"""The hash kept for an event without an ``event_id``: ``hash()`` never returns -1 (CPython
reserves it for errors), so no id can be taken for a missing one."""

_SPILL_AT = 32
"""A window that keeps more times than this moves them from packed bytes to lists and a set of
id hashes: repacking a few times is cheap, repacking thousands on every event is ruinous."""

_PACKED = [Struct(f"={k}d{k}q") for k in range(_SPILL_AT + 1)]
"""The layout of a packed window, by number of times kept (see ``EventState``)."""
_TIME = Struct("=d")

_DUE_EVERY_SECONDS = 60.0
"""Width of the slices of time under which keys are filed for the idle sweep."""

_State = TypeVar("_State")

TIERS = 6
"""How full a window is, in ranks from 0 (one event, of a threshold above one: what a flood of
made-up keys leaves) through 1-4 (a quarter of the threshold each) to 5 (fired)."""


# What the windows hold, in bytes (``Windows.held_bytes``), for the bound on memory
# (:mod:`lockoutd.decide.bound`). The costs are CPython's on a 64-bit machine, measured with
# tracemalloc (tests/unit/decide/test_held_bytes.py): the bound needs the part a producer can make
# grow (long keys and values, many times and values a key, kept events) to the byte, and the
# rest within a few per cent.
_KEY_BYTES = 48
"""A key's entries in ``by_key`` and in the filing, beyond the key itself."""
_EVENT_BYTES = 96
"""A kept event (``as_evidence``) beyond its texts."""
_ONE_VALUE_BYTES = 88
"""A distinct window of one value (a tuple and a float) beyond the value."""
_DISTINCT_BYTES = 240
"""A distinct window of two or more values beyond its values: the struct, a dict and a list."""
_VALUE_BYTES = 120
"""A value of a distinct window beyond its text: its dict entry, time and heap entry."""
_KEPT_EVENT_BYTES = 32
"""The list or dict entry of a kept event."""
KEPT_EVENTS_BYTES = 96
"""The list of a key's kept events, and its entry in the dict of lists, beyond the events."""


def text_bytes(text: str) -> int:
    """The bytes a str object takes (compact ASCII, else up to four bytes a character)."""
    return 49 + len(text) if text.isascii() else 80 + 4 * len(text)


def value_bytes(value: object) -> int:
    """The bytes a distinct value takes: a str as :func:`text_bytes`, anything else as a number."""
    return text_bytes(value) if isinstance(value, str) else 32


def slot_bytes(slot: Slot) -> int:
    """The bytes a key takes in a rule's windows: its text (or tuple of texts) and its entries."""
    if isinstance(slot, str):
        return _KEY_BYTES + text_bytes(slot)
    return _KEY_BYTES + 40 + 8 * len(slot) + sum(text_bytes(part) for part in slot)


def evidence_bytes(event: object) -> int:
    """The bytes a kept event takes: the struct and the texts ``as_evidence`` leaves it."""
    if event is None:
        return 0
    total = _EVENT_BYTES + _KEPT_EVENT_BYTES
    if not isinstance(event, Event):  # what a test hands the windows in place of an event
        return total
    for text in (
        event.type,
        event.user_id,
        event.login_name,
        event.org_id,
        event.ip,
        event.reason,
        event.event_id,
    ):
        if text is not None:
            total += text_bytes(text)
    return total


def tier(kept: int, threshold: int, fired: bool) -> int:
    """The rank of a window that keeps ``kept`` times (or values) of ``threshold``."""
    if fired:
        return TIERS - 1
    if kept <= 1:
        return 0
    return min(1 + 4 * kept // threshold, TIERS - 2)


class InvalidRecord(ValueError):
    """A window record that no window of these windows could have exported."""


class EventRecord(msgspec.Struct, array_like=True, gc=False, forbid_unknown_fields=True):
    """The window of one key of a rule that counts events, as plain values."""

    slot: str | tuple[str, ...]
    times: list[float]
    """The kept event times, oldest first."""
    hashes: list[int]
    """The id hash of each time (see the module's notes on ``event_id``)."""
    fired: bool
    events: list[Event] | None = None
    """The counted events, aligned with the newest times, for rules that lock contributors."""


class DistinctRecord(msgspec.Struct, array_like=True, gc=False, forbid_unknown_fields=True):
    """The window of one key of a rule that counts distinct values, as plain values."""

    slot: str | tuple[str, ...]
    seen: list[tuple[str, float]]
    """Each value counted and when it was last seen, in the order the values were first counted."""
    newest: float
    fired: bool
    events: dict[str, Event] | None = None
    """The event of each value's latest sighting, for rules that lock contributors."""


def _check_slot(slot: Slot) -> Slot:
    if isinstance(slot, tuple):
        if len(slot) < 2 or not all(slot):
            raise InvalidRecord("a key of several fields needs two or more non-empty values")
    elif not slot:
        raise InvalidRecord("an empty key")
    return slot


def _check_times(times: Iterable[float]) -> None:
    previous = -math.inf
    for at in times:
        if not math.isfinite(at) or at < previous:
            raise InvalidRecord("times must be finite and oldest first")
        previous = at


def _check_hashes(hashes: Sequence[int]) -> None:
    if not all(-(1 << 63) <= hashed < 1 << 63 for hashed in hashes):
        raise InvalidRecord("id hashes must be 64-bit signed numbers")
    # A window never keeps one event id twice (a repeat is not counted): a record that does could
    # only be corrupt, and the two implementations would not agree on when to count it again.
    ids = [hashed for hashed in hashes if hashed != _NO_ID]
    if len(set(ids)) != len(ids):
        raise InvalidRecord("a window keeps each event id once")


def checked_event_record(
    record: EventRecord, threshold: int
) -> tuple[Slot, list[float], list[int], bool]:
    """What a window of events of ``threshold`` takes of ``record``: its key, times, id hashes and
    whether it fired; raises :class:`InvalidRecord` for a record no such window could hold.

    Both implementations of the windows restore through this, so that a checkpoint one wrote is
    taken or refused alike by the other."""
    slot = _check_slot(record.slot)
    times, hashes = record.times, record.hashes
    if len(times) != len(hashes) or not times or len(times) > threshold:
        raise InvalidRecord(f"a window keeps 1 to {threshold} times, each with a hash")
    _check_times(times)
    _check_hashes(hashes)
    return slot, times, hashes, record.fired and len(times) >= threshold


def checked_distinct_record(
    record: DistinctRecord, threshold: int
) -> tuple[Slot, dict[str, float], float, bool, dict[str, Event]]:
    """What a distinct window of ``threshold`` takes of ``record``: its key, each value with when
    it was last seen (in the record's order), the newest time, whether it fired and the events
    by value; raises :class:`InvalidRecord` as :func:`checked_event_record` does."""
    slot = _check_slot(record.slot)
    seen = dict(record.seen)
    if not seen or len(seen) != len(record.seen) or len(seen) > threshold:
        raise InvalidRecord(f"a window keeps 1 to {threshold} distinct non-empty values")
    newest = record.newest
    if "" in seen or any(not at <= newest for at in seen.values()):
        raise InvalidRecord("values must be non-empty and seen no later than the newest")
    _check_times([newest])
    fired = record.fired and len(seen) >= threshold
    return slot, seen, newest, fired, record.events or {}


class Windows(ABC, Generic[_State]):
    """The windows of one rule, by key, and the sweep that forgets idle keys.

    A subclass counts (its ``add`` files every key it opens with ``_file``) and says where the
    newest time of a window is.
    """

    __slots__ = ("_bytes", "_due", "_floors", "by_key", "threshold", "window")

    def __init__(self, threshold: int, window: float) -> None:
        self.threshold = threshold
        self.window = window
        self.by_key: dict[Slot, _State] = {}
        self._bytes = 0
        """What the keys and their windows hold (see ``held_bytes``), kept up to date by every
        change, so that the bound reads it once a batch without visiting a key."""
        self._due: dict[float, dict[Slot, None]] = {}
        """Keys by the slice of time in which their window ends unless they see more events. A
        key may be filed twice (forgotten, then counted again); the sweep drops the extra one.
        Dicts rather than lists: a dict of strings is not tracked by the cycle collector, so a
        full collection does not visit a million filed keys."""
        self._floors: dict[float, tuple[int, int]] = {}
        """For the bound: the lowest rank left under a slice of time when a round last read it,
        and how many keys were filed there then. A slice that gained a key since is read again;
        one that did not is skipped by rounds looking for a lower rank."""

    def __len__(self) -> int:
        return len(self.by_key)

    def __contains__(self, slot: object) -> bool:
        return slot in self.by_key

    def __iter__(self) -> Iterator[Slot]:
        """The tracked keys."""
        return iter(list(self.by_key))

    def held_bytes(self) -> int:
        """About how many bytes the windows hold: every key, its window and its kept events."""
        return self._bytes

    def forget(self, slot: Slot) -> None:
        """Drop the window of ``slot`` (a success resets the count)."""
        state = self.by_key.get(slot)
        if state is not None:
            self._bytes -= self._cost(slot, state)
            del self.by_key[slot]

    def _file(self, slot: Slot, newest: float) -> None:
        due = (newest + self.window) // _DUE_EVERY_SECONDS
        keys = self._due.get(due)
        if keys is None:
            self._due[due] = {slot: None}
        else:
            keys[slot] = None

    def evict_idle(self, watermark: float) -> int:
        """Forget keys whose every event has left the window ending at ``watermark``."""
        limit = watermark - self.window
        now_due = watermark // _DUE_EVERY_SECONDS
        passed = [self._due.pop(due) for due in [due for due in self._due if due <= now_due]]
        if self._floors:
            for due in [due for due in self._floors if due <= now_due]:
                del self._floors[due]
        by_key, newest_of = self.by_key, self._newest
        idle: list[Slot] = []
        filed_again: set[Slot] = set()
        for slots in passed:
            for slot in slots:
                state = by_key.get(slot)
                if state is None or slot in filed_again:
                    continue  # forgotten since it was filed, or filed twice
                newest = newest_of(state)
                if newest <= limit:
                    self._bytes -= self._cost(slot, state)
                    del by_key[slot]
                    idle.append(slot)
                    continue
                filed_again.add(slot)
                self._file(slot, newest)
        self._evicted(idle)
        return len(idle)

    def _evicted(self, slots: list[Slot]) -> None:
        """Called with the keys a sweep forgot, for state kept beside ``by_key``."""

    def filed_minutes(self) -> list[float]:
        """The slices of time keys are filed under, whose windows end in them."""
        return list(self._due)

    def _filed_under(self, minute: float) -> list[Slot]:
        """The keys filed under ``minute``, in the order filed (forgotten ones too)."""
        return list(self._due.get(minute, ()))

    def shed(self, minute: float, rank: int, limit: int) -> int:
        """Forget up to ``limit`` keys of ``rank`` filed under ``minute``, the first filed
        first, to make room; return how many.

        The keys leave the filing too (with any forgotten since they were filed): a flood must
        not stay referenced there until its minute passes. The lowest rank left is remembered,
        so that the next round skips this minute until a key is filed under it again: in a long
        flood, rounds read the new keys and what they evict, not the keys they keep.
        """
        filed = self._due.get(minute)
        if not filed:
            return 0
        known = self._floors.get(minute)
        if known is not None and known[1] == len(filed) and known[0] > rank:
            return 0
        by_key, threshold, fill = self.by_key, self.threshold, self._fill
        gone: list[Slot] = []
        dead: list[Slot] = []
        lowest = TIERS
        for slot in filed:
            state = by_key.get(slot)
            if state is None:
                dead.append(slot)
                continue
            kept, fired = fill(state)
            found = tier(kept, threshold, fired)
            if found == rank:
                gone.append(slot)
                if len(gone) == limit:
                    lowest = rank  # the rest was not read
                    break
            elif found < lowest:
                lowest = found
        for slot in gone:
            self._bytes -= self._cost(slot, by_key[slot])
            del filed[slot], by_key[slot]
        for slot in dead:
            del filed[slot]
        self._evicted(gone)
        if filed:
            self._floors[minute] = (lowest, len(filed))
        else:
            del self._due[minute]
            self._floors.pop(minute, None)
        return len(gone)

    @abstractmethod
    def _newest(self, state: _State) -> float:
        """The newest time ``state`` holds."""

    @abstractmethod
    def _fill(self, state: _State) -> tuple[int, bool]:
        """How many times (or values) ``state`` keeps, and whether it fired."""

    @abstractmethod
    def _cost(self, slot: Slot, state: _State) -> int:
        """The bytes ``slot`` and its window ``state`` hold, kept events included."""


class _Spill:
    """The times and id hashes of a large window, with a set of the hashes.

    The kept times are ``times[first:]``: the times that leave stay in front of them for a while,
    since deleting them on every event would move every time kept (``del list[:n]`` copies the
    rest), which at thousands of times is most of the cost of an event.
    """

    __slots__ = ("first", "hash_set", "hashes", "times")

    def __init__(self, times: tuple[float, ...], hashes: tuple[int, ...]) -> None:
        self.times = list(times)
        self.hashes = list(hashes)
        self.first = 0
        self.hash_set = set(hashes)
        self.hash_set.discard(_NO_ID)

    def drop(self, count: int) -> None:
        """Let the ``count`` oldest kept times go."""
        first = self.first
        self.hash_set.difference_update(self.hashes[first : first + count])
        first += count
        if first > len(self.times) >> 1:
            # Cut the front once it outgrows the kept times: one copy per that many drops.
            del self.times[:first], self.hashes[:first]
            first = 0
        self.first = first


class KeyWindow(msgspec.Struct, gc=False):
    """A window of events that has filled up (it holds ``threshold`` times) or grown large.

    Few keys get here (those under attack), and for them every event shifts the window: tuples
    of the times and id hashes are rebuilt faster than bytes are unpacked and packed again.
    """

    times: tuple[float, ...]
    """The kept event times, oldest first (while the window is small: see ``spill``)."""
    hashes: tuple[int, ...]
    """The ``hash()`` of each kept time's ``event_id``, in the same order (``_NO_ID`` if none)."""
    fired: bool
    """Fired at the last crossing and not re-armed since (the count has not fallen below)."""
    spill: _Spill | None = None
    """Times and hashes once more than ``_SPILL_AT`` were kept; ``times`` and ``hashes`` are
    empty from then on."""


EventState = bytes | KeyWindow
"""A window of events: packed bytes while it holds fewer than ``threshold`` times (and no more
than ``_SPILL_AT``), then a ``KeyWindow``. Packed, ``k`` times take ``16 * k`` bytes: the
times (oldest first), then the hash of each one's id. A packed window has never filled up, so
it has not fired."""

_PACKED_HEAD_BYTES = 33
"""A packed window (a ``bytes``) beyond its 16 bytes a time."""
_FULL_BYTES = 136
"""A ``KeyWindow`` beyond its times: the struct and two tuples."""
_FULL_TIME_BYTES = 72
"""A time of a ``KeyWindow``: a float, an int and their places in the tuples."""
_SPILL_BYTES = 400
"""A ``_Spill`` beyond its times: the object, two lists and a set."""
_SPILLED_TIME_BYTES = 128
"""A time of a ``_Spill`` (those left in front of the kept ones too): a float, an int, their
list places and the hash's place in the set."""


def _event_state_bytes(state: EventState) -> int:
    if state.__class__ is bytes:
        return _PACKED_HEAD_BYTES + len(state)
    assert isinstance(state, KeyWindow)
    spill = state.spill
    if spill is None:
        return _FULL_BYTES + _FULL_TIME_BYTES * len(state.times)
    return _FULL_BYTES + _SPILL_BYTES + _SPILLED_TIME_BYTES * len(spill.times)


class EventWindows(Windows[EventState]):
    """Windows that count events.

    ``keep_events`` keeps the counted events themselves (aligned with the times kept), for rules
    that lock every contributor; other rules keep just the times and id hashes.
    """

    __slots__ = ("_events",)

    def __init__(self, threshold: int, window: float, *, keep_events: bool = False) -> None:
        super().__init__(threshold, window)
        self._events: dict[Slot, list[Event]] | None = {} if keep_events else None

    def add(self, slot: Slot, at: float, event_id: str | None, event: Event | None = None) -> bool:
        """Count an event of ``slot`` at ``at``; return True when it makes the window fire."""
        state = self.by_key.get(slot)
        hashed = _NO_ID if event_id is None else hash(event_id)
        if not isinstance(state, KeyWindow):
            if state is None:
                return self._open(slot, at, hashed, event)
            return self._add_packed(slot, state, at, hashed, event)
        # Here on, a full window (inlined: every event of a key under attack comes this way).
        if state.spill is not None:
            return self._add_spilled(slot, state, at, hashed, event)
        times, hashes = state.times, state.hashes
        newest = times[-1]
        start = (newest if newest > at else at) - self.window
        if at <= start:
            return False  # too old to count in any window that still matters
        if hashed != _NO_ID and hashed in hashes:
            return False  # the same event delivered again
        if at >= newest and times[0] > start and len(times) == self.threshold:
            # The steady state of a key under attack, without the general steps below: the newest
            # time pushes out the oldest, the window stays full and so does not fire again.
            # Concatenation builds no intermediate list, unlike (*times[1:], at): ~15 ns each.
            state.times, state.hashes = times[1:] + (at,), hashes[1:] + (hashed,)  # noqa: RUF005
            if self._events is not None:
                self._keep_event(slot, event, self.threshold, 1)
            return False
        before = _FULL_TIME_BYTES * len(times)
        if at >= newest:
            index = len(times)
            times += (at,)
            hashes += (hashed,)
        else:
            index = bisect_right(times, at)
            times = (*times[:index], at, *times[index:])
            hashes = (*hashes[:index], hashed, *hashes[index:])
        size = len(times)
        drop = 0
        while drop < size and times[drop] <= start:
            drop += 1
        # Beyond the threshold the oldest times cannot change a decision.
        if size - self.threshold > drop:
            drop = size - self.threshold
        if drop:
            times, hashes = times[drop:], hashes[drop:]
            size -= drop
        if self._events is not None:
            self._keep_event(slot, event, index, drop)
        if size > _SPILL_AT:
            state.spill = _Spill(times, hashes)
            state.times, state.hashes = (), ()
        else:
            state.times, state.hashes = times, hashes
        self._bytes += _event_state_bytes(state) - _FULL_BYTES - before
        was_fired, state.fired = state.fired, size >= self.threshold
        return state.fired and not was_fired

    def _open(self, slot: Slot, at: float, hashed: int, event: Event | None) -> bool:
        # The first event of a key: a window of one time.
        self._file(slot, at)
        if self._events is not None:
            self._bytes += KEPT_EVENTS_BYTES
            self._keep_event(slot, event, 0, 0)
        if self.threshold > 1:
            self.by_key[slot] = _PACKED[1].pack(at, hashed)
            self._bytes += slot_bytes(slot) + _PACKED_HEAD_BYTES + 16
            return False
        self.by_key[slot] = KeyWindow((at,), (hashed,), fired=True)
        self._bytes += slot_bytes(slot) + _FULL_BYTES + _FULL_TIME_BYTES
        return True

    def _add_packed(
        self, slot: Slot, state: bytes, at: float, hashed: int, event: Event | None
    ) -> bool:
        # add() for a window of fewer than `threshold` times, which therefore never drops a time
        # for the threshold, only those that left the window.
        kept = len(state) >> 4
        values = _PACKED[kept].unpack_from(state)
        newest = values[kept - 1]
        start = (newest if newest > at else at) - self.window
        if at <= start:
            return False
        hashes = values[kept:]
        if hashed != _NO_ID and hashed in hashes:
            return False
        times = values[:kept]
        drop = 0
        while drop < kept and times[drop] <= start:
            drop += 1
        index = kept if at >= newest else bisect_right(times, at)
        times = (*times[drop:index], at, *times[index:])
        hashes = (*hashes[drop:index], hashed, *hashes[index:])
        if self._events is not None:
            self._keep_event(slot, event, index, drop)
        size = kept + 1 - drop
        if size < self.threshold and size <= _SPILL_AT:
            self.by_key[slot] = _PACKED[size].pack(*times, *hashes)
            self._bytes += (size - kept) << 4
            return False
        full = KeyWindow((), (), fired=size >= self.threshold)
        if size > _SPILL_AT:
            full.spill = _Spill(times, hashes)
        else:
            full.times, full.hashes = times, hashes
        self.by_key[slot] = full
        self._bytes += _event_state_bytes(full) - _PACKED_HEAD_BYTES - len(state)
        return full.fired

    def _add_spilled(
        self, slot: Slot, window: KeyWindow, at: float, hashed: int, event: Event | None
    ) -> bool:
        # add(), the same steps on lists and a set: no step copies or scans every time kept.
        spill = window.spill
        assert spill is not None
        times, hashes, first = spill.times, spill.hashes, spill.first
        newest = times[-1]
        start = (newest if newest > at else at) - self.window
        if at <= start or (hashed != _NO_ID and hashed in spill.hash_set):
            return False
        before = len(times)
        if at >= newest:
            index = len(times)
            times.append(at)
            hashes.append(hashed)
        else:
            index = bisect_right(times, at, first)
            times.insert(index, at)
            hashes.insert(index, hashed)
        if hashed != _NO_ID:
            spill.hash_set.add(hashed)
        size = len(times) - first
        drop = 0
        while drop < size and times[first + drop] <= start:
            drop += 1
        if size - self.threshold > drop:
            drop = size - self.threshold
        if drop:
            spill.drop(drop)
            size -= drop
        self._bytes += _SPILLED_TIME_BYTES * (len(spill.times) - before)
        if self._events is not None:
            self._keep_event(slot, event, index - first, drop)
        was_fired, window.fired = window.fired, size >= self.threshold
        return window.fired and not was_fired

    def _keep_event(self, slot: Slot, event: Event | None, index: int, drop: int) -> None:
        # The kept events follow the kept times: inserted at the same place, dropped together.
        assert self._events is not None
        events = self._events.setdefault(slot, [])
        if event is not None:
            events.insert(index, event)
            self._bytes += evidence_bytes(event)
        if drop:
            self._bytes -= sum(evidence_bytes(gone) for gone in events[:drop])
            del events[:drop]

    def forget(self, slot: Slot) -> None:
        super().forget(slot)
        if self._events is not None:
            self._events.pop(slot, None)

    def _cost(self, slot: Slot, state: EventState) -> int:
        cost = slot_bytes(slot) + _event_state_bytes(state)
        if self._events is not None:
            events = self._events.get(slot, ())
            cost += KEPT_EVENTS_BYTES + sum(evidence_bytes(event) for event in events)
        return cost

    def _evicted(self, slots: list[Slot]) -> None:
        if self._events is not None:
            for slot in slots:
                self._events.pop(slot, None)

    def times(self, slot: Slot) -> list[float]:
        """The times kept for ``slot``, oldest first (none for an unknown key)."""
        state = self.by_key.get(slot)
        if state is None:
            return []
        if isinstance(state, KeyWindow):
            spill = state.spill
            return spill.times[spill.first :] if spill is not None else list(state.times)
        kept = len(state) >> 4
        return list(_PACKED[kept].unpack_from(state)[:kept])

    def span(self, slot: Slot) -> tuple[int, float, float]:
        """``(count, oldest, newest)`` of the times kept for ``slot``, which must be tracked."""
        times = self.times(slot)
        return len(times), times[0], times[-1]

    def contributors(self, slot: Slot) -> tuple[Event, ...]:
        """The counted events of ``slot`` (only for windows that keep them)."""
        return tuple(self._events.get(slot, ())) if self._events is not None else ()

    def export(self) -> Iterator[EventRecord]:
        """Every key's window as a record, for :meth:`restore` here or in another process."""
        events = self._events
        for slot, state in self.by_key.items():
            if isinstance(state, KeyWindow):
                spill, fired = state.spill, state.fired
                if spill is not None:
                    times, hashes = spill.times[spill.first :], spill.hashes[spill.first :]
                else:
                    times, hashes = list(state.times), list(state.hashes)
            else:
                kept = len(state) >> 4
                values = _PACKED[kept].unpack_from(state)
                times, hashes, fired = list(values[:kept]), list(values[kept:]), False
            kept_events = events.get(slot) if events is not None else None
            yield EventRecord(slot, times, hashes, fired, kept_events)

    def restore(self, records: Iterable[EventRecord]) -> None:
        """Take the windows of ``records`` (from :meth:`export`), replacing those of their keys.

        Raises :class:`InvalidRecord` for a record no window could hold (the records before it
        are taken): the caller drops these windows and rebuilds them some other way.
        """
        threshold = self.threshold
        for record in records:
            slot, times, hashes, fired = checked_event_record(record, threshold)
            size = len(times)
            state: EventState
            if size < threshold and size <= _SPILL_AT:
                state = _PACKED[size].pack(*times, *hashes)
            elif size > _SPILL_AT:
                state = KeyWindow((), (), fired, _Spill(tuple(times), tuple(hashes)))
            else:
                state = KeyWindow(tuple(times), tuple(hashes), fired)
            old = self.by_key.get(slot)
            if old is not None:
                self._bytes -= self._cost(slot, old)
            self.by_key[slot] = state
            self._file(slot, times[-1])
            if self._events is not None:
                self._events[slot] = list(record.events or ())[-size:]
            self._bytes += self._cost(slot, state)

    def _newest(self, state: EventState) -> float:
        if isinstance(state, KeyWindow):
            return state.spill.times[-1] if state.spill is not None else state.times[-1]
        newest: float = _TIME.unpack_from(state, ((len(state) >> 4) - 1) * 8)[0]
        return newest

    def _fill(self, state: EventState) -> tuple[int, bool]:
        if state.__class__ is bytes:
            return len(state) >> 4, False
        assert isinstance(state, KeyWindow)
        spill = state.spill
        return (len(spill.times) - spill.first if spill else len(state.times)), state.fired


class DistinctWindow(msgspec.Struct, gc=False):
    """The distinct values of one key once it has seen two or more.

    Beside ``last_seen``, a heap of ``(time, order, value)`` finds the value seen longest ago
    without a scan of every value: a spray keeps its window full, and each new value pushes the
    oldest out. ``order`` is the value's place in ``last_seen``, so that of two values seen at the
    same time the one that came first goes first (as ``sorted`` would have it). A value seen
    again keeps its entry, which may then show an older time than ``last_seen``: such an entry
    is brought up to date when it reaches the top, so the heap holds one entry per value.
    """

    last_seen: dict[str, float]
    heap: list[tuple[float, int, str]]
    newest: float
    orders: int
    """How many values were ever added: the next one's ``order``."""
    events: dict[str, Event] | None
    fired: bool = False


OneValue = tuple[float, str, Event | None]
"""A distinct window that has seen one value: when it last saw it, the value, and the event of
that sighting for rules that keep events. Most keys (an address, a network) never see a second
value, and a tuple of atoms costs a fraction of a ``DistinctWindow``."""

DistinctState = OneValue | DistinctWindow


class DistinctWindows(Windows[DistinctState]):
    """Windows that count the distinct values of one field."""

    __slots__ = ("_keep_events",)

    def __init__(self, threshold: int, window: float, *, keep_events: bool = False) -> None:
        super().__init__(threshold, window)
        self._keep_events = keep_events

    def add(self, slot: Slot, at: float, value: str, event: Event | None = None) -> bool:
        """Count ``value`` seen at ``at`` for ``slot``; return True when this makes it fire."""
        state = self.by_key.get(slot)
        kept = event if self._keep_events else None
        if not isinstance(state, DistinctWindow):
            if state is not None and value == state[1]:
                # One value, seen again: a newer sighting moves it; nothing else can change.
                if at > state[0]:
                    self.by_key[slot] = (at, value, kept)
                    if kept is not None:
                        self._bytes += evidence_bytes(kept) - evidence_bytes(state[2])
                return False
            state = self._open_or_grow(slot, state, at, value, kept)
            if state is None:
                return False
        # Here on, a full window (inlined: a spray comes this way).
        seen, heap = state.last_seen, state.heap
        newest = state.newest
        if at > newest:
            state.newest = newest = at
        start = newest - self.window
        if at <= start:
            return False
        previous = seen.get(value)
        if previous is None or at > previous:
            seen[value] = at
            if previous is None:
                state.orders += 1
                heappush(heap, (at, state.orders, value))
                self._bytes += _VALUE_BYTES + value_bytes(value)
            if state.events is not None and kept is not None:
                self._bytes += evidence_bytes(kept) - evidence_bytes(state.events.get(value))
                state.events[value] = kept
        if previous is not None and heap[0][0] > start:
            # A value seen again and none left the window: the count, and so the firing, stand
            # (most events of a busy key: the same users failing again), so skip the loop below.
            return False
        threshold = self.threshold
        # Values that left the window go, then (only the most recently seen `threshold` values
        # can matter for a decision) the oldest beyond the threshold.
        while (heap and heap[0][0] <= start) or len(seen) > threshold:
            # The heap's first entry: forget its value, or bring the entry up to date when the
            # value was seen again since it was pushed.
            oldest, order, gone = heap[0]
            current = seen[gone]
            if current == oldest:
                heappop(heap)
                del seen[gone]
                self._bytes -= _VALUE_BYTES + value_bytes(gone)
                if state.events is not None:
                    self._bytes -= evidence_bytes(state.events.pop(gone, None))
            else:
                heapreplace(heap, (current, order, gone))
        was_fired, state.fired = state.fired, len(seen) >= threshold
        return state.fired and not was_fired

    def _open_or_grow(
        self, slot: Slot, state: OneValue | None, at: float, value: str, kept: Event | None
    ) -> DistinctWindow | None:
        # A new key, or a second value for a key that had one: the window to count ``value`` in,
        # or None when a one-value tuple holds it (a new key, unless the threshold is 1).
        if state is not None:
            window = self.by_key[slot] = _grown(state, self._keep_events)
            self._bytes += _DISTINCT_BYTES + _VALUE_BYTES - _ONE_VALUE_BYTES
            return window
        self._file(slot, at)
        if self.threshold > 1:
            self.by_key[slot] = (at, value, kept)
            self._bytes += self._cost(slot, (at, value, kept))
            return None
        events: dict[str, Event] | None = {} if self._keep_events else None
        window = self.by_key[slot] = DistinctWindow({}, [], at, 0, events)
        self._bytes += slot_bytes(slot) + _DISTINCT_BYTES
        return window

    def values(self, slot: Slot) -> dict[str, float]:
        """Each value counted for ``slot``, with when it was last seen (empty if not tracked)."""
        state = self.by_key.get(slot)
        if state is None:
            return {}
        if isinstance(state, tuple):
            return {state[1]: state[0]}
        return dict(state.last_seen)

    def span(self, slot: Slot) -> tuple[int, float, float]:
        """``(count, oldest, newest)`` of the sightings counted for ``slot``, which is tracked."""
        state = self.by_key[slot]
        seen = self.values(slot)
        return len(seen), min(seen.values()), self._newest(state)

    def contributors(self, slot: Slot) -> tuple[Event, ...]:
        """The event of each value's latest sighting (only for windows that keep them)."""
        state = self.by_key.get(slot)
        if isinstance(state, tuple):
            return (state[2],) if state[2] is not None else ()
        if state is None or state.events is None:
            return ()
        return tuple(state.events.values())

    def export(self) -> Iterator[DistinctRecord]:
        """Every key's window as a record, for :meth:`restore` here or in another process."""
        for slot, state in self.by_key.items():
            if isinstance(state, tuple):
                at, value, event = state
                events = {value: event} if event is not None else None
                yield DistinctRecord(slot, [(value, at)], at, False, events)
            else:
                events = dict(state.events) if state.events is not None else None
                yield DistinctRecord(
                    slot, list(state.last_seen.items()), state.newest, state.fired, events
                )

    def restore(self, records: Iterable[DistinctRecord]) -> None:
        """Take the windows of ``records`` (from :meth:`export`), replacing those of their keys.

        Raises :class:`InvalidRecord` as :meth:`EventWindows.restore` does.
        """
        threshold, keep = self.threshold, self._keep_events
        for record in records:
            slot, seen, newest, fired, events = checked_distinct_record(record, threshold)
            if (
                len(seen) == 1
                and threshold > 1
                and not fired
                and next(iter(seen.values())) == newest
            ):
                [(value, at)] = seen.items()
                state: DistinctState = (at, value, events.get(value) if keep else None)
            else:
                heap = [(at, order, value) for order, (value, at) in enumerate(seen.items(), 1)]
                heapify(heap)
                kept = {v: e for v, e in events.items() if v in seen} if keep else None
                state = DistinctWindow(seen, heap, newest, len(seen), kept, fired)
            old = self.by_key.get(slot)
            if old is not None:
                self._bytes -= self._cost(slot, old)
            self.by_key[slot] = state
            self._bytes += self._cost(slot, state)
            self._file(slot, newest)

    def _newest(self, state: DistinctState) -> float:
        return state[0] if isinstance(state, tuple) else state.newest

    def _fill(self, state: DistinctState) -> tuple[int, bool]:
        return (1, False) if isinstance(state, tuple) else (len(state.last_seen), state.fired)

    def _cost(self, slot: Slot, state: DistinctState) -> int:
        if isinstance(state, tuple):
            return (
                slot_bytes(slot)
                + _ONE_VALUE_BYTES
                + value_bytes(state[1])
                + evidence_bytes(state[2])
            )
        cost = slot_bytes(slot) + _DISTINCT_BYTES
        cost += sum(_VALUE_BYTES + value_bytes(value) for value in state.last_seen)
        if state.events is not None:
            cost += sum(evidence_bytes(event) for event in state.events.values())
        return cost


def _grown(one: OneValue, keep_events: bool) -> DistinctWindow:
    # A second value arrives: the lone value becomes the first of a full window.
    at, value, event = one
    events = ({value: event} if event is not None else {}) if keep_events else None
    return DistinctWindow({value: at}, [(at, 1, value)], at, 1, events)
