"""Schedule entries from the topic: validated, optionally signed, and refused without harm.

Anyone who can write the schedule topic can write an entry; these tests play that writer.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from aiokafka import ConsumerRecord
from pydantic import SecretStr

from lockoutd.act.schedule import (
    InvalidEntry,
    ScheduleEntry,
    UnlockSchedule,
    check_entry,
    decode_entry,
    encode_entry,
)
from lockoutd.report.metrics import Metrics
from lockoutd.settings import KafkaSettings
from lockoutd.source.schedule import ScheduleTopic
from lockoutd.source.schedule_seal import HEADER, ScheduleSeal
from tests.unit.helpers import record

NOW = 1_800_000_000.0


def _fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "user_id": "42",
        "org_id": "7",
        "rule": "otp-bruteforce",
        "state": "locked",
        "strikes": 1,
        "updated_at": NOW - 10,
        "locked_at": NOW - 10,
        "unlock_at": NOW + 890,
        "lock_sequence": 12,
        "lock_changed_at": "2027-01-15T08:00:00.123456Z",
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


def _decode(**changes: Any) -> ScheduleEntry:
    return check_entry(decode_entry(json.dumps(_fields(**changes)).encode()), now=NOW)


def test_an_entry_lockoutd_writes_reads_back_unchanged() -> None:
    entry = _decode()
    assert decode_entry(encode_entry(entry)) == entry


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"locked_at": -1e300}, id="lock time far in the past"),
        pytest.param({"unlock_at": 1e300}, id="unlock time far in the future"),
        pytest.param({"updated_at": 1e400}, id="infinity"),
        pytest.param({"strikes": 100_000}, id="too many strikes"),
        pytest.param({"strikes": -1}, id="negative strikes"),
        pytest.param({"user_id": "../42"}, id="a user id that is not an id"),
        pytest.param({"org_id": "7 "}, id="an org id that is not an id"),
        pytest.param({"rule": "Otp Bruteforce"}, id="not a rule name"),
        pytest.param({"state": "unlocking"}, id="unknown state"),
        pytest.param({"lock_sequence": -1}, id="negative sequence"),
        pytest.param({"signed_by": "admin"}, id="an unknown field"),
        pytest.param({"user_id": None}, id="no user"),
    ],
)
def test_out_of_bounds_and_unknown_fields_are_refused_by_the_decoder(
    changes: dict[str, Any],
) -> None:
    with pytest.raises(msgspec.DecodeError):  # a ValidationError is one
        _decode(**changes)


def test_non_json_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_entry(b"\xff{")


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        pytest.param({"updated_at": 4e9}, "future", id="from the future"),
        pytest.param({"locked_at": NOW + 3600}, "after updated_at", id="locked after written"),
        pytest.param({"locked_at": None}, "needs locked_at", id="locked without lock time"),
        pytest.param({"unlock_at": None}, "needs locked_at", id="locked without unlock time"),
        pytest.param({"unlock_at": NOW - 100}, "before locked_at", id="unlocked before locked"),
        pytest.param({"lock_changed_at": "yesterday"}, "RFC 3339", id="bad change date"),
    ],
)
def test_entries_whose_times_make_no_sense_are_invalid(changes: dict[str, Any], why: str) -> None:
    with pytest.raises(InvalidEntry, match=why):
        _decode(**changes)


def test_a_little_clock_skew_is_tolerated() -> None:
    """Another instance's clock may run a few seconds ahead."""
    assert _decode(updated_at=NOW + 5, locked_at=NOW + 5).updated_at == NOW + 5


# -- signatures -------------------------------------------------------------------------------


def test_a_signed_record_verifies_and_any_change_breaks_it() -> None:
    seal = ScheduleSeal(SecretStr("k" * 32))
    value = json.dumps(_fields()).encode()
    headers = seal.headers(b"42", value)
    assert seal.verify(b"42", value, headers)
    assert not seal.verify(b"43", value, headers)  # filed under another user
    assert not seal.verify(b"42", value.replace(b'"strikes": 1', b'"strikes": 2'), headers)
    assert not seal.verify(b"42", value, [])
    assert not seal.verify(b"42", value, headers + headers)  # two signatures: which one?
    assert not ScheduleSeal(SecretStr("x" * 32)).verify(b"42", value, headers)


def test_without_a_key_nothing_is_signed_and_everything_verifies() -> None:
    seal = ScheduleSeal(None)
    assert seal.headers(b"42", b"{}") == []
    assert seal.verify(b"42", b"{}", [])


def test_the_seal_never_shows_its_key() -> None:
    assert "k" * 32 not in repr(ScheduleSeal(SecretStr("k" * 32)))


# -- the topic follower -----------------------------------------------------------------------


def _record(
    value: bytes | None, key: bytes = b"42", headers: Any = ()
) -> ConsumerRecord[bytes, bytes]:
    return record(3, value, topic="lockoutd.schedule", key=key, headers=headers)


async def _topic(seal: ScheduleSeal) -> tuple[ScheduleTopic, UnlockSchedule, Metrics]:
    """A follower that is never started: only its handling of records is exercised."""
    schedule, metrics = UnlockSchedule(), Metrics()
    topic = ScheduleTopic(
        KafkaSettings(),
        schedule,
        sink=None,
        metrics=metrics,
        seal=seal,
        clock=lambda: NOW,  # type: ignore[arg-type]
    )
    await topic._consumer.stop()
    return topic, schedule, metrics


def _rejected(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "lockoutd_schedule_entries_rejected_total", {"reason": reason}
    )
    assert value is not None
    return value


async def test_bad_records_are_counted_and_skipped_and_good_ones_still_count() -> None:
    topic, schedule, metrics = await _topic(ScheduleSeal(None))
    good = json.dumps(_fields()).encode()
    topic._apply(
        {
            None: [  # type: ignore[dict-item]
                _record(b"not json"),
                _record(json.dumps(_fields(strikes=100_000)).encode()),
                _record(json.dumps(_fields(updated_at=4e9)).encode()),
                _record(good, key=b"43"),
                _record(good),
            ]
        }
    )
    assert schedule.get("42") == decode_entry(good)
    assert len(schedule) == 1
    assert _rejected(metrics, "malformed") == 2
    assert _rejected(metrics, "invalid") == 1
    assert _rejected(metrics, "wrong_key") == 1


async def test_with_a_key_only_signed_records_count() -> None:
    seal = ScheduleSeal(SecretStr("k" * 32))
    topic, schedule, metrics = await _topic(seal)
    forged = json.dumps(_fields(user_id="41")).encode()
    good = json.dumps(_fields()).encode()
    topic._apply(
        {
            None: [  # type: ignore[dict-item]
                _record(forged, key=b"41"),
                _record(forged, key=b"41", headers=[(HEADER, b"00" * 32)]),
                _record(good, headers=seal.headers(b"42", good)),
                _record(None, key=b"42"),  # an unsigned tombstone would cancel 42's unlock
            ]
        }
    )
    assert schedule.get("41") is None
    assert schedule.get("42") == decode_entry(good)
    assert _rejected(metrics, "bad_signature") == 3
