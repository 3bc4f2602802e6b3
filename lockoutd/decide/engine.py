"""The engine: events in, firings out. Pure and synchronous; time is always passed in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lockoutd.decide.windows import DistinctWindow, KeyWindow
from lockoutd.decode.event import LOGIN_SUCCEEDED, Event, field_reader
from lockoutd.rules.model import AllowedSet, EventMatcher, Rule, RuleSet

KeyValues = tuple[str, ...]
Slot = str | KeyValues
"""How a key is held in ``RuleState.windows``: its one value for a key of one field (no tuple
to allocate and keep per key: a million keys are a common sight), the tuple otherwise."""

# How far (in event time) the watermark moves between two sweeps for idle keys.
_SWEEP_EVERY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Firing:
    """A rule crossed its threshold for one key; the event is the one that made it cross."""

    rule: Rule
    key: KeyValues
    event: Event
    count: int
    first_event_at: float
    last_event_at: float
    contributors: tuple[Event, ...] = ()
    """The counted events, for rules that lock every contributor; empty otherwise."""

    @property
    def key_text(self) -> str:
        return "|".join(self.key)


class RuleState:
    """The windows of one rule, by key."""

    __slots__ = (
        "_checks_ips",
        "_distinct_of",
        "_key_readers",
        "_slot_of",
        "_threshold",
        "allowed",
        "counts",
        "distinct",
        "keep_events",
        "key_fields",
        "key_mismatches",
        "match",
        "matches",
        "rule",
        "window",
        "windows",
    )

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.match: EventMatcher = rule.matcher()
        self.matches: Callable[[Event], bool] = self.match.test
        self.allowed = AllowedSet.of([rule.allowlist])
        self.key_fields = tuple(rule.key)
        self.distinct = rule.distinct
        self.window = rule.window
        lock = rule.action.lock
        self.keep_events = lock is not None and lock.targets == "contributors"
        self.windows: dict[Slot, KeyWindow | DistinctWindow] = {}
        self.key_mismatches = 0
        """Events counted under a key other than their record's key, since last taken."""
        self._key_readers = tuple(field_reader(name) for name in self.key_fields)
        self._slot_of = self._single_slot if len(self._key_readers) == 1 else self.key_of
        self._distinct_of = field_reader(rule.distinct) if rule.distinct is not None else None
        self._threshold = rule.threshold
        self._checks_ips = bool(self.allowed.networks)
        self.counts: Callable[[Event, str | None], Firing | None] = (
            self._count_events if self._distinct_of is None else self._count_distinct
        )
        """Count a matched event in its key's window; a firing if it crossed.

        Bound once to this rule's kind of window, so the choice is not made on every event. The
        second argument is the Kafka record's key: when it is not the rule's key, the key's
        events may be spread over partitions (and instances), each of which sees only its share.
        """

    def key_of(self, event: Event) -> KeyValues | None:
        values = []
        for read in self._key_readers:
            value = read(event)
            if value is None or value == "":
                return None  # an event that lacks a key field cannot be counted per that key
            values.append(value if isinstance(value, str) else str(value))
        return tuple(values)

    def _single_slot(self, event: Event) -> str | None:
        value: Any = self._key_readers[0](event)
        if value is None or value == "":
            return None
        return value if isinstance(value, str) else str(value)

    def forget(self, event: Event) -> None:
        """Drop the window of ``event``'s key (a success resets the count)."""
        slot = self._slot_of(event)
        if slot is not None:
            self.windows.pop(slot, None)

    def _count_events(self, event: Event, record_key: str | None = None) -> Firing | None:
        if self._checks_ips and self.allowed.has_ip(event.ip):
            return None
        slot = self._slot_of(event)
        if slot is None:
            return None
        if record_key is not None and slot != record_key:
            self.key_mismatches += 1  # a tuple (a key of several fields) never equals a str
        window = self.windows.get(slot)
        if window is None:
            window = self.windows[slot] = KeyWindow(keep_events=self.keep_events)
        assert isinstance(window, KeyWindow)
        if window.add(
            event.occurred_at,
            threshold=self._threshold,
            window=self.window,
            event_id=event.event_id,
            event=event,
        ):
            return self._firing(event, slot, window)
        return None

    def _count_distinct(self, event: Event, record_key: str | None = None) -> Firing | None:
        if self._checks_ips and self.allowed.has_ip(event.ip):
            return None
        slot = self._slot_of(event)
        if slot is None:
            return None
        if record_key is not None and slot != record_key:
            self.key_mismatches += 1
        window = self.windows.get(slot)
        assert self._distinct_of is not None
        value = self._distinct_of(event)
        if value is None or value == "":
            return None
        if window is None:
            window = self.windows[slot] = DistinctWindow(keep_events=self.keep_events)
        assert isinstance(window, DistinctWindow)
        if window.add(
            event.occurred_at,
            str(value),
            threshold=self._threshold,
            window=self.window,
            event=event,
        ):
            return self._firing(event, slot, window)
        return None

    def _firing(self, event: Event, slot: Slot, window: KeyWindow | DistinctWindow) -> Firing:
        return Firing(
            rule=self.rule,
            key=slot if isinstance(slot, tuple) else (slot,),
            event=event,
            count=window.count,
            first_event_at=window.oldest,
            last_event_at=window.newest,
            contributors=window.contributors(),
        )


class Engine:
    """Evaluates every rule over every event.

    ``process`` takes the wall-clock ``now`` only to bound the watermark: one event stamped far
    in the future must not make every other key look idle and evict it.
    """

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self._states = [RuleState(rule) for rule in rules.rules]
        self._watermark = float("-inf")
        self._next_sweep = float("-inf")
        self._allowlists_ips = bool(rules.allowed.networks)

    def process(self, event: Event, now: float, *, record_key: bytes | None = None) -> list[Firing]:
        """Count ``event`` in every rule it matches and return the rules it made fire."""
        at = event.occurred_at
        if at > self._watermark:
            self._watermark = now if now < at else at  # min(at, now), without the call
            if self._watermark >= self._next_sweep:
                self.evict_idle()
        if self._allowlists_ips and self.rules.ip_allowlisted(event.ip):
            return []
        if event.type == LOGIN_SUCCEEDED:
            self._reset(event)
            return []
        key = record_key.decode(errors="replace") if record_key is not None else None
        firings: list[Firing] = []
        for state in self._states:
            if state.matches(event) and (firing := state.counts(event, key)) is not None:
                firings.append(firing)
        return firings

    def _reset(self, event: Event) -> None:
        # A success clears the count of the same key, whatever failure reason the rule counts.
        for state in self._states:
            if state.rule.reset_on_success and state.match.matches_success(event):
                state.forget(event)

    def reloaded(self, rules: RuleSet) -> Engine:
        """A new engine for ``rules`` that keeps the counts of every rule that did not change."""
        new = Engine(rules)
        unchanged = {state.rule.name: state for state in self._states}
        new._states = [
            kept if (kept := unchanged.get(state.rule.name)) and kept.rule == state.rule else state
            for state in new._states
        ]
        new._watermark = self._watermark
        return new

    def evict_idle(self) -> int:
        """Forget keys whose every event has left the window; return how many were forgotten."""
        evicted = 0
        for state in self._states:
            # window.idle_since(...), inlined: this visits every key of every rule.
            limit = self._watermark - state.window
            idle = [key for key, window in state.windows.items() if window.newest <= limit]
            for key in idle:
                del state.windows[key]
            evicted += len(idle)
        self._next_sweep = self._watermark + _SWEEP_EVERY_SECONDS
        return evicted

    def take_key_mismatches(self) -> dict[str, int]:
        """Per rule, events counted under a key other than their record's since the last call."""
        taken = {s.rule.name: s.key_mismatches for s in self._states if s.key_mismatches}
        for state in self._states:
            state.key_mismatches = 0
        return taken

    def tracked_keys(self) -> Iterator[tuple[str, int]]:
        """``(rule name, number of keys with live state)`` for every rule."""
        for state in self._states:
            yield state.rule.name, len(state.windows)
