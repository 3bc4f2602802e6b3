# cython: language_level=3
# An IPv4 address spelled as ``ipaddress`` spells it (what lockoutd.decode.event's
# canonical_ipv4_prefix accepts), recognised without a call or an allocation: shared by the
# compiled decoder and the compiled rule loop, which both meet it once per event.

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)


cdef inline int _octet(const char* s, Py_ssize_t start, Py_ssize_t end) noexcept:
    # An octet with no sign and no leading zero, 0 to 255: its value, else -1.
    cdef Py_ssize_t n = end - start, i
    cdef int value = 0
    if n < 1 or n > 3 or (n > 1 and s[start] == c'0'):
        return -1
    for i in range(start, end):
        if s[i] < c'0' or s[i] > c'9':
            return -1
        value = value * 10 + (s[i] - c'0')
    return value if value <= 255 else -1


cdef inline Py_ssize_t canonical_ipv4_last_dot(str ip) noexcept:
    # Where the last dot of ``ip`` is when it is such an address (its /24 is the text before
    # it); -1 for any other text.
    cdef Py_ssize_t n, i, start = 0, dots = 0, last = 0
    cdef const char* s
    if not PyUnicode_IS_COMPACT_ASCII(ip):
        return -1
    n = PyUnicode_GET_LENGTH(ip)
    if n > 15:
        return -1
    s = <const char*>PyUnicode_DATA(ip)
    for i in range(n + 1):
        if i == n or s[i] == c'.':
            if _octet(s, start, i) < 0:
                return -1
            if i < n:
                dots += 1
                last = i
            start = i + 1
    return last if dots == 3 else -1
