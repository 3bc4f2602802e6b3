# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The compiled windows: the same rules, API and eviction order as :mod:`lockoutd.decide.windows`
(the reference, and the fallback without a compiler), in compact memory.

Per rule, one open-addressing table maps a key's hash to a record in one array of records; a
record holds the key, the kept times and id hashes (or distinct values) in one block of C memory,
and whether the window fired. No Python object per window: at a million keys the cost of a key is
its table entry, its record and its block, not a dict entry and a window object. The idle sweep
and the bound's ranks read the same filing (``_due``, ``_floors``) as the reference, with the same
code, so that keys are forgotten in the same order.

Large windows: a window of events that keeps more than ``_SET_AT`` times keeps a set of its id
hashes beside the block (a scan of thousands of hashes per event would be most of its cost); a
distinct count with a threshold above ``_SMALL_DISTINCT`` is counted by the reference (such rules
count per organisation or per network: few keys, each with thousands of values, where a heap and
a dict are the right structures).

Checkpoints: ``export`` gives the reference's records (``EventRecord``, ``DistinctRecord``) and
``restore`` takes them through the reference's checks, so that a checkpoint written by either
implementation is restored alike by the other (the instances of a group may run different builds).
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memmove

from lockoutd.decide import windows as _reference
from lockoutd.decide.windows import (
    DistinctRecord,
    EventRecord,
    checked_distinct_record,
    checked_event_record,
)

cdef extern from "Python.h":
    Py_ssize_t PyObject_Hash(object o) except -1
    int PyObject_RichCompareBool(PyObject* a, PyObject* b, int op) except -1
    int Py_EQ

cdef int64_t _NO_ID = -1
cdef int _SET_AT = 64
cdef int _SMALL_DISTINCT = 64
cdef int32_t _EMPTY = -1
cdef int32_t _TOMB = -2
cdef object _DUE_EVERY_SECONDS = 60.0
cdef int _TIERS = _reference.TIERS


cdef inline int _tier(Py_ssize_t kept, Py_ssize_t threshold, bint fired):
    # lockoutd.decide.windows.tier
    cdef Py_ssize_t rank
    if fired:
        return _TIERS - 1
    if kept <= 1:
        return 0
    rank = 1 + 4 * kept // threshold
    return <int>(rank if rank < _TIERS - 2 else _TIERS - 2)


cdef struct Rec:
    PyObject* key        # NULL while the record is free
    Py_ssize_t hash
    double newest        # the newest time (distinct windows; events read it from the block)
    double* times        # events: times[cap] then int64 hashes[cap]; distinct: see _DRec
    PyObject* big        # events: the set of id hashes of a large window, else NULL
    int32_t first        # events: index of the oldest kept time; a free record: the next free
    int32_t count
    int32_t cap
    int32_t fired


cdef double* _block(object times, object hashes, Py_ssize_t width) except NULL:
    # A block of ``width`` bytes a time for a restored window, its times (and id hashes) filled
    # before the key's window is replaced: a value that is no number leaves the window as it was.
    cdef Py_ssize_t i, size = len(times)
    cdef double* block = <double*>PyMem_Malloc(size * width)
    if block == NULL:
        raise MemoryError()
    try:
        for i in range(size):
            block[i] = times[i]
            if hashes is not None:
                (<int64_t*>(block + size))[i] = hashes[i]
    except BaseException:
        PyMem_Free(block)
        raise
    return block


cdef inline uint64_t _mix(Py_ssize_t h):
    return (<uint64_t>h) * <uint64_t>0x9E3779B97F4A7C15ULL


cdef class _Table:
    """The keys of one rule: records and the table from key hash to record, and the filing."""

    cdef Rec* recs
    cdef int32_t nrecs, caprecs, free_head
    cdef int32_t* table
    cdef Py_ssize_t mask, used, live
    cdef public Py_ssize_t threshold
    cdef public double window
    cdef public dict _due
    cdef public dict _floors
    cdef bint _keeps

    def __init__(self, threshold, window, *, keep_events=False):
        self.threshold = threshold
        self.window = window
        self._due = {}
        self._floors = {}
        self._keeps = bool(keep_events)

    def __cinit__(self, *args, **kwargs):
        self.recs = NULL
        self.nrecs = 0
        self.caprecs = 0
        self.free_head = -1
        self.mask = 7
        self.table = <int32_t*>malloc(8 * sizeof(int32_t))
        if self.table == NULL:
            raise MemoryError()
        for i in range(8):
            self.table[i] = _EMPTY
        self.used = 0
        self.live = 0

    def __dealloc__(self):
        cdef int32_t r
        if self.recs != NULL:
            for r in range(self.nrecs):
                if self.recs[r].key != NULL:
                    self._release(&self.recs[r])
            free(self.recs)
        free(self.table)

    cdef void _release(self, Rec* rec) noexcept:
        # Frees what the record holds (the subclass's block).
        Py_XDECREF(rec.key)
        rec.key = NULL
        Py_XDECREF(rec.big)
        rec.big = NULL
        PyMem_Free(rec.times)
        rec.times = NULL

    def __len__(self):
        return self.live

    def __contains__(self, slot):
        return self._find(slot, PyObject_Hash(slot)) >= 0

    def __iter__(self):
        cdef int32_t r
        keys = []
        for r in range(self.nrecs):
            if self.recs[r].key != NULL:
                keys.append(<object>self.recs[r].key)
        return iter(keys)

    cdef int32_t _find(self, object slot, Py_ssize_t h) except -3:
        cdef Py_ssize_t i = <Py_ssize_t>(_mix(h) >> 1) & self.mask
        cdef int32_t r
        cdef Rec* rec
        while True:
            r = self.table[i]
            if r == _EMPTY:
                return -1
            if r >= 0:
                rec = &self.recs[r]
                if rec.key == <PyObject*>slot:
                    return r
                if rec.hash == h and PyObject_RichCompareBool(rec.key, <PyObject*>slot, Py_EQ):
                    return r
            i = (i + 1) & self.mask

    cdef int _resize(self, Py_ssize_t size) except -1:
        cdef int32_t* old = self.table
        cdef Py_ssize_t oldsize = self.mask + 1, i, j
        cdef int32_t r
        self.table = <int32_t*>malloc(size * sizeof(int32_t))
        if self.table == NULL:
            self.table = old
            raise MemoryError()
        for i in range(size):
            self.table[i] = _EMPTY
        self.mask = size - 1
        for i in range(oldsize):
            r = old[i]
            if r >= 0:
                j = <Py_ssize_t>(_mix(self.recs[r].hash) >> 1) & self.mask
                while self.table[j] != _EMPTY:
                    j = (j + 1) & self.mask
                self.table[j] = r
        self.used = self.live
        free(old)
        return 0

    cdef int32_t _insert(self, object slot, Py_ssize_t h) except -1:
        # A record for ``slot``, which is not in the table. Invalidates Rec pointers.
        cdef Py_ssize_t i, size = self.mask + 1
        cdef int32_t r
        cdef Rec* grown
        cdef Rec* rec
        if (self.used + 1) * 2 > size:
            self._resize(size * 2 if (self.live + 1) * 4 > size else size)
        if self.free_head >= 0:
            r = self.free_head
            self.free_head = self.recs[r].first
        else:
            if self.nrecs == self.caprecs:
                size = self.caprecs * 2 if self.caprecs else 16
                grown = <Rec*>realloc(self.recs, size * sizeof(Rec))
                if grown == NULL:
                    raise MemoryError()
                self.recs = grown
                self.caprecs = <int32_t>size
            r = self.nrecs
            self.nrecs += 1
        rec = &self.recs[r]
        Py_INCREF(slot)
        rec.key = <PyObject*>slot
        rec.hash = h
        rec.newest = 0.0
        rec.times = NULL
        rec.big = NULL
        rec.first = 0
        rec.count = 0
        rec.cap = 0
        rec.fired = 0
        i = <Py_ssize_t>(_mix(h) >> 1) & self.mask
        while self.table[i] >= 0:
            i = (i + 1) & self.mask
        if self.table[i] == _EMPTY:
            self.used += 1
        self.table[i] = r
        self.live += 1
        return r

    cdef void _remove(self, int32_t r) noexcept:
        cdef Rec* rec = &self.recs[r]
        cdef Py_ssize_t i = <Py_ssize_t>(_mix(rec.hash) >> 1) & self.mask
        while self.table[i] != r:
            i = (i + 1) & self.mask
        self.table[i] = _TOMB
        self.live -= 1
        self._release(rec)
        rec.first = self.free_head
        self.free_head = r

    cdef Rec* _install(self, object slot, double* block, int32_t size, bint fired) except NULL:
        # The record of ``slot``, in place of the window it had, holding ``block`` (of ``size``
        # times or values, which the caller fills beyond the times) (restore).
        cdef Py_ssize_t h = PyObject_Hash(slot)
        cdef int32_t r = self._find(slot, h)
        cdef Rec* rec
        if r >= 0:
            self._remove(r)
        try:
            r = self._insert(slot, h)
        except BaseException:
            PyMem_Free(block)
            raise
        rec = &self.recs[r]
        rec.times = block
        rec.cap = size
        rec.count = size
        rec.fired = fired
        return rec

    cdef object _record_of(self, Rec* rec):
        # The record of a tracked key's window (the subclass's kind).
        raise NotImplementedError

    cdef int _restore_one(self, object record) except -1:
        # Check ``record`` and take its window (the subclass's kind).
        raise NotImplementedError

    def export(self):
        """Every key's window as a record, for ``restore`` here, in the reference or in another
        process (:meth:`lockoutd.decide.windows.EventWindows.export`)."""
        cdef int32_t r
        for r in range(self.nrecs):
            if self.recs[r].key != NULL:
                yield self._record_of(&self.recs[r])

    def restore(self, records):
        """Take the windows of ``records``, replacing those of their keys; raises
        ``InvalidRecord`` for a record no window could hold, the records before it taken
        (:meth:`lockoutd.decide.windows.EventWindows.restore`)."""
        for record in records:
            self._restore_one(record)

    cdef double _newest_of(self, Rec* rec) noexcept:
        return rec.newest

    cdef int32_t _kept_of(self, Rec* rec) noexcept:
        return rec.count

    cdef int _evicted(self, list slots) except -1:
        return 0

    def forget(self, slot):
        """Drop the window of ``slot`` (a success resets the count)."""
        cdef int32_t r = self._find(slot, PyObject_Hash(slot))
        if r >= 0:
            self._remove(r)

    cdef int _file(self, object slot, double newest) except -1:
        due = (newest + self.window) // _DUE_EVERY_SECONDS
        keys = self._due.get(due)
        if keys is None:
            self._due[due] = {slot: None}
        else:
            (<dict>keys)[slot] = None
        return 0

    def evict_idle(self, double watermark):
        """Forget keys whose every event has left the window ending at ``watermark``."""
        cdef double limit = watermark - self.window, newest
        cdef int32_t r
        now_due = watermark // _DUE_EVERY_SECONDS
        passed = [self._due.pop(due) for due in [due for due in self._due if due <= now_due]]
        if self._floors:
            for due in [due for due in self._floors if due <= now_due]:
                del self._floors[due]
        cdef list idle = []
        cdef set filed_again = set()
        for slots in passed:
            for slot in <dict>slots:
                r = self._find(slot, PyObject_Hash(slot))
                if r < 0 or slot in filed_again:
                    continue
                newest = self._newest_of(&self.recs[r])
                if newest <= limit:
                    self._remove(r)
                    idle.append(slot)
                    continue
                filed_again.add(slot)
                self._file(slot, newest)
        self._evicted(idle)
        return len(idle)

    def filed_minutes(self):
        """The slices of time keys are filed under, whose windows end in them."""
        return list(self._due)

    def shed(self, minute, int rank, Py_ssize_t limit):
        """Forget up to ``limit`` keys of ``rank`` filed under ``minute``, the first filed first
        (see :meth:`lockoutd.decide.windows.Windows.shed`)."""
        cdef int32_t r
        cdef int found, lowest
        cdef Rec* rec
        filed = self._due.get(minute)
        if not filed:
            return 0
        known = self._floors.get(minute)
        if known is not None and known[1] == len(filed) and known[0] > rank:
            return 0
        cdef list gone = [], dead = []
        lowest = _TIERS
        for slot in <dict>filed:
            r = self._find(slot, PyObject_Hash(slot))
            if r < 0:
                dead.append(slot)
                continue
            rec = &self.recs[r]
            found = _tier(self._kept_of(rec), self.threshold, rec.fired)
            if found == rank:
                gone.append(slot)
                if len(gone) == limit:
                    lowest = rank
                    break
            elif found < lowest:
                lowest = found
        for slot in gone:
            del filed[slot]
            self._remove(self._find(slot, PyObject_Hash(slot)))
        for slot in dead:
            del filed[slot]
        self._evicted(gone)
        if filed:
            self._floors[minute] = (lowest, len(filed))
        else:
            del self._due[minute]
            self._floors.pop(minute, None)
        return len(gone)


cdef inline int64_t* _hashes(Rec* rec) noexcept:
    return <int64_t*>(rec.times + rec.cap)


cdef class EventWindows(_Table):
    """Windows that count events (:class:`lockoutd.decide.windows.EventWindows`)."""

    cdef dict _events_by_slot

    def __init__(self, threshold, window, *, keep_events=False):
        _Table.__init__(self, threshold, window, keep_events=keep_events)
        self._events_by_slot = {} if self._keeps else None

    @property
    def _events(self):
        return self._events_by_slot

    cdef double _newest_of(self, Rec* rec) noexcept:
        return rec.times[rec.first + rec.count - 1]

    cdef int _reserve(self, Rec* rec) except -1:
        # Room for one more time after the kept ones: move them to the front, or grow the block.
        cdef int32_t cap, count = rec.count
        cdef double* block
        if rec.first + count < rec.cap:
            return 0
        if rec.first > 0 and rec.first >= count:
            # At least half the block is behind the kept times: moving them is paid for by as
            # many events as they number (a full window drops one time per event).
            memmove(rec.times, rec.times + rec.first, count * sizeof(double))
            memmove(_hashes(rec), _hashes(rec) + rec.first, count * sizeof(int64_t))
            rec.first = 0
            return 0
        cap = rec.cap + 1 if rec.cap < 4 else rec.cap * 2  # most keys keep one to three times
        block = <double*>PyMem_Malloc(cap * 16)
        if block == NULL:
            raise MemoryError()
        memcpy(block, rec.times + rec.first, count * sizeof(double))
        memcpy(<int64_t*>(block + cap), _hashes(rec) + rec.first, count * sizeof(int64_t))
        PyMem_Free(rec.times)
        rec.times = block
        rec.cap = cap
        rec.first = 0
        return 0

    def add(self, slot, double at, event_id, event=None):
        """Count an event of ``slot`` at ``at``; return True when it makes the window fire."""
        cdef Py_ssize_t h = PyObject_Hash(slot)
        cdef int64_t hashed = _NO_ID if event_id is None else PyObject_Hash(event_id)
        cdef int32_t r = self._find(slot, h)
        cdef Rec* rec
        cdef double* times
        cdef int64_t* hashes
        cdef int32_t first, count, index, drop, i, lo, hi, mid
        cdef double newest, start
        cdef bint was_fired
        if r < 0:
            return self._open(slot, h, at, hashed, event)
        rec = &self.recs[r]
        first = rec.first
        count = rec.count
        times = rec.times
        hashes = _hashes(rec)
        newest = times[first + count - 1]
        start = (newest if newest > at else at) - self.window
        if at <= start:
            return False
        if hashed != _NO_ID:
            if rec.big != NULL:
                if hashed in <set>rec.big:
                    return False
            else:
                for i in range(first, first + count):
                    if hashes[i] == hashed:
                        return False
        if at >= newest and count == self.threshold and times[first] > start:
            # The steady state of a key under attack: the newest time pushes out the oldest.
            if rec.big != NULL:
                if hashes[first] != _NO_ID:
                    (<set>rec.big).discard(hashes[first])
                if hashed != _NO_ID:
                    (<set>rec.big).add(hashed)
            rec.first = first + 1
            rec.count = count - 1
            self._reserve(rec)
            times, hashes = rec.times, _hashes(rec)
            times[rec.first + rec.count] = at
            hashes[rec.first + rec.count] = hashed
            rec.count += 1
            if self._keeps:
                self._keep_event(slot, event, self.threshold, 1)
            return False
        self._reserve(rec)
        first, times, hashes = rec.first, rec.times, _hashes(rec)
        if at >= newest:
            index = count
        else:
            lo, hi = 0, count  # bisect_right over the kept times
            while lo < hi:
                mid = (lo + hi) >> 1
                if at < times[first + mid]:
                    hi = mid
                else:
                    lo = mid + 1
            index = lo
            memmove(times + first + index + 1, times + first + index, (count - index) * sizeof(double))
            memmove(hashes + first + index + 1, hashes + first + index, (count - index) * sizeof(int64_t))
        times[first + index] = at
        hashes[first + index] = hashed
        count += 1
        if rec.big != NULL and hashed != _NO_ID:
            (<set>rec.big).add(hashed)
        drop = 0
        while drop < count and times[first + drop] <= start:
            drop += 1
        if count - self.threshold > drop:
            drop = <int32_t>(count - self.threshold)
        if drop:
            if rec.big != NULL:
                for i in range(first, first + drop):
                    if hashes[i] != _NO_ID:
                        (<set>rec.big).discard(hashes[i])
            first += drop
            count -= drop
        rec.first = first if count else 0
        rec.count = count
        if rec.big == NULL and count > _SET_AT:
            big = {hashes[i] for i in range(first, first + count) if hashes[i] != _NO_ID}
            Py_INCREF(big)
            rec.big = <PyObject*>big
        if self._keeps:
            self._keep_event(slot, event, index, drop)
        was_fired = rec.fired
        rec.fired = count >= self.threshold
        return bool(rec.fired and not was_fired)

    cdef object _open(self, object slot, Py_ssize_t h, double at, int64_t hashed, object event):
        self._file(slot, at)
        if self._keeps:
            self._keep_event(slot, event, 0, 0)
        cdef int32_t r = self._insert(slot, h)
        cdef Rec* rec = &self.recs[r]
        self._reserve(rec)
        rec.times[0] = at
        _hashes(rec)[0] = hashed
        rec.count = 1
        rec.fired = self.threshold <= 1
        return bool(rec.fired)

    cdef int _keep_event(self, object slot, object event, Py_ssize_t index, Py_ssize_t drop) except -1:
        cdef list events = self._events_by_slot.get(slot)
        if events is None:
            events = self._events_by_slot[slot] = []
        if event is not None:
            events.insert(index, event)
        if drop:
            del events[:drop]
        return 0

    def forget(self, slot):
        _Table.forget(self, slot)
        if self._keeps:
            self._events_by_slot.pop(slot, None)

    cdef int _evicted(self, list slots) except -1:
        if self._keeps:
            for slot in slots:
                self._events_by_slot.pop(slot, None)
        return 0

    def times(self, slot):
        """The times kept for ``slot``, oldest first (none for an unknown key)."""
        cdef int32_t r = self._find(slot, PyObject_Hash(slot)), i
        if r < 0:
            return []
        cdef Rec* rec = &self.recs[r]
        return [rec.times[i] for i in range(rec.first, rec.first + rec.count)]

    def span(self, slot):
        """``(count, oldest, newest)`` of the times kept for ``slot``, which must be tracked."""
        cdef int32_t r = self._find(slot, PyObject_Hash(slot))
        if r < 0:
            raise IndexError(slot)
        cdef Rec* rec = &self.recs[r]
        return rec.count, rec.times[rec.first], rec.times[rec.first + rec.count - 1]

    def contributors(self, slot):
        """The counted events of ``slot`` (only for windows that keep them)."""
        return tuple(self._events_by_slot.get(slot, ())) if self._keeps else ()

    cdef object _record_of(self, Rec* rec):
        slot = <object>rec.key
        times = [rec.times[i] for i in range(rec.first, rec.first + rec.count)]
        hashes = [_hashes(rec)[i] for i in range(rec.first, rec.first + rec.count)]
        kept = self._events_by_slot.get(slot) if self._keeps else None
        return EventRecord(slot, times, hashes, bool(rec.fired), kept)

    cdef int _restore_one(self, object record) except -1:
        # lockoutd.decide.windows.EventWindows.restore, for one record.
        cdef int32_t size
        cdef Rec* rec
        slot, times, hashes, fired = checked_event_record(record, self.threshold)
        size = <int32_t>len(times)
        rec = self._install(slot, _block(times, hashes, 16), size, fired)
        if size > _SET_AT:
            big = {hashed for hashed in hashes if hashed != _NO_ID}
            Py_INCREF(big)
            rec.big = <PyObject*>big
        self._file(slot, rec.times[size - 1])
        if self._keeps:
            self._events_by_slot[slot] = list(record.events or ())[-size:]
        return 0


# A distinct window's block: times[cap], the hash of each value (compared before the value), the
# values (PyObject*, owned) and, for rules that keep events, the event of each value's newest
# sighting (PyObject*, owned or NULL), in the order the values were first seen since they last
# left: the order the reference's heap breaks ties by.

cdef inline Py_ssize_t* _vhashes(Rec* rec) noexcept:
    return <Py_ssize_t*>(rec.times + rec.cap)


cdef inline PyObject** _values(Rec* rec) noexcept:
    return <PyObject**>(rec.times + 2 * rec.cap)


cdef inline PyObject** _evs(Rec* rec) noexcept:
    return <PyObject**>(rec.times + 2 * rec.cap) + rec.cap


cdef class _SmallDistinctWindows(_Table):
    """Distinct counts of a threshold up to ``_SMALL_DISTINCT``: the values in the record's block,
    found by a scan of their hashes (a few dozen at most)."""

    cdef void _release(self, Rec* rec) noexcept:
        cdef int32_t i
        if rec.times != NULL:
            for i in range(rec.count):
                Py_XDECREF(_values(rec)[i])
                if self._keeps:
                    Py_XDECREF(_evs(rec)[i])
        _Table._release(self, rec)

    cdef int _grow(self, Rec* rec) except -1:
        cdef int32_t cap = rec.cap + 1 if rec.cap < 4 else rec.cap * 2, count = rec.count
        cdef Py_ssize_t width = 32 if self._keeps else 24
        cdef double* block
        if cap > self.threshold + 1:
            cap = <int32_t>(self.threshold + 1)
        block = <double*>PyMem_Malloc(cap * width)
        if block == NULL:
            raise MemoryError()
        memcpy(block, rec.times, count * sizeof(double))
        memcpy(<Py_ssize_t*>(block + cap), _vhashes(rec), count * sizeof(Py_ssize_t))
        memcpy(<PyObject**>(block + 2 * cap), _values(rec), count * sizeof(PyObject*))
        if self._keeps:
            memcpy(<PyObject**>(block + 2 * cap) + cap, _evs(rec), count * sizeof(PyObject*))
        PyMem_Free(rec.times)
        rec.times = block
        rec.cap = cap
        return 0

    cdef void _drop(self, Rec* rec, int32_t i) noexcept:
        # Forget the value at ``i``, keeping the others in order.
        cdef int32_t after = rec.count - i - 1
        Py_XDECREF(_values(rec)[i])
        memmove(rec.times + i, rec.times + i + 1, after * sizeof(double))
        memmove(_vhashes(rec) + i, _vhashes(rec) + i + 1, after * sizeof(Py_ssize_t))
        memmove(_values(rec) + i, _values(rec) + i + 1, after * sizeof(PyObject*))
        if self._keeps:
            Py_XDECREF(_evs(rec)[i])
            memmove(_evs(rec) + i, _evs(rec) + i + 1, after * sizeof(PyObject*))
        rec.count -= 1

    def add(self, slot, double at, value, event=None):
        """Count ``value`` seen at ``at`` for ``slot``; return True when this makes it fire."""
        cdef Py_ssize_t h = PyObject_Hash(slot), vh = PyObject_Hash(value)
        cdef Py_ssize_t* vhashes
        cdef int32_t r = self._find(slot, h), i, pos, oldest
        cdef Rec* rec
        cdef double start, least
        cdef bint was_fired
        kept = event if self._keeps else None
        if r < 0:
            self._file(slot, at)
            r = self._insert(slot, h)
            self.recs[r].newest = at
        rec = &self.recs[r]
        if at > rec.newest:
            rec.newest = at
        start = rec.newest - self.window
        if at <= start:
            return False
        pos = -1
        vhashes = _vhashes(rec)
        for i in range(rec.count):
            if vhashes[i] == vh and (
                _values(rec)[i] == <PyObject*>value
                or PyObject_RichCompareBool(_values(rec)[i], <PyObject*>value, Py_EQ)
            ):
                pos = i
                break
        if pos < 0:
            if rec.count == rec.cap:
                self._grow(rec)
            i = rec.count
            rec.times[i] = at
            _vhashes(rec)[i] = vh
            Py_INCREF(value)
            _values(rec)[i] = <PyObject*>value
            if self._keeps:
                if kept is not None:
                    Py_INCREF(kept)
                    _evs(rec)[i] = <PyObject*>kept
                else:
                    _evs(rec)[i] = NULL
            rec.count += 1
        elif at > rec.times[pos]:
            rec.times[pos] = at
            if self._keeps and kept is not None:
                Py_INCREF(kept)
                Py_XDECREF(_evs(rec)[pos])
                _evs(rec)[pos] = <PyObject*>kept
        if rec.count == 1 and pos >= 0:
            return False  # one value, seen again: nothing else can change
        # Values that left the window go, then the oldest beyond the threshold; of two seen at
        # the same time, the one seen first goes first.
        while rec.count:
            oldest = 0
            least = rec.times[0]
            for i in range(1, rec.count):
                if rec.times[i] < least:
                    least = rec.times[i]
                    oldest = i
            if least > start and rec.count <= self.threshold:
                break
            self._drop(rec, oldest)
        was_fired = rec.fired
        rec.fired = rec.count >= self.threshold
        return bool(rec.fired and not was_fired)

    def values(self, slot):
        """Each value counted for ``slot``, with when it was last seen (empty if not tracked)."""
        cdef int32_t r = self._find(slot, PyObject_Hash(slot)), i
        if r < 0:
            return {}
        cdef Rec* rec = &self.recs[r]
        return {<object>_values(rec)[i]: rec.times[i] for i in range(rec.count)}

    def span(self, slot):
        """``(count, oldest, newest)`` of the sightings counted for ``slot``, which is tracked."""
        cdef int32_t r = self._find(slot, PyObject_Hash(slot)), i
        if r < 0:
            raise KeyError(slot)
        cdef Rec* rec = &self.recs[r]
        cdef double least = rec.times[0]
        for i in range(1, rec.count):
            if rec.times[i] < least:
                least = rec.times[i]
        return rec.count, least, rec.newest

    def contributors(self, slot):
        """The event of each value's latest sighting (only for windows that keep them)."""
        cdef int32_t r = self._find(slot, PyObject_Hash(slot)), i
        if r < 0 or not self._keeps:
            return ()
        cdef Rec* rec = &self.recs[r]
        return tuple(
            [<object>_evs(rec)[i] for i in range(rec.count) if _evs(rec)[i] != NULL]
        )

    cdef object _record_of(self, Rec* rec):
        seen = [(<object>_values(rec)[i], rec.times[i]) for i in range(rec.count)]
        events = None
        if self._keeps:
            events = {
                <object>_values(rec)[i]: <object>_evs(rec)[i]
                for i in range(rec.count)
                if _evs(rec)[i] != NULL
            }
        return DistinctRecord(<object>rec.key, seen, rec.newest, bool(rec.fired), events)

    cdef int _restore_one(self, object record) except -1:
        # lockoutd.decide.windows.DistinctWindows.restore, for one record.
        cdef int32_t i, size
        cdef Rec* rec
        cdef Py_ssize_t width = 32 if self._keeps else 24
        slot, seen, newest, fired, events = checked_distinct_record(record, self.threshold)
        size = <int32_t>len(seen)
        values = list(seen)
        hashes = [PyObject_Hash(value) for value in values]
        kept = [events.get(value) for value in values] if self._keeps else None
        times = [seen[value] for value in values]
        rec = self._install(slot, _block(times, None, width), size, fired)
        for i in range(size):  # nothing here raises: the record is never seen half filled
            value = values[i]
            _vhashes(rec)[i] = hashes[i]
            Py_INCREF(value)
            _values(rec)[i] = <PyObject*>value
            if self._keeps:
                event = kept[i]
                if event is None:
                    _evs(rec)[i] = NULL
                else:
                    Py_INCREF(event)
                    _evs(rec)[i] = <PyObject*>event
        rec.newest = newest
        self._file(slot, newest)
        return 0


def DistinctWindows(threshold, window, *, keep_events=False):
    """Windows that count the distinct values of one field
    (:class:`lockoutd.decide.windows.DistinctWindows`): compiled up to ``_SMALL_DISTINCT``."""
    if threshold <= _SMALL_DISTINCT:
        return _SmallDistinctWindows(threshold, window, keep_events=keep_events)
    return _reference.DistinctWindows(threshold, window, keep_events=keep_events)
