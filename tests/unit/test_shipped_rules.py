"""The shipped rules against their scenario files: every event line names the rules it fires."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest

from lockoutd.decode.native import event_from_mapping
from lockoutd.replay.scenarios import run_scenario
from lockoutd.rules import load_rules
from lockoutd.rules.loader import rule_files
from lockoutd.settings import Settings

RULES = Path(__file__).resolve().parents[2] / "rules"
SCENARIOS = RULES / "scenarios"


def test_every_shipped_rule_file_has_a_scenario() -> None:
    """Each file in rules/ comes with scenarios/<name>.jsonl."""
    missing = [p.name for p in rule_files([RULES]) if not (SCENARIOS / f"{p.stem}.jsonl").exists()]
    assert missing == []


def test_every_shipped_rule_fires_in_some_scenario() -> None:
    """No shipped rule goes untested: each one fires at least once across the scenarios."""
    fired = {
        name
        for path in SCENARIOS.glob("*.jsonl")
        for line in path.read_text().splitlines()
        for name in json.loads(line)["fires"]
    }
    assert {rule.name for rule in load_rules([RULES]).rules} <= fired


@pytest.mark.parametrize("scenario", sorted(SCENARIOS.glob("*.jsonl")), ids=lambda p: p.stem)
def test_scenario_fires_exactly_the_rules_each_line_names(scenario: Path) -> None:
    """Replaying a scenario through all shipped rules fires what each line expects, no more;
    this is what ``lockoutd test-rules`` does."""
    result = asyncio.run(run_scenario(Settings(), load_rules([RULES]), scenario))
    assert result.describe() == []
    assert result.events == len(scenario.read_text().splitlines())


def test_scenario_lines_are_valid_events() -> None:
    """Every scenario line holds a note, an event that decodes and a list of rule names."""
    for path in SCENARIOS.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            case = msgspec.json.decode(line)
            assert set(case) == {"note", "event", "fires"}
            event_from_mapping(case["event"])
