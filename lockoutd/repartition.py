"""Repartitioning: rules keyed on something other than the user, counted where their events meet.

Records are keyed by user, so every event of a user reaches the one instance that holds the
user's partition, and a rule keyed on ``[user_id]`` sees all of them there. A rule keyed on
anything else (an address, a network, a user and an address) would see only the share of the
partitions its instance holds. Such a rule is instead counted on an internal topic keyed by its
own key, as Kafka Streams does: the instance that consumed an event writes it there (before it
commits), and the group consumes those topics too, so each key value lives in one partition of
its internal topic, held by one instance, which decides each crossing once (README, Operations:
"Scaling out").

Which rules need it follows from their key alone: the record key is the user (the user id, or
the login name of an event without one, which is what a ``user_id`` key reads), so only a rule
keyed on ``[user_id]`` and nothing else is counted where the event arrives.

A key whose value determines another's needs no topic of its own when that other key has one:
an address lies in one network, so the partition holding a network's events holds every event
of each of its addresses, and a rule keyed on ``[ip]`` (or ``[user_id, ip]``) is counted on the
``[ip_prefix]`` topic. One internal copy of an event then serves both, where each key's own topic
would cost a copy per key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from lockoutd.decide.engine import key_reader
from lockoutd.decide.windows import Slot
from lockoutd.decode.event import KNOWN_TYPES, LOGIN_SUCCEEDED, Event
from lockoutd.decode.native import bundle_element
from lockoutd.rules.model import Rule, RuleSet
from lockoutd.settings import KafkaSettings
from lockoutd.source.kafka import OutgoingRecord, default_partition

LOCAL_KEY = ("user_id",)
"""The one key whose events all share a record key: rules keyed on it are counted in place."""

_MAX_KINDS = 1_024
"""Bound on the cached ``(type, reason)`` answers per internal topic (both come from events)."""

_MAX_PLACED = 65_536
"""Bound on the key values whose partition each internal topic remembers."""

_TOPIC_CHARACTER = re.compile(r"[^A-Za-z0-9_-]")
"""What a key field may not hold in a topic name: a ``.`` would make two keys one name."""
_GROUP_CHARACTER = re.compile(r"[^A-Za-z0-9._-]")
_MAX_TOPIC_NAME = 249


def is_repartitioned(rule: Rule) -> bool:
    """True for a rule whose key is not the record key: it is counted on an internal topic."""
    return tuple(rule.key) != LOCAL_KEY


_DERIVED_FROM = {"ip_prefix": "ip"}
"""Fields whose value is a function of another's: equal addresses have equal networks."""


def determines(key: Sequence[str], coarser: Sequence[str]) -> bool:
    """True when events with equal values of ``key`` always have equal values of ``coarser``
    (and an event with a value of ``key`` has one of ``coarser``): each field of ``coarser`` is
    in ``key``, or is computed from a field that is."""
    return all(field in key or _DERIVED_FROM.get(field, field) in key for field in coarser)


def partition_keys(keys: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], tuple[str, ...]]:
    """For each of ``keys``, the key whose internal topic counts it: of the coarsest keys that
    it determines, the first in sorted order, so that the order of the rules never moves a rule
    to another topic. A coarsest key is one that determines no key not also determining it; of
    keys that determine each other, the first in sorted order."""

    def coarser(a: tuple[str, ...], b: tuple[str, ...]) -> bool:  # b is strictly coarser than a
        return determines(a, b) and not determines(b, a)

    coarsest: list[tuple[str, ...]] = []
    for key in sorted(keys):
        if any(coarser(key, other) for other in keys):
            continue
        if not any(determines(key, kept) for kept in coarsest):
            coarsest.append(key)
    return {key: next(c for c in coarsest if determines(key, c)) for key in keys}


def topic_prefix(settings: KafkaSettings) -> str:
    """``kafka.repartition_prefix``, or ``<group_id>.repartition``: one group's internal topics
    are never read by another."""
    if settings.repartition_prefix is not None:
        return settings.repartition_prefix
    return f"{_GROUP_CHARACTER.sub('_', settings.group_id)}.repartition"


def internal_topic(prefix: str, key: Sequence[str]) -> str:
    """The internal topic of rules keyed on ``key``: ``<prefix>.ip``, ``<prefix>.user_id.ip``.

    A field name that Kafka does not allow in a topic name (or a name too long) is spelt with
    ``_`` and the name ends in a hash of the exact key, so that two keys never share a topic.
    """
    spelt = [_TOPIC_CHARACTER.sub("_", field) for field in key]
    name = ".".join([prefix, *spelt])
    if spelt != list(key) or len(name) > _MAX_TOPIC_NAME:
        digest = hashlib.sha256("\0".join(key).encode()).hexdigest()[:12]
        name = f"{name[: _MAX_TOPIC_NAME - 13]}.{digest}"
    return name


def derived_event_id(topic: str, partition: int, offset: int) -> str:
    """The ``event_id`` of a repartitioned event that has none: where it was read. A source
    record read again after a crash is written again with the same id, and counts once."""
    return f"lockoutd:{topic}/{partition}/{offset}"


_encode = msgspec.json.Encoder().encode
_OPTIONAL_FIELDS = ("user_id", "login_name", "org_id", "ip", "reason", "user_agent")


def encode_event(event: Event, *, event_id: str | None = None) -> bytes:
    """``event`` as a native record (README, "Events"), with ``event_id`` if it has none: the
    dead letter of an event of a bundle whose handling failed, readable and fit to produce again.

    Decoding the result gives the same event: the time is written to the microsecond, which is
    all a decoded time holds, and every other field as it was decoded (already normalised).
    """
    document: dict[str, Any] = dict(event.extra)
    document["type"] = event.type
    document["occurred_at"] = datetime.fromtimestamp(event.occurred_at, UTC).isoformat()
    for name in _OPTIONAL_FIELDS:
        value = getattr(event, name)
        if value is not None:
            document[name] = value
    if (known := event.event_id or event_id) is not None:
        document["event_id"] = known
    return _encode(document)


def record_key(slot: Slot) -> bytes:
    """The record key of an internal record: equal keys land in one partition."""
    return (slot if isinstance(slot, str) else "|".join(slot)).encode()


@dataclasses.dataclass(slots=True)
class Route:
    """An internal topic and the rules counted on it: those of its key, and those of the keys
    that determine it (see :func:`partition_keys`)."""

    topic: str
    key: tuple[str, ...]
    """What the topic's records are keyed (partitioned) by."""
    rules: RuleSet
    read_key: Callable[[Event], Slot | None]
    resets: bool
    """A rule of the route resets on success: successes are written too."""
    kinds: dict[tuple[str, Any], bool] = dataclasses.field(default_factory=dict)
    """Per ``(type, reason)`` of a failure, whether a rule of the route may count it."""
    placed: dict[Slot, tuple[str, int]] = dataclasses.field(default_factory=dict)
    """Per key value, the topic and partition its copies go to, for :attr:`placed_among`
    partitions: the default partitioner's choice, as every instance of the group makes it."""
    placed_among: int = 0

    def place(self, slot: Slot, partitions: int) -> tuple[str, int]:
        """The topic and partition of the copies of events whose key value is ``slot``."""
        if partitions != self.placed_among or len(self.placed) >= _MAX_PLACED:
            self.placed.clear()  # key values come from events: bounded
            self.placed_among = partitions
        where = self.placed.get(slot)
        if where is None:
            index = default_partition(record_key(slot), partitions)
            where = self.placed[slot] = (self.topic, index)
        return where

    def retention_seconds(self, max_event_age: float) -> float:
        """How long the topic must keep records: the longest window of its rules, to rebuild the
        windows of a partition that moves, and ``max_event_age``, over which evidence is late."""
        return max(rule.window for rule in self.rules.rules) + max_event_age

    def wants(self, event: Event) -> bool:
        """True when a rule of the route may count ``event`` (or reset on it)."""
        if event.type == LOGIN_SUCCEEDED:
            return self.resets
        kind = (event.type, event.reason)
        wanted = self.kinds.get(kind)
        if wanted is None:
            if len(self.kinds) >= _MAX_KINDS:
                self.kinds.clear()
            wanted = self.kinds[kind] = any(
                rule.matcher().admits(*kind) for rule in self.rules.rules
            )
        return wanted


class Repartitioning:
    """Which rules are counted where, and the records that carry events to their key's topic."""

    def __init__(self, rules: RuleSet, prefix: str) -> None:
        self.prefix = prefix
        keys = list(dict.fromkeys(tuple(r.key) for r in rules.rules if is_repartitioned(r)))
        counted_on = partition_keys(keys)
        by_key: dict[tuple[str, ...], list[Rule]] = {}
        for rule in rules.rules:
            if is_repartitioned(rule):
                by_key.setdefault(counted_on[tuple(rule.key)], []).append(rule)
        self.local = dataclasses.replace(
            rules, rules=tuple(rule for rule in rules.rules if not is_repartitioned(rule))
        )
        """The rules counted on the source topics."""
        self.routes = tuple(
            Route(
                topic=internal_topic(prefix, key),
                key=key,
                rules=dataclasses.replace(rules, rules=tuple(keyed)),
                read_key=key_reader(key),
                resets=any(rule.reset_on_success for rule in keyed),
            )
            for key, keyed in by_key.items()
        )
        self.topics = {route.topic: route for route in self.routes}
        self._allowed = rules.allowed
        self._allowlists_ips = bool(rules.allowed.networks)
        self._wanting: dict[tuple[str, Any], tuple[Route, ...]] = {}
        """Per ``(type, reason)``, the routes that may count (or reset on) such an event."""

    def rules_for(self, topic: str) -> RuleSet:
        """The rules counted on ``topic``: its key's rules on an internal topic, else the local
        ones."""
        route = self.topics.get(topic)
        return route.rules if route is not None else self.local

    def routes_for(self, event: Event) -> tuple[Route, ...]:
        """The routes whose rules may count ``event`` (or reset on it)."""
        # Runs for every event the daemon reads: what is known per rule set is looked up once
        # (the routes per kind of event, whether any address is allowlisted).
        if event.type not in KNOWN_TYPES:
            return ()
        if self._allowlists_ips and self._allowed.has_ip(event.ip):
            return ()
        kind = (event.type, event.reason)
        routes = self._wanting.get(kind)
        if routes is None:
            if len(self._wanting) >= _MAX_KINDS:
                self._wanting.clear()
            routes = self._wanting[kind] = tuple(r for r in self.routes if r.wants(event))
        return routes

    def copies(
        self, event: Event, topic: str, partition: int, offset: int
    ) -> list[tuple[Route, Slot, bytes]]:
        """Each route whose rules may count ``event`` (read at ``topic/partition/offset``) or
        reset on it, the event's key value there, and its copy: the event encoded as an element
        of a bundle, with an id made here if it has none (one copy serves every route)."""
        copies = []
        copy: bytes | None = None
        for route in self.routes_for(event):
            slot = route.read_key(event)
            if slot is None:
                continue
            if copy is None:
                made = None if event.event_id else derived_event_id(topic, partition, offset)
                copy = _encode(bundle_element(event, made))
            copies.append((route, slot, copy))
        return copies

    def gather(
        self,
        event: Event,
        topic: str,
        partition: int,
        offset: int,
        partitions: Mapping[str, int],
        gathered: dict[tuple[str, int], list[bytes]],
    ) -> None:
        """Add the :meth:`copies` of ``event`` to ``gathered``, by the internal topic and
        partition each goes to. ``partitions`` gives each internal topic's partition count."""
        # Kept encoded: bytes are not tracked by the garbage collector, where thousands of
        # element tuples (each holding a dict) kept for the batch cost collections.
        for route, slot, copy in self.copies(event, topic, partition, offset):
            where = route.placed.get(slot)
            if where is None or route.placed_among != partitions[route.topic]:
                where = route.place(slot, partitions[route.topic])
            gathered.setdefault(where, []).append(copy)

    def forward(
        self, event: Event, topic: str, partition: int, offset: int
    ) -> list[OutgoingRecord]:
        """The :meth:`copies` of ``event`` as records for the sink to place and bundle (before
        the internal topics' partitions are known; :meth:`gather` places them itself)."""
        # By position: a keyword costs as much again.
        return [
            OutgoingRecord(route.topic, copy, record_key(slot), (), None, True)
            for route, slot, copy in self.copies(event, topic, partition, offset)
        ]
