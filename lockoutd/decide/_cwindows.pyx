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
hashes beside the block (a scan of thousands of hashes per event would be most of its cost). A
distinct window keeps its values linked in the order they leave, and once it has room for more
than ``_SCAN_UP_TO`` an index of their hashes (fewer are found by a scan of the hashes, which
costs less than an index's memory at a million keys): a spray keeps the window full, and each
new value costs a probe, a link and the unlinking of the value seen longest ago, whatever the
threshold.

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


# A distinct window's block: a header, then per slot (a value's place, kept while it is counted)
# when it was last seen, its order (how many values the key had counted when it came: of two
# values seen at the same time, the lower order goes first, as in the reference's heap), its
# hash, the value and, for rules that keep events, the event of its newest sighting (owned or
# NULL), then the links of the list of values in the order they leave (seen longest ago first),
# and last, once the block has room for more than _SCAN_UP_TO values, an index from value hash to
# slot (open addressing, linear probing, at most half full).

cdef int32_t _SCAN_UP_TO = 32


cdef struct _DHead:
    int64_t orders   # the values ever counted: the order of the last one
    int32_t first    # the slot to leave first, -1 if none
    int32_t last     # the slot seen last (by time, then order)
    int32_t free     # the first free slot, the others chained through ``after``
    int32_t indexed  # slots of the index; 0 while values are found by a scan


cdef struct _DView:
    _DHead* head
    double* times
    int64_t* orders
    Py_ssize_t* vhashes
    PyObject** values
    PyObject** evs     # NULL unless the rule keeps events
    int32_t* before
    int32_t* after
    int32_t* index


cdef inline Py_ssize_t _dbytes(Py_ssize_t cap, Py_ssize_t indexed, bint keeps) noexcept:
    return sizeof(_DHead) + cap * (40 + (8 if keeps else 0)) + indexed * 4


cdef inline int32_t _dindexed(int32_t cap) noexcept:
    cdef int32_t size = 16
    if cap <= _SCAN_UP_TO:
        return 0
    while size < 2 * cap:
        size *= 2
    return size


cdef inline _DView _dview(double* block, Py_ssize_t cap, bint keeps) noexcept:
    cdef _DView v
    cdef char* at = <char*>block
    v.head = <_DHead*>at
    at += sizeof(_DHead)
    v.times = <double*>at
    at += cap * 8
    v.orders = <int64_t*>at
    at += cap * 8
    v.vhashes = <Py_ssize_t*>at
    at += cap * 8
    v.values = <PyObject**>at
    at += cap * 8
    v.evs = NULL
    if keeps:
        v.evs = <PyObject**>at
        at += cap * 8
    v.before = <int32_t*>at
    at += cap * 4
    v.after = <int32_t*>at
    at += cap * 4
    v.index = <int32_t*>at
    return v


cdef inline Py_ssize_t _dhome(Py_ssize_t vh, int32_t indexed) noexcept:
    return <Py_ssize_t>(_mix(vh) >> 32) & (indexed - 1)


cdef inline void _dindex_add(_DView* v, int32_t s) noexcept:
    cdef int32_t indexed = v.head.indexed
    cdef Py_ssize_t j = _dhome(v.vhashes[s], indexed)
    while v.index[j] >= 0:
        j = (j + 1) & (indexed - 1)
    v.index[j] = s


cdef inline void _dindex_remove(_DView* v, int32_t s) noexcept:
    # Backward-shift deletion: every slot after the hole that may sit there moves up, so that
    # a probe never stops early and no tombstones pile up in a window that turns over all day.
    cdef int32_t indexed = v.head.indexed, moved
    cdef Py_ssize_t mask = indexed - 1
    cdef Py_ssize_t i = _dhome(v.vhashes[s], indexed), j, home
    while v.index[i] != s:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        moved = v.index[j]
        if moved < 0:
            break
        home = _dhome(v.vhashes[moved], indexed)
        if (i <= j and (home <= i or home > j)) or (i > j and home <= i and home > j):
            v.index[i] = moved
            i = j
    v.index[i] = -1


cdef inline void _dunlink(_DView* v, int32_t s) noexcept:
    cdef int32_t before = v.before[s], after = v.after[s]
    if before >= 0:
        v.after[before] = after
    else:
        v.head.first = after
    if after >= 0:
        v.before[after] = before
    else:
        v.head.last = before


cdef inline void _dplace(_DView* v, int32_t s) noexcept:
    # Link ``s`` where it leaves: after every value seen before it, or at the same time with a
    # lower order. Found from the newest end: events come about in order, so the walk is short.
    cdef double at = v.times[s]
    cdef int64_t order = v.orders[s]
    cdef int32_t c = v.head.last, after
    while c >= 0 and (v.times[c] > at or (v.times[c] == at and v.orders[c] > order)):
        c = v.before[c]
    v.before[s] = c
    if c >= 0:
        after = v.after[c]
        v.after[c] = s
    else:
        after = v.head.first
        v.head.first = s
    v.after[s] = after
    if after >= 0:
        v.before[after] = s
    else:
        v.head.last = s


cdef inline int32_t _dfind(_DView* v, Py_ssize_t cap, object value, Py_ssize_t vh) except -2:
    cdef int32_t s, indexed = v.head.indexed
    cdef Py_ssize_t j
    cdef PyObject* held
    if indexed == 0:
        for s in range(cap):  # a free slot's hash is stale: it is free if its value is NULL
            if v.vhashes[s] == vh:
                held = v.values[s]
                if held != NULL and (
                    held == <PyObject*>value
                    or PyObject_RichCompareBool(held, <PyObject*>value, Py_EQ)
                ):
                    return s
        return -1
    j = _dhome(vh, indexed)
    while True:
        s = v.index[j]
        if s < 0:
            return -1
        held = v.values[s]
        if v.vhashes[s] == vh and (
            held == <PyObject*>value or PyObject_RichCompareBool(held, <PyObject*>value, Py_EQ)
        ):
            return s
        j = (j + 1) & (indexed - 1)


cdef double* _dblock(Py_ssize_t cap, bint keeps) except NULL:
    # An empty block of ``cap`` free slots.
    cdef int32_t indexed = _dindexed(<int32_t>cap), s
    cdef double* block = <double*>PyMem_Malloc(_dbytes(cap, indexed, keeps))
    cdef _DView v
    if block == NULL:
        raise MemoryError()
    v = _dview(block, cap, keeps)
    v.head.orders = 0
    v.head.first = -1
    v.head.last = -1
    v.head.free = 0 if cap else -1
    v.head.indexed = indexed
    for s in range(cap):
        v.values[s] = NULL
        if keeps:
            v.evs[s] = NULL
        v.after[s] = s + 1 if s + 1 < cap else -1
    for s in range(indexed):
        v.index[s] = -1
    return block


cdef class DistinctWindows(_Table):
    """Windows that count the distinct values of one field
    (:class:`lockoutd.decide.windows.DistinctWindows`), of any threshold: a value is found
    through the index of its block, and the one to leave first is at the head of its list."""

    cdef dict _unsettled

    def __init__(self, threshold, window, *, keep_events=False):
        _Table.__init__(self, threshold, window, keep_events=keep_events)
        self._unsettled = {}

    cdef void _release(self, Rec* rec) noexcept:
        cdef int32_t s
        cdef _DView v
        if rec.times != NULL:
            v = _dview(rec.times, rec.cap, self._keeps)
            for s in range(rec.cap):
                if v.values[s] != NULL:
                    Py_XDECREF(v.values[s])
                    if self._keeps:
                        Py_XDECREF(v.evs[s])
        _Table._release(self, rec)

    cdef int _grow(self, Rec* rec) except -1:
        # Room for one more value: a block one slot larger while small (most keys, an address,
        # hold a few values), twice as large beyond, up to one more than the threshold (as many
        # as a window holds before the value seen longest ago leaves); the same slots.
        cdef Py_ssize_t cap = rec.cap + 1 if rec.cap < 4 else rec.cap * 2, old = rec.cap, s
        cdef double* block
        cdef _DView v, was
        if cap > self.threshold + 1:
            cap = self.threshold + 1
        block = _dblock(cap, self._keeps)
        v = _dview(block, cap, self._keeps)
        was = _dview(rec.times, old, self._keeps)
        memcpy(v.times, was.times, old * sizeof(double))
        memcpy(v.orders, was.orders, old * sizeof(int64_t))
        memcpy(v.vhashes, was.vhashes, old * sizeof(Py_ssize_t))
        memcpy(v.values, was.values, old * sizeof(PyObject*))
        if self._keeps:
            memcpy(v.evs, was.evs, old * sizeof(PyObject*))
        memcpy(v.before, was.before, old * sizeof(int32_t))
        memcpy(v.after, was.after, old * sizeof(int32_t))
        v.head.orders = was.head.orders
        v.head.first = was.head.first
        v.head.last = was.head.last
        v.head.free = <int32_t>old if old < cap else -1  # a full block had no free slot
        if v.head.indexed:
            for s in range(old):
                if v.values[s] != NULL:
                    _dindex_add(&v, <int32_t>s)
        PyMem_Free(rec.times)
        rec.times = block
        rec.cap = <int32_t>cap
        return 0

    cdef void _drop(self, Rec* rec, _DView* v, int32_t s) noexcept:
        # Forget the value in slot ``s``.
        _dunlink(v, s)
        if v.head.indexed:
            _dindex_remove(v, s)
        Py_XDECREF(v.values[s])
        v.values[s] = NULL
        if self._keeps:
            Py_XDECREF(v.evs[s])
            v.evs[s] = NULL
        v.after[s] = v.head.free
        v.head.free = s
        rec.count -= 1

    def add(self, slot, double at, value, event=None):
        """Count ``value`` seen at ``at`` for ``slot``; return True when this makes it fire."""
        cdef Py_ssize_t h = PyObject_Hash(slot), vh = PyObject_Hash(value)
        cdef int32_t r = self._find(slot, h), s
        cdef Rec* rec
        cdef _DView v
        cdef double start
        cdef bint was_fired
        kept = event if self._keeps else None
        if r < 0:
            self._file(slot, at)
            r = self._insert(slot, h)
            rec = &self.recs[r]
            rec.newest = at
            try:
                rec.times = _dblock(1, self._keeps)
            except MemoryError:
                self._remove(r)
                raise
            rec.cap = 1
        rec = &self.recs[r]
        if at > rec.newest:
            rec.newest = at
        start = rec.newest - self.window
        if at <= start:
            return False
        v = _dview(rec.times, rec.cap, self._keeps)
        s = _dfind(&v, rec.cap, value, vh)
        if s < 0:
            if not rec.fired and rec.count >= self.threshold:
                self._unsettled.pop(slot, None)  # a new value settles it (see _restore_one)
            if rec.count == rec.cap:
                self._grow(rec)
                v = _dview(rec.times, rec.cap, self._keeps)
            s = v.head.free
            v.head.free = v.after[s]
            v.times[s] = at
            v.head.orders += 1
            v.orders[s] = v.head.orders
            v.vhashes[s] = vh
            Py_INCREF(value)
            v.values[s] = <PyObject*>value
            if self._keeps:
                if kept is not None:
                    Py_INCREF(kept)
                    v.evs[s] = <PyObject*>kept
                else:
                    v.evs[s] = NULL
            if v.head.indexed:
                _dindex_add(&v, s)
            _dplace(&v, s)
            rec.count += 1
        else:
            if at > v.times[s]:
                v.times[s] = at
                _dunlink(&v, s)
                _dplace(&v, s)
                if self._keeps and kept is not None:
                    Py_INCREF(kept)
                    Py_XDECREF(v.evs[s])
                    v.evs[s] = <PyObject*>kept
            if not rec.fired and rec.count >= self.threshold:
                # A restored window, full but not fired: the reference decides again only once
                # a value it holds from the record may have left (see _restore_one).
                floor = self._unsettled.get(slot)
                if floor is not None and <double>floor > start:
                    return False
                self._unsettled.pop(slot, None)
        # Values that left the window go, then the one seen longest ago beyond the threshold.
        while v.head.first >= 0 and v.times[v.head.first] <= start:
            self._drop(rec, &v, v.head.first)
        while rec.count > self.threshold:
            self._drop(rec, &v, v.head.first)
        was_fired = rec.fired
        rec.fired = rec.count >= self.threshold
        return bool(rec.fired and not was_fired)

    cdef list _slots(self, Rec* rec):
        # The slots of the values, in the order they were first counted (the reference's dict).
        cdef _DView v = _dview(rec.times, rec.cap, self._keeps)
        cdef int32_t s = v.head.first
        cdef list held = []
        while s >= 0:
            held.append((v.orders[s], s))
            s = v.after[s]
        held.sort()
        return [s for _, s in held]

    cdef Rec* _tracked(self, object slot) except? NULL:
        cdef int32_t r = self._find(slot, PyObject_Hash(slot))
        return &self.recs[r] if r >= 0 else NULL

    def values(self, slot):
        """Each value counted for ``slot``, with when it was last seen (empty if not tracked)."""
        cdef Rec* rec = self._tracked(slot)
        if rec == NULL:
            return {}
        cdef _DView v = _dview(rec.times, rec.cap, self._keeps)
        return {<object>v.values[s]: v.times[s] for s in self._slots(rec)}

    def span(self, slot):
        """``(count, oldest, newest)`` of the sightings counted for ``slot``, which is tracked."""
        cdef Rec* rec = self._tracked(slot)
        if rec == NULL:
            raise KeyError(slot)
        cdef _DView v = _dview(rec.times, rec.cap, self._keeps)
        return rec.count, v.times[v.head.first], rec.newest

    def contributors(self, slot):
        """The event of each value's latest sighting (only for windows that keep them)."""
        if not self._keeps:
            return ()
        cdef Rec* rec = self._tracked(slot)
        if rec == NULL:
            return ()
        cdef _DView v = _dview(rec.times, rec.cap, self._keeps)
        return tuple([<object>v.evs[s] for s in self._slots(rec) if v.evs[s] != NULL])

    cdef object _record_of(self, Rec* rec):
        cdef _DView v = _dview(rec.times, rec.cap, self._keeps)
        cdef list slots = self._slots(rec)
        seen = [(<object>v.values[s], v.times[s]) for s in slots]
        events = None
        if self._keeps:
            events = {<object>v.values[s]: <object>v.evs[s] for s in slots if v.evs[s] != NULL}
        return DistinctRecord(<object>rec.key, seen, rec.newest, bool(rec.fired), events)

    cdef int _restore_one(self, object record) except -1:
        # lockoutd.decide.windows.DistinctWindows.restore, for one record. The values take the
        # orders 1.. in the record's order, as the reference's heap numbers them.
        cdef int32_t s, size
        cdef Rec* rec
        cdef _DView v
        cdef double* block
        slot, seen, newest, fired, events = checked_distinct_record(record, self.threshold)
        size = <int32_t>len(seen)
        values = list(seen)
        times = [<double>seen[value] for value in values]
        hashes = [PyObject_Hash(value) for value in values]
        kept = [events.get(value) for value in values] if self._keeps else None
        leaving = sorted(range(size), key=times.__getitem__)  # stable: ties by order
        block = _dblock(size, self._keeps)
        rec = self._install(slot, block, size, fired)
        v = _dview(block, size, self._keeps)
        for s in range(size):  # nothing here raises: the record is never seen half filled
            value = values[s]
            v.times[s] = times[s]
            v.orders[s] = s + 1
            v.vhashes[s] = hashes[s]
            Py_INCREF(value)
            v.values[s] = <PyObject*>value
            if self._keeps:
                event = kept[s]
                if event is not None:
                    Py_INCREF(event)
                    v.evs[s] = <PyObject*>event
            if v.head.indexed:
                _dindex_add(&v, s)
        v.head.orders = size
        v.head.free = -1
        v.head.first = leaving[0]
        v.head.last = leaving[size - 1]
        for s in range(size):
            v.before[<int32_t>leaving[s]] = leaving[s - 1] if s > 0 else -1
            v.after[<int32_t>leaving[s]] = leaving[s + 1] if s + 1 < size else -1
        rec.newest = newest
        # A window restored full but not fired (its threshold lowered since it was written)
        # fires on its next new value, or once a sighting it holds from the record may have
        # left the window: until then a value seen again does not decide anew, as in the
        # reference, whose heap then still shows the record's oldest time.
        if not fired and size >= self.threshold:
            self._unsettled[slot] = min(times)
        else:
            self._unsettled.pop(slot, None)
        self._file(slot, newest)
        return 0

    def forget(self, slot):
        _Table.forget(self, slot)
        self._unsettled.pop(slot, None)

    cdef int _evicted(self, list slots) except -1:
        if self._unsettled:
            for slot in slots:
                self._unsettled.pop(slot, None)
        return 0
