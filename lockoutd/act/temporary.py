"""Locks with an end: the bookkeeping around the lock call that makes unlocks safe.

lockoutd unlocks only users it locked itself. A user found already locked by someone else is never
unlocked by it, and a permanent rule that fires for a user lockoutd holds temporarily makes that
lock permanent. The duration counts from the moment the lock was confirmed.

Before a temporary lock the user is read: its version then, while lockable, goes into the
``locking`` intent. The lock's own version (its fingerprint) goes into the ``locked`` entry, for the
unlocker to compare with the user's version when the time is up. When the reply to the lock call
is lost and the retry finds the user "already locked", or lockoutd died after the call and the
replayed batch finds it so, the intent's version shows whether that lock came after lockoutd's
read, that is from lockoutd's own call (:func:`~lockoutd.act.ownership.made_by_our_call`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from lockoutd.act.ownership import Version, made_by_our_call
from lockoutd.act.schedule import EntryState, ScheduleEntry, UnlockSchedule
from lockoutd.act.zitadel import LockOutcome, UserState, UserStore
from lockoutd.rules.model import LockAction


class ScheduleWriter(Protocol):
    """Publishes an entry to the shared schedule (and applies it locally) before returning."""

    async def write(self, entry: ScheduleEntry) -> None: ...


class LocalScheduleWriter:
    """Keeps entries in this process only: for replay and tests, never for the daemon."""

    def __init__(self, schedule: UnlockSchedule) -> None:
        self._schedule = schedule

    async def write(self, entry: ScheduleEntry) -> None:
        self._schedule.apply(entry)


@dataclass(frozen=True, slots=True)
class LockResult:
    outcome: LockOutcome
    unlock_at: float | None = None


@dataclass(slots=True)
class _Turn:
    """Makes the locks of one user take turns; dropped when nobody waits for it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0


class TemporaryLocks:
    """Takes locks through ``store`` and records the ones lockoutd must undo."""

    def __init__(
        self,
        store: UserStore,
        schedule: UnlockSchedule,
        writer: ScheduleWriter,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._schedule = schedule
        self._writer = writer
        self._clock = clock
        self._turns: dict[str, _Turn] = {}

    async def lock(
        self,
        user_id: str,
        org_id: str | None,
        *,
        rule: str,
        action: LockAction,
        crossing_at: float | None = None,
    ) -> LockResult:
        """Lock ``user_id`` as ``action`` says; a temporary lock gets its unlock scheduled.

        ``crossing_at`` is when the crossing being acted on happened (its last event): a
        ``locking`` note written for that crossing, by a call whose fate is unknown, is this
        call's own; one written for another crossing is not."""
        # The decisions of a batch are carried out concurrently. Two for one user (a temporary
        # and a permanent rule, say) take turns: otherwise each acts on an entry the other is
        # about to replace, and a lock made permanent could still get its old unlock.
        turn = self._turns.setdefault(user_id, _Turn())
        turn.waiting += 1
        try:
            async with turn.lock:
                return await self._lock(
                    user_id, org_id, rule=rule, action=action, crossing_at=crossing_at
                )
        finally:
            turn.waiting -= 1
            if not turn.waiting:
                del self._turns[user_id]

    async def _lock(
        self,
        user_id: str,
        org_id: str | None,
        *,
        rule: str,
        action: LockAction,
        crossing_at: float | None,
    ) -> LockResult:
        previous = self._schedule.get(user_id)
        if action.duration is None:
            outcome = await self._store.lock(user_id, org_id)
            held = outcome in (LockOutcome.LOCKED, LockOutcome.ALREADY_LOCKED)
            if held and previous is not None and previous.ours:
                # A permanent rule fired for a user lockoutd holds temporarily (or held, until an
                # administrator undid it early): the lock is permanent now.
                await self._write(previous, state="kept", unlock_at=None)
            return LockResult(outcome)

        now = self._clock()
        memory = action.escalate.memory if action.escalate else None
        # This crossing acted on before, by a call that may or may not have locked the user
        # (lockoutd stopped before it learnt): its note says what the user was before. A note
        # left for another crossing says nothing about this call: an administrator may have
        # locked the user since, and the lock found must not be taken for lockoutd's own.
        replaying = (
            previous is not None
            and previous.state == "locking"
            and crossing_at is not None
            and previous.crossing_at == crossing_at
        )
        if replaying:
            assert previous is not None
            strikes = previous.strikes - 1  # a replay of a lock that may or may not have happened
        else:
            strikes = self._schedule.strikes_before(user_id, now, memory)
        duration = action.duration_for(strikes)
        assert duration is not None  # action.duration is set
        intent = ScheduleEntry(
            user_id=user_id,
            org_id=org_id,
            rule=rule,
            state="locking",
            strikes=strikes + 1,
            updated_at=now,
            before_sequence=await self._lockable_at(
                user_id, org_id, previous if replaying else None
            ),
            crossing_at=crossing_at,
        )
        await self._writer.write(intent)
        try:
            receipt = await self._store.lock_user(user_id, org_id)
        except BaseException:
            await self._cancel(intent, previous)
            raise
        confirmed = self._clock()
        outcome = receipt.outcome
        if (
            outcome is LockOutcome.ALREADY_LOCKED
            and previous is not None
            and previous.state == "locked"
        ):
            # Locked by lockoutd already (another rule, or a replayed batch): keep its end time.
            await self._write(previous, state="locked", unlock_at=previous.unlock_at)
            return LockResult(outcome, previous.unlock_at)
        # Only a call that may have locked the user can have made the lock it finds: one whose
        # attempt went unanswered, or the call of a replayed batch (its intent is "locking").
        # Otherwise the lock is someone else's, made meanwhile (between answered retries).
        maybe_ours = receipt.unanswered or replaying
        if (
            outcome is LockOutcome.ALREADY_LOCKED
            and maybe_ours
            and made_by_our_call(intent.before_sequence, receipt.version)
        ):
            outcome = LockOutcome.LOCKED  # this call's lock, its reply lost (or its batch replayed)
        if outcome is LockOutcome.LOCKED:
            unlock_at = confirmed + duration
            await self._write(
                intent,
                state="locked",
                unlock_at=unlock_at,
                locked_at=confirmed,
                version=receipt.version,
            )
            return LockResult(outcome, unlock_at)
        # Not locked by lockoutd (someone else's lock, a deactivated or unknown user): no unlock.
        await self._cancel(intent, previous)
        return LockResult(outcome)

    async def _lockable_at(
        self, user_id: str, org_id: str | None, replayed: ScheduleEntry | None
    ) -> int | None:
        """The user's sequence now if it is lockable, else that of ``replayed``, else None.

        After a crash between the lock call and the next write, the user reads as locked; the
        intent written before that call still holds the sequence it was lockable at.
        """
        snapshot = await self._store.read_user(user_id, org_id)
        if (
            snapshot is not None
            and snapshot.state in (UserState.ACTIVE, UserState.INITIAL)
            and snapshot.version is not None
        ):
            return snapshot.version.sequence
        return replayed.before_sequence if replayed is not None else None

    async def _cancel(self, intent: ScheduleEntry, previous: ScheduleEntry | None) -> None:
        # A lock lockoutd already holds keeps its unlock, whatever became of this attempt.
        if previous is not None and previous.state in ("locked", "unlocked", "kept", "cancelled"):
            await self._write(previous, state=previous.state, unlock_at=previous.unlock_at)
        else:
            await self._write(intent, state="cancelled", unlock_at=None, strikes=intent.strikes - 1)

    async def _write(
        self,
        base: ScheduleEntry,
        *,
        state: EntryState,
        unlock_at: float | None,
        locked_at: float | None = None,
        strikes: int | None = None,
        version: Version | None = None,
    ) -> None:
        entry = msgspec.structs.replace(
            base,
            state=state,
            crossing_at=None,  # a locking note's alone
            strikes=base.strikes if strikes is None else strikes,
            updated_at=self._clock(),
            locked_at=locked_at if locked_at is not None else base.locked_at,
            unlock_at=unlock_at,
        )
        if version is not None:
            entry = msgspec.structs.replace(
                entry, lock_sequence=version.sequence, lock_changed_at=version.changed_at
            )
        await self._writer.write(entry)
