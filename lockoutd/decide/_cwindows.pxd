# cython: language_level=3
# The compiled windows' layout and C methods, declared here so that the compiled rule loop
# (_cdispatch.pyx) can count an event without a Python call per rule (see ``count_event``).

from cpython.object cimport PyObject
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t

cdef enum:
    _KEY_INLINE = 15     # a key of up to this many bytes is kept in its record (a record is 64)


cdef struct _IdSet:
    int64_t mask     # slots - 1 (a power of two)
    int64_t held


cdef struct Rec:
    double newest        # the newest time (distinct windows; events read it from the block)
    _IdSet* big          # events: the id hashes of a large window (see _IdSet), else NULL
    double* times        # events: times[cap] then int64 hashes[cap]; distinct: see _DRec
    uint32_t hash        # the high half of the mixed key hash: the table place, a first check
    int32_t first        # events: index of the oldest kept time; a free record: the next free
    int32_t cap          # room in the block (events: beyond the threshold as _reserve grows
                         # it, 32,768 at a threshold of 10,000)
    int32_t due          # a filing minute the key is filed under, when ``filed`` (see _filings)
    int32_t filed        # how many filing minutes hold the key
    int16_t count        # times or values kept: at most a threshold (10,000) and one
    uint8_t fired
    uint8_t flags
    uint8_t klen         # the key's length in bytes when inline, else _KEY_OUT
    char key[_KEY_INLINE]  # the key's UTF-8 bytes (its number: _NUMBER), or a pointer to them


cdef struct Minute:
    # The records filed under one minute, in the order filed (the reference's dict of keys).
    int32_t* recs
    int32_t n
    int32_t cap


cdef struct _DHead:
    int64_t orders   # the values ever counted: the order of the last one
    int32_t first    # the slot to leave first, -1 if none
    int32_t last     # the slot seen last (by time, then order)
    int32_t free     # the first free slot, the others chained through ``after``
    int32_t indexed  # slots of the index; 0 while values are found by a scan


cdef struct _DView:
    _DHead* head
    double* times
    int16_t* orders    # see _renumber
    uint32_t* vhashes  # each value's mixed hash (see _mix)
    PyObject** evs     # NULL unless the rule keeps events
    char* cells        # each value's cell: its bytes, its number or a pointer, see _cell_*
    int16_t* before    # slots: a threshold is at most 10,000 (the rules' model)
    int16_t* after
    int16_t* index


cdef class _Table:
    cdef Rec* recs
    cdef int32_t nrecs, caprecs, free_head
    cdef int32_t* table
    cdef Py_ssize_t mask, used, live, held
    cdef Py_ssize_t nbytes       # the blocks, id sets, out-of-line keys and values, kept events
    cdef public Py_ssize_t threshold
    cdef public double window
    cdef public dict _floors
    cdef bint _keeps
    # The filing: minute -> index into ``mins``, in the order the reference's ``_due`` has.
    cdef dict _minutes
    cdef Minute* mins
    cdef int32_t nmins, capmins
    cdef list _free_mins
    cdef double _last_due
    cdef int32_t _last_minute
    cdef dict _more_filings      # record -> the minutes beyond ``due`` it is filed under (rare)
    cdef bint _pending
    cdef double _pending_newest
    # The key being looked up, encoded (see _encode).
    cdef const char* _kp
    cdef Py_ssize_t _kn
    cdef uint8_t _ktag
    cdef uint64_t _knum          # the key's number when it is one (see _NUMBER)
    cdef char* _scratch
    cdef Py_ssize_t _scratch_cap
    cdef object _kheld
    cdef int32_t* _swept
    cdef Py_ssize_t _nswept, _capswept

    cdef void prefetch_place(self, Py_ssize_t h) noexcept
    cdef void prefetch_record(self, Py_ssize_t h) noexcept
    cdef void prefetch_window(self, Py_ssize_t h) noexcept
    cdef void _prefetch_block(self, Rec* rec) noexcept
    cdef void _release(self, Rec* rec) noexcept
    cdef Py_ssize_t _block_bytes(self, Rec* rec) noexcept
    cdef void _drop_key(self, Rec* rec) noexcept
    cdef int _encode(self, object slot) except -1
    cdef const char* _utf8(self, object text, Py_ssize_t* size) except NULL
    cdef int _room(self, Py_ssize_t size) except -1
    cdef object _slot(self, Rec* rec)
    cdef bint _holds(self, Rec* rec, uint32_t mixed) noexcept
    cdef int _store_key(self, Rec* rec) except -1
    cdef int32_t _lookup(self, object slot, Py_ssize_t h) except -3
    cdef int32_t _find(self, object slot, Py_ssize_t h) except -3
    cdef int _resize(self, Py_ssize_t size) except -1
    cdef int32_t _insert(self, object slot, Py_ssize_t h) except -1
    cdef void _clear(self, Rec* rec) noexcept
    cdef void _remove(self, int32_t r) noexcept
    cdef void _free(self, int32_t r) noexcept
    cdef Rec* _install(self, object slot, double* block, int32_t size, bint fired) except NULL
    cdef object _record_of(self, Rec* rec)
    cdef int _restore_one(self, object record) except -1
    cdef double _newest_of(self, Rec* rec) noexcept
    cdef int32_t _kept_of(self, Rec* rec) noexcept
    cdef int _evicted(self, list slots) except -1
    cdef int _file(self, object slot, double newest) except -1
    cdef int _file_rec(self, int32_t r, double newest) except -1
    cdef bint _files(self, int32_t r, int32_t m) except -1
    cdef int _unfile(self, int32_t r, int32_t m) except -1
    cdef int32_t _open_minute(self) except -1
    cdef void _close_minute(self, int32_t m) noexcept
    cdef int _swept_add(self, int32_t r) except -1


cdef class EventWindows(_Table):
    cdef dict _events_by_slot

    cdef void _prefetch_block(self, Rec* rec) noexcept
    cdef int _reserve(self, Rec* rec) except -1
    cdef int count_event(
        self, object slot, Py_ssize_t h, double at, int64_t hashed, object event
    ) except -1
    cdef object _open(self, object slot, Py_ssize_t h, double at, int64_t hashed, object event)
    cdef int _keep_event(self, object slot, object event, Py_ssize_t index, Py_ssize_t drop) except -1
    cdef int _drop_events(self, object slot) except -1


cdef class DistinctWindows(_Table):
    cdef dict _unsettled
    cdef object _vheld   # the UTF-8 of the value being counted, when it is no str's own UTF-8

    cdef void _prefetch_block(self, Rec* rec) noexcept
    cdef Py_ssize_t _block_bytes(self, Rec* rec) noexcept
    cdef int _grow(self, Rec* rec) except -1
    cdef void _drop(self, Rec* rec, _DView* v, int32_t s) noexcept
    cdef const char* _value_utf8(self, object value, Py_ssize_t* size) except? NULL
    cdef int count_value(
        self, object slot, Py_ssize_t h, double at, object value, Py_ssize_t vh, object event
    ) except -1
    cdef list _slots(self, Rec* rec)
    cdef Rec* _tracked(self, object slot) except? NULL
