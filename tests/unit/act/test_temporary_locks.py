"""Temporary locks: the intent before the call, the confirmed end, escalation and recovery."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from lockoutd.act.executor import LockExecutor
from lockoutd.act.schedule import ScheduleEntry, UnlockSchedule
from lockoutd.act.temporary import LocalScheduleWriter, TemporaryLocks
from lockoutd.act.zitadel import LockOutcome, LockReceipt
from lockoutd.decide.decision import Decision, Outcome, rfc3339
from lockoutd.errors import ZitadelConfigError, ZitadelUnavailable
from lockoutd.report.metrics import Metrics
from lockoutd.rules.model import LockAction
from tests.unit.helpers import T0, Clock, FakeUserStore, RecordingWriter

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
ROUND_TRIP = 2.0
"""How long each ZITADEL call takes on the test clock."""
CONFIRMED = 2 * ROUND_TRIP
"""From the decision to the confirmed lock: a read of the user, then the lock call."""
CROSSING = T0 - 60
"""When the crossing each lock acts on happened (its last event), unless a test says."""

PERMANENT = LockAction()
FIFTEEN_MINUTES = LockAction.model_validate({"duration": "15m"})
ESCALATING = LockAction.model_validate(
    {"duration": "15m", "escalate": {"factor": 2, "max": "1h", "memory": "1d"}}
)


class Setup:
    """A clock, a fake ZITADEL, the schedule, a recording writer and the locks under test."""

    def __init__(self, **store: Any) -> None:
        self.clock = Clock()
        self.store = FakeUserStore(clock=self.clock, round_trip=ROUND_TRIP, **store)
        self.schedule = UnlockSchedule()
        self.writer = RecordingWriter(self.schedule)
        self.locks = TemporaryLocks(self.store, self.schedule, self.writer, clock=self.clock)

    async def lock(
        self,
        action: LockAction = FIFTEEN_MINUTES,
        user_id: str = "42",
        rule: str = "otp",
        crossing_at: float = CROSSING,
    ) -> tuple[LockOutcome, float | None]:
        result = await self.locks.lock(
            user_id, "7", rule=rule, action=action, crossing_at=crossing_at
        )
        return result.outcome, result.unlock_at

    def entry(self, user_id: str = "42") -> ScheduleEntry:
        entry = self.schedule.get(user_id)
        assert entry is not None
        return entry

    def unlocked_by_admin(self, user_id: str = "42") -> None:
        self.store.locked.discard(user_id)

    def undo(self, user_id: str = "42") -> None:
        """What the unlocker does once a lock is due: unlock it and write ``unlocked``."""
        self.store.locked.discard(user_id)
        entry = self.entry(user_id)
        self.schedule.apply(
            ScheduleEntry(
                user_id=user_id,
                org_id=entry.org_id,
                rule=entry.rule,
                state="unlocked",
                strikes=entry.strikes,
                updated_at=self.clock(),
                locked_at=entry.locked_at,
                unlock_at=entry.unlock_at,
            )
        )


def _intent(
    user_id: str = "42", *, strikes: int = 1, at: float = T0, before: int | None = 1
) -> ScheduleEntry:
    """The ``locking`` entry an instance wrote just before it died, acting on the crossing at
    :data:`CROSSING`, the user lockable at sequence ``before`` then."""
    return ScheduleEntry(
        user_id=user_id,
        org_id="7",
        rule="otp",
        state="locking",
        strikes=strikes,
        updated_at=at,
        before_sequence=before,
        crossing_at=CROSSING,
    )


async def test_a_permanent_lock_schedules_nothing() -> None:
    """``lock: {}`` calls ZITADEL once and writes no entry: nothing is ever undone."""
    setup = Setup()
    assert await setup.lock(PERMANENT) == (LockOutcome.LOCKED, None)
    assert setup.store.calls_of("lock") == ["42"]
    assert setup.writer.entries == []


async def test_a_temporary_lock_ends_its_duration_after_confirmation() -> None:
    """The unlock time counts from the confirmed lock, not from the decision."""
    setup = Setup()
    decided = setup.clock()
    outcome, unlock_at = await setup.lock()
    confirmed = decided + CONFIRMED
    assert (outcome, unlock_at) == (LockOutcome.LOCKED, confirmed + 15 * MINUTE)
    assert setup.writer.states() == ["locking", "locked"]
    entry = setup.entry()
    assert (entry.state, entry.strikes, entry.rule, entry.org_id) == ("locked", 1, "otp", "7")
    assert (entry.locked_at, entry.unlock_at) == (confirmed, confirmed + 15 * MINUTE)
    assert setup.schedule.next_due() == confirmed + 15 * MINUTE


async def test_the_intent_is_written_before_the_lock_call() -> None:
    """When ZITADEL is called, the schedule already says the lock is being taken by lockoutd."""
    setup = Setup()
    seen: list[str] = []
    original = setup.store.lock_user

    async def watching_lock(user_id: str, org_id: str | None) -> LockReceipt:
        seen.append(setup.entry(user_id).state)
        return await original(user_id, org_id)

    setup.store.lock_user = watching_lock  # type: ignore[method-assign]
    await setup.lock()
    assert seen == ["locking"]


@pytest.mark.parametrize(
    ("store", "outcome"),
    [
        pytest.param({"locked": ["42"]}, LockOutcome.ALREADY_LOCKED, id="someone else's lock"),
        pytest.param({"deactivated": ["42"]}, LockOutcome.NOT_LOCKABLE, id="deactivated"),
        pytest.param({"unknown": ["42"]}, LockOutcome.UNKNOWN_USER, id="unknown user"),
    ],
)
async def test_a_lock_lockoutd_did_not_take_is_never_scheduled(
    store: dict[str, list[str]], outcome: LockOutcome
) -> None:
    """A refused lock, or one someone else holds, is ``cancelled``: nothing to undo."""
    setup = Setup(**store)
    assert await setup.lock() == (outcome, None)
    assert setup.writer.states() == ["locking", "cancelled"]
    assert (setup.entry().strikes, setup.entry().unlock_at) == (0, None)
    assert setup.schedule.due(T0 + DAY) == []


async def test_a_failed_call_cancels_the_intent_and_raises() -> None:
    """ZITADEL unavailable: the intent is cancelled and the error reaches the executor."""
    setup = Setup()
    setup.store.fail("lock", "42", ZitadelUnavailable("503 after 10 attempts"))
    with pytest.raises(ZitadelUnavailable):
        await setup.lock()
    assert setup.writer.states() == ["locking", "cancelled"]
    assert setup.schedule.due(T0 + DAY) == []


async def test_a_failed_call_keeps_a_lock_lockoutd_already_holds() -> None:
    """A second rule's lock failing must not cancel the unlock of the lock already held."""
    setup = Setup()
    _, unlock_at = await setup.lock(rule="otp")
    setup.store.fail("lock", "42", ZitadelUnavailable("503 after 10 attempts"))
    with pytest.raises(ZitadelUnavailable):
        await setup.lock(rule="mfa")
    entry = setup.entry()
    assert (entry.state, entry.unlock_at, entry.strikes) == ("locked", unlock_at, 1)
    assert setup.schedule.due(T0 + DAY) == [entry]


async def test_a_configuration_error_cancels_the_intent_and_raises() -> None:
    """ZITADEL refusing lockoutd itself stops the daemon, and leaves no intent behind."""
    setup = Setup()
    setup.store.fail("lock", "42", ZitadelConfigError("401"))
    with pytest.raises(ZitadelConfigError):
        await setup.lock()
    assert setup.entry().state == "cancelled"


async def test_a_second_temporary_rule_keeps_the_end_time() -> None:
    """Another temporary rule firing for a user lockoutd holds changes neither end nor strikes."""
    setup = Setup()
    _, first_end = await setup.lock(rule="otp")
    setup.clock.advance(5 * MINUTE)
    assert await setup.lock(ESCALATING, rule="mfa") == (LockOutcome.ALREADY_LOCKED, first_end)
    entry = setup.entry()
    assert (entry.state, entry.unlock_at, entry.strikes, entry.rule) == (
        "locked",
        first_end,
        1,
        "otp",
    )
    assert setup.schedule.due(T0 + DAY) == [entry]


async def test_a_permanent_rule_keeps_a_temporary_lock() -> None:
    """A permanent rule firing for a user lockoutd holds temporarily makes the lock ``kept``."""
    setup = Setup()
    await setup.lock()
    assert await setup.lock(PERMANENT, rule="password") == (LockOutcome.ALREADY_LOCKED, None)
    assert setup.entry().state == "kept"
    assert setup.entry().unlock_at is None
    assert setup.schedule.due(T0 + DAY) == []


async def test_a_permanent_rule_keeps_a_lock_an_admin_undid_early() -> None:
    """If an admin unlocked early and a permanent rule relocks, the old unlock must not undo it."""
    setup = Setup()
    await setup.lock()
    setup.unlocked_by_admin()
    assert await setup.lock(PERMANENT, rule="password") == (LockOutcome.LOCKED, None)
    assert setup.entry().state == "kept"
    assert setup.schedule.due(T0 + DAY) == []


async def test_a_permanent_lock_of_someone_else_leaves_the_schedule_alone() -> None:
    """A permanent lock of a user lockoutd never held temporarily writes nothing."""
    setup = Setup(locked=["42"])
    assert await setup.lock(PERMANENT) == (LockOutcome.ALREADY_LOCKED, None)
    assert setup.writer.entries == []


async def test_a_crashed_lock_that_went_through_is_still_undone() -> None:
    """Replay recovery: a ``locking`` entry, and the user locked since the read it records:
    ZITADEL's "already locked" is lockoutd's own lock, reported as locked."""
    setup = Setup()
    setup.schedule.apply(_intent(at=T0 - 30, before=1))
    setup.store.change("42", locked=True)  # the call that went through before the crash
    outcome, unlock_at = await setup.lock(ESCALATING)
    assert (outcome, unlock_at) == (LockOutcome.LOCKED, T0 + CONFIRMED + 15 * MINUTE)
    entry = setup.entry()
    assert (entry.state, entry.strikes) == ("locked", 1)  # the replay is not a second strike
    assert entry.lock_version == setup.store.version("42")
    assert setup.schedule.due(T0 + DAY) == [entry]


async def test_an_intent_left_for_another_crossing_does_not_claim_a_lock() -> None:
    """An instance died during a lock call, and that crossing was never acted on again (its
    evidence went stale). An administrator's lock, found by a later crossing, is not the one
    the note was written for: it stays the administrator's."""
    setup = Setup()
    setup.schedule.apply(_intent(at=T0 - 3600, before=1))
    setup.store.change("42", locked=True)  # the administrator, long after the note
    outcome, unlock_at = await setup.lock(crossing_at=CROSSING + 3600)
    assert (outcome, unlock_at) == (LockOutcome.ALREADY_LOCKED, None)
    assert setup.entry().state == "cancelled"
    assert setup.schedule.due(T0 + DAY) == []


async def test_an_intent_that_proves_nothing_does_not_claim_a_lock() -> None:
    """A ``locking`` entry without the version read before the call (or from before a lock
    someone else made) does not make someone else's lock lockoutd's."""
    for before in (None, 2):
        setup = Setup()
        setup.store.change("42", locked=True)  # an administrator's lock, at sequence 2
        setup.schedule.apply(_intent(at=T0 - 30, before=before))
        assert await setup.lock() == (LockOutcome.ALREADY_LOCKED, None)
        assert setup.schedule.due(T0 + DAY) == []


async def test_a_lock_whose_reply_was_lost_is_ours() -> None:
    """The call locked the user but its reply was lost; the retry answers "already locked".
    The read before the call found the user lockable, so this lock is lockoutd's."""
    setup = Setup()
    original = setup.store.lock_user

    async def reply_lost_then_retried(user_id: str, org_id: str | None) -> LockReceipt:
        await original(user_id, org_id)  # applied; its answer never arrives
        retried = await original(user_id, org_id)  # the retry: already locked
        return dataclasses.replace(retried, unanswered=True)

    setup.store.lock_user = reply_lost_then_retried  # type: ignore[method-assign]
    outcome, unlock_at = await setup.lock()
    assert (outcome, unlock_at) == (LockOutcome.LOCKED, T0 + 3 * ROUND_TRIP + 15 * MINUTE)
    assert setup.entry().lock_version == setup.store.version("42")


async def test_a_lock_found_after_answered_attempts_is_someone_elses() -> None:
    """Every earlier attempt was answered (a 503, say), so none locked anyone; the user found
    locked at a later sequence was locked by someone else meanwhile: no unlock is scheduled."""
    setup = Setup()
    original = setup.store.lock_user

    async def locked_meanwhile(user_id: str, org_id: str | None) -> LockReceipt:
        await original(user_id, org_id)  # an administrator's lock, between two answered tries
        return await original(user_id, org_id)  # lockoutd's try: already locked

    setup.store.lock_user = locked_meanwhile  # type: ignore[method-assign]
    outcome, unlock_at = await setup.lock()
    assert (outcome, unlock_at) == (LockOutcome.ALREADY_LOCKED, None)
    assert setup.entry().state == "cancelled"


async def test_a_crashed_lock_that_never_happened_is_taken_now() -> None:
    """Replay recovery: a ``locking`` entry and an unlocked user is simply locked now."""
    setup = Setup()
    setup.schedule.apply(_intent(at=T0 - 30))
    assert await setup.lock() == (LockOutcome.LOCKED, T0 + CONFIRMED + 15 * MINUTE)
    assert setup.entry().strikes == 1


async def test_a_replayed_escalated_lock_keeps_its_strike() -> None:
    """Replaying the crashed third lock in a row still lasts the third duration (1h), not 2h."""
    setup = Setup()
    setup.schedule.apply(_intent(strikes=3, at=T0 - 30))
    setup.store.change("42", locked=True)
    _, unlock_at = await setup.lock(ESCALATING)
    assert unlock_at == T0 + CONFIRMED + HOUR
    assert setup.entry().strikes == 3


async def test_a_lock_after_ours_was_undone_by_someone_else_is_not_ours() -> None:
    """After an unlock, a lock someone else took is never scheduled, and the history stays."""
    setup = Setup()
    await setup.lock()
    setup.undo()
    setup.store.locked.add("42")  # an administrator locks the user by hand
    assert await setup.lock() == (LockOutcome.ALREADY_LOCKED, None)
    entry = setup.entry()
    assert (entry.state, entry.strikes) == ("unlocked", 1)
    assert setup.schedule.due(T0 + DAY) == []


# duration 15m, factor 2, max 1h, memory 1d; each lock is undone when due, the next comes 1h later
#
# lock      1      2      3      4          5 (more than a day after the 4th)
# lasts     15m    30m    1h     1h         15m
async def test_repeat_locks_escalate_and_the_memory_fades() -> None:
    """Repeats within the memory last 15m, 30m, 1h, 1h; after a quiet day, 15m again."""
    setup = Setup()
    lasted = []
    for gap in (0.0, HOUR, HOUR, HOUR, DAY + HOUR):
        setup.clock.advance(gap)
        _, unlock_at = await setup.lock(ESCALATING)
        assert unlock_at is not None
        lasted.append((unlock_at - setup.entry().locked_at) / MINUTE)  # type: ignore[operator]
        setup.clock.now = unlock_at
        setup.undo()
    assert lasted == [15, 30, 60, 60, 15]
    assert setup.entry().strikes == 1


async def test_strikes_count_only_locks_that_happened() -> None:
    """A refused lock between two real ones does not escalate the next one."""
    setup = Setup()
    await setup.lock(ESCALATING)
    setup.clock.advance(20 * MINUTE)
    setup.undo()
    setup.store.deactivated.add("42")
    assert await setup.lock(ESCALATING) == (LockOutcome.NOT_LOCKABLE, None)
    setup.store.deactivated.discard("42")
    setup.clock.advance(MINUTE)
    _, unlock_at = await setup.lock(ESCALATING)
    assert unlock_at == setup.clock() + 30 * MINUTE  # the second lock that happened
    assert setup.entry().strikes == 2


async def test_users_are_scheduled_apart() -> None:
    """Locks of two users make two entries, each with its own end."""
    setup = Setup()
    await setup.lock(user_id="1")
    setup.clock.advance(MINUTE)
    await setup.lock(user_id="2")
    assert [e.user_id for e in setup.schedule.due(T0 + DAY)] == ["1", "2"]


async def test_a_permanent_and_a_temporary_decision_at_once_leave_the_lock_permanent() -> None:
    """Two rules firing for one user in one batch run concurrently; the permanent one wins."""
    setup = Setup()
    setup.store.yields = [3, 0]  # the temporary lock's answer arrives after the permanent one's
    await asyncio.gather(setup.lock(FIFTEEN_MINUTES, rule="otp"), setup.lock(PERMANENT))
    assert setup.store.locked == {"42"}
    assert setup.entry().state == "kept"
    assert setup.schedule.due(T0 + DAY) == []


async def test_the_executor_reports_when_a_temporary_lock_ends() -> None:
    """``carry_out`` with a temporary action gives ``locked`` and the RFC 3339 unlock time."""
    clock = Clock()
    store = FakeUserStore()
    schedule = UnlockSchedule()
    locks = TemporaryLocks(store, schedule, LocalScheduleWriter(schedule), clock=clock)
    executor = LockExecutor(
        store, max_locks_per_minute=60, metrics=Metrics(), locks=locks, clock=clock
    )
    pending = Decision(
        rule="otp",
        key="42",
        user_id="42",
        org_id="7",
        action="lock",
        mode="enforce",
        outcome=None,
        count=3,
        window_seconds=300.0,
        first_event_at=rfc3339(T0 - 120),
        last_event_at=rfc3339(T0),
        decided_at=rfc3339(T0),
    )
    done = await executor.carry_out(pending, event_time=T0, action=FIFTEEN_MINUTES)
    assert (done.outcome, done.unlock_at) == (Outcome.LOCKED, rfc3339(T0 + 15 * MINUTE))
    permanent = await executor.carry_out(
        Decision(**{**_fields(pending), "user_id": "43", "key": "43"}), event_time=T0
    )
    assert (permanent.outcome, permanent.unlock_at) == (Outcome.LOCKED, None)


def _fields(decision: Decision) -> dict[str, Any]:
    return {name: getattr(decision, name) for name in decision.__struct_fields__}
