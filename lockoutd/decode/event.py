"""The authentication event every input format is mapped onto (README, "Events")."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import operator
import re
from collections.abc import Callable
from typing import Any, Final

import msgspec

from lockoutd.decode.limits import MAX_EXTRA_TEXT_CHARACTERS

LOGIN_FAILED: Final = "auth.login.failed"
LOGIN_SUCCEEDED: Final = "auth.login.succeeded"
KNOWN_TYPES: Final = frozenset({LOGIN_FAILED, LOGIN_SUCCEEDED})

STANDARD_FIELDS: Final = (
    "type",
    "occurred_at",
    "user_id",
    "login_name",
    "org_id",
    "ip",
    "reason",
    "event_id",
    "user_agent",
)


class Event(msgspec.Struct, frozen=True, gc=False):
    """One login attempt.

    ``occurred_at`` is the event time in seconds since the epoch: windows are measured on it, never
    on arrival time. ``login_name`` is trimmed and lower-cased (:mod:`.login_name`). ``extra``
    keeps the producer's other fields so that rules may match on them.
    """

    type: str
    occurred_at: float
    user_id: str | None = None
    login_name: str | None = None
    org_id: str | None = None
    ip: str | None = None
    reason: str | None = None
    event_id: str | None = None
    user_agent: str | None = None
    extra: dict[str, Any] = {}

    def as_evidence(self) -> Event:
        """The event as a window keeps it to name the users it locks (``targets: contributors``):
        who, where and when, without the user agent and the extra fields. Only the record's size
        bounds those, and a window keeps its evidence for its whole length (README, "Events")."""
        if self.extra or self.user_agent is not None:
            return msgspec.structs.replace(self, user_agent=None, extra={})
        return self

    @property
    def subject(self) -> str:
        """Who the attempt was for, as a ``user_id`` key counts it (see :func:`subject`)."""
        return subject(self) or ""

    def value_of(self, field: str) -> Any:
        """The value of a standard or extra field, ``None`` when absent.

        ``user_id`` is the event's :func:`subject`: the user id, or for an event without one its
        login name, marked as such (README, "Events").
        """
        if field == "user_id":
            return subject(self)
        if field == "ip_prefix":
            return ip_prefix(self.ip) if self.ip else None
        if field in _STANDARD_SET:
            return getattr(self, field)
        return extra_value(self.extra.get(field))


_STANDARD_SET: Final = frozenset(STANDARD_FIELDS)


def field_reader(field: str) -> Callable[[Event], Any]:
    """A function reading ``field`` from an event exactly as :meth:`Event.value_of` does.

    Rules know their fields when they are loaded: reading through a function chosen once saves
    the hot path the chain of name comparisons in ``value_of``.
    """
    if field == "user_id":
        return subject
    if field == "ip_prefix":
        return _ip_prefix_of
    if field in _STANDARD_SET:
        return operator.attrgetter(field)
    return lambda event: extra_value(event.extra.get(field))


def extra_value(value: Any) -> Any:
    """An extra field's value as rules read it: as it came, except a text longer than
    :data:`~lockoutd.decode.limits.MAX_EXTRA_TEXT_CHARACTERS` (a JSON list or object counts as
    its text), which is read as ``sha256:`` and the hex digest of its UTF-8.

    A rule may count by any field, and a window keeps its key and values for its whole length;
    only the record's size bounds an extra field. A digest keeps two texts apart as well as they
    were, in a bounded size (README, "Events").
    """
    if value.__class__ is str:
        if len(value) <= MAX_EXTRA_TEXT_CHARACTERS:
            return value
    elif isinstance(value, (list, dict)):
        value = str(value)  # what a key or a distinct value of it was counted as
        if len(value) <= MAX_EXTRA_TEXT_CHARACTERS:
            return value
    else:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def subject(event: Event) -> str | None:
    """Whom ``event`` names, as one text: its user id, or for an event without one its login
    name in the form :func:`login_name_subject` gives it; None when it names nobody.

    A window counts the events of one subject, so every event it holds names the same person,
    and the event that crosses the threshold, whichever it is, locks that person. Ids are
    digits (``bad_id`` otherwise), and a login name always carries its mark: a name that spells
    someone's id, or an id that spells a name, never lands in that someone's window.
    """
    user_id = event.user_id
    if user_id:
        return user_id
    login_name = event.login_name
    return login_name_subject(login_name, event.org_id) if login_name else None


def login_name_subject(login_name: str, org_id: str | None) -> str:
    """``login_name:<name>``, or ``org_id:<org> login_name:<name>`` for a name the event places
    in an org: the lock looks the name up there only, so one name in two orgs is two people,
    and an event claiming another org cannot send the lock of a real user's window elsewhere."""
    if org_id:
        return f"org_id:{org_id} login_name:{login_name}"
    return f"login_name:{login_name}"


def record_key_for(key: str, event: Event) -> str:
    """The Kafka record ``key`` of ``event`` as the subject it stands for: a producer keys an
    event without a user id by its login name (README, "Scaling out"), which is then that
    event's :func:`subject`."""
    login_name = event.login_name
    if key == login_name and not event.user_id:
        return login_name_subject(login_name, event.org_id)
    return key


def _ip_prefix_of(event: Event) -> str | None:
    ip = event.ip  # read once: this runs for every event of an ip_prefix rule
    return ip_prefix(ip) if ip else None


DERIVED_FIELDS: Final = frozenset({"ip_prefix"})
"""Fields computed from others: ``ip_prefix`` is the /24 of an IPv4 address, the /64 of IPv6."""


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_HEAD: Final = re.compile(rf"(?:{_OCTET}\.){{2}}{_OCTET}")
_OCTETS: Final = frozenset(str(n) for n in range(256))
"""The octets of an IPv4 address as ``ipaddress`` spells them: no sign, no leading zero."""

_PREFIXES: dict[str, str] = {}
"""The /24 of each first three octets met lately, e.g. ``"198.18.7"``: ``"198.18.7.0/24"``.

Keyed by network rather than by address: a million addresses share a few thousand networks, so
the table stays small and its hits stay in the processor's cache. An attacker who floods it
with made-up networks only empties it (see below), and each entry depends on its key alone.
"""
_PREFIXES_MAX = 65_536


def canonical_ipv4_prefix(ip: str) -> str | None:
    """The /24 of ``ip`` if it is an IPv4 address spelled as ``ipaddress`` spells it, else None.

    The decoder spells every address so (:mod:`lockoutd.decode.native`), which makes this the
    common case of both the decoder and :func:`ip_prefix`. It needs no table of addresses: a
    million distinct ones overflow any bounded table, and then every address paid a regular
    expression and a new prefix string. The table of networks it keeps instead stays small.
    """
    head, _, last = ip.rpartition(".")
    if last in _OCTETS:
        return _PREFIXES.get(head) or _new_network(head)
    return None


def ip_prefix(ip: str) -> str:
    """The network an address belongs to for counting: /24 for IPv4, /64 for IPv6.

    One customer network or one IPv6 host (which owns a whole /64) counts as one source.
    Raises ``ValueError`` for text that is no address.
    """
    # canonical_ipv4_prefix written out: this runs for every event of an ip_prefix rule, and
    # one call more would cost about a tenth of it.
    head, _, last = ip.rpartition(".")
    if last in _OCTETS:
        prefix = _PREFIXES.get(head) or _new_network(head)
        if prefix is not None:
            return prefix
    return _parsed_prefix(ip)


def _new_network(head: str) -> str | None:
    # The /24 of the first three octets ``head`` when they are spelled as ipaddress would.
    if not _CANONICAL_HEAD.fullmatch(head):
        return None
    if len(_PREFIXES) >= _PREFIXES_MAX:
        _PREFIXES.clear()  # bounded, and far cheaper than keeping an LRU order
    prefix = _PREFIXES[head] = f"{head}.0/24"
    return prefix


@functools.lru_cache(maxsize=65_536)
def _parsed_prefix(ip: str) -> str:
    # IPv6, and IPv4 not spelled as ipaddress would (never from the decoder): rarer, and slow
    # enough to parse that remembering the latest answers pays.
    address = ipaddress.ip_address(ip)
    bits = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))
