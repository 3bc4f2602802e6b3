"""The unlock schedule: newest entry per user wins, what is due when, and escalation memory."""

from __future__ import annotations

from typing import Any

import pytest

from lockoutd.act.schedule import (
    EntryState,
    ScheduleEntry,
    UnlockSchedule,
    decode_entry,
    encode_entry,
)

MINUTE = 60.0
DAY = 86400.0
T = 1_700_000_000.0


def _entry(
    user_id: str = "42",
    state: EntryState = "locked",
    *,
    at: float = 0.0,
    unlock_in: float | None = 15 * MINUTE,
    strikes: int = 1,
    **fields: Any,
) -> ScheduleEntry:
    """An entry written ``at`` seconds after T; a locked one unlocks ``unlock_in`` after that."""
    locked = state in ("locked", "unlocked", "kept")
    return ScheduleEntry(
        user_id=user_id,
        org_id=fields.pop("org_id", "7"),
        rule=fields.pop("rule", "otp-bruteforce"),
        state=state,
        strikes=strikes,
        updated_at=T + at,
        locked_at=fields.pop("locked_at", T + at if locked else None),
        unlock_at=T + at + unlock_in if locked and unlock_in is not None else None,
    )


def _schedule(*entries: ScheduleEntry) -> UnlockSchedule:
    schedule = UnlockSchedule()
    for entry in entries:
        schedule.apply(entry)
    return schedule


def test_a_newer_entry_replaces_an_older_one() -> None:
    """The newest entry of a user is the one the schedule holds."""
    locked, unlocked = _entry(at=0), _entry(state="unlocked", at=15 * MINUTE)
    schedule = _schedule(locked)
    assert schedule.apply(unlocked)
    assert schedule.get("42") == unlocked
    assert len(schedule) == 1


def test_a_late_copy_of_an_older_entry_is_refused() -> None:
    """An entry older than the one held (read late from the topic) changes nothing."""
    locked, unlocked = _entry(at=0), _entry(state="unlocked", at=15 * MINUTE)
    schedule = _schedule(unlocked)
    assert not schedule.apply(locked)
    assert schedule.get("42") == unlocked
    assert schedule.due(T + DAY) == []
    assert schedule.next_due() is None


def test_entries_of_one_instant_apply_in_the_order_read() -> None:
    """Of two entries written at the same instant, the one read last (later in the topic) wins."""
    intent = _entry(state="locking", at=0)
    locked = _entry(at=0)
    schedule = _schedule(intent, locked)
    assert schedule.get("42") == locked


def test_entries_of_different_users_are_independent() -> None:
    """Each user has an entry of their own."""
    schedule = _schedule(_entry("1"), _entry("2", state="unlocked", at=5), _entry("3", at=10))
    assert len(schedule) == 3
    assert [e.user_id for e in schedule.due(T + DAY)] == ["1", "3"]


# unlock_at (min)   15        20        30
# entries           a         b         c
# due at 14m: none; at 20m: a, b (in time order); at 30m: a, b, c
@pytest.mark.parametrize(
    ("now_minutes", "due"),
    [(14, []), (15, ["a"]), (20, ["a", "b"]), (29.99, ["a", "b"]), (30, ["a", "b", "c"])],
)
def test_entries_fall_due_at_their_unlock_time(now_minutes: float, due: list[str]) -> None:
    """An entry is due once ``now`` reaches its ``unlock_at``, and due entries come oldest first."""
    schedule = _schedule(
        _entry("c", unlock_in=30 * MINUTE),
        _entry("a", unlock_in=15 * MINUTE),
        _entry("b", unlock_in=20 * MINUTE),
    )
    assert [e.user_id for e in schedule.due(T + now_minutes * MINUTE)] == due
    assert schedule.next_due() == T + 15 * MINUTE


def test_a_due_entry_stays_due_until_it_is_unlocked() -> None:
    """Reading the due entries does not consume them; an ``unlocked`` entry does."""
    schedule = _schedule(_entry())
    assert len(schedule.due(T + DAY)) == 1
    assert len(schedule.due(T + DAY)) == 1
    schedule.apply(_entry(state="unlocked", at=16 * MINUTE))
    assert schedule.due(T + DAY) == []
    assert schedule.next_due() is None


@pytest.mark.parametrize("state", ["locking", "cancelled", "kept", "unlocked"])
def test_only_locked_entries_fall_due(state: EntryState) -> None:
    """An intent, a refused lock, a lock made permanent or one undone is never unlocked."""
    schedule = _schedule(_entry(at=0), _entry(state=state, at=1))
    assert schedule.due(T + DAY) == []
    assert schedule.next_due() is None


def test_a_relock_moves_the_unlock_time() -> None:
    """A user locked again with a later end is due only at the later time."""
    schedule = _schedule(_entry(at=0), _entry(at=10 * MINUTE, unlock_in=30 * MINUTE, strikes=2))
    assert schedule.due(T + 20 * MINUTE) == []
    assert schedule.next_due() == T + 40 * MINUTE
    [due] = schedule.due(T + 40 * MINUTE)
    assert due.strikes == 2


def test_an_entry_read_twice_is_due_once() -> None:
    """The writer applies its own entry, then reads it back from the topic: one unlock is due."""
    entry = _entry()
    schedule = _schedule(entry, entry)
    assert schedule.due(T + DAY) == [entry]


def test_a_forgotten_user_is_never_due() -> None:
    """A tombstone drops the user: no entry, nothing due."""
    schedule = _schedule(_entry("1"), _entry("2", unlock_in=20 * MINUTE))
    schedule.forget("1")
    schedule.forget("nobody")
    assert schedule.get("1") is None
    assert len(schedule) == 1
    assert schedule.next_due() == T + 20 * MINUTE
    assert [e.user_id for e in schedule.due(T + DAY)] == ["2"]


# memory 1d; the last lock was confirmed at 0 and was the user's second in a row (strikes 2)
#
# now           1h     1d     1d+1s
# strikes       2      2      0       (the memory of the earlier locks has passed)
@pytest.mark.parametrize(
    ("now", "strikes"),
    [(3600.0, 2), (DAY, 2), (DAY + 1, 0)],
)
def test_strikes_are_remembered_for_the_memory(now: float, strikes: int) -> None:
    """Earlier locks count towards escalation while the last lock lies within ``memory``."""
    schedule = _schedule(_entry(state="unlocked", at=0, strikes=2, locked_at=T))
    assert schedule.strikes_before("42", T + now, DAY) == strikes


@pytest.mark.parametrize(
    ("entry", "memory"),
    [
        pytest.param(None, DAY, id="no entry"),
        pytest.param(_entry(strikes=3), None, id="no memory"),
        pytest.param(_entry(state="cancelled", strikes=3), DAY, id="cancelled"),
        pytest.param(_entry(state="kept", strikes=3), DAY, id="kept"),
        pytest.param(_entry(state="locking", strikes=3), DAY, id="locking"),
    ],
)
def test_there_are_no_strikes_to_remember(
    entry: ScheduleEntry | None, memory: float | None
) -> None:
    """Without an entry, a memory or a temporary lock to remember, escalation starts over."""
    schedule = _schedule(*([entry] if entry else []))
    assert schedule.strikes_before("42", T + MINUTE, memory) == 0


def test_a_locked_entry_counts_its_strikes() -> None:
    """A lock still in force is remembered like one already undone."""
    schedule = _schedule(_entry(strikes=3))
    assert schedule.strikes_before("42", T + MINUTE, DAY) == 3


@pytest.mark.parametrize(
    ("state", "ours"),
    [("locking", True), ("locked", True), ("unlocked", False), ("cancelled", False),
     ("kept", False)],
)  # fmt: skip
def test_a_lock_is_ours_while_locking_or_locked(state: EntryState, ours: bool) -> None:
    """Only an intent or a confirmed temporary lock is one lockoutd must undo."""
    assert _entry(state=state).ours is ours


def test_an_entry_survives_the_topic() -> None:
    """Entries encode to JSON and decode to an equal entry."""
    entry = _entry(strikes=2)
    assert decode_entry(encode_entry(entry)) == entry
