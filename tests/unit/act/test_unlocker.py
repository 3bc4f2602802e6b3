"""Undoing temporary locks on time: the lifecycle end to end, ownership, retries and races."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest

from lockoutd.act.schedule import ScheduleEntry, UnlockSchedule
from lockoutd.act.temporary import TemporaryLocks
from lockoutd.act.unlocker import RETRY_SECONDS, Unlocker
from lockoutd.decide.decision import Decision, Outcome, rfc3339
from lockoutd.errors import (
    EventRefused,
    InvalidUserId,
    ZitadelConfigError,
    ZitadelUnavailable,
)
from lockoutd.rules.model import LockAction
from tests.unit.helpers import T0, Clock, FakeUserStore, RecordingWriter

MINUTE = 60.0
DAY = 86400.0
ROUND_TRIP = 1.0
CALLS = 2 * ROUND_TRIP
"""A lock, and an unlock, each take two calls: a read of the user, then the change."""
CROSSING = T0 - 60
"""When the crossing each lock acts on happened (its last event)."""
FIFTEEN_MINUTES = LockAction.model_validate({"duration": "15m"})
ESCALATING = LockAction.model_validate(
    {"duration": "15m", "escalate": {"factor": 2, "max": "1h", "memory": "1d"}}
)


class Setup:
    """One instance's temporary locks and unlocker over a fake ZITADEL and a shared clock."""

    def __init__(self, *, owns: Callable[[str], bool] = lambda _user: True, **store: Any) -> None:
        self.clock = Clock()
        self.store = FakeUserStore(clock=self.clock, round_trip=ROUND_TRIP, **store)
        self.schedule = UnlockSchedule()
        self.writer = RecordingWriter(self.schedule)
        self.locks = TemporaryLocks(self.store, self.schedule, self.writer, clock=self.clock)
        self.reported: list[Decision] = []
        self.after_report: Callable[[Decision], Awaitable[None]] | None = None
        self.unlocker = Unlocker(
            self.schedule,
            self.store,
            self.writer,
            owns=owns,
            report=self._report,
            clock=self.clock,
        )

    async def _report(self, decision: Decision) -> None:
        self.reported.append(decision)
        if self.after_report is not None:
            await self.after_report(decision)

    async def lock(
        self, user_id: str = "42", action: LockAction = FIFTEEN_MINUTES, rule: str = "otp"
    ) -> float | None:
        locked = await self.locks.lock(user_id, "7", rule=rule, action=action, crossing_at=CROSSING)
        return locked.unlock_at

    async def unlock_at(self, when: float) -> list[Decision]:
        self.clock.now = when
        return await self.unlocker.unlock_due()

    def state(self, user_id: str = "42") -> str:
        entry = self.schedule.get(user_id)
        assert entry is not None
        return entry.state


async def test_a_temporary_lock_is_undone_when_due() -> None:
    """Lock, nothing before the time, unlock at the time: entry ``unlocked``, one decision."""
    setup = Setup()
    unlock_at = await setup.lock()
    assert unlock_at == T0 + CALLS + 15 * MINUTE
    assert await setup.unlock_at(unlock_at - 1) == []
    assert setup.store.locked == {"42"}

    [decision] = await setup.unlock_at(unlock_at)
    assert setup.store.locked == set()
    assert setup.store.calls_of("unlock") == ["42"]
    assert setup.state() == "unlocked"
    assert setup.reported == [decision]
    assert (decision.action, decision.outcome, decision.mode) == (
        "unlock",
        Outcome.UNLOCKED,
        "enforce",
    )
    assert (decision.rule, decision.key, decision.user_id, decision.org_id) == (
        "otp",
        "42",
        "42",
        "7",
    )
    assert decision.unlock_at == rfc3339(unlock_at)
    assert decision.first_event_at == rfc3339(T0 + CALLS)  # when the lock was confirmed
    assert decision.decided_at == rfc3339(unlock_at + CALLS)

    assert await setup.unlock_at(unlock_at + DAY) == []
    assert setup.store.calls_of("unlock") == ["42"]


async def test_unlocks_come_in_time_order() -> None:
    """Several due locks are undone oldest first, each reported."""
    setup = Setup()
    for user in ("1", "2", "3"):
        await setup.lock(user)
        setup.clock.advance(MINUTE)
    decisions = await setup.unlock_at(T0 + DAY)
    assert [d.user_id for d in decisions] == ["1", "2", "3"]
    assert setup.store.calls_of("unlock") == ["1", "2", "3"]


async def test_someone_elses_lock_is_never_undone() -> None:
    """A user found already locked was locked by someone else: no unlock, ever."""
    setup = Setup(locked=["42"])
    assert await setup.lock() is None
    assert await setup.unlock_at(T0 + DAY) == []
    assert setup.store.calls_of("unlock") == []
    assert setup.store.locked == {"42"}


async def test_a_lock_an_admin_already_undid_is_not_locked() -> None:
    """When the admin unlocked before the time, the unlock reports ``not_locked`` and finishes."""
    setup = Setup()
    unlock_at = await setup.lock()
    setup.store.locked.discard("42")
    [decision] = await setup.unlock_at(unlock_at)  # type: ignore[arg-type]
    assert decision.outcome is Outcome.NOT_LOCKED
    assert setup.store.calls_of("unlock") == []  # the read said so: no call needed
    assert setup.state() == "unlocked"


async def test_an_administrators_relock_is_not_ours() -> None:
    """Unlocked early and locked again by an administrator: the lock in place has another
    version than lockoutd's, so it is left alone as ``not_ours``, and never tried again."""
    setup = Setup()
    unlock_at = await setup.lock()
    setup.store.change("42", locked=False)
    setup.store.change("42", locked=True)
    [decision] = await setup.unlock_at(unlock_at)  # type: ignore[arg-type]
    assert decision.outcome is Outcome.NOT_OURS
    assert decision.error is not None
    assert "sequence 4" in decision.error
    assert setup.store.calls_of("unlock") == []
    assert setup.store.locked == {"42"}
    assert setup.state() == "not_ours"
    assert await setup.unlock_at(T0 + DAY) == []


async def test_any_change_since_the_lock_makes_it_unprovable() -> None:
    """Even an edit of the user (its version moves) leaves the lock alone: lockoutd cannot tell
    whether someone unlocked and locked again in between."""
    setup = Setup()
    unlock_at = await setup.lock()
    setup.store.change("42")
    [decision] = await setup.unlock_at(unlock_at)  # type: ignore[arg-type]
    assert decision.outcome is Outcome.NOT_OURS


async def test_an_entry_without_a_fingerprint_unlocks_nobody() -> None:
    """A ``locked`` entry that holds no version of the lock (forged, or older than the
    fingerprints) proves nothing: ``not_ours``, no call."""
    setup = Setup(locked=["42"])
    setup.schedule.apply(
        ScheduleEntry(
            user_id="42",
            org_id="7",
            rule="otp",
            state="locked",
            strikes=1,
            updated_at=T0,
            locked_at=T0,
            unlock_at=T0 + MINUTE,
        )
    )
    [decision] = await setup.unlock_at(T0 + MINUTE)
    assert decision.outcome is Outcome.NOT_OURS
    assert setup.store.calls_of("unlock") == []


async def test_a_read_side_behind_the_lock_is_asked_again_later() -> None:
    """ZITADEL showing an older version than the lock answered is lag, not someone else's
    change: the unlock waits and happens once the read catches up."""
    setup = Setup()
    unlock_at = await setup.lock()
    assert unlock_at is not None
    entry = setup.schedule.get("42")
    assert entry is not None
    assert entry.lock_version is not None
    caught_up = entry.lock_version
    setup.store.versions["42"] = type(caught_up)(caught_up.sequence - 1, caught_up.changed_at)
    assert await setup.unlock_at(unlock_at) == []
    setup.store.versions["42"] = caught_up
    [decision] = await setup.unlock_at(unlock_at + 60)
    assert decision.outcome is Outcome.UNLOCKED


async def test_a_user_deleted_meanwhile_is_unknown() -> None:
    """A user removed while locked gives ``unknown_user`` and is not tried again."""
    setup = Setup()
    unlock_at = await setup.lock()
    setup.store.unknown.add("42")
    [decision] = await setup.unlock_at(unlock_at)  # type: ignore[arg-type]
    assert decision.outcome is Outcome.UNKNOWN_USER
    assert setup.state() == "unlocked"
    assert await setup.unlock_at(T0 + DAY) == []


async def test_a_kept_lock_is_never_undone() -> None:
    """A permanent rule firing for a temporarily locked user keeps the lock past its time."""
    setup = Setup()
    await setup.lock()
    await setup.lock(action=LockAction(), rule="password-bruteforce")
    assert setup.state() == "kept"
    assert await setup.unlock_at(T0 + DAY) == []
    assert setup.store.locked == {"42"}


async def test_a_crashed_lock_replayed_is_undone_on_time() -> None:
    """A ``locking`` entry left by a crash and a user already locked: unlocked when due."""
    setup = Setup()
    setup.schedule.apply(
        ScheduleEntry(
            user_id="42",
            org_id="7",
            rule="otp",
            state="locking",
            strikes=1,
            updated_at=T0 - 5,
            before_sequence=1,
            crossing_at=CROSSING,
        )
    )
    setup.store.change("42", locked=True)  # the lock that went through before the crash
    unlock_at = await setup.lock()
    assert unlock_at == T0 + CALLS + 15 * MINUTE
    [decision] = await setup.unlock_at(unlock_at)
    assert decision.outcome is Outcome.UNLOCKED
    assert setup.store.locked == set()


async def test_an_instance_undoes_only_the_locks_it_owns() -> None:
    """With ``owns`` false nothing is unlocked; each instance takes its own users."""
    nobody = Setup(owns=lambda _user: False)
    await nobody.lock()
    assert await nobody.unlock_at(T0 + DAY) == []
    assert nobody.store.calls_of("unlock") == []
    assert nobody.state() == "locked"

    odd = Setup(owns=lambda user: int(user) % 2 == 1)
    for user in ("1", "2", "3"):
        await odd.lock(user)
    assert [d.user_id for d in await odd.unlock_at(T0 + DAY)] == ["1", "3"]
    assert odd.store.locked == {"2"}


async def test_an_unavailable_zitadel_is_retried_later() -> None:
    """A failed unlock waits ``RETRY_SECONDS`` and is tried again; it is never dropped."""
    setup = Setup()
    unlock_at = await setup.lock()
    assert unlock_at is not None
    setup.store.fail("unlock", "42", ZitadelUnavailable("503 after 10 attempts"))
    assert await setup.unlock_at(unlock_at) == []
    failed_at = setup.clock()
    assert setup.state() == "locked"
    assert await setup.unlock_at(failed_at + RETRY_SECONDS - 1) == []
    assert setup.store.calls_of("unlock") == ["42"]
    [decision] = await setup.unlock_at(failed_at + RETRY_SECONDS)
    assert decision.outcome is Outcome.UNLOCKED
    assert setup.store.calls_of("unlock") == ["42", "42"]
    assert setup.reported == [decision]


async def test_a_retry_waits_only_for_the_user_that_failed() -> None:
    """Another user's unlock is not held back by one that failed."""
    setup = Setup()
    await setup.lock("1")
    await setup.lock("2")
    setup.store.fail("unlock", "1", ZitadelUnavailable("timeout"))
    assert [d.user_id for d in await setup.unlock_at(T0 + DAY)] == ["2"]


async def test_an_invalid_user_id_fails_once() -> None:
    """An id ZITADEL cannot take is ``failed`` with its reason, and not retried forever."""
    setup = Setup()
    await setup.lock()
    setup.store.fail("unlock", "42", InvalidUserId("user id '42x' is not a ZITADEL id"))
    [decision] = await setup.unlock_at(T0 + DAY)
    assert (decision.outcome, decision.error) == (
        Outcome.FAILED,
        "user id '42x' is not a ZITADEL id",
    )
    assert setup.state() == "unlocked"
    assert await setup.unlock_at(T0 + 2 * DAY) == []


async def test_a_refusal_of_the_users_org_fails_once_and_leaves_the_user_locked() -> None:
    """The account lost its rights in the user's org but not in its own: that unlock is
    ``failed`` with what to grant, the unlocker goes on, and the user stays locked (a temporary
    lock that could not be undone is left for an administrator, never retried blindly)."""
    setup = Setup()
    await setup.lock("1")
    await setup.lock("2")
    refused = EventRefused("no_permission", "grant it ORG_USER_MANAGER in org 7")
    setup.store.fail("unlock", "1", refused)
    decisions = {d.user_id: d for d in await setup.unlock_at(T0 + DAY)}
    assert (decisions["1"].outcome, decisions["1"].error) == (Outcome.FAILED, str(refused))
    assert decisions["2"].outcome is Outcome.UNLOCKED
    assert "1" in setup.store.locked
    assert await setup.unlock_at(T0 + 2 * DAY) == []


async def test_a_configuration_error_stops_the_unlocker() -> None:
    """ZITADEL refusing lockoutd itself propagates, and the lock stays scheduled."""
    setup = Setup()
    await setup.lock()
    setup.store.fail("unlock", "42", ZitadelConfigError("403 AUTH-5mWD2"))
    with pytest.raises(ZitadelConfigError):
        await setup.unlock_at(T0 + DAY)
    assert setup.state() == "locked"


async def test_an_entry_read_back_from_the_topic_is_unlocked_once() -> None:
    """The writer's own entry applied a second time from the topic makes one unlock, not two."""
    setup = Setup()
    unlock_at = await setup.lock()
    entry = setup.schedule.get("42")
    assert entry is not None
    setup.schedule.apply(msgspec.json.decode(msgspec.json.encode(entry), type=ScheduleEntry))
    decisions = await setup.unlock_at(unlock_at)  # type: ignore[arg-type]
    assert [d.outcome for d in decisions] == [Outcome.UNLOCKED]
    assert setup.store.calls_of("unlock") == ["42"]


async def test_a_lock_made_permanent_while_unlocking_others_is_kept() -> None:
    """A user whose lock became ``kept`` after the due list was read is not unlocked."""
    setup = Setup()
    await setup.lock("1")
    await setup.lock("2")

    async def permanent_rule_fires_for_2(decision: Decision) -> None:
        await setup.lock("2", action=LockAction(), rule="password-bruteforce")

    setup.after_report = permanent_rule_fires_for_2
    await setup.unlock_at(T0 + DAY)
    assert setup.state("2") == "kept"
    assert setup.store.locked == {"2"}


async def test_a_relock_while_unlocking_is_undone_later() -> None:
    """A rule that locks the user again during the unlock call gets its own unlock scheduled."""
    setup = Setup()
    unlock_at = await setup.lock(action=ESCALATING)
    assert unlock_at is not None
    setup.clock.now = unlock_at
    setup.store.yields = [3]  # the unlock's answer arrives after the new lock's
    await asyncio.gather(setup.unlocker.unlock_due(), setup.lock(action=ESCALATING))
    assert setup.store.locked == {"42"}
    entry = setup.schedule.get("42")
    assert entry is not None
    assert (entry.state, entry.strikes) == ("locked", 2)
    assert setup.schedule.next_due() == entry.unlock_at
    [decision] = await setup.unlock_at(entry.unlock_at)  # type: ignore[arg-type]
    assert decision.outcome is Outcome.UNLOCKED
    assert setup.store.locked == set()


async def test_run_unlocks_until_stopped() -> None:
    """``run`` unlocks what is due at once and returns when the stop event is set."""
    setup = Setup()
    await setup.lock()
    setup.clock.now = T0 + DAY
    stop = asyncio.Event()

    async def stop_after_reporting(decision: Decision) -> None:
        stop.set()

    setup.after_report = stop_after_reporting
    await asyncio.wait_for(setup.unlocker.run(stop), timeout=5)
    assert [d.outcome for d in setup.reported] == [Outcome.UNLOCKED]
