"""What a record may hold and still be a login event (README, "Events").

Anyone who can write to the events topic can write anything, so decoding refuses, as invalid
records with reasons of their own, what no login event can be:

- ``too_deep``: arrays and objects nested more than :data:`MAX_NESTING` levels. Decoding and
  everything after it (matching, keys, logs) may recurse into a value; a small bound keeps a
  2 KB record from exhausting the stack.
- ``time_out_of_range``: a time outside :data:`EARLIEST_EVENT_TIME` to :data:`LATEST_EVENT_TIME`.
  Such times break date arithmetic later (there is no year 10000 to write a decision in).
- ``future_time``: a time further ahead of the wall clock than ``engine.max_clock_skew``. Event
  time drives the windows; one event from next year would make a key's window look ahead of
  every real failure.
- ``bad_id``: a user id or organization that is no ZITADEL id (:func:`is_zitadel_id`). An
  event without a user id is counted by its login name, and a user id spelling a login name
  would otherwise count in that name's window.
- ``field_too_long``: a user id, organization, event id, type or reason longer than
  any identity server writes (:data:`MAX_ID_CHARACTERS` and the others below), or a login name
  over :data:`MAX_LOGIN_NAME_CHARACTERS` without a user id. Each can become a window's key or a
  distinct value, kept for the length of the window: a record of a 600 KB user id would be kept
  three times over (the user's key, and a value in each spray rule's window), and a few hundred
  such records would exhaust the memory of any daemon. The identity server sets these fields of
  a real login, so refusing them hides no real failure.

What a client types or sends itself is never a reason to refuse an event: an attacker would
hide every failure behind it. A login name too long beside a user id is dropped (the user id
names the user), the user agent is cut to :data:`MAX_USER_AGENT_CHARACTERS`, and an ``ip`` that is
no address (a proxy may pass a client's X-Forwarded-For on as it came) is kept aside as an extra
field while the event counts without an address (:mod:`lockoutd.decode.native`). Extra fields
are kept as they came (only the record's size bounds them); a rule that counts by one reads a
long text as its digest, and windows keep no extra fields of the events they keep.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Final

MAX_NESTING: Final = 16
"""Levels of arrays and objects a record may nest, its own object being the first."""

EARLIEST_EVENT_TIME: Final = 946_684_800.0
"""2000-01-01T00:00:00Z: no login event lockoutd judges is older."""

LATEST_EVENT_TIME: Final = 4_102_444_800.0
"""2100-01-01T00:00:00Z, excluded: a bound that holds whatever the clock skew is set to."""

MAX_ID_CHARACTERS: Final = 64
"""The longest ``user_id`` and ``org_id``: ZITADEL's are 18 digits."""


def is_zitadel_id(text: str) -> bool:
    """Whether ``text`` can be a ZITADEL id: ASCII digits, at most :data:`MAX_ID_CHARACTERS`.

    An event's ``user_id`` and ``org_id`` must be (``bad_id`` otherwise): a window counts an event
    by its user id, or by its login name when it has none, and the two must never meet in one
    window (README, "Events"). Only ids lockoutd can act on go into a request path.
    """
    return 0 < len(text) <= MAX_ID_CHARACTERS and text.isascii() and text.isdigit()


MAX_LOGIN_NAME_CHARACTERS: Final = 512
"""The longest ``login_name``, trimmed and lower-cased: a ZITADEL user name (at most 200
characters), ``@`` and a domain."""

MAX_EVENT_ID_CHARACTERS: Final = 512
"""The longest ``event_id``: room for a UUID, a ULID or lockoutd's own
``lockoutd:<topic>/<partition>/<offset>`` (a topic name is at most 249 characters)."""

MAX_IP_CHARACTERS: Final = 64
"""The longest ``ip`` that may be an address (an IPv6 address with an IPv4 tail is 45 characters,
and a zone id, an interface name, adds a few more); also how much of one that is not is kept."""

MAX_NAME_CHARACTERS: Final = 128
"""The longest ``type`` and ``reason``: short names a rule matches."""

MAX_EXTRA_TEXT_CHARACTERS: Final = 256
"""The longest text of an extra field a rule reads as it is; a longer one is read as its digest
(see :func:`lockoutd.decode.event.extra_value`)."""

MAX_USER_AGENT_CHARACTERS: Final = 512
"""Where a longer ``user_agent`` is cut (see the module's docstring: it is never refused)."""

DEFAULT_MAX_CLOCK_SKEW: Final = 300.0
"""How far ahead of the wall clock an event may be stamped unless configured otherwise."""


def _bounded_json(levels: int) -> Any:
    # The type of a JSON value nested at most ``levels`` deep: msgspec checks it while it parses,
    # at C speed, and stops at the first level too many instead of recursing on. Built at run
    # time, hence spelled with __class_getitem__ rather than as an annotation.
    scalar: Any = str | int | float | bool | None
    value: Any = scalar
    for _ in range(levels):
        value = scalar | list.__class_getitem__(value) | dict.__class_getitem__((str, value))
    return value


BOUNDED_OBJECT: Final[Any] = dict.__class_getitem__((str, _bounded_json(MAX_NESTING - 1)))
"""A JSON object nested at most :data:`MAX_NESTING` levels (itself included)."""


class Horizon:
    """The latest event time accepted now: the wall clock plus the allowed skew.

    Reading the clock for every record would cost the decoder a call per record. The horizon is
    instead cached and read again only when an event lies beyond it: the wall clock only moves
    on, so an event within an older horizon is within the present one, and an event beyond it
    is refused only after the clock was read at its decoding.
    """

    __slots__ = ("_clock", "_skew", "latest")

    def __init__(
        self,
        max_clock_skew: float | None = DEFAULT_MAX_CLOCK_SKEW,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._skew = max_clock_skew
        self.latest = LATEST_EVENT_TIME
        """Every time up to this is accepted without reading the clock."""
        # Read once now: a horizon that has not read its clock admits no time without reading
        # it, so the first record would take the long way (the compiled check hands it over).
        self.admits(-math.inf)

    def admits(self, at: float) -> bool:
        """Whether ``at`` is no further ahead of the wall clock (read now) than the skew.

        Called only for a time past :attr:`latest`, so the common case costs the decoder one
        comparison and no call.
        """
        if self._skew is None:
            return True
        latest = self._clock() + self._skew
        self.latest = latest if latest < LATEST_EVENT_TIME else LATEST_EVENT_TIME
        return at <= latest


WALL_CLOCK: Final = Horizon()
"""The default skew against the real wall clock, for decoders not given a horizon of their own."""
