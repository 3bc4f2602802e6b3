"""A partition's engine state through a checkpoint and back (README, Operations: "Windows survive
restarts and rebalances"): restored, it decides as the engine that wrote it would have, and a
checkpoint that someone else wrote or that no longer fits the rules is refused."""

from __future__ import annotations

import zlib
from typing import Any

import msgspec
import pytest

from lockoutd.decide.engine import Engine
from lockoutd.decide.snapshot import (
    FORMAT_VERSION,
    Snapshot,
    Unusable,
    decode_snapshot,
    encode_snapshot,
    engine_from_snapshot,
)
from lockoutd.rules import RuleSet
from tests.unit.helpers import MINUTE, T0, event, rule, ruleset

NOW = T0 + 30 * MINUTE
DAY = "1d"
WHERE: dict[str, Any] = {"group": "g", "topic": "auth", "partition": 2}


def _rules() -> RuleSet:
    return ruleset(
        rule("per-user", threshold=5, window=DAY),
        rule(
            "per-address",
            key=["ip"],
            threshold=3,
            window="1h",
            action={"lock": {"targets": "contributors"}},
        ),
        rule(
            "spray",
            key=["ip"],
            distinct="user_id",
            threshold=3,
            window="1h",
            action={"report": {}},
        ),
    )


def _round_trip(engine: Engine, rules: RuleSet, *, committed: int = 10, **changes: Any) -> Engine:
    data = encode_snapshot(engine, offset=10, written_at=NOW, **WHERE)
    snapshot = decode_snapshot(data, max_bytes=1 << 20)
    for name, value in changes.items():
        setattr(snapshot, name, value)
    return engine_from_snapshot(
        snapshot,
        rules,
        committed=committed,
        now=NOW,
        max_clock_skew=60,
        max_keys=1000,
        **WHERE,
    )


def test_a_restored_engine_crosses_where_the_original_would_and_acts_once() -> None:
    """Three failures before the checkpoint and two after: the user's window crosses, and the
    crossing acts. Per-address contributors and distinct users come back too."""
    rules = _rules()
    engine = Engine(rules)
    for n in range(3):
        engine.process(event(n, user_id=f"u{n}", ip="198.51.100.7", event_id=f"e{n}"), NOW)
    for n in range(3, 6):
        engine.process(event(n, user_id="42", ip=f"203.0.113.{n}", event_id=f"e{n}"), NOW)
    restored = _round_trip(engine, rules)
    assert restored.watermark == engine.watermark
    assert not restored.process(event(6, user_id="42", ip="203.0.113.9", event_id="e4"), NOW)
    [firing] = [
        f for n in (7, 8) for f in restored.process(event(n, user_id="42", ip=f"192.0.2.{n}"), NOW)
    ]
    assert firing.rule.name == "per-user"
    assert firing.count == 5
    assert not firing.replayed_only


def test_contributors_and_distinct_values_survive() -> None:
    rules = _rules()
    engine = Engine(rules)
    for n in range(2):
        engine.process(event(n, user_id=f"u{n}", ip="198.51.100.7"), NOW)
    restored = _round_trip(engine, rules)
    firings = restored.process(event(3, user_id="u9", ip="198.51.100.7"), NOW)
    by_rule = {f.rule.name: f for f in firings}
    assert sorted(e.user_id or "" for e in by_rule["per-address"].contributors) == [
        "u0",
        "u1",
        "u9",
    ]
    assert by_rule["spray"].count == 3


def test_a_crossing_made_only_of_checkpointed_and_replayed_events_does_not_act_again() -> None:
    """Every event a checkpoint holds was acted on: with the records replayed after it, a
    crossing that already locked is not acted on twice."""
    rules = _rules()
    engine = Engine(rules)
    for n in range(4):
        engine.process(event(n), NOW)
    restored = _round_trip(engine, rules)
    [firing] = restored.process(event(5), NOW, replayed=True)
    assert firing.replayed_only


def test_a_changed_rule_makes_the_checkpoint_unusable() -> None:
    engine = Engine(_rules())
    engine.process(event(1), NOW)
    changed = ruleset(
        rule("per-user", threshold=4, window=DAY),
        *[r for r in _rules().rules if r.name != "per-user"],
    )
    with pytest.raises(Unusable) as refused:
        _round_trip(engine, changed)
    assert refused.value.reason == "rules_changed"


@pytest.mark.parametrize(
    "changes",
    [
        {"partition": 3},
        {"group": "other"},
        {"offset": 11},
        {"written_at": NOW + 3600},
        {"watermark": NOW + 3600},
    ],
)
def test_a_checkpoint_of_another_partition_or_from_the_future_is_refused(
    changes: dict[str, Any],
) -> None:
    engine = Engine(_rules())
    engine.process(event(1), NOW)
    with pytest.raises(Unusable) as refused:
        _round_trip(engine, _rules(), **changes)
    assert refused.value.reason == "invalid"


def _forged(rules: list[dict[str, Any]]) -> bytes:
    document = {
        "version": FORMAT_VERSION,
        **WHERE,
        "offset": 5,
        "written_at": NOW,
        "watermark": NOW,
        "rules": rules,
    }
    return zlib.compress(msgspec.msgpack.encode(document))


def _restore(data: bytes) -> Engine:
    return engine_from_snapshot(
        decode_snapshot(data, max_bytes=1 << 20),
        _rules(),
        committed=10,
        now=NOW,
        max_clock_skew=60,
        max_keys=1000,
        **WHERE,
    )


def _fingerprints() -> dict[str, str]:
    from lockoutd.decide.snapshot import fingerprint

    return {r.name: fingerprint(r) for r in _rules().rules}


@pytest.mark.parametrize(
    "window",
    [
        ["42", [T0, T0 + 1], [1], False, None],  # a hash missing
        ["42", [T0 + 1, T0], [1, 2], False, None],  # not oldest first
        ["42", [T0 + i for i in range(6)], list(range(6)), True, None],  # above the threshold
        ["42", [NOW + 3600], [1], False, None],  # in the future
        ["", [T0], [1], False, None],  # no key
        ["42", [float("nan")], [1], False, None],
        ["42", [T0], [1 << 63], False, None],  # a hash no 64-bit slot holds
        ["42", [T0, T0 + 1], [7, 7], False, None],  # one event id kept twice
    ],
)
def test_a_forged_window_is_refused(window: list[Any]) -> None:
    prints = _fingerprints()
    rules = [[name, digest, [], []] for name, digest in prints.items()]
    rules[0][2] = [window]
    with pytest.raises(Unusable) as refused:
        _restore(_forged(rules))
    assert refused.value.reason == "invalid"


def test_a_decompression_bomb_is_refused_before_it_is_inflated() -> None:
    bomb = zlib.compress(b"\0" * (8 << 20))
    with pytest.raises(Unusable) as refused:
        decode_snapshot(bomb, max_bytes=1 << 20)
    assert refused.value.reason == "malformed"


@pytest.mark.parametrize("data", [b"", b"not zlib", zlib.compress(b"\x93\x01\x02")])
def test_garbage_is_malformed(data: bytes) -> None:
    with pytest.raises(Unusable) as refused:
        decode_snapshot(data, max_bytes=1 << 20)
    assert refused.value.reason == "malformed"


def test_another_format_version_is_refused() -> None:
    data = zlib.compress(msgspec.msgpack.encode(Snapshot(99, "g", "auth", 2, 0, NOW, NOW, [])))
    with pytest.raises(Unusable) as refused:
        decode_snapshot(data, max_bytes=1 << 20)
    assert refused.value.reason == "invalid"
