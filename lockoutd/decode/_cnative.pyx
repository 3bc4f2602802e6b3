# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The native decoder's check of a decoded record, compiled, for the common case only.

``_reference_event`` and ``_reference_validated`` in :mod:`lockoutd.decode.native` are the
reference, and the fallback without a compiler. At a million users about a quarter of the
engine loop's time per event went into them, in bytecode: reading nine fields, turning the time
into seconds, checking the address's spelling, building the event. This module does the same
for a record that is plainly valid, and hands every other record to the reference unchanged: a
time out of range or past the horizon, an id that is no ZITADEL id, a login name over its
length, no subject, an address in any other spelling, a user agent to cut. What is refused, and
why, and every rare path, stay written once, in Python.
"""

from cpython.datetime cimport (
    datetime_day,
    datetime_hour,
    datetime_microsecond,
    datetime_minute,
    datetime_month,
    datetime_second,
    datetime_tzinfo,
    datetime_year,
    get_utc,
    import_datetime,
    PyDateTime_CheckExact,
)
from libc.stdint cimport int64_t

from lockoutd.decode._ipv4 cimport canonical_ipv4_last_dot

from msgspec import Raw
from msgspec.structs import astuple

from lockoutd.decode.event import Event
from lockoutd.decode.limits import (
    EARLIEST_EVENT_TIME,
    MAX_LOGIN_NAME_CHARACTERS,
    MAX_USER_AGENT_CHARACTERS,
)
from lockoutd.decode.login_name import normalize_login_name

import_datetime()

cdef object _Event = Event
cdef object _astuple = astuple
cdef object _NO_EXTRA = Raw(b"{}")  # a bundle element's extra fields when it has none
cdef object _normalize_login_name = normalize_login_name
cdef object _UTC = get_utc()
cdef double _EARLIEST = EARLIEST_EVENT_TIME
cdef Py_ssize_t _MAX_LOGIN_NAME = MAX_LOGIN_NAME_CHARACTERS
cdef Py_ssize_t _MAX_USER_AGENT = MAX_USER_AGENT_CHARACTERS
cdef int64_t _EXACT = 1 << 53  # microseconds below this convert to a double exactly

cdef extern from "Python.h":
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    int PyUnicode_1BYTE_KIND


cdef inline bint _digits(object text) noexcept:
    # lockoutd.decode.limits.is_zitadel_id for a text msgspec already held to its length: ASCII
    # digits only (a text of one-byte kind holds Latin-1; the digits are within it).
    cdef const unsigned char* s
    cdef Py_ssize_t i, n
    if type(text) is not str or PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND:
        return False
    s = <const unsigned char*>PyUnicode_DATA(text)
    n = PyUnicode_GET_LENGTH(text)
    for i in range(n):
        if <unsigned char>(s[i] - 48) > 9:
            return False
    return n > 0


cdef inline int64_t _days_since_epoch(int64_t y, int64_t m, int64_t d) noexcept:
    # Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar, as datetime counts
    # them (the usual civil-to-days arithmetic on 400-year eras; datetime's years are 1 to 9999).
    cdef int64_t era, yoe, doy, doe
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef object _utc_seconds(object occurred_at):
    # occurred_at.timestamp() for a datetime in UTC: its microseconds since the epoch over 10**6,
    # one correctly rounded division as Python's. None for any other time, which Python reads.
    cdef int64_t micros
    if not PyDateTime_CheckExact(occurred_at) or datetime_tzinfo(occurred_at) is not _UTC:
        return None
    micros = (
        _days_since_epoch(
            datetime_year(occurred_at), datetime_month(occurred_at), datetime_day(occurred_at)
        ) * 86400
        + datetime_hour(occurred_at) * 3600
        + datetime_minute(occurred_at) * 60
        + datetime_second(occurred_at)
    ) * 1000000 + datetime_microsecond(occurred_at)
    if -_EXACT < micros < _EXACT:
        return <double>micros / 1e6
    return None


# The fields a decoded record starts with, in this order (read at once, as a tuple).
_FIELDS = (
    "type", "occurred_at", "user_id", "login_name", "org_id", "ip", "reason", "event_id",
    "user_agent",
)


cdef class Validator:
    """``_event``, ``_validated`` and ``_elements`` of the reference, for the plainly valid
    record."""

    cdef object _event
    cdef object _validated
    cdef object _element_type

    def __init__(self, event, validated, wire_type, element_type):
        """The reference's ``_event(wire, extra, horizon)`` and ``_validated(wire, at, extra,
        horizon)``: what each record this does not recognise as plainly valid is handed to. The
        msgspec structs it reads (a native record's, a bundle element's) must start with the
        fields it reads, and an element's must hold its extra fields next."""
        for struct, wanted in ((wire_type, _FIELDS), (element_type, _FIELDS + ("extra",))):
            if tuple(struct.__struct_fields__[: len(wanted)]) != wanted:
                raise TypeError(f"{struct.__name__}'s fields do not start with {wanted}")
        self._event = event
        self._validated = validated
        self._element_type = element_type

    def event(self, wire, dict extra, horizon):
        """The event of a decoded ``wire`` whose time is a datetime, as ``_event`` makes it."""
        cdef tuple fields = _astuple(wire)
        at = _utc_seconds(fields[1])
        if at is None:
            return self._event(wire, extra, horizon)  # no UTC offset, or another one
        return self._checked(wire, fields, at, extra, horizon)

    def validated(self, wire, double at, dict extra, horizon):
        """The event of ``wire`` at ``at`` seconds since the epoch, as ``_validated`` makes it."""
        return self._checked(wire, _astuple(wire), at, extra, horizon)

    def elements(self, list elements, element_event, horizon):
        """The events of a bundle's decoded ``elements``, in order: an element without extra
        fields as ``validated`` makes it, any other as ``element_event`` does (which decodes the
        extra fields first). One C loop for every event read back from an internal topic."""
        cdef list events = []
        cdef tuple fields
        for element in elements:
            if type(element) is not self._element_type:
                events.append(element_event(element))
                continue
            fields = _astuple(element)
            if fields[9] == _NO_EXTRA:
                events.append(self._checked(element, fields, fields[1], {}, horizon))
            else:
                events.append(element_event(element))
        return events

    cdef object _checked(self, object wire, tuple fields, double at, dict extra, object horizon):
        if not (_EARLIEST <= at < <double>horizon.latest):
            return self._validated(wire, at, extra, horizon)
        user_id = fields[2]
        if user_id and not _digits(user_id):
            return self._validated(wire, at, extra, horizon)
        org_id = fields[4]
        if org_id and not _digits(org_id):
            return self._validated(wire, at, extra, horizon)
        login_name = fields[3]
        if login_name:
            login_name = _normalize_login_name(login_name)
            if len(login_name) > _MAX_LOGIN_NAME:
                return self._validated(wire, at, extra, horizon)
        if not user_id and not login_name:
            return self._validated(wire, at, extra, horizon)
        ip = fields[5]
        if ip and (type(ip) is not str or canonical_ipv4_last_dot(ip) < 0):
            return self._validated(wire, at, extra, horizon)
        user_agent = fields[8]
        if user_agent and len(user_agent) > _MAX_USER_AGENT:
            return self._validated(wire, at, extra, horizon)
        return _Event(
            fields[0],
            at,
            user_id or None,
            login_name or None,
            org_id or None,
            ip or None,
            fields[6],
            fields[7] or None,
            user_agent,
            extra,
        )
