"""The authentication event every input format is mapped onto (README, "Events")."""

from __future__ import annotations

import functools
import ipaddress
import operator
import re
from collections.abc import Callable
from typing import Any, Final

import msgspec

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

    @property
    def subject(self) -> str:
        """Who the attempt was for: the user id, or the login name when the id is unknown."""
        return self.user_id or self.login_name or ""

    def value_of(self, field: str) -> Any:
        """The value of a standard or extra field, ``None`` when absent.

        ``user_id`` falls back to the login name, so that a rule keyed on the user counts the
        failures of a name that ZITADEL never resolved (README, "Events").
        """
        if field == "user_id":
            return self.user_id or self.login_name
        if field == "ip_prefix":
            return ip_prefix(self.ip) if self.ip else None
        if field in _STANDARD_SET:
            return getattr(self, field)
        return self.extra.get(field)


_STANDARD_SET: Final = frozenset(STANDARD_FIELDS)


def field_reader(field: str) -> Callable[[Event], Any]:
    """A function reading ``field`` from an event exactly as :meth:`Event.value_of` does.

    Rules know their fields when they are loaded: reading through a function chosen once saves
    the hot path the chain of name comparisons in ``value_of``.
    """
    if field == "user_id":
        return _user_or_login_name
    if field == "ip_prefix":
        return _ip_prefix_of
    if field in _STANDARD_SET:
        return operator.attrgetter(field)
    return lambda event: event.extra.get(field)


def _user_or_login_name(event: Event) -> str | None:
    return event.user_id or event.login_name


def _ip_prefix_of(event: Event) -> str | None:
    ip = event.ip  # read once: this runs for every event of an ip_prefix rule
    return ip_prefix(ip) if ip else None


DERIVED_FIELDS: Final = frozenset({"ip_prefix"})
"""Fields computed from others: ``ip_prefix`` is the /24 of an IPv4 address, the /64 of IPv6."""


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
CANONICAL_IPV4: Final = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")
"""An IPv4 address exactly as ``str(ipaddress.ip_address(...))`` spells it (no leading zeros)."""


@functools.lru_cache(maxsize=65_536)
def ip_prefix(ip: str) -> str:
    """The network an address belongs to for counting: /24 for IPv4, /64 for IPv6.

    One customer network or one IPv6 host (which owns a whole /64) counts as one source.
    """
    if CANONICAL_IPV4.fullmatch(ip):
        return f"{ip[: ip.rindex('.')]}.0/24"  # what ipaddress would say, twenty times faster
    address = ipaddress.ip_address(ip)
    bits = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))
