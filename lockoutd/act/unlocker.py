"""Undoing temporary locks on time, across restarts, by exactly one instance.

Only lockoutd's own locks are undone. When a lock's time is up the user is read first, and the
unlock call is made only if the user is still locked at the very version lockoutd's lock left
(:func:`~lockoutd.act.ownership.judge_unlock`). A user unlocked meanwhile is ``not_locked``
without a call; a user changed since (an administrator who unlocked and locked again, say), or a
lock with no fingerprint to compare, is left alone as ``not_ours``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import msgspec
import structlog

from lockoutd.act.ownership import Verdict, judge_unlock
from lockoutd.act.schedule import EntryState, ScheduleEntry, UnlockSchedule
from lockoutd.act.temporary import ScheduleWriter
from lockoutd.act.zitadel import UnlockOutcome, UserSnapshot, UserState, UserStore
from lockoutd.decide.decision import Decision, Outcome, rfc3339
from lockoutd.errors import EventRefused, InvalidUserId, UnexpectedAnswer, ZitadelUnavailable

log = structlog.get_logger(__name__)

_OUTCOMES = {
    UnlockOutcome.UNLOCKED: Outcome.UNLOCKED,
    UnlockOutcome.NOT_LOCKED: Outcome.NOT_LOCKED,
    UnlockOutcome.UNKNOWN_USER: Outcome.UNKNOWN_USER,
}

# An unlock is due within this of its time; it is also how long a failed unlock waits.
POLL_SECONDS = 1.0
RETRY_SECONDS = 30.0
UNEXPECTED_TRIES = 5
"""Tries of an unlock answered with what ZITADEL does not answer (a proxy's page, say) before it
is ``failed``: one such answer must not leave a temporary lock in place for good, and a setup
that answers so every time must not be tried without end."""


class Unlocker:
    """Carries out the due unlocks this instance owns and reports each as a decision."""

    def __init__(
        self,
        schedule: UnlockSchedule,
        store: UserStore,
        writer: ScheduleWriter,
        *,
        owns: Callable[[str], bool],
        report: Callable[[Decision], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._schedule = schedule
        self._store = store
        self._writer = writer
        self._owns = owns
        self._report = report
        self._clock = clock
        self._retry_after: dict[str, float] = {}
        self._unexpected: dict[str, int] = {}
        """Per user, the unlocks answered with what ZITADEL does not answer so far."""

    async def run(self, stop: asyncio.Event) -> None:
        """Unlock what is due every ``POLL_SECONDS`` until ``stop`` is set."""
        while not stop.is_set():
            await self.unlock_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=POLL_SECONDS)

    async def unlock_due(self) -> list[Decision]:
        """Unlock every due entry this instance owns; return the decisions made."""
        now = self._clock()
        decisions = []
        for entry in self._schedule.due(now):
            if not self._owns(entry.user_id) or self._retry_after.get(entry.user_id, 0) > now:
                continue
            if not self._current(entry):
                continue  # made permanent or locked anew while earlier unlocks were awaited
            decision = await self._unlock(entry)
            if decision is not None:
                decisions.append(decision)
                await self._report(decision)
        return decisions

    async def _unlock(self, entry: ScheduleEntry) -> Decision | None:
        try:
            snapshot = await self._store.read_user(entry.user_id, entry.org_id)
            if snapshot is None:
                await self._finish(entry)
                return self._decision(entry, Outcome.UNKNOWN_USER)
            verdict = judge_unlock(
                entry.lock_version, snapshot.state is UserState.LOCKED, snapshot.version
            )
            if verdict is Verdict.WAIT:
                raise ZitadelUnavailable("ZITADEL shows the user older than lockoutd's lock")
            if verdict is Verdict.NOT_LOCKED:
                await self._finish(entry)
                return self._decision(entry, Outcome.NOT_LOCKED)
            if verdict is Verdict.NOT_OURS:
                await self._finish(entry, state="not_ours")
                return self._decision(entry, Outcome.NOT_OURS, error=_not_ours(entry, snapshot))
            result = await self._store.unlock(entry.user_id, entry.org_id)
        except ZitadelUnavailable as exc:
            # The lock outlives its time by a little; it is never forgotten.
            self._retry_after[entry.user_id] = self._clock() + RETRY_SECONDS
            log.warning("unlock_retrying", user_id=entry.user_id, rule=entry.rule, error=str(exc))
            return None
        except (InvalidUserId, EventRefused) as exc:  # ZITADEL's own answer: final
            await self._finish(entry)
            return self._decision(entry, Outcome.FAILED, error=str(exc))
        except UnexpectedAnswer as exc:
            tries = self._unexpected.get(entry.user_id, 0) + 1
            if tries < UNEXPECTED_TRIES:
                self._unexpected[entry.user_id] = tries
                self._retry_after[entry.user_id] = self._clock() + RETRY_SECONDS
                log.warning(
                    "unlock_retrying", user_id=entry.user_id, rule=entry.rule, error=str(exc)
                )
                return None
            self._unexpected.pop(entry.user_id, None)
            self._retry_after.pop(entry.user_id, None)
            await self._finish(entry)
            return self._decision(entry, Outcome.FAILED, error=str(exc))
        self._retry_after.pop(entry.user_id, None)
        self._unexpected.pop(entry.user_id, None)
        await self._finish(entry)
        return self._decision(entry, _OUTCOMES[result])

    def _current(self, entry: ScheduleEntry) -> bool:
        """True while ``entry`` is still the lock the schedule says must be undone."""
        now = self._schedule.get(entry.user_id)
        return now is not None and now.state == "locked" and now.unlock_at == entry.unlock_at

    async def _finish(self, entry: ScheduleEntry, state: EntryState = "unlocked") -> None:
        if not self._current(entry):
            # A rule locked the user again during the call: its newer entry stands.
            return
        await self._writer.write(
            msgspec.structs.replace(entry, state=state, updated_at=self._clock())
        )

    def _decision(
        self, entry: ScheduleEntry, outcome: Outcome, error: str | None = None
    ) -> Decision:
        locked_at = rfc3339(entry.locked_at or entry.updated_at)
        return Decision(
            rule=entry.rule,
            key=entry.user_id,
            user_id=entry.user_id,
            org_id=entry.org_id,
            action="unlock",
            mode="enforce",
            outcome=outcome,
            count=entry.strikes,
            window_seconds=0.0,
            first_event_at=locked_at,
            last_event_at=locked_at,
            decided_at=rfc3339(self._clock()),
            unlock_at=rfc3339(entry.unlock_at) if entry.unlock_at is not None else None,
            error=error,
        )


def _not_ours(entry: ScheduleEntry, found: UserSnapshot) -> str:
    """Why a lock is left alone, for the decision's ``error``."""
    if entry.lock_sequence is None:
        return "lockoutd holds no fingerprint of this lock"
    shown = found.version.sequence if found.version is not None else "unknown"
    return (
        f"the user is locked at sequence {shown}; "
        f"lockoutd's lock left sequence {entry.lock_sequence}"
    )
