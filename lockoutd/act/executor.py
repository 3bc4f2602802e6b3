"""Carrying out decisions: the safety cap, login-name resolution and the lock call."""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
from aiolimiter import AsyncLimiter

from lockoutd.act.schedule import UnlockSchedule
from lockoutd.act.temporary import LocalScheduleWriter, TemporaryLocks
from lockoutd.act.zitadel import LockOutcome, UserStore
from lockoutd.decide.decision import Decision, Outcome, rfc3339
from lockoutd.errors import InvalidUserId, ZitadelUnavailable
from lockoutd.report.metrics import Metrics
from lockoutd.rules.model import LockAction

_LOCK_OUTCOMES = {
    LockOutcome.LOCKED: Outcome.LOCKED,
    LockOutcome.ALREADY_LOCKED: Outcome.ALREADY_LOCKED,
    LockOutcome.NOT_LOCKABLE: Outcome.NOT_LOCKABLE,
    LockOutcome.UNKNOWN_USER: Outcome.UNKNOWN_USER,
}


class LockExecutor:
    """Turns pending lock decisions into outcomes.

    The safety cap is a token bucket of ``max_locks_per_minute``: an attacker who can make rules
    fire for every account must not be able to make lockoutd lock every account. A decision over
    the cap is ``suppressed`` and final for that crossing; it is never queued for later.

    ``ZitadelConfigError`` is not caught: a daemon that cannot lock anyone must stop loudly.
    """

    def __init__(
        self,
        store: UserStore,
        *,
        max_locks_per_minute: int,
        metrics: Metrics,
        locks: TemporaryLocks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        if locks is None:
            schedule = UnlockSchedule()
            locks = TemporaryLocks(store, schedule, LocalScheduleWriter(schedule), clock=clock)
        self._locks = locks
        self._cap = AsyncLimiter(max_locks_per_minute, time_period=60)
        self._metrics = metrics
        self._clock = clock

    async def carry_out(
        self, decision: Decision, *, event_time: float, action: LockAction | None = None
    ) -> Decision:
        """Lock the user of a pending ``decision``; return the decision with its outcome."""
        user_id = decision.user_id
        try:
            if user_id is None and decision.login_name is not None:
                # Resolved before the cap is consulted: made-up login names must not be able to
                # use up the locks that real accounts under attack need.
                user_id = await self._store.resolve_login_name(decision.login_name, decision.org_id)
                if user_id is None:
                    return msgspec.structs.replace(decision, outcome=Outcome.UNKNOWN_USER)
            if user_id is None:  # the decoder guarantees a user id or a login name
                raise InvalidUserId("the event named no user")
            if not self._cap.has_capacity():
                return msgspec.structs.replace(
                    decision,
                    user_id=user_id,
                    outcome=Outcome.SUPPRESSED,
                    error="safety.max_locks_per_minute reached",
                )
            # has_capacity() was true, so this takes a token without waiting.
            await self._cap.acquire()
            result = await self._locks.lock(
                user_id, decision.org_id, rule=decision.rule, action=action or LockAction()
            )
        except (InvalidUserId, ZitadelUnavailable) as exc:
            return msgspec.structs.replace(
                decision, user_id=user_id, outcome=Outcome.FAILED, error=str(exc)
            )
        if result.outcome is LockOutcome.LOCKED:
            self._metrics.lock_latency.observe(max(0.0, self._clock() - event_time))
        return msgspec.structs.replace(
            decision,
            user_id=user_id,
            outcome=_LOCK_OUTCOMES[result.outcome],
            unlock_at=rfc3339(result.unlock_at) if result.unlock_at is not None else None,
        )
