"""Scenario files: events, each naming the rules it must fire (README, "Testing your rules").

One JSON object a line::

    {"note": "fifth wrong password locks", "event": {...}, "fires": ["password-bruteforce"]}

Each file is replayed on its own, from empty windows, through the pipeline ``lockoutd replay``
runs (the daemon's decoding, windows and allowlists, in shadow mode), one event at a time; the
rules that fired on each event are compared with its ``fires``. ``lockoutd test-rules`` and the
test of the shipped rules both use :func:`run_scenario`.
"""

from __future__ import annotations

import asyncio
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from lockoutd.decode.formats import FormatName
from lockoutd.decode.limits import BOUNDED_OBJECT
from lockoutd.replay.runner import Replay
from lockoutd.rules import RuleSet
from lockoutd.rules.loader import rule_files
from lockoutd.settings import Settings

SCENARIO_KEYS = frozenset({"note", "event", "fires"})
_REQUIRED = frozenset({"event", "fires"})
_SHAPE = (
    "expected an object with event (the event) and fires (the rules it must fire), "
    "and optionally note"
)


@dataclass(frozen=True)
class Mismatch:
    """An event that fired other rules than its line expects."""

    line: int
    note: str
    expected: list[str]
    fired: list[str]


@dataclass
class ScenarioResult:
    """What replaying one scenario file found."""

    path: Path
    events: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)
    """Lines that could not be tested: their number and why."""

    @property
    def failed(self) -> int:
        """Events that did not fire what they expect, or could not be read."""
        return len(self.mismatches) + len(self.problems)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def describe(self) -> list[str]:
        """Each failure as ``file:line: ...`` with what was expected and what fired."""
        found: list[tuple[int, list[str]]] = [
            (line, [f"{self.path}:{line}: {problem}"]) for line, problem in self.problems
        ]
        for m in self.mismatches:
            found.append(
                (
                    m.line,
                    [
                        f"{self.path}:{m.line}: {m.note}".rstrip(": "),
                        f"  expected: {_names(m.expected)}",
                        f"  fired:    {_names(m.fired)}",
                    ],
                )
            )
        return [text for _, lines in sorted(found, key=lambda item: item[0]) for text in lines]


def _names(rules: list[str]) -> str:
    return ", ".join(rules) if rules else "(nothing)"


def looks_like_a_scenario(line: bytes) -> bool:
    """True when ``line`` is a scenario line rather than an event (``replay`` says so)."""
    try:
        # Bounded like an event: a hostile first line nested a thousand deep is just not one.
        document: dict[str, object] = msgspec.json.decode(line, type=BOUNDED_OBJECT)
    except msgspec.DecodeError:  # ValidationError (not an object, too deep) is one too
        return False
    return document.keys() >= _REQUIRED and document.keys() <= SCENARIO_KEYS


def default_scenarios(rule_paths: list[Path]) -> list[Path]:
    """The scenario files beside the rules: ``scenarios/*.jsonl`` in each rule folder, and for a
    rule file, ``scenarios/<its name>.jsonl`` next to it."""
    found: list[Path] = []
    for path in rule_paths:
        if path.is_dir():
            found += sorted((path / "scenarios").glob("*.jsonl"))
    for path in rule_files(p for p in rule_paths if p.is_file()):
        candidate = path.parent / "scenarios" / f"{path.stem}.jsonl"
        if candidate.is_file() and candidate not in found:
            found.append(candidate)
    return found


async def run_scenario(
    settings: Settings, rules: RuleSet, path: Path, *, event_format: FormatName = "native"
) -> ScenarioResult:
    """Replay the scenario file ``path`` against ``rules`` and compare each line's ``fires``."""
    result = ScenarioResult(path)
    try:
        text = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        result.problems.append((1, f"cannot read the scenario file: {exc.strerror or exc}"))
        return result
    topic = settings.kafka.topics[0]
    replay = Replay(settings, rules, topic=topic, event_format=event_format, timelines=False)
    known = sorted(rule.name for rule in rules.rules)
    for number, raw in enumerate(text.split(b"\n"), start=1):
        if not raw.strip():
            continue
        result.events += 1
        case = _case(raw, known)
        if isinstance(case, str):
            result.problems.append((number, case))
            continue
        note, event, expected = case
        before = _fired(replay, known)
        fed = await replay.feed_lines([event])
        if fed.invalid:
            [(_, error)] = fed.invalid
            result.problems.append((number, f"the event is not valid: {error.reason}: {error}"))
            continue
        after = _fired(replay, known)
        fired = sorted(name for name in known for _ in range(int(after[name] - before[name])))
        if fired != sorted(expected):
            result.mismatches.append(Mismatch(number, note, sorted(expected), fired))
    return result


def _case(raw: bytes, known: list[str]) -> tuple[str, bytes, list[str]] | str:
    """The note, the event (as a record value) and the expected rules; or what is wrong."""
    try:
        document: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return "not a JSON object"
    if not isinstance(document, dict):
        return "not a JSON object"
    if not (_REQUIRED <= document.keys() <= SCENARIO_KEYS):
        return _SHAPE
    note, event, fires = document.get("note", ""), document["event"], document["fires"]
    if not isinstance(fires, list) or not all(isinstance(name, str) for name in fires):
        return "fires must be a list of rule names (an empty list: nothing may fire)"
    if not isinstance(note, str):
        return "note must be text"
    for name in fires:
        if name not in known:
            nearest = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {nearest[0]}?" if nearest else ""
            return f"fires names {name}, which no rule file defines{hint}"
    return note, msgspec.json.encode(event), fires


def _fired(replay: Replay, rules: list[str]) -> dict[str, float]:
    registry = replay.metrics.registry
    return {
        name: registry.get_sample_value("lockoutd_rule_fired_total", {"rule": name}) or 0.0
        for name in rules
    }
