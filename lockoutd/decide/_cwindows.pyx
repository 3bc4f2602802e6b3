# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The compiled windows: the same rules, API and eviction order as :mod:`lockoutd.decide.windows`
(the reference, and the fallback without a compiler), in compact memory.

Per rule, one open-addressing table maps a key's hash to a record in one array of records; a
record holds the key (its UTF-8 bytes), the kept times and id hashes (or distinct values) in one
block of C memory, and whether the window fired. No Python object per key: at a million keys the
cost of a key is its table entry, its record and its block, not a str, a dict entry and a window
object; a key becomes a str again only where the API gives keys out. The idle sweep and the
bound's ranks read a filing kept in C arrays in the order of the reference's (``_due``), and the
same ``_floors``, so that keys are forgotten in the same order.

Large windows: a window of events that keeps more than ``_SET_AT`` times keeps a hash set of its
id hashes beside the block (a scan of thousands of hashes per event would be most of its cost),
in C memory (``_IdSet``): a full window checks, drops and adds an id with every event, and a
Python set of ints costs an int object and a call for each. A distinct window keeps its values
linked in the order they leave, and once it has room for more than ``_SCAN_UP_TO`` an index of
their hashes (fewer are found by a scan of the hashes, which costs less than an index's memory
at a million keys): a spray keeps the window full, and each new value costs a probe, a link and
the unlinking of the value seen longest ago, whatever the threshold.

Checkpoints: ``export`` gives the reference's records (``EventRecord``, ``DistinctRecord``) and
``restore`` takes them through the reference's checks, so that a checkpoint written by either
implementation is restored alike by the other (the instances of a group may run different builds).
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.math cimport copysign, floor, fmod
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove, memset

from lockoutd.decide import windows as _reference
from lockoutd.decide.windows import (
    KEPT_EVENTS_BYTES,
    DistinctRecord,
    EventRecord,
    checked_distinct_record,
    checked_event_record,
    evidence_bytes,
)

cdef extern from "Python.h":
    Py_ssize_t PyObject_Hash(object o) except -1
    int PyObject_RichCompareBool(PyObject* a, PyObject* b, int op) except -1
    int Py_EQ
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL
    bint PyUnicode_IS_COMPACT_ASCII(object text)
    void* PyUnicode_DATA(object text)
    Py_ssize_t PyUnicode_GET_LENGTH(object text)

cdef extern from *:
    void __builtin_prefetch(const void* address) noexcept nogil

cdef extern from "<stdlib.h>":
    void* aligned_alloc(size_t alignment, size_t size) noexcept nogil

cdef int64_t _NO_ID = -1
cdef int _SET_AT = 64
cdef int32_t _EMPTY = -1
cdef int32_t _TOMB = -2
cdef double _DUE_EVERY_SECONDS = 60.0
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


cdef uint8_t _KEY_OUT = 255  # klen of a key kept out of line: [Py_ssize_t length][bytes]
# Rec.flags
cdef uint8_t _USED = 1       # the record holds a key (a live window, or a ghost)
cdef uint8_t _GHOST = 2      # the key's window is gone but the key is still filed (see _remove)
cdef uint8_t _TUPLE = 4      # the key is a tuple of str, its fields length-prefixed
cdef uint8_t _SWEPT = 8      # filed again by the sweep under way
cdef uint8_t _SHED = 16      # leaves the minute a shed round reads
cdef uint8_t _ONE = 32       # events: the one time kept is ``newest``, its id hash in ``big``
cdef uint8_t _NUMBER = 64    # the key is a str of digits kept as its number (see _digits)


cdef inline uint32_t _mix(Py_ssize_t h) noexcept:
    return <uint32_t>(((<uint64_t>h) * <uint64_t>0x9E3779B97F4A7C15ULL) >> 32)


# The id hashes of a large window of events: open addressing with linear probing, at least half
# free, so that a probe ends soon; a free slot holds _NO_ID (never held: such times have no id).
# Each id hash is held once, as a set (times of one id are refused while one is kept; a restored
# record that repeats one is taken as the reference's set takes it). Deletion shifts the entries
# after the deleted one back instead of leaving a tombstone: a full window deletes with every
# event, and tombstones would fill the table. (The struct, as Rec and the classes' fields, is
# declared in _cwindows.pxd, where the compiled rule loop reads it.)
cdef inline int64_t* _ids(_IdSet* s) noexcept:
    return <int64_t*>(s + 1)


cdef _IdSet* _idset_new(Py_ssize_t room) noexcept:
    # A set with room for ``room`` id hashes at most half full; NULL without memory.
    cdef Py_ssize_t size = 16
    while size < 2 * room:
        size <<= 1
    cdef _IdSet* s = <_IdSet*>PyMem_Malloc(sizeof(_IdSet) + size * sizeof(int64_t))
    if s == NULL:
        return NULL
    s.mask = size - 1
    s.held = 0
    memset(_ids(s), 0xFF, size * sizeof(int64_t))  # every slot _NO_ID (all bits set)
    return s


cdef inline bint _idset_has(_IdSet* s, int64_t hashed) noexcept:
    cdef int64_t* ids = _ids(s)
    cdef int64_t i = _mix(hashed) & s.mask  # _mix gives the product's upper 32 bits
    while ids[i] != hashed:
        if ids[i] == _NO_ID:
            return False
        i = (i + 1) & s.mask
    return True


cdef inline void _idset_put(_IdSet* s, int64_t hashed) noexcept:
    # Adds ``hashed`` (not _NO_ID) if absent; the caller keeps the set at most half full.
    cdef int64_t* ids = _ids(s)
    cdef int64_t i = _mix(hashed) & s.mask
    while ids[i] != _NO_ID:
        if ids[i] == hashed:
            return
        i = (i + 1) & s.mask
    ids[i] = hashed
    s.held += 1


cdef inline Py_ssize_t _idset_bytes(_IdSet* s) noexcept:
    return 0 if s == NULL else <Py_ssize_t>sizeof(_IdSet) + (s.mask + 1) * <Py_ssize_t>sizeof(int64_t)


cdef _IdSet* _idset_grown(_IdSet* s, Py_ssize_t room) noexcept:
    # ``s`` (freed) as a set with room for ``room``; NULL without memory (``s`` kept then).
    cdef _IdSet* grown = _idset_new(room)
    cdef int64_t i
    if grown == NULL:
        return NULL
    for i in range(s.mask + 1):
        if _ids(s)[i] != _NO_ID:
            _idset_put(grown, _ids(s)[i])
    PyMem_Free(s)
    return grown


cdef inline void _idset_discard(_IdSet* s, int64_t hashed) noexcept:
    cdef int64_t* ids = _ids(s)
    cdef int64_t mask = s.mask
    cdef int64_t hole = _mix(hashed) & mask, j, home
    while ids[hole] != hashed:
        if ids[hole] == _NO_ID:
            return
        hole = (hole + 1) & mask
    # Later entries of the run that may sit in the hole (their home is not between the hole and
    # them) move back into it, so that no probe for them meets a free slot before them.
    j = hole
    while True:
        j = (j + 1) & mask
        if ids[j] == _NO_ID:
            break
        home = _mix(ids[j]) & mask
        if ((j - home) & mask) >= ((j - hole) & mask):
            ids[hole] = ids[j]
            hole = j
    ids[hole] = _NO_ID
    s.held -= 1


cdef Rec _layout
# A window of one time is the block [newest, big] inside its record (see EventWindows._open).
assert <char*>&_layout.big - <char*>&_layout.newest == sizeof(double)
# A record is one cache line, and the array of records is aligned on them (see _insert).
assert sizeof(Rec) == 64


cdef inline bint _digits(const char* data, Py_ssize_t size, uint64_t* number) noexcept:
    # Whether ``data`` is a str of one to 19 ASCII digits without a leading zero (every ZITADEL
    # user id, 18 of them): its number then says it exactly, in 8 bytes rather than its text
    # (keys, and values' cells).
    cdef uint64_t value = 0
    cdef uint8_t digit
    cdef Py_ssize_t i
    if size < 1 or size > 19 or (data[0] == b'0' and size > 1):
        return False
    for i in range(size):
        digit = <uint8_t>data[i] - 48
        if digit > 9:
            return False
        value = value * 10 + digit
    number[0] = value
    return True


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


cdef inline double _floordiv(double vx, double wx) noexcept:
    # Python's float ``vx // wx``: the reference files keys by it, and a minute must match.
    cdef double mod = fmod(vx, wx), div, result
    div = (vx - mod) / wx
    if mod:
        if (wx < 0) != (mod < 0):
            mod += wx
            div -= 1.0
    if div:
        result = floor(div)
        if div - result > 0.5:
            result += 1.0
    else:
        result = copysign(0.0, vx / wx)
    return result


cdef inline char* _key_bytes(Rec* rec, Py_ssize_t* size) noexcept:
    cdef char* held
    if rec.klen != _KEY_OUT:
        size[0] = rec.klen
        return rec.key
    memcpy(&held, rec.key, sizeof(char*))
    size[0] = (<Py_ssize_t*>held)[0]
    return held + sizeof(Py_ssize_t)


cdef inline Py_ssize_t _put_size(char* out, Py_ssize_t n) noexcept:
    # ``n`` in 7-bit groups, the low first, each but the last with its high bit set.
    cdef Py_ssize_t at = 0
    while n >= 0x80:
        out[at] = <char>((n & 0x7F) | 0x80)
        n >>= 7
        at += 1
    out[at] = <char>n
    return at + 1


cdef inline Py_ssize_t _get_size(const char* data, Py_ssize_t* n) noexcept:
    cdef Py_ssize_t at = 0, shift = 0, value = 0
    cdef uint8_t byte
    while True:
        byte = <uint8_t>data[at]
        value |= <Py_ssize_t>(byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            break
        shift += 7
    n[0] = value
    return at


cdef class _Table:
    """The keys of one rule: records and the table from key hash to record, and the filing.

    A key is held as its UTF-8 bytes (a key of several fields as its fields, each after its
    length), in its record when short: no Python object per key. The filing of keys under the
    minute their window ends (the reference's ``_due``: a dict of keys per minute) is an array
    of records per minute, in the reference's order. A key the reference still has filed after
    its window went (forgotten, evicted by the bound) keeps its record as a ghost, without a
    window, so that the key counted again is the one filed there, in its place; the ghost goes
    when no minute holds it any more."""

    def __init__(self, threshold, window, *, keep_events=False):
        self.threshold = threshold
        self.window = window
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
        self.held = 0
        self.nbytes = 0
        self._minutes = {}
        self.mins = NULL
        self.nmins = 0
        self.capmins = 0
        self._free_mins = []
        self._last_minute = -1
        self._more_filings = {}
        self._pending = False
        self._scratch = NULL
        self._scratch_cap = 0
        self._swept = NULL
        self._nswept = 0
        self._capswept = 0

    def __dealloc__(self):
        cdef int32_t r
        if self.recs != NULL:
            for r in range(self.nrecs):
                if self.recs[r].flags & _USED:
                    if not self.recs[r].flags & _GHOST:
                        self._release(&self.recs[r])
                    self._drop_key(&self.recs[r])
            free(self.recs)
        if self.mins != NULL:
            for r in range(self.nmins):
                free(self.mins[r].recs)
            free(self.mins)
        free(self.table)
        free(self._scratch)
        free(self._swept)

    cdef void _release(self, Rec* rec) noexcept:
        # Frees the window the record holds (the subclass's block), not its key.
        if rec.flags & _ONE:
            rec.flags &= ~_ONE
        else:
            if rec.times != NULL:
                self.nbytes -= self._block_bytes(rec) + _idset_bytes(rec.big)
            PyMem_Free(rec.big)
            PyMem_Free(rec.times)
        rec.big = NULL
        rec.times = NULL

    cdef Py_ssize_t _block_bytes(self, Rec* rec) noexcept:
        # The bytes of the record's block (a window of events': times and id hashes).
        return rec.cap * 16

    def held_bytes(self):
        """About how many bytes the windows hold: each key's record and table places, its
        filings, its block, its key and values kept out of line, and its kept events
        (:meth:`lockoutd.decide.windows.Windows.held_bytes`).

        What keys hold, not what the arrays have room for: the array of records and the table
        keep the size of the most keys they held (as an allocator keeps memory it was given
        back), and forgetting keys cannot make them smaller, so a bound that counted their room
        would forget every key after a flood had passed."""
        cdef Py_ssize_t total = self.nbytes, m
        total += self.held * <Py_ssize_t>(sizeof(Rec) + 2 * sizeof(int32_t))
        for m in range(self.nmins):
            total += self.mins[m].n * <Py_ssize_t>sizeof(int32_t)
        return total

    cdef void _drop_key(self, Rec* rec) noexcept:
        cdef char* held
        if rec.klen == _KEY_OUT:
            memcpy(&held, rec.key, sizeof(char*))
            self.nbytes -= <Py_ssize_t>sizeof(Py_ssize_t) + (<Py_ssize_t*>held)[0]
            PyMem_Free(held)
        rec.klen = 0
        rec.flags = 0

    # Prefetching: the compiled rule loop (_cdispatch.pyx) asks for the memory of every rule's
    # key before it counts the event in any of them, so that the cache misses of a dozen tables
    # overlap instead of following one another. A hint only: nothing is read that may be stale.

    cdef void prefetch_place(self, Py_ssize_t h) noexcept:
        # The table entry where a key of hash ``h`` is looked up first.
        __builtin_prefetch(&self.table[_mix(h) & self.mask])

    cdef void prefetch_record(self, Py_ssize_t h) noexcept:
        # The record that entry names (most keys are found there), once the entry is in cache.
        cdef int32_t r = self.table[_mix(h) & self.mask]
        cdef char* rec
        if r >= 0:
            rec = <char*>&self.recs[r]
            __builtin_prefetch(rec)
            __builtin_prefetch(rec + sizeof(Rec) - 1)

    cdef void prefetch_window(self, Py_ssize_t h) noexcept:
        # What counting reads beyond that record, once the record is in cache: its key when
        # kept out of line, and its window's block (the subclass's ``_prefetch_block``).
        cdef int32_t r = self.table[_mix(h) & self.mask]
        cdef Rec* rec
        cdef char* held
        if r >= 0:
            rec = &self.recs[r]
            if rec.hash != _mix(h):
                return
            if rec.klen == _KEY_OUT:
                memcpy(&held, rec.key, sizeof(char*))
                __builtin_prefetch(held)
            if rec.times != NULL:
                self._prefetch_block(rec)

    cdef void _prefetch_block(self, Rec* rec) noexcept:
        pass

    # Keys as bytes.

    cdef int _encode(self, object slot) except -1:
        # ``slot`` as the bytes a record holds (``_kp``, ``_kn``, ``_ktag``); 1 for a slot that
        # no key can be (neither a str nor a tuple of str).
        cdef Py_ssize_t n, size, total, i, count
        cdef const char* text
        cdef char* out
        if isinstance(slot, str):
            self._kp = self._utf8(slot, &self._kn)
            self._ktag = 0
            if _digits(self._kp, self._kn, &self._knum):
                self._kp = <const char*>&self._knum
                self._kn = sizeof(uint64_t)
                self._ktag = _NUMBER
            return 0
        if not isinstance(slot, tuple):
            return 1
        count = len(<tuple>slot)
        total = 0
        for i in range(count):
            field = (<tuple>slot)[i]
            if not isinstance(field, str):
                return 1
            self._utf8(field, &n)
            total += n + 10
        self._room(total)
        out = self._scratch
        size = 0
        for i in range(count):
            text = self._utf8((<tuple>slot)[i], &n)
            size += _put_size(out + size, n)
            memcpy(out + size, text, n)
            size += n
        self._kp = out
        self._kn = size
        self._ktag = _TUPLE
        self._kheld = None
        return 0

    cdef const char* _utf8(self, object text, Py_ssize_t* size) except NULL:
        # The UTF-8 of a str (a lone surrogate passed through, as the key's decoding takes it).
        cdef const char* data
        if PyUnicode_IS_COMPACT_ASCII(text):  # most keys: their text is their UTF-8
            size[0] = PyUnicode_GET_LENGTH(text)
            return <const char*>PyUnicode_DATA(text)
        try:
            data = PyUnicode_AsUTF8AndSize(text, size)
        except UnicodeEncodeError:
            self._kheld = (<str>text).encode("utf-8", "surrogatepass")
            size[0] = len(<bytes>self._kheld)
            data = <bytes>self._kheld
        return data

    cdef int _room(self, Py_ssize_t size) except -1:
        cdef char* grown
        if size > self._scratch_cap:
            grown = <char*>realloc(self._scratch, size)
            if grown == NULL:
                raise MemoryError()
            self._scratch = grown
            self._scratch_cap = size
        return 0

    cdef object _slot(self, Rec* rec):
        # The key of a record as the API gives it: a str, or a tuple of str.
        cdef Py_ssize_t size, at = 0, n
        cdef uint64_t number
        cdef char* data = _key_bytes(rec, &size)
        if rec.flags & _NUMBER:
            memcpy(&number, data, sizeof(uint64_t))
            return str(number)
        if not rec.flags & _TUPLE:
            return PyUnicode_DecodeUTF8(data, size, "surrogatepass")
        fields = []
        while at < size:
            at += _get_size(data + at, &n)
            fields.append(PyUnicode_DecodeUTF8(data + at, n, "surrogatepass"))
            at += n
        return tuple(fields)

    cdef bint _holds(self, Rec* rec, uint32_t mixed) noexcept:
        # Whether ``rec`` holds the key last encoded, whose mixed hash is ``mixed``.
        cdef Py_ssize_t size
        cdef char* data
        if rec.hash != mixed or (rec.flags & (_TUPLE | _NUMBER)) != self._ktag:
            return False
        data = _key_bytes(rec, &size)
        return size == self._kn and memcmp(data, self._kp, size) == 0

    cdef int _store_key(self, Rec* rec) except -1:
        cdef char* held
        if self._kn <= _KEY_INLINE:
            memcpy(rec.key, self._kp, self._kn)
            rec.klen = <uint8_t>self._kn
            return 0
        held = <char*>PyMem_Malloc(sizeof(Py_ssize_t) + self._kn)
        if held == NULL:
            raise MemoryError()
        (<Py_ssize_t*>held)[0] = self._kn
        memcpy(held + sizeof(Py_ssize_t), self._kp, self._kn)
        memcpy(rec.key, &held, sizeof(char*))
        rec.klen = _KEY_OUT
        self.nbytes += <Py_ssize_t>sizeof(Py_ssize_t) + self._kn
        return 0

    def __len__(self):
        return self.live

    def __contains__(self, slot):
        return self._find(slot, PyObject_Hash(slot)) >= 0

    def __iter__(self):
        cdef int32_t r
        keys = []
        for r in range(self.nrecs):
            if self.recs[r].flags & (_USED | _GHOST) == _USED:
                keys.append(self._slot(&self.recs[r]))
        return iter(keys)

    cdef int32_t _lookup(self, object slot, Py_ssize_t h) except -3:
        # The record holding ``slot``, live or a ghost; -1 if none.
        if self._encode(slot):
            return -1
        cdef uint32_t mixed = _mix(h)
        cdef Py_ssize_t i = mixed & self.mask
        cdef int32_t r
        while True:
            r = self.table[i]
            if r == _EMPTY:
                return -1
            if r >= 0 and self._holds(&self.recs[r], mixed):
                return r
            i = (i + 1) & self.mask

    cdef int32_t _find(self, object slot, Py_ssize_t h) except -3:
        # The record of the window of ``slot``; -1 if it has none.
        cdef int32_t r = self._lookup(slot, h)
        if r >= 0 and self.recs[r].flags & _GHOST:
            return -1
        return r

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
                j = self.recs[r].hash & self.mask
                while self.table[j] != _EMPTY:
                    j = (j + 1) & self.mask
                self.table[j] = r
        self.used = self.held
        free(old)
        return 0

    cdef int32_t _insert(self, object slot, Py_ssize_t h) except -1:
        # A record for ``slot``, which has no window (a ghost of it becomes its record again).
        # Invalidates Rec pointers.
        cdef Py_ssize_t i, place = -1, size = self.mask + 1
        cdef int32_t r
        cdef uint32_t mixed = _mix(h)
        cdef Rec* grown
        cdef Rec* rec
        cdef bint pending = self._pending
        self._pending = False
        if self._encode(slot):
            raise TypeError(f"a key is a str or a tuple of str, not {slot!r}")
        if (self.used + 1) * 2 > size:
            self._resize(size * 2 if (self.held + 1) * 4 > size else size)
        i = mixed & self.mask
        while True:
            r = self.table[i]
            if r == _EMPTY:
                break
            if r == _TOMB:
                if place < 0:
                    place = i
            elif self._holds(&self.recs[r], mixed):
                rec = &self.recs[r]  # a ghost: it keeps its key and its places in the filing
                rec.flags &= ~_GHOST
                self._clear(rec)
                self.live += 1
                return r
            i = (i + 1) & self.mask
        if place < 0:
            place = i
            self.used += 1
        if self.free_head >= 0:
            r = self.free_head
            self.free_head = self.recs[r].first
        else:
            if self.nrecs == self.caprecs:
                size = self.caprecs * 2 if self.caprecs else 16
                # On cache lines (realloc gives 16 bytes): a record is read with one miss.
                grown = <Rec*>aligned_alloc(64, size * sizeof(Rec))
                if grown == NULL:
                    raise MemoryError()
                if self.recs != NULL:
                    memcpy(grown, self.recs, self.nrecs * sizeof(Rec))
                    free(self.recs)
                self.recs = grown
                self.caprecs = <int32_t>size
                for r in range(self.nrecs):
                    if grown[r].flags & _ONE:
                        grown[r].times = &grown[r].newest
            r = self.nrecs
            self.nrecs += 1
        rec = &self.recs[r]
        rec.klen = 0
        self._store_key(rec)
        rec.hash = mixed
        rec.flags = _USED | self._ktag
        rec.filed = 0
        rec.due = -1
        self._clear(rec)
        self.table[place] = r
        self.held += 1
        self.live += 1
        if pending:
            self._file_rec(r, self._pending_newest)
        return r

    cdef void _clear(self, Rec* rec) noexcept:
        rec.newest = 0.0
        rec.times = NULL
        rec.big = NULL
        rec.first = 0
        rec.count = 0
        rec.cap = 0
        rec.fired = 0

    cdef void _remove(self, int32_t r) noexcept:
        # Drops the window of record ``r``; its key stays as a ghost while it is filed.
        cdef Rec* rec = &self.recs[r]
        self._release(rec)
        self.live -= 1
        if rec.filed:
            rec.flags |= _GHOST
        else:
            self._free(r)

    cdef void _free(self, int32_t r) noexcept:
        cdef Rec* rec = &self.recs[r]
        cdef Py_ssize_t i = rec.hash & self.mask
        while self.table[i] != r:
            i = (i + 1) & self.mask
        self.table[i] = _TOMB
        self.held -= 1
        self._drop_key(rec)
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
            if self.recs[r].flags & (_USED | _GHOST) == _USED:
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

    # The filing.

    cdef int _file(self, object slot, double newest) except -1:
        # Files ``slot`` by its newest time: now if it has a record, else when it gets one (a
        # new key is filed before its record is made).
        cdef int32_t r = self._lookup(slot, PyObject_Hash(slot))
        if r >= 0:
            return self._file_rec(r, newest)
        self._pending = True
        self._pending_newest = newest
        return 0

    cdef int _file_rec(self, int32_t r, double newest) except -1:
        cdef double due = _floordiv(newest + self.window, _DUE_EVERY_SECONDS)
        cdef int32_t m
        cdef Minute* minute
        cdef int32_t* grown
        cdef Py_ssize_t cap
        cdef Rec* rec
        if self._last_minute >= 0 and due == self._last_due:
            m = self._last_minute
        else:
            key = due
            found = self._minutes.get(key)
            if found is None:
                m = self._open_minute()
                self._minutes[key] = m
            else:
                m = found
            self._last_due = due
            self._last_minute = m
        if self._files(r, m):
            return 0
        minute = &self.mins[m]
        if minute.n == minute.cap:
            cap = minute.cap * 2 if minute.cap else 4
            grown = <int32_t*>realloc(minute.recs, cap * sizeof(int32_t))
            if grown == NULL:
                raise MemoryError()
            minute.recs = grown
            minute.cap = <int32_t>cap
        minute.recs[minute.n] = r
        minute.n += 1
        rec = &self.recs[r]
        if rec.filed:
            more = self._more_filings.get(r)
            if more is None:
                self._more_filings[r] = [m]
            else:
                (<list>more).append(m)
        else:
            rec.due = m
        rec.filed += 1
        return 0

    cdef bint _files(self, int32_t r, int32_t m) except -1:
        # Whether record ``r`` is filed under minute ``m``.
        cdef Rec* rec = &self.recs[r]
        if rec.filed == 0:
            return False
        if rec.due == m:
            return True
        if rec.filed == 1:
            return False
        return m in <list>self._more_filings[r]

    cdef int _unfile(self, int32_t r, int32_t m) except -1:
        # Record ``r`` leaves minute ``m`` (whose array the caller updates); a ghost no minute
        # holds any more goes.
        cdef Rec* rec = &self.recs[r]
        if rec.filed > 1:
            more = <list>self._more_filings[r]
            if rec.due == m:
                rec.due = more.pop()
            else:
                more.remove(m)
            if not more:
                del self._more_filings[r]
        rec.filed -= 1
        if rec.filed == 0 and rec.flags & _GHOST:
            self._free(r)
        return 0

    cdef int32_t _open_minute(self) except -1:
        cdef int32_t m
        cdef Minute* grown
        cdef Py_ssize_t cap
        if self._free_mins:
            m = self._free_mins.pop()
        else:
            if self.nmins == self.capmins:
                cap = self.capmins * 2 if self.capmins else 8
                grown = <Minute*>realloc(self.mins, cap * sizeof(Minute))
                if grown == NULL:
                    raise MemoryError()
                self.mins = grown
                self.capmins = <int32_t>cap
            m = self.nmins
            self.nmins += 1
        self.mins[m].recs = NULL
        self.mins[m].n = 0
        self.mins[m].cap = 0
        return m

    cdef void _close_minute(self, int32_t m) noexcept:
        free(self.mins[m].recs)
        self.mins[m].recs = NULL
        self.mins[m].n = 0
        self.mins[m].cap = 0
        self._last_minute = -1

    cdef int _swept_add(self, int32_t r) except -1:
        cdef int32_t* grown
        cdef Py_ssize_t cap
        if self._nswept == self._capswept:
            cap = self._capswept * 2 if self._capswept else 64
            grown = <int32_t*>realloc(self._swept, cap * sizeof(int32_t))
            if grown == NULL:
                raise MemoryError()
            self._swept = grown
            self._capswept = cap
        self._swept[self._nswept] = r
        self._nswept += 1
        return 0

    def evict_idle(self, double watermark):
        """Forget keys whose every event has left the window ending at ``watermark``."""
        cdef double limit = watermark - self.window, newest
        cdef double now_due = _floordiv(watermark, _DUE_EVERY_SECONDS)
        cdef int32_t r, m, n, i
        cdef int32_t* filed
        cdef Rec* rec
        cdef uint8_t flags
        cdef Py_ssize_t gone = 0
        passed = [self._minutes.pop(due) for due in [due for due in self._minutes if due <= now_due]]
        if self._floors:
            for due in [due for due in self._floors if due <= now_due]:
                del self._floors[due]
        if not passed:
            return 0
        self._last_minute = -1
        cdef list idle = [] if self._keeps else None
        self._nswept = 0
        try:
            for m in passed:
                # Minutes filed again are new ones: these are closed, their ids not yet reused.
                filed, n = self.mins[m].recs, self.mins[m].n
                for i in range(n):
                    r = filed[i]
                    flags = self.recs[r].flags
                    self._unfile(r, m)
                    if flags & (_GHOST | _SWEPT):
                        continue  # forgotten since it was filed, or filed twice
                    rec = &self.recs[r]
                    newest = self._newest_of(rec)
                    if newest <= limit:
                        if idle is not None:
                            idle.append(self._slot(rec))
                        self._remove(r)
                        gone += 1
                        continue
                    rec.flags |= _SWEPT
                    self._swept_add(r)
                    self._file_rec(r, newest)
        finally:
            for i in range(self._nswept):
                self.recs[self._swept[i]].flags &= ~_SWEPT
            self._nswept = 0
            for m in passed:
                self._close_minute(m)
                self._free_mins.append(m)
        if idle is not None:
            self._evicted(idle)
        return gone

    def filed_minutes(self):
        """The slices of time keys are filed under, whose windows end in them."""
        return list(self._minutes)

    def _filed_under(self, minute):
        """The keys filed under ``minute``, in the order filed (forgotten ones too)."""
        found = self._minutes.get(minute)
        if found is None:
            return []
        cdef Minute* filed = &self.mins[<int32_t>found]
        return [self._slot(&self.recs[filed.recs[i]]) for i in range(filed.n)]

    def shed(self, minute, int rank, Py_ssize_t limit):
        """Forget up to ``limit`` keys of ``rank`` filed under ``minute``, the first filed first
        (see :meth:`lockoutd.decide.windows.Windows.shed`)."""
        cdef int32_t r, m, i, kept, stop
        cdef int found, lowest
        cdef Py_ssize_t gone = 0
        cdef Rec* rec
        cdef Minute* filed
        found_minute = self._minutes.get(minute)
        if found_minute is None:
            return 0
        m = found_minute
        filed = &self.mins[m]
        if filed.n == 0:
            return 0
        known = self._floors.get(minute)
        if known is not None and known[1] == filed.n and known[0] > rank:
            return 0
        lowest = _TIERS
        stop = filed.n
        for i in range(filed.n):
            rec = &self.recs[filed.recs[i]]
            if rec.flags & _GHOST:
                rec.flags |= _SHED
                continue
            found = _tier(self._kept_of(rec), self.threshold, rec.fired)
            if found == rank:
                rec.flags |= _SHED
                gone += 1
                if gone == limit:
                    lowest = rank  # the rest was not read
                    stop = i + 1
                    break
            elif found < lowest:
                lowest = found
        cdef list slots = [] if self._keeps else None
        kept = 0
        for i in range(stop):
            r = filed.recs[i]
            rec = &self.recs[r]
            if not rec.flags & _SHED:
                filed.recs[kept] = r
                kept += 1
                continue
            rec.flags &= ~_SHED
            if not rec.flags & _GHOST:
                if slots is not None:
                    slots.append(self._slot(rec))
                self._remove(r)
            self._unfile(r, m)
        memmove(filed.recs + kept, filed.recs + stop, (filed.n - stop) * sizeof(int32_t))
        filed.n -= stop - kept
        if slots is not None:
            self._evicted(slots)
        if filed.n:
            self._floors[minute] = (lowest, filed.n)
        else:
            del self._minutes[minute]
            self._close_minute(m)
            self._free_mins.append(m)
            self._floors.pop(minute, None)
        return gone


cdef inline int64_t* _hashes(Rec* rec) noexcept:
    return <int64_t*>(rec.times + rec.cap)


cdef inline _IdSet* _big(Rec* rec) noexcept:
    # The id hashes of a large window (``big`` holds the id hash of a window of one).
    return NULL if rec.flags & _ONE else rec.big


cdef _IdSet* _ids_of(int64_t* hashes, int32_t count, int32_t room) except NULL:
    # The set of the ``count`` id hashes from ``hashes``, with room for ``room``.
    cdef _IdSet* s = _idset_new(room)
    cdef int32_t i
    if s == NULL:
        raise MemoryError()
    for i in range(count):
        if hashes[i] != _NO_ID:
            _idset_put(s, hashes[i])
    return s


cdef class EventWindows(_Table):
    """Windows that count events (:class:`lockoutd.decide.windows.EventWindows`)."""

    def __init__(self, threshold, window, *, keep_events=False):
        _Table.__init__(self, threshold, window, keep_events=keep_events)
        self._events_by_slot = {} if self._keeps else None

    @property
    def _events(self):
        return self._events_by_slot

    cdef double _newest_of(self, Rec* rec) noexcept:
        return rec.times[rec.first + rec.count - 1]

    cdef void _prefetch_block(self, Rec* rec) noexcept:
        # The oldest and newest times kept and the oldest id hash (a window of one time is its
        # record); the id hashes of a large window are probed at random, and not asked for.
        if rec.flags & _ONE:
            return
        __builtin_prefetch(rec.times + rec.first)
        __builtin_prefetch(rec.times + rec.first + rec.count - 1)
        __builtin_prefetch(_hashes(rec) + rec.first)

    cdef int _reserve(self, Rec* rec) except -1:
        # Room for one more time after the kept ones: move them to the front, or grow the block.
        cdef int32_t cap, count = rec.count
        cdef double* block
        cdef _IdSet* ids
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
        ids = _big(rec)
        if ids != NULL and 2 * cap > ids.mask + 1:
            # The set stays at most half full however full the block gets.
            self.nbytes -= _idset_bytes(ids)
            ids = _idset_grown(ids, cap)
            if ids == NULL:
                raise MemoryError()
            rec.big = ids
            self.nbytes += _idset_bytes(ids)
        block = <double*>PyMem_Malloc(cap * 16)
        if block == NULL:
            raise MemoryError()
        memcpy(block, rec.times + rec.first, count * sizeof(double))
        memcpy(<int64_t*>(block + cap), _hashes(rec) + rec.first, count * sizeof(int64_t))
        if rec.flags & _ONE:
            rec.flags &= ~_ONE
            rec.big = NULL
        else:
            self.nbytes -= rec.cap * 16
            PyMem_Free(rec.times)
        self.nbytes += cap * 16
        rec.times = block
        rec.cap = cap
        rec.first = 0
        return 0

    def add(self, slot, double at, event_id, event=None):
        """Count an event of ``slot`` at ``at``; return True when it makes the window fire."""
        cdef Py_ssize_t h = PyObject_Hash(slot)
        cdef int64_t hashed = _NO_ID if event_id is None else PyObject_Hash(event_id)
        return self.count_event(slot, h, at, hashed, event) == 1

    cdef int count_event(
        self, object slot, Py_ssize_t h, double at, int64_t hashed, object event
    ) except -1:
        # ``add``, given the key's hash and the id's (_NO_ID for none): 1 when the window fires.
        # The compiled rule loop counts here, without a Python call per rule.
        cdef int32_t r = self._find(slot, h)
        cdef Rec* rec
        cdef double* times
        cdef int64_t* hashes
        cdef int32_t first, count, index, drop, i, lo, hi, mid
        cdef double newest, start
        cdef bint was_fired
        if r < 0:
            return 1 if self._open(slot, h, at, hashed, event) else 0
        rec = &self.recs[r]
        first = rec.first
        count = rec.count
        times = rec.times
        hashes = _hashes(rec)
        newest = times[first + count - 1]
        start = (newest if newest > at else at) - self.window
        if at <= start:
            return 0
        if hashed != _NO_ID:
            if _big(rec) != NULL:
                if _idset_has(rec.big, hashed):
                    return 0
            else:
                for i in range(first, first + count):
                    if hashes[i] == hashed:
                        return 0
        if at >= newest and count == self.threshold and times[first] > start:
            # The steady state of a key under attack: the newest time pushes out the oldest.
            if _big(rec) != NULL:
                if hashes[first] != _NO_ID:
                    _idset_discard(rec.big, hashes[first])
                if hashed != _NO_ID:
                    _idset_put(rec.big, hashed)
            rec.first = first + 1
            rec.count = count - 1
            self._reserve(rec)
            times, hashes = rec.times, _hashes(rec)
            times[rec.first + rec.count] = at
            hashes[rec.first + rec.count] = hashed
            rec.count += 1
            if self._keeps:
                self._keep_event(slot, event, self.threshold, 1)
            return 0
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
        if _big(rec) != NULL and hashed != _NO_ID:
            _idset_put(rec.big, hashed)
        drop = 0
        while drop < count and times[first + drop] <= start:
            drop += 1
        if count - self.threshold > drop:
            drop = <int32_t>(count - self.threshold)
        if drop:
            if _big(rec) != NULL:
                for i in range(first, first + drop):
                    if hashes[i] != _NO_ID:
                        _idset_discard(rec.big, hashes[i])
            first += drop
            count -= drop
        rec.first = first if count else 0
        rec.count = count
        if _big(rec) == NULL and count > _SET_AT:
            rec.big = _ids_of(hashes + first, count, rec.cap)
            self.nbytes += _idset_bytes(rec.big)
        if self._keeps:
            self._keep_event(slot, event, index, drop)
        was_fired = rec.fired
        rec.fired = count >= self.threshold
        return 1 if rec.fired and not was_fired else 0

    cdef object _open(self, object slot, Py_ssize_t h, double at, int64_t hashed, object event):
        if self._keeps:
            self._keep_event(slot, event, 0, 0)
        cdef int32_t r = self._insert(slot, h)
        self._file_rec(r, at)
        cdef Rec* rec = &self.recs[r]
        # Most keys see one event (a flood of made-up users, a typo): it stays in the record.
        rec.times = &rec.newest
        rec.cap = 1
        rec.flags |= _ONE
        rec.times[0] = at
        _hashes(rec)[0] = hashed
        rec.count = 1
        rec.fired = self.threshold <= 1
        return bool(rec.fired)

    cdef int _keep_event(self, object slot, object event, Py_ssize_t index, Py_ssize_t drop) except -1:
        cdef list events = self._events_by_slot.get(slot)
        if events is None:
            events = self._events_by_slot[slot] = []
            self.nbytes += KEPT_EVENTS_BYTES
        if event is not None:
            events.insert(index, event)
            self.nbytes += evidence_bytes(event)
        if drop:
            for gone in events[:drop]:
                self.nbytes -= evidence_bytes(gone)
            del events[:drop]
        return 0

    cdef int _drop_events(self, object slot) except -1:
        # The kept events of a key whose window went.
        events = self._events_by_slot.pop(slot, None)
        if events is not None:
            self.nbytes -= KEPT_EVENTS_BYTES + sum([evidence_bytes(event) for event in events])
        return 0

    def forget(self, slot):
        _Table.forget(self, slot)
        if self._keeps:
            self._drop_events(slot)

    cdef int _evicted(self, list slots) except -1:
        if self._keeps:
            for slot in slots:
                self._drop_events(slot)
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
        slot = self._slot(rec)
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
        self.nbytes += size * 16
        if size > _SET_AT:
            rec.big = _ids_of(_hashes(rec), size, size)
            self.nbytes += _idset_bytes(rec.big)
        self._file(slot, rec.times[size - 1])
        if self._keeps:
            self._drop_events(slot)
            events = self._events_by_slot[slot] = list(record.events or ())[-size:]
            self.nbytes += KEPT_EVENTS_BYTES + sum([evidence_bytes(event) for event in events])
        return 0


# A distinct window's block: a header, then per slot (a value's place, kept while it is counted)
# when it was last seen, for rules that keep events the event of its newest sighting (owned or
# NULL), its mixed hash (the 32 bits ``_mix`` keeps: the index's place, and a first check before
# the value), its order (how many values the key had counted when it came: of two values seen at
# the same time, the lower order goes first, as in the reference's heap), the links of the list
# of values in the order they leave (seen longest ago first), the values' cells (below), and
# last, once the block has room for more than _SCAN_UP_TO values, an index from value hash to
# slot (open addressing, linear probing, at most half full). Slots, links and the index are 16
# bits: a block has at most a threshold and one slots, and a rule's threshold at most 10,000.

cdef int32_t _SCAN_UP_TO = 32

# Orders are 16 bits: a key that has counted 32,767 values since its window opened (or since it
# was last numbered) has its values numbered again from 1 in the same order (``_renumber``),
# which no ordering can tell. A window keeps at most 10,001 values, so a key is numbered again
# at most once per 22,766 new values, a sort of what it holds: a stream of new values for one
# key of threshold 10,000 costs about 350 ns an ``add`` all told, renumbering included.
cdef int64_t _order_limit = 32767

# A value's cell, 10 bytes: a str value as its UTF-8 bytes or as its number, no Python object:
# a spray keeps a window full of values that no event holds any more, and a str of a user id
# costs eight times its number. Byte 0 says what the cell holds:
# - 0 to 9: that many UTF-8 bytes (a lone surrogate passed through, as keys are kept) follow,
#   the rest of the cell zero;
# - _CELL_NUMBER: a str of one to 19 ASCII digits without a leading zero (a ZITADEL user id is
#   18), as its unsigned 64-bit number at byte 2: its text is that number's decimal, and only it;
# - _CELL_OUT: a longer str, out of line ([Py_ssize_t length][bytes], the pointer at byte 2);
# - _CELL_OBJECT: a value that is no str (an owned object at byte 2: the API takes any value);
# - _CELL_FREE: a free slot.
# A str has exactly one short cell or none, so two short cells are equal exactly when their str
# are: a value is found by comparing 10 bytes, and becomes a str again only where the API gives
# values out. Ten bytes, not twelve: nearly every cell holds a number, and the two bytes a slot
# saves pay for a str of 10 or 11 bytes kept out of line (about 32 bytes more) while fewer than
# one value in sixteen is one.
DEF _CELL = 10
cdef uint8_t _CELL_INLINE = 9
cdef uint8_t _CELL_OUT = 255
cdef uint8_t _CELL_OBJECT = 254
cdef uint8_t _CELL_FREE = 253
cdef uint8_t _CELL_NUMBER = 252


cdef inline Py_ssize_t _dbytes(Py_ssize_t cap, Py_ssize_t indexed, bint keeps) noexcept:
    # Per slot: its time (8), hash (4), order and links (2 each), cell, and event pointer.
    return sizeof(_DHead) + cap * (18 + _CELL + (8 if keeps else 0)) + indexed * 2


cdef inline char* _cell(_DView* v, Py_ssize_t s) noexcept:
    return v.cells + s * _CELL


cdef inline bint _cell_free(char* cell) noexcept:
    return <uint8_t>cell[0] == _CELL_FREE


cdef inline bint _cell_short(char* cell, const char* data, Py_ssize_t size) noexcept:
    # Fill ``cell`` with the short cell of the str whose UTF-8 is ``data``; False when it has
    # none (it is kept out of line), the cell then tagged _CELL_OUT without a pointer.
    cdef uint64_t number
    memset(cell, 0, _CELL)
    if _digits(data, size, &number):
        cell[0] = <char>_CELL_NUMBER
        memcpy(cell + 2, &number, sizeof(uint64_t))
        return True
    if size <= _CELL_INLINE:
        memcpy(cell + 1, data, size)
        cell[0] = <char>size
        return True
    cell[0] = <char>_CELL_OUT
    return False


cdef inline const char* _cell_held(char* cell, Py_ssize_t* size) noexcept:
    # The bytes of an out-of-line cell.
    cdef char* held
    memcpy(&held, cell + 2, sizeof(char*))
    size[0] = (<Py_ssize_t*>held)[0]
    return held + sizeof(Py_ssize_t)


cdef inline PyObject* _cell_object(char* cell) noexcept:
    cdef PyObject* held
    memcpy(&held, cell + 2, sizeof(PyObject*))
    return held


cdef Py_ssize_t _cell_set(
    char* cell, object value, const char* data, Py_ssize_t size, const char* probe
) except -1:
    # Fill a free cell with ``value``: its ``probe`` (see _cell_short) when it is a short str,
    # its UTF-8 ``data`` out of line when a long one, else the object (``data`` NULL). Returns
    # the bytes it took out of line.
    cdef char* held
    cdef PyObject* obj
    if data == NULL:
        obj = <PyObject*>value
        Py_INCREF(value)
        memset(cell, 0, _CELL)
        memcpy(cell + 2, &obj, sizeof(PyObject*))
        cell[0] = <char>_CELL_OBJECT
    elif <uint8_t>probe[0] != _CELL_OUT:
        memcpy(cell, probe, _CELL)
    else:
        held = <char*>PyMem_Malloc(sizeof(Py_ssize_t) + size)
        if held == NULL:
            raise MemoryError()
        (<Py_ssize_t*>held)[0] = size
        memcpy(held + sizeof(Py_ssize_t), data, size)
        memset(cell, 0, _CELL)
        memcpy(cell + 2, &held, sizeof(char*))
        cell[0] = <char>_CELL_OUT
        return <Py_ssize_t>sizeof(Py_ssize_t) + size
    return 0


cdef inline Py_ssize_t _cell_clear(char* cell) noexcept:
    # Empty a held cell; returns the bytes it gave back from out of line.
    cdef char* held
    cdef Py_ssize_t freed = 0
    cdef uint8_t tag = <uint8_t>cell[0]
    if tag == _CELL_OUT:
        memcpy(&held, cell + 2, sizeof(char*))
        freed = <Py_ssize_t>sizeof(Py_ssize_t) + (<Py_ssize_t*>held)[0]
        PyMem_Free(held)
    elif tag == _CELL_OBJECT:
        Py_XDECREF(_cell_object(cell))
    cell[0] = <char>_CELL_FREE
    return freed


cdef Py_ssize_t _evidence(PyObject* event) noexcept:
    # The bytes a kept event takes, as the reference counts them (0 for none).
    if event == NULL:
        return 0
    try:
        return evidence_bytes(<object>event)
    except Exception:  # an event is a decoded Event: this cannot fail, and must not stop a sweep
        return 0


cdef object _cell_value(char* cell):
    # The value a cell holds, as the API gives it.
    cdef Py_ssize_t size
    cdef const char* data
    cdef uint64_t number
    cdef uint8_t tag = <uint8_t>cell[0]
    if tag == _CELL_OBJECT:
        return <object>_cell_object(cell)
    if tag == _CELL_NUMBER:
        memcpy(&number, cell + 2, sizeof(uint64_t))
        return str(number)
    if tag == _CELL_OUT:
        data = _cell_held(cell, &size)
    else:
        data = cell + 1
        size = tag
    return PyUnicode_DecodeUTF8(data, size, "surrogatepass")


cdef inline int _cell_equals(
    char* cell, object value, const char* data, Py_ssize_t size, const char* probe
) except -1:
    # Whether a held cell holds ``value`` (``data``: its UTF-8 when it is a str, else NULL;
    # ``probe``: then its cell as _cell_short makes it).
    cdef Py_ssize_t held_size
    cdef const char* held
    cdef PyObject* obj
    cdef uint8_t tag = <uint8_t>cell[0]
    if tag == _CELL_OBJECT:
        obj = _cell_object(cell)
        return obj == <PyObject*>value or PyObject_RichCompareBool(obj, <PyObject*>value, Py_EQ)
    if data == NULL:  # no str, against a str: rare, and as Python compares them
        text = _cell_value(cell)
        return PyObject_RichCompareBool(<PyObject*>text, <PyObject*>value, Py_EQ)
    if tag != _CELL_OUT:
        return memcmp(cell, probe, _CELL) == 0
    if <uint8_t>probe[0] != _CELL_OUT:
        return False
    held = _cell_held(cell, &held_size)
    return held_size == size and memcmp(held, data, size) == 0


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
    v.evs = NULL
    if keeps:
        v.evs = <PyObject**>at
        at += cap * 8
    v.vhashes = <uint32_t*>at  # after the 8-byte arrays, then the 2-byte ones: each aligned
    at += cap * 4
    v.orders = <int16_t*>at
    at += cap * 2
    v.before = <int16_t*>at
    at += cap * 2
    v.after = <int16_t*>at
    at += cap * 2
    v.cells = at
    at += cap * _CELL
    v.index = <int16_t*>at
    return v


cdef inline Py_ssize_t _dhome(uint32_t mixed, int32_t indexed) noexcept:
    return <Py_ssize_t>(mixed & <uint32_t>(indexed - 1))


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
    cdef int32_t order = v.orders[s]
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


cdef inline int32_t _dfind(
    _DView* v,
    Py_ssize_t cap,
    object value,
    Py_ssize_t vh,
    const char* data,
    Py_ssize_t size,
    const char* probe,
) except -2:
    # The slot holding ``value`` (``data``: its UTF-8 when it is a str, else NULL; ``probe``:
    # then its cell, see _cell_short); -1 if none.
    cdef int32_t s, indexed = v.head.indexed
    cdef uint32_t mixed = _mix(vh)
    cdef Py_ssize_t j
    cdef char* cell
    if indexed == 0:
        for s in range(cap):  # a free slot's hash is stale: it is free if its cell says so
            if v.vhashes[s] == mixed:
                cell = _cell(v, s)
                if not _cell_free(cell) and _cell_equals(cell, value, data, size, probe):
                    return s
        return -1
    j = _dhome(mixed, indexed)
    while True:
        s = v.index[j]
        if s < 0:
            return -1
        if v.vhashes[s] == mixed and _cell_equals(_cell(v, s), value, data, size, probe):
            return s
        j = (j + 1) & (indexed - 1)


cdef list _by_order(_DView* v):
    # The slots of the values held, in the order they were first counted (the reference's dict).
    cdef int32_t s = v.head.first
    cdef list held = []
    while s >= 0:
        held.append((v.orders[s], s))
        s = v.after[s]
    held.sort()
    return [s for _, s in held]


cdef int _renumber(_DView* v) except -1:
    # Number the values held 1.. in the order they have (see _order_limit).
    cdef list slots = _by_order(v)
    for n, s in enumerate(slots):
        v.orders[<int32_t>s] = n + 1
    v.head.orders = len(slots)
    return 0


def _limit_orders(int64_t limit):
    """Number the values again once a key's orders reach ``limit`` (32,767, the most 16 bits
    hold, unless changed here): lets a test see the renumbering with fewer values. Returns the
    limit it replaces."""
    global _order_limit
    previous = _order_limit
    _order_limit = limit
    return previous


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
        _cell(&v, s)[0] = <char>_CELL_FREE
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

    def __init__(self, threshold, window, *, keep_events=False):
        _Table.__init__(self, threshold, window, keep_events=keep_events)
        self._unsettled = {}

    cdef void _release(self, Rec* rec) noexcept:
        cdef int32_t s
        cdef _DView v
        if rec.times != NULL:
            v = _dview(rec.times, rec.cap, self._keeps)
            for s in range(rec.cap):
                if not _cell_free(_cell(&v, s)):
                    self.nbytes -= _cell_clear(_cell(&v, s))
                    if self._keeps:
                        self.nbytes -= _evidence(v.evs[s])
                        Py_XDECREF(v.evs[s])
        _Table._release(self, rec)

    cdef Py_ssize_t _block_bytes(self, Rec* rec) noexcept:
        cdef _DView v = _dview(rec.times, rec.cap, self._keeps)
        return _dbytes(rec.cap, v.head.indexed, self._keeps)

    cdef void _prefetch_block(self, Rec* rec) noexcept:
        # The head and the first times, and the value hashes and values a small window scans.
        cdef _DView v = _dview(rec.times, rec.cap, self._keeps)  # reads no memory of the block
        __builtin_prefetch(v.head)
        if rec.cap <= _SCAN_UP_TO:  # no index (see _dindexed)
            __builtin_prefetch(v.vhashes)
            __builtin_prefetch(v.cells)

    cdef int _grow(self, Rec* rec) except -1:
        # Room for one more value: a block one slot larger while small (most keys, an address,
        # hold a few values), twice as large beyond, up to one more than the threshold (as many
        # as a window holds before the value seen longest ago leaves); the same slots.
        cdef Py_ssize_t cap = rec.cap + 1 if rec.cap < 4 else rec.cap * 2, old = rec.cap, s
        cdef double* block
        cdef _DView v, was
        if 4 * cap >= 3 * (self.threshold + 1):
            # Most of the way: the whole way at once, one block less to copy and give back.
            cap = self.threshold + 1
        block = _dblock(cap, self._keeps)
        v = _dview(block, cap, self._keeps)
        was = _dview(rec.times, old, self._keeps)
        memcpy(v.times, was.times, old * sizeof(double))
        memcpy(v.orders, was.orders, old * sizeof(int16_t))
        memcpy(v.vhashes, was.vhashes, old * sizeof(uint32_t))
        memcpy(v.cells, was.cells, old * _CELL)  # out-of-line bytes move with their cells
        if self._keeps:
            memcpy(v.evs, was.evs, old * sizeof(PyObject*))
        memcpy(v.before, was.before, old * sizeof(int16_t))
        memcpy(v.after, was.after, old * sizeof(int16_t))
        v.head.orders = was.head.orders
        v.head.first = was.head.first
        v.head.last = was.head.last
        v.head.free = <int32_t>old if old < cap else -1  # a full block had no free slot
        if v.head.indexed:
            for s in range(old):
                if not _cell_free(_cell(&v, s)):
                    _dindex_add(&v, <int32_t>s)
        self.nbytes += _dbytes(cap, v.head.indexed, self._keeps) - self._block_bytes(rec)
        PyMem_Free(rec.times)
        rec.times = block
        rec.cap = <int32_t>cap
        return 0

    cdef void _drop(self, Rec* rec, _DView* v, int32_t s) noexcept:
        # Forget the value in slot ``s``.
        _dunlink(v, s)
        if v.head.indexed:
            _dindex_remove(v, s)
        self.nbytes -= _cell_clear(_cell(v, s))
        if self._keeps:
            self.nbytes -= _evidence(v.evs[s])
            Py_XDECREF(v.evs[s])
            v.evs[s] = NULL
        v.after[s] = v.head.free
        v.head.free = s
        rec.count -= 1

    def add(self, slot, double at, value, event=None):
        """Count ``value`` seen at ``at`` for ``slot``; return True when this makes it fire."""
        cdef Py_ssize_t h = PyObject_Hash(slot), vh = PyObject_Hash(value)
        return self.count_value(slot, h, at, value, vh, event) == 1

    cdef int count_value(
        self, object slot, Py_ssize_t h, double at, object value, Py_ssize_t vh, object event
    ) except -1:
        # ``add``, given the key's hash and the value's: 1 when the window fires (see count_event).
        cdef int32_t r = self._find(slot, h), s
        cdef Rec* rec
        cdef _DView v
        cdef double start
        cdef bint was_fired
        cdef const char* data
        cdef Py_ssize_t size
        cdef char probe[_CELL]
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
            self.nbytes += self._block_bytes(rec)
        rec = &self.recs[r]
        if at > rec.newest:
            rec.newest = at
        start = rec.newest - self.window
        if at <= start:
            return 0
        v = _dview(rec.times, rec.cap, self._keeps)
        data = self._value_utf8(value, &size)
        if data != NULL:
            _cell_short(probe, data, size)
        s = _dfind(&v, rec.cap, value, vh, data, size, probe)
        if s < 0:
            if not rec.fired and rec.count >= self.threshold:
                self._unsettled.pop(slot, None)  # a new value settles it (see _restore_one)
            if rec.count == rec.cap:
                self._grow(rec)
                v = _dview(rec.times, rec.cap, self._keeps)
            s = v.head.free
            # First: it may raise MemoryError.
            self.nbytes += _cell_set(_cell(&v, s), value, data, size, probe)
            v.head.free = v.after[s]
            v.times[s] = at
            if v.head.orders >= _order_limit:
                _renumber(&v)
            v.head.orders += 1
            v.orders[s] = v.head.orders
            v.vhashes[s] = _mix(vh)
            if self._keeps:
                if kept is not None:
                    Py_INCREF(kept)
                    v.evs[s] = <PyObject*>kept
                    self.nbytes += evidence_bytes(kept)
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
                    self.nbytes += evidence_bytes(kept) - _evidence(v.evs[s])
                    Py_INCREF(kept)
                    Py_XDECREF(v.evs[s])
                    v.evs[s] = <PyObject*>kept
            if not rec.fired and rec.count >= self.threshold:
                # A restored window, full but not fired: the reference decides again only once
                # a value it holds from the record may have left (see _restore_one).
                floor = self._unsettled.get(slot)
                if floor is not None and <double>floor > start:
                    return 0
                self._unsettled.pop(slot, None)
        # Values that left the window go, then the one seen longest ago beyond the threshold.
        while v.head.first >= 0 and v.times[v.head.first] <= start:
            self._drop(rec, &v, v.head.first)
        while rec.count > self.threshold:
            self._drop(rec, &v, v.head.first)
        was_fired = rec.fired
        rec.fired = rec.count >= self.threshold
        return 1 if rec.fired and not was_fired else 0

    cdef const char* _value_utf8(self, object value, Py_ssize_t* size) except? NULL:
        # The UTF-8 of a str value (see _cell_set), NULL for a value that is no str.
        cdef const char* data
        if not isinstance(value, str):
            return NULL
        if PyUnicode_IS_COMPACT_ASCII(value):  # most values: their text is their UTF-8
            size[0] = PyUnicode_GET_LENGTH(value)
            return <const char*>PyUnicode_DATA(value)
        try:
            data = PyUnicode_AsUTF8AndSize(value, size)
        except UnicodeEncodeError:
            self._vheld = (<str>value).encode("utf-8", "surrogatepass")
            size[0] = len(<bytes>self._vheld)
            data = <bytes>self._vheld
        return data

    cdef list _slots(self, Rec* rec):
        # The slots of the values, in the order they were first counted (the reference's dict).
        cdef _DView v = _dview(rec.times, rec.cap, self._keeps)
        return _by_order(&v)

    cdef Rec* _tracked(self, object slot) except? NULL:
        cdef int32_t r = self._find(slot, PyObject_Hash(slot))
        return &self.recs[r] if r >= 0 else NULL

    def values(self, slot):
        """Each value counted for ``slot``, with when it was last seen (empty if not tracked)."""
        cdef Rec* rec = self._tracked(slot)
        if rec == NULL:
            return {}
        cdef _DView v = _dview(rec.times, rec.cap, self._keeps)
        return {_cell_value(_cell(&v, s)): v.times[s] for s in self._slots(rec)}

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
        values = [_cell_value(_cell(&v, s)) for s in slots]
        seen = [(values[i], v.times[s]) for i, s in enumerate(slots)]
        events = None
        if self._keeps:
            events = {
                values[i]: <object>v.evs[s] for i, s in enumerate(slots) if v.evs[s] != NULL
            }
        return DistinctRecord(self._slot(rec), seen, rec.newest, bool(rec.fired), events)

    cdef int _restore_one(self, object record) except -1:
        # lockoutd.decide.windows.DistinctWindows.restore, for one record. The values take the
        # orders 1.. in the record's order, as the reference's heap numbers them.
        cdef int32_t s, size
        cdef Rec* rec
        cdef _DView v
        cdef double* block
        cdef char* cells
        cdef const char* data
        cdef char probe[_CELL]
        cdef Py_ssize_t n, filled = 0, out = 0
        slot, seen, newest, fired, events = checked_distinct_record(record, self.threshold)
        size = <int32_t>len(seen)
        values = list(seen)
        times = [<double>seen[value] for value in values]
        hashes = [PyObject_Hash(value) for value in values]
        kept = [events.get(value) for value in values] if self._keeps else None
        leaving = sorted(range(size), key=times.__getitem__)  # stable: ties by order
        # The cells are filled aside first (out-of-line bytes may want memory): a record that
        # fails leaves the key's window as it was.
        cells = <char*>PyMem_Malloc(size * _CELL)
        if cells == NULL:
            raise MemoryError()
        try:
            while filled < size:
                value = values[filled]
                data = self._value_utf8(value, &n)
                if data != NULL:
                    _cell_short(probe, data, n)
                out += _cell_set(cells + filled * _CELL, value, data, n, probe)
                filled += 1
            block = _dblock(size, self._keeps)
            rec = self._install(slot, block, size, fired)
        except BaseException:
            for s in range(filled):
                _cell_clear(cells + s * _CELL)
            PyMem_Free(cells)
            raise
        v = _dview(block, size, self._keeps)
        memcpy(v.cells, cells, size * _CELL)
        PyMem_Free(cells)
        self.nbytes += _dbytes(size, v.head.indexed, self._keeps) + out
        for s in range(size):  # nothing here raises: the record is never seen half filled
            v.times[s] = times[s]
            v.orders[s] = s + 1
            v.vhashes[s] = _mix(<Py_ssize_t>hashes[s])
            if self._keeps:
                event = kept[s]
                if event is not None:
                    Py_INCREF(event)
                    v.evs[s] = <PyObject*>event
                    self.nbytes += _evidence(<PyObject*>event)
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
