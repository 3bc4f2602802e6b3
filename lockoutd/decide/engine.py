"""The engine: events in, firings out. Pure and synchronous; time is always passed in."""

from __future__ import annotations

import functools
from bisect import insort
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import msgspec

from lockoutd.decide import core
from lockoutd.decide.windows import (
    DistinctRecord,
    DistinctWindows,
    EventRecord,
    EventWindows,
    InvalidRecord,
    Slot,
)
from lockoutd.decode.event import LOGIN_SUCCEEDED, Event, field_reader, record_key_for
from lockoutd.rules.model import AllowedSet, EventMatcher, Rule, RuleSet

KeyValues = tuple[str, ...]

# How far (in event time) the watermark moves between two sweeps for idle keys.
_SWEEP_EVERY_SECONDS = 60.0

_MAX_PLANS = 1_024
"""Bound on the cached ``(type, reason)`` plans: both come from events, so an attacker could
send endless new reasons; past the bound the cache starts again from empty."""


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
    replayed_only: bool = False
    """Every event the window holds came from a replayed record (one acted on before a restart
    or a rebalance): this crossing acted before and must not act again. A crossing that holds
    any event not acted on before acts, in whatever order the two kinds arrived."""

    @property
    def key_text(self) -> str:
        return "|".join(self.key)


Counts = Callable[[Event, str | None], "Firing | None"]
"""Counts a matched event in its rule's window for the event's key; a firing if it crossed. The
second argument is the Kafka record's key: when it is not the rule's key, the key's events may be
spread over partitions (and instances), each of which sees only its share."""

Plan = Callable[[Event, str | None], list[Firing]]
"""Counts an event in every rule its type and reason meet, in rule order; the firings."""


class Process(Protocol):
    """``Engine.process``: see :meth:`Front.process`."""

    def __call__(
        self,
        event: Event,
        now: float,
        *,
        record_key: bytes | None = None,
        replayed: bool = False,
    ) -> list[Firing]: ...


class RuleState:
    """The windows of one rule, by key."""

    __slots__ = (
        "_add_event",
        "_add_value",
        "_checks_ips",
        "_counts",
        "_others",
        "_read_distinct",
        "_read_key",
        "allowed",
        "counter",
        "counts",
        "keeps_evidence",
        "key_mismatches",
        "match",
        "replayed",
        "replayed_sweep_due",
        "rule",
        "windows",
    )

    def __init__(self, rule: Rule, dispatch: Any) -> None:
        """``dispatch``: the compiled rule loop (``lockoutd.decide._cdispatch``) the engine
        counts through, or None for the Python loop."""
        self.rule = rule
        self.match: EventMatcher = rule.matcher()
        self.allowed = AllowedSet.of([rule.allowlist])
        lock = rule.action.lock
        keep_events = lock is not None and lock.targets == "contributors"
        self.keeps_evidence = keep_events
        """The windows keep each counted event (as :meth:`Event.as_evidence`) to lock its user."""
        self.key_mismatches = 0
        """Events counted under a key other than their record's key, since last taken."""
        readers = tuple(field_reader(name) for name in rule.key)
        self._read_key: Callable[[Event], Any] = (
            readers[0] if len(readers) == 1 else functools.partial(_key_values, readers)
        )
        self._checks_ips = bool(self.allowed.networks)
        self._others = self.match.others
        self.windows: EventWindows | DistinctWindows
        if rule.distinct is None:
            self.windows = core.EventWindows(rule.threshold, rule.window, keep_events=keep_events)
            self._add_event = self.windows.add
            self._counts: Counts = self._count_events
        else:
            self.windows = core.DistinctWindows(
                rule.threshold, rule.window, keep_events=keep_events
            )
            self._add_value = self.windows.add
            self._read_distinct = field_reader(rule.distinct)
            self._counts = self._count_distinct
        self.counts: Counts = self._counts if self._others is None else self._count_if_others_hold
        """Counts an event whose type and reason this rule matches (see ``Engine.process``)."""
        self.counter: Any = None
        """The same counting compiled (``lockoutd.decide._cdispatch``), where it is chosen."""
        if dispatch is not None:
            self.counter = dispatch.RuleCounter(
                self,
                rule.key,
                rule.distinct,
                self.windows.add,
                self._firing,
                self._others,
                self.allowed.has_ip if self._checks_ips else None,
            )
        self.replayed: dict[Slot, list[float] | dict[str, float]] = {}
        """Per key, the times of the replayed events it counted: the newest ``threshold`` times,
        or for a distinct count each value's newest replayed sighting (of the ``threshold``
        values seen last). Only replayed keys are here, and only until their window moves on:
        the rebuild of a partition is its one source."""
        self.replayed_sweep_due = float("-inf")
        """When (by the watermark) :meth:`forget_replayed_before` next reads every replayed key."""

    def forget(self, event: Event) -> None:
        """Drop the window of ``event``'s key (a success resets the count), unless the success
        is older than the newest failure the window counted: a success from before those
        failures cannot have ended them, and a real success written to the topic again later
        must not clear what came after it (README, "How a window counts")."""
        slot = _slot(self._read_key(event))
        if slot is None:
            return
        if slot in self.windows:
            if self.windows.span(slot)[2] > event.occurred_at:
                return
            self.windows.forget(slot)
        self.replayed.pop(slot, None)

    def note_replayed(self, event: Event) -> None:
        """Remember that ``event``, about to be counted, comes from a record acted on before."""
        if (self._others is not None and not self._others(event)) or (
            self._checks_ips and self.allowed.has_ip(event.ip)
        ):
            return
        slot = _slot(self._read_key(event))
        if slot is None:
            return
        at = event.occurred_at
        threshold = self.rule.threshold
        if self.rule.distinct is None:
            times = self.replayed.setdefault(slot, [])
            assert isinstance(times, list)
            insort(times, at)
            # A replayed time with `threshold` newer ones behind it can never be kept again.
            del times[:-threshold]
            return
        value = self._read_distinct(event)
        if value is None or value == "":
            return
        seen = self.replayed.setdefault(slot, {})
        assert isinstance(seen, dict)
        value = value if isinstance(value, str) else str(value)
        if at > seen.get(value, float("-inf")):
            seen[value] = at
        if len(seen) > threshold:
            del seen[min(seen, key=seen.__getitem__)]

    def _replayed_only(self, slot: Slot) -> bool:
        # True when every time the window keeps for `slot` is one of its replayed times.
        replayed = self.replayed.get(slot)
        if replayed is None:
            return False
        if isinstance(replayed, dict):
            seen = cast(DistinctWindows, self.windows).values(slot)
            return all(replayed.get(v) == at for v, at in seen.items())
        return not Counter(cast(EventWindows, self.windows).times(slot)) - Counter(replayed)

    def restore(self, records: list[EventRecord] | list[DistinctRecord]) -> None:
        """Take the windows of ``records``, every event of which was acted on before: a crossing
        made of them and of replayed events alone does not act again."""
        # By the rule, not the class of its windows: the compiled windows are other classes.
        if self.rule.distinct is None:
            events = [r for r in records if isinstance(r, EventRecord)]
            if len(events) != len(records):
                raise InvalidRecord(f"rule {self.rule.name} counts events, not distinct values")
            cast(EventWindows, self.windows).restore(events)
            threshold = self.rule.threshold
            for record in events:
                self.replayed[record.slot] = record.times[-threshold:]
            return
        distinct = [r for r in records if isinstance(r, DistinctRecord)]
        if len(distinct) != len(records):
            raise InvalidRecord(f"rule {self.rule.name} counts distinct values, not events")
        cast(DistinctWindows, self.windows).restore(distinct)
        for seen in distinct:
            self.replayed[seen.slot] = dict(seen.seen)

    def forget_replayed_before(self, watermark: float) -> None:
        """Drop the replayed times of keys that are gone or whose every time left the window.

        It reads every replayed key, so it runs at most every sixteenth of the window (and every
        sweep for windows up to 16 minutes): a rebuild of a partition under a ``1d`` rule sweeps
        once a minute of event time, and reading a quarter of a million replayed keys at each
        made the rebuild 25 times slower than reading the same records anew. Stale replayed
        times are harmless meanwhile: a crossing compares them with the times its window holds.
        """
        if watermark < self.replayed_sweep_due:
            return
        self.replayed_sweep_due = watermark + self.rule.window / 16
        start = watermark - self.rule.window
        windows = self.windows
        gone = [
            slot
            for slot, times in self.replayed.items()
            if slot not in windows
            or (max(times.values()) if isinstance(times, dict) else times[-1]) <= start
        ]
        for slot in gone:
            del self.replayed[slot]

    def _count_if_others_hold(self, event: Event, record_key: str | None) -> Firing | None:
        # Conditions on fields other than type and reason, for the few rules that have them.
        assert self._others is not None
        return self._counts(event, record_key) if self._others(event) else None

    def _count_events(self, event: Event, record_key: str | None) -> Firing | None:
        if self._checks_ips and self.allowed.has_ip(event.ip):
            return None
        slot = self._read_key(event)
        if slot.__class__ is not str or not slot:  # _slot(), without the call for a str
            slot = _slot(slot)
            if slot is None:
                return None
        if record_key is not None and slot != record_key:
            self.key_mismatches += 1  # a tuple (a key of several fields) never equals a str
        kept = event.as_evidence() if self.keeps_evidence else event
        if self._add_event(slot, event.occurred_at, event.event_id, kept):
            return self._firing(event, slot)
        return None

    def _count_distinct(self, event: Event, record_key: str | None) -> Firing | None:
        if self._checks_ips and self.allowed.has_ip(event.ip):
            return None
        slot = self._read_key(event)
        if slot.__class__ is not str or not slot:  # as in _count_events
            slot = _slot(slot)
            if slot is None:
                return None
        if record_key is not None and slot != record_key:
            self.key_mismatches += 1
        value = self._read_distinct(event)
        if value.__class__ is not str:
            if value is None:
                return None
            value = str(value)
        if not value:
            return None
        kept = event.as_evidence() if self.keeps_evidence else event
        if self._add_value(slot, event.occurred_at, value, kept):
            return self._firing(event, slot)
        return None

    def _firing(self, event: Event, slot: Slot) -> Firing:
        count, oldest, newest = self.windows.span(slot)
        return Firing(
            rule=self.rule,
            key=slot if isinstance(slot, tuple) else (slot,),
            event=event,
            count=count,
            first_event_at=oldest,
            last_event_at=newest,
            contributors=self.windows.contributors(slot),
            replayed_only=bool(self.replayed) and self._replayed_only(slot),
        )


def _count_each(counters: tuple[Counts, ...], event: Event, key: str | None) -> list[Firing]:
    firings: list[Firing] = []
    for counts in counters:
        if (firing := counts(event, key)) is not None:
            firings.append(firing)
    return firings


def _key_values(readers: tuple[Callable[[Event], Any], ...], event: Event) -> KeyValues | None:
    values = []
    for read in readers:
        value = read(event)
        if value is None or value == "":
            return None  # an event that lacks a key field cannot be counted per that key
        values.append(value if isinstance(value, str) else str(value))
    return tuple(values)


def _slot(value: Any) -> Slot | None:
    # A key read as the text of its value (an extra field may hold a number), or its tuple.
    if value.__class__ is str:
        return value or None
    if value is None or value == "":
        return None
    return value if isinstance(value, tuple) else str(value)


class Front:
    """What ``Engine.process`` does with an event before its rules count it: the watermark and
    the sweep it triggers, the allowlist of addresses, a success's reset, the plan of the event's
    kind, the replayed events' note. The reference; ``lockoutd.decide._cdispatch.Front`` is the
    same, compiled, for the compiled windows.

    ``now`` bounds event times: an event stamped later than ``now`` cannot have happened yet, so
    it is counted at ``now`` (README, "How a window counts"). Counted at its own time, it would
    anchor its key's window ahead of the real failures and push them out of it, and keep the key
    from ever looking idle; one event stamped far in the future would also make every other key
    look idle and evict it.
    """

    __slots__ = (
        "_ip_allowlisted",
        "_note_replayed",
        "_plan_for",
        "_reset",
        "_sweep",
        "next_sweep",
        "plans",
        "watermark",
    )

    def __init__(
        self,
        plan_for: Callable[[tuple[str, Any]], Plan],
        reset: Callable[[Event], None],
        sweep: Callable[[], int],
        note_replayed: Callable[[Event, tuple[str, Any]], None],
        ip_allowlisted: Callable[[str | None], bool] | None,
    ) -> None:
        """The engine's steps that are not the front's: the plan of a kind not met before, a
        success's reset, the sweep for idle keys, the note of a replayed event, and whether an
        address is allowlisted (None when none is)."""
        self._plan_for = plan_for
        self._reset = reset
        self._sweep = sweep
        self._note_replayed = note_replayed
        self._ip_allowlisted = ip_allowlisted
        self.plans: dict[tuple[str, Any], Plan] = {}
        self.watermark = float("-inf")
        self.next_sweep = float("-inf")

    def process(
        self,
        event: Event,
        now: float,
        *,
        record_key: bytes | None = None,
        replayed: bool = False,
    ) -> list[Firing]:
        """Count ``event`` in every rule it matches and return the rules it made fire.

        ``replayed`` says the event's record was acted on before (a partition's windows are
        being rebuilt): the firings it causes say whether their crossing holds only such events.
        """
        at = event.occurred_at
        if at > self.watermark:
            if at > now:
                event = msgspec.structs.replace(event, occurred_at=now)
                at = now
            self.watermark = at
            if at >= self.next_sweep:
                self._sweep()
        if self._ip_allowlisted is not None and self._ip_allowlisted(event.ip):
            return []
        if event.type == LOGIN_SUCCEEDED:
            self._reset(event)
            return []
        kind = (event.type, event.reason)
        plan = self.plans.get(kind)
        if plan is None:
            plan = self._plan_for(kind)
        if replayed:
            self._note_replayed(event, kind)
        key = None
        if record_key is not None:
            key = record_key_for(record_key.decode("utf-8", "replace"), event)
        return plan(event, key)


class Engine:
    """Evaluates every rule over every event.

    ``process(event, now, record_key=None, replayed=False)`` counts an event in every rule it
    matches and returns the rules it made fire: see :class:`Front`, which it is.
    """

    process: Process

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        # Chosen once, for the rules' counters, the front and every plan: a plan made later (for
        # a kind met later) uses the loop the counters were made for, whatever is chosen since.
        self._dispatch = core.DISPATCH
        self._states = [RuleState(rule, self._dispatch) for rule in rules.rules]
        front = Front if self._dispatch is None else self._dispatch.Front
        self._front: Front = front(
            self._plan,
            self._reset,
            self.evict_idle,
            self._note_replayed,
            rules.ip_allowlisted if rules.allowed.networks else None,
        )
        # The front's own method, not one that calls it: a call fewer for every event.
        self.process = self._front.process

    def _plan(self, kind: tuple[str, Any]) -> Plan:
        # The rules whose type and reason conditions an event of this kind meets, in rule order
        # (the order of the firings): one dict lookup per event instead of a matcher per rule.
        plans = self._front.plans
        if len(plans) >= _MAX_PLANS:
            plans.clear()
        states = [state for state in self._states if state.match.admits(*kind)]
        plan: Plan
        if self._dispatch is not None and all(state.counter is not None for state in states):
            plan = self._dispatch.Plan([state.counter for state in states]).count_each
        else:
            plan = functools.partial(_count_each, tuple(state.counts for state in states))
        plans[kind] = plan
        return plan

    def _reset(self, event: Event) -> None:
        # A success clears the count of the same key, whatever failure reason the rule counts.
        for state in self._states:
            if state.rule.reset_on_success and state.match.matches_success(event):
                state.forget(event)

    def _note_replayed(self, event: Event, kind: tuple[str, Any]) -> None:
        for state in self._states:
            if state.match.admits(*kind):
                state.note_replayed(event)

    def reloaded(self, rules: RuleSet) -> Engine:
        """A new engine for ``rules`` that keeps the counts of every rule that did not change."""
        new = Engine(rules)
        unchanged = {state.rule.name: state for state in self._states}
        new._states = [
            kept if (kept := unchanged.get(state.rule.name)) and kept.rule == state.rule else state
            for state in new._states
        ]
        new._front.watermark = self._front.watermark
        return new

    @property
    def watermark(self) -> float:
        """The newest event time counted (``-inf`` before any)."""
        return self._front.watermark

    def rule_states(self) -> list[RuleState]:
        """The state of every rule, in rule order (for checkpoints)."""
        return list(self._states)

    def restore_watermark(self, watermark: float) -> None:
        """Carry on from a checkpoint's watermark, and sweep the keys idle by it."""
        if watermark > self._front.watermark:
            self._front.watermark = watermark
        self.evict_idle()

    def evict_idle(self) -> int:
        """Forget keys whose every event has left the window; return how many were forgotten."""
        watermark = self._front.watermark
        evicted = sum(state.windows.evict_idle(watermark) for state in self._states)
        for state in self._states:
            if state.replayed:
                state.forget_replayed_before(watermark)
        self._front.next_sweep = watermark + _SWEEP_EVERY_SECONDS
        return evicted

    def take_key_mismatches(self) -> dict[str, int]:
        """Per rule, events counted under a key other than their record's since the last call."""
        taken = {s.rule.name: s.key_mismatches for s in self._states if s.key_mismatches}
        for state in self._states:
            state.key_mismatches = 0
        return taken

    def replayed_keys(self) -> int:
        """How many keys still hold replayed times (none once the rebuilt windows moved on)."""
        return sum(len(state.replayed) for state in self._states)

    def tracked_keys(self) -> Iterator[tuple[str, int]]:
        """``(rule name, number of keys with live state)`` for every rule."""
        for state in self._states:
            yield state.rule.name, len(state.windows)

    def rule_windows(self) -> Iterator[tuple[str, EventWindows | DistinctWindows]]:
        """``(rule name, its windows)`` for every rule, for the bound on tracked keys."""
        for state in self._states:
            yield state.rule.name, state.windows


def key_reader(fields: Sequence[str]) -> Callable[[Event], Slot | None]:
    """Reads an event's key for a rule keyed on ``fields`` exactly as the rule counts it: the
    text of its one value, or the tuple of its values; ``None`` when the event lacks one."""
    readers = tuple(field_reader(name) for name in fields)
    if len(readers) == 1:
        [read] = readers
        if tuple(fields) == ("ip_prefix",):
            # A network, or None: already a slot. The key of every forwarded event, read as
            # the compiled rule loop reads it where that loop runs.
            return read if core.DISPATCH is None else core.DISPATCH.ip_prefix_of
        return lambda event: _slot(read(event))
    return functools.partial(_key_values, readers)
