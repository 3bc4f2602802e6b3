"""The engine state of one partition as bytes, and back: what a checkpoint holds.

A snapshot holds every rule's windows (as the plain per-key records of
:meth:`~lockoutd.decide.windows.EventWindows.export`), each rule's fingerprint, the engine's
watermark, the partition and the offset it is valid at, and a format version. It is read from a
topic that others may write, so :func:`engine_from_snapshot` trusts nothing it decodes: sizes are
bounded before anything is decompressed, the partition, offset and times must be the expected
ones, and every window is checked as it is restored. A rule whose fingerprint differs (it changed
since the checkpoint was written) makes the snapshot unusable: that rule's counts would be wrong
(README, "Windows survive restarts and rebalances").
"""

from __future__ import annotations

import hashlib
import zlib

import msgspec

from lockoutd.decide.engine import Engine
from lockoutd.decide.windows import DistinctRecord, EventRecord, InvalidRecord
from lockoutd.rules import RuleSet
from lockoutd.rules.model import Rule

FORMAT_VERSION = 1


class RuleSnapshot(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    name: str
    fingerprint: str
    events: list[EventRecord] = []
    distinct: list[DistinctRecord] = []


class Snapshot(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    group: str
    topic: str
    partition: int
    offset: int
    """The next offset to read: every record before it is counted here."""
    written_at: float
    watermark: float
    rules: list[RuleSnapshot]


class Unusable(Exception):
    """A snapshot that must not be restored; ``reason`` is a metric label."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason


def fingerprint(rule: Rule) -> str:
    """What a rule counts and how, as a short digest: equal for rules that count alike."""
    return hashlib.sha256(rule.model_dump_json().encode()).hexdigest()[:32]


def encode_snapshot(
    engine: Engine,
    *,
    group: str,
    topic: str,
    partition: int,
    offset: int,
    written_at: float,
    max_bytes: int = 1 << 62,
) -> bytes:
    """``engine``'s state, valid at ``offset``, compressed; raises :class:`Unusable` when it
    takes more than ``max_bytes`` uncompressed (no reader would take it)."""
    rules = []
    for state in engine.rule_states():
        records = list(state.windows.export())
        rules.append(
            RuleSnapshot(
                name=state.rule.name,
                fingerprint=fingerprint(state.rule),
                events=[r for r in records if isinstance(r, EventRecord)],
                distinct=[r for r in records if isinstance(r, DistinctRecord)],
            )
        )
    watermark = engine.watermark if engine.watermark != float("-inf") else 0.0
    snapshot = Snapshot(
        FORMAT_VERSION, group, topic, partition, offset, written_at, watermark, rules
    )
    raw = msgspec.msgpack.encode(snapshot)
    if len(raw) > max_bytes:
        raise Unusable("too_large", f"{len(raw)} bytes, above {max_bytes}")
    return zlib.compress(raw, 1)


_DECODER = msgspec.msgpack.Decoder(Snapshot)


def decode_snapshot(data: bytes, *, max_bytes: int) -> Snapshot:
    """The snapshot in ``data``, decompressed to at most ``max_bytes``; raises :class:`Unusable`."""
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(data, max_bytes)
    except zlib.error as exc:
        raise Unusable("malformed", f"not compressed data: {exc}") from None
    if inflate.unconsumed_tail or not inflate.eof:
        raise Unusable("malformed", f"larger than {max_bytes} bytes uncompressed, or cut short")
    try:
        snapshot: Snapshot = _DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise Unusable("malformed", str(exc)[:200]) from None
    if snapshot.version != FORMAT_VERSION:
        raise Unusable("invalid", f"format version {snapshot.version}, not {FORMAT_VERSION}")
    return snapshot


def engine_from_snapshot(
    snapshot: Snapshot,
    rules: RuleSet,
    *,
    group: str,
    topic: str,
    partition: int,
    committed: int,
    now: float,
    max_clock_skew: float,
    max_keys: int,
) -> Engine:
    """A new engine for ``rules`` holding ``snapshot``'s windows; raises :class:`Unusable`.

    ``committed`` is the partition's committed offset: a snapshot past it holds events that
    were never acted on (or claims to), so it is refused.
    """
    if (snapshot.group, snapshot.topic, snapshot.partition) != (group, topic, partition):
        raise Unusable("invalid", "written for another group or partition")
    if not 0 <= snapshot.offset <= committed:
        raise Unusable("invalid", f"offset {snapshot.offset} is past the committed {committed}")
    latest = now + max_clock_skew
    if not (snapshot.written_at <= latest and snapshot.watermark <= latest):
        raise Unusable("invalid", "written or counting later than now")
    by_name = {r.name: r for r in snapshot.rules}
    if len(by_name) != len(snapshot.rules):
        raise Unusable("invalid", "a rule appears twice")
    engine = Engine(rules)
    keys = 0
    try:
        for state in engine.rule_states():
            saved = by_name.get(state.rule.name)
            if saved is None or saved.fingerprint != fingerprint(state.rule):
                raise Unusable("rules_changed", f"rule {state.rule.name} changed since")
            records: list[EventRecord] | list[DistinctRecord] = saved.events or saved.distinct
            if saved.events and saved.distinct:
                raise InvalidRecord(f"rule {state.rule.name} holds two kinds of windows")
            keys += len(records)
            if keys > max_keys:
                raise InvalidRecord(f"more than engine.max_tracked_keys ({max_keys}) keys")
            for record in records:
                if any(at > latest for at in _times(record)):
                    raise InvalidRecord("an event time later than now")
            state.restore(records)
    except InvalidRecord as exc:
        raise Unusable("invalid", str(exc)) from None
    engine.restore_watermark(snapshot.watermark)
    return engine


def _times(record: EventRecord | DistinctRecord) -> list[float]:
    if isinstance(record, EventRecord):
        return record.times
    return [record.newest]
