# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The engine's per-event loop over the rules an event's kind meets, compiled; its front
(``Front``), which hands each event to that loop; and ``ip_prefix_of``, the network every event
forwarded to an ``[ip_prefix]`` topic is keyed by, read as the loop reads it.

The same steps as ``Engine._count_each`` and ``RuleState``'s counting in
:mod:`lockoutd.decide.engine` (the reference, and the fallback without a compiler), in the same
order: a rule's other conditions, its ip allowlist, the key (``user_id`` falling back to the
marked login name, ``ip_prefix``, extra fields, keys of several fields as tuples), the record-key
mismatch, the distinct value, and the windows' ``add``. Python is called back only for what is
Python's: the other conditions, ip allowlists, the subject of an event without a user id, an
``ip_prefix`` of an address not in canonical IPv4 spelling, and the ``Firing`` of a crossing.

An event's fields are read once per event, however many rules read them: a plan keeps what it
read in a small array for the length of one call. The compiled windows are counted through their
C entry points (``count_event``, ``count_value``: ``add`` without a Python call per rule); any
other windows through their public ``add``, so that either implementation may sit behind a rule.

With many rules, most of the time went in cache misses, one after another: each rule looks its
key up in its own table (the entry, then the record, then the window's block). A plan therefore
reads the key of every rule first and asks each table for that memory in three rounds, so that
the misses of all the rules overlap; then it counts, in rule order, exactly as before. Only keys
read without calling Python are read ahead (see ``Plan.quiet``), so that nothing a rule would
not have read, or would have read later, can be seen to happen.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM

from lockoutd.decide._cwindows cimport DistinctWindows, EventWindows, _Table
from lockoutd.decode._ipv4 cimport canonical_ipv4_last_dot

from types import MemberDescriptorType

from msgspec.structs import replace

from lockoutd.decode.event import LOGIN_SUCCEEDED, STANDARD_FIELDS
from lockoutd.decode.event import Event
from lockoutd.decode.event import extra_value, ip_prefix, record_key_for, subject
from lockoutd.decode.limits import MAX_EXTRA_TEXT_CHARACTERS

cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL
    Py_ssize_t PyObject_Hash(object o) except -1
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    object PyUnicode_FromStringAndSize(const char* s, Py_ssize_t size)
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    int T_OBJECT_EX

# C globals: no lookup in the module's dict per event.
cdef object _Event = Event
cdef object _ip_prefix = ip_prefix
cdef object _replace = replace
cdef object _subject = subject
cdef object _record_key_for = record_key_for
cdef str _SUCCEEDED = LOGIN_SUCCEEDED

cdef enum:
    _USER = 0      # user_id, or when it is empty the login name, marked (event.subject)
    _PREFIX = 1    # ip_prefix
    _STANDARD = 2  # an attribute of the event
    _EXTRA = 3     # event.extra.get(name)

# Every field a rule of this process reads, by number: a plan's array of read values is indexed
# by it. Rules name a handful of fields, so the table stays small.
cdef dict _field_ids = {}
cdef list _field_names = []
cdef int* _field_kinds = NULL
cdef Py_ssize_t* _field_offsets = NULL
cdef frozenset _standard = frozenset(STANDARD_FIELDS)


cdef Py_ssize_t _offset(str name) except -2:
    # Where an Event holds the field (msgspec keeps a struct's fields as members, as __slots__
    # does): read there, a field costs a load instead of an attribute lookup. -1 where it is not
    # such a member (another msgspec), read then by getattr.
    descriptor = _Event.__dict__.get(name)
    if type(descriptor) is not MemberDescriptorType:
        return -1
    cdef PyMemberDef* member = (<PyMemberDescrObject*><PyObject*>descriptor).d_member
    return member.offset if member.type == T_OBJECT_EX else -1


cdef int _field_id(str name) except -1:
    global _field_kinds, _field_offsets
    cdef int kind, number
    found = _field_ids.get(name)
    if found is not None:
        return found
    if name == "user_id":
        kind = _USER
    elif name == "ip_prefix":
        kind = _PREFIX
    elif name in _standard:
        kind = _STANDARD
    else:
        kind = _EXTRA
    number = len(_field_names)
    kinds = <int*>PyMem_Realloc(_field_kinds, (number + 1) * sizeof(int))
    if kinds == NULL:
        raise MemoryError()
    _field_kinds = kinds
    offsets = <Py_ssize_t*>PyMem_Realloc(_field_offsets, (number + 1) * sizeof(Py_ssize_t))
    if offsets == NULL:
        raise MemoryError()
    _field_offsets = offsets
    _field_kinds[number] = kind
    _field_offsets[number] = _offset(name) if kind == _STANDARD else -1
    _field_ids[name] = number
    _field_names.append(name)
    return number


cdef int _IP = _field_id("ip")
cdef int _AT = _field_id("occurred_at")
cdef int _ID = _field_id("event_id")
cdef Py_ssize_t _USER_ID_AT = _offset("user_id")
cdef Py_ssize_t _TYPE_AT = _offset("type")
cdef Py_ssize_t _REASON_AT = _offset("reason")
cdef Py_ssize_t _EXTRA_AT = _offset("extra")
cdef Py_ssize_t _MAX_EXTRA_TEXT = MAX_EXTRA_TEXT_CHARACTERS


cdef inline object _attr(object event, Py_ssize_t offset, str name):
    # getattr(event, name), from where an Event holds it when that is known.
    cdef PyObject* value
    if offset >= 0 and type(event) is _Event:
        value = (<PyObject**>((<char*><PyObject*>event) + offset))[0]
        if value != NULL:
            return <object>value
    return getattr(event, name)


cdef object _canonical_prefix(str ip):
    # lockoutd.decode.event.ip_prefix for an address spelled as ipaddress spells it; None for
    # any other spelling, which the reference function reads.
    cdef Py_ssize_t last = canonical_ipv4_last_dot(ip), i
    cdef const char* s
    cdef char out[24]
    if last < 0:
        return None
    s = <const char*>PyUnicode_DATA(ip)
    for i in range(last):
        out[i] = s[i]
    out[last] = c'.'
    out[last + 1] = c'0'
    out[last + 2] = c'/'
    out[last + 3] = c'2'
    out[last + 4] = c'4'
    return PyUnicode_FromStringAndSize(out, last + 5)


cdef object _read(object event, int field):
    # What lockoutd.decode.event.field_reader's function for this field returns.
    cdef int kind = _field_kinds[field]
    if kind == _STANDARD:
        return _attr(event, _field_offsets[field], <str>_field_names[field])
    if kind == _USER:
        user = _attr(event, _USER_ID_AT, "user_id")
        return user if user else _subject(event)
    if kind == _PREFIX:
        ip = _attr(event, _field_offsets[_IP], "ip")
        if not ip:
            return None
        if type(ip) is str:
            prefix = _canonical_prefix(ip)
            if prefix is not None:
                return prefix
        return _ip_prefix(ip)
    extra = _attr(event, _EXTRA_AT, "extra")
    if type(extra) is dict:
        found = PyDict_GetItemWithError(extra, _field_names[field])
        if found == NULL:
            return None
        value = <object>found
    else:
        value = extra.get(_field_names[field])
    if value is None or (type(value) is str and PyUnicode_GET_LENGTH(value) <= _MAX_EXTRA_TEXT):
        return value
    return extra_value(value)  # anything else, as the reference reads it


cdef class RuleCounter:
    """Counts the events of one rule (``RuleState.counts`` of the reference)."""

    cdef object state
    cdef bint keeps_evidence  # pass Event.as_evidence to the windows, which keep it
    cdef object firing
    cdef object others
    cdef object has_ip
    cdef object add
    # The compiled windows behind ``add``, when it is theirs: counted through their C entry point
    # (the same steps as ``add``), without a Python call per rule. None for other windows.
    cdef EventWindows events
    cdef DistinctWindows values
    cdef _Table windows
    # The key read ahead of the counting (see Plan.count_each), and its hash.
    cdef bint aimed
    cdef object aimed_slot
    cdef Py_ssize_t aimed_hash
    cdef bint quiet_key
    cdef int nkey
    cdef int key0
    cdef tuple key_fields
    cdef int distinct
    cdef readonly int fields
    """One more than the highest field number this rule reads."""

    def __init__(self, state, key, distinct, add, firing, others=None, has_ip=None):
        """``state`` (whose ``key_mismatches`` this counts, and whose ``keeps_evidence`` says
        whether the windows keep the events they count), the names of the key's fields, the
        field whose distinct values are counted (None to count events), the windows' ``add``,
        the function that makes a ``Firing`` of ``(event, slot)``, the rule's other conditions
        and its allowlist's ``has_ip`` (None for none)."""
        self.state = state
        self.keeps_evidence = state.keeps_evidence
        self.firing = firing
        self.others = others
        self.has_ip = has_ip
        self.add = add
        windows = getattr(add, "__self__", None)
        if type(windows) is EventWindows and add == windows.add:
            self.events = windows
        elif type(windows) is DistinctWindows and add == windows.add:
            self.values = windows
        self.windows = self.events if self.events is not None else self.values
        self.key_fields = tuple([_field_id(name) for name in key])
        self.nkey = len(self.key_fields)
        if self.nkey < 1:
            raise ValueError("a rule's key names at least one field")
        self.key0 = self.key_fields[0]
        self.quiet_key = self.windows is not None and all(
            [_field_kinds[field] != _EXTRA for field in self.key_fields]
        )
        self.distinct = -1 if distinct is None else _field_id(distinct)
        self.fields = max(max(self.key_fields), self.distinct, _IP, _AT, _ID) + 1

    cdef object _slot(self, Plan plan, object event):
        # The key as RuleState reads it (engine._slot, engine._key_values); None if it lacks one.
        cdef int i
        value = plan.field(event, self.key0)
        if self.nkey == 1:
            if type(value) is str:
                return value if value else None
            if value is None or value == "":
                return None
            return value if isinstance(value, tuple) else str(value)
        cdef tuple values = PyTuple_New(self.nkey)
        for i in range(self.nkey):
            if i:
                value = plan.field(event, <int>self.key_fields[i])
            if type(value) is str:
                if not value:
                    return None
            else:
                if value is None or value == "":
                    return None
                if not isinstance(value, str):
                    value = str(value)
            Py_INCREF(value)  # the tuple takes this reference
            PyTuple_SET_ITEM(values, i, value)
        return values

    cdef int aim(self, Plan plan, object event) except -1:
        # Reads the key ahead and asks the windows to bring its table entry into cache; only a
        # key whose fields are read without calling Python (the read itself is then the same,
        # earlier): a rule that does not count the event has read nothing anyone can see.
        cdef int i
        self.aimed = False
        if not self.quiet_key:
            return 0
        for i in range(self.nkey):
            if plan.quiet(event, <int>self.key_fields[i]) == NULL:
                return 0
        slot = self._slot(plan, event)
        self.aimed = True
        self.aimed_slot = slot
        if slot is not None:
            self.aimed_hash = PyObject_Hash(slot)
            self.windows.prefetch_place(self.aimed_hash)
        return 0

    cdef int count(self, Plan plan, object event, object key, list firings) except -1:
        cdef bint aimed = self.aimed
        cdef Py_ssize_t h = self.aimed_hash
        slot = self.aimed_slot
        if aimed:
            self.aimed = False
            self.aimed_slot = None
        if self.others is not None and not self.others(event):
            return 0
        if self.has_ip is not None and self.has_ip(plan.field(event, _IP)):
            return 0
        if not aimed:
            slot = self._slot(plan, event)
        if slot is None:
            return 0
        if not aimed and self.windows is not None:
            h = PyObject_Hash(slot)
        if key is not None and slot != key:
            self.state.key_mismatches += 1  # a tuple (a key of several fields) never equals a str
        cdef double at
        cdef bint fired
        kept = event.as_evidence() if self.keeps_evidence else event
        if self.distinct < 0:
            if self.events is not None:
                # add(slot, at, event_id, event), in its order: the time read as a float, then
                # the key's hash, then the id's.
                at = plan.field(event, _AT)
                event_id = plan.field(event, _ID)
                fired = self.events.count_event(
                    slot,
                    h,
                    at,
                    -1 if event_id is None else PyObject_Hash(event_id),
                    kept,
                )
            else:
                fired = self.add(slot, plan.field(event, _AT), plan.field(event, _ID), kept)
        else:
            value = plan.field(event, self.distinct)
            if type(value) is not str:
                if value is None:
                    return 0
                value = str(value)
            if not value:
                return 0
            if self.values is not None:
                at = plan.field(event, _AT)
                fired = self.values.count_value(
                    slot, h, at, value, PyObject_Hash(value), kept
                )
            else:
                fired = self.add(slot, plan.field(event, _AT), value, kept)
        if fired:
            firings.append(self.firing(event, slot))
        return 0


cdef class Plan:
    """The rules an event of one kind meets, in rule order (``Engine._count_each``)."""

    cdef tuple counters
    cdef Py_ssize_t nfields
    cdef PyObject** values
    cdef int* read
    cdef Py_ssize_t nread

    def __cinit__(self, counters):
        cdef RuleCounter counter
        self.counters = tuple(counters)
        self.nfields = _AT + 1
        for counter in self.counters:
            if counter.fields > self.nfields:
                self.nfields = counter.fields
        self.values = <PyObject**>PyMem_Malloc(self.nfields * sizeof(PyObject*))
        self.read = <int*>PyMem_Malloc(self.nfields * sizeof(int))
        if self.values == NULL or self.read == NULL:
            raise MemoryError()
        for i in range(self.nfields):
            self.values[i] = NULL
        self.nread = 0

    def __dealloc__(self):
        self._clear()
        PyMem_Free(self.values)
        PyMem_Free(self.read)

    cdef void _clear(self) noexcept:
        cdef Py_ssize_t i
        cdef int field
        if self.values == NULL or self.read == NULL:
            return
        for i in range(self.nread):
            field = self.read[i]
            Py_XDECREF(self.values[field])
            self.values[field] = NULL
        self.nread = 0

    cdef inline object field(self, object event, int field):
        # The field's value for the event being counted, read once per call.
        cdef PyObject* known = self.values[field]
        if known != NULL:
            return <object>known
        value = _read(event, field)
        Py_INCREF(value)
        self.values[field] = <PyObject*>value
        self.read[self.nread] = field
        self.nread += 1
        return value

    cdef PyObject* quiet(self, object event, int field) except? NULL:
        # The field's value (as ``field``) when it is a str or None read without calling Python
        # (a key made of it calls none either); else NULL. For an Event only (another class may
        # read a field through its own code).
        cdef PyObject* known = self.values[field]
        cdef int kind = _field_kinds[field]
        if known == NULL:
            if kind == _PREFIX:
                ip = self.field(event, _IP)
                if ip and (type(ip) is not str or _canonical_prefix(ip) is None):
                    return NULL  # read by ip_prefix, which may refuse it: left to the counting
            elif kind == _EXTRA:
                return NULL
            self.field(event, field)
            known = self.values[field]  # held by the plan until the call ends
        if known != <PyObject*>None and type(<object>known) is not str:
            return NULL
        return known

    def count_each(self, event, key):
        """Count ``event`` (with its record's key, or None) in each rule; the firings, in order.
        Engines keep this bound method as the plan: called so, it takes no tuple of arguments."""
        cdef list firings = []
        cdef RuleCounter counter
        try:
            if type(event) is _Event:
                # Every rule's key first, and the memory of its window brought into cache in
                # three rounds (table entry, record, block), so that the misses of the rules'
                # tables overlap; then the counting, in rule order, as without this.
                for counter in self.counters:
                    counter.aim(self, event)
                for counter in self.counters:
                    if counter.aimed and counter.aimed_slot is not None:
                        counter.windows.prefetch_record(counter.aimed_hash)
                for counter in self.counters:
                    if counter.aimed and counter.aimed_slot is not None:
                        counter.windows.prefetch_window(counter.aimed_hash)
            for counter in self.counters:
                counter.count(self, event, key, firings)
        finally:
            self._clear()
        return firings

    def __len__(self):
        return len(self.counters)


cdef class Front:
    """``Front`` of :mod:`lockoutd.decide.engine` (the reference), compiled: what
    ``Engine.process`` does with an event before its rules count it, in the same order. With the
    compiled rule loop behind it, an event's way from ``process`` to its windows runs no Python
    code unless something rare happens (a plan made, a reset, a sweep, an allowlisted address)."""

    cdef object _plan_for
    cdef object _reset
    cdef object _sweep
    cdef object _note_replayed
    cdef object _ip_allowlisted
    cdef public dict plans
    cdef public double watermark
    cdef public double next_sweep

    def __init__(self, plan_for, reset, sweep, note_replayed, ip_allowlisted):
        """As the reference's."""
        self._plan_for = plan_for
        self._reset = reset
        self._sweep = sweep
        self._note_replayed = note_replayed
        self._ip_allowlisted = ip_allowlisted
        self.plans = {}
        self.watermark = float("-inf")
        self.next_sweep = float("-inf")

    def process(self, event, double now, *, record_key=None, bint replayed=False):
        """As the reference's."""
        # Each field read where an Event holds it (see _attr).
        cdef PyObject* found
        cdef double at = _attr(event, _field_offsets[_AT], "occurred_at")
        if at > self.watermark:
            if at > now:
                event = _replace(event, occurred_at=now)
                at = now
            self.watermark = at
            if at >= self.next_sweep:
                self._sweep()
        if self._ip_allowlisted is not None:
            if self._ip_allowlisted(_attr(event, _field_offsets[_IP], "ip")):
                return []
        kind_type = _attr(event, _TYPE_AT, "type")
        if kind_type == _SUCCEEDED:
            self._reset(event)
            return []
        kind = (kind_type, _attr(event, _REASON_AT, "reason"))
        found = PyDict_GetItemWithError(self.plans, kind)
        plan = <object>found if found != NULL else self._plan_for(kind)
        if replayed:
            self._note_replayed(event, kind)
        key = None
        if record_key is not None:
            key = record_key.decode("utf-8", "replace")
            if not _attr(event, _USER_ID_AT, "user_id"):
                key = _record_key_for(key, event)
        return plan(event, key)


cdef int _IP_PREFIX = _field_id("ip_prefix")


def ip_prefix_of(event):
    """``lockoutd.decode.event.field_reader("ip_prefix")``, compiled: the network of the event's
    address, None when it has none. The key of every event forwarded to an ``[ip_prefix]``
    internal topic, read as the compiled rule loop reads it."""
    return _read(event, _IP_PREFIX)
