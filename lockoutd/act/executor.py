"""Carrying out decisions: the safety cap, login-name resolution and the lock call."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
import stamina
import structlog
from aiolimiter import AsyncLimiter

from lockoutd.act.schedule import UnlockSchedule
from lockoutd.act.temporary import LocalScheduleWriter, TemporaryLocks
from lockoutd.act.zitadel import LockOutcome, UserStore
from lockoutd.decide.decision import Decision, Outcome, rfc3339
from lockoutd.errors import InvalidUserId, UnexpectedAnswer, ZitadelUnavailable
from lockoutd.report.metrics import Metrics
from lockoutd.rules.model import LockAction

_T = TypeVar("_T")

log = structlog.get_logger(__name__)

_LOCK_OUTCOMES = {
    LockOutcome.LOCKED: Outcome.LOCKED,
    LockOutcome.ALREADY_LOCKED: Outcome.ALREADY_LOCKED,
    LockOutcome.NOT_LOCKABLE: Outcome.NOT_LOCKABLE,
    LockOutcome.UNKNOWN_USER: Outcome.UNKNOWN_USER,
}


class LockExecutor:
    """Turns pending lock decisions into outcomes.

    The safety cap is a token bucket of ``max_locks_per_minute`` (and optionally one per org): an
    attacker who can make rules fire for every account must not be able to make lockoutd lock
    every account. A decision over the cap is ``suppressed`` and final for that crossing; it is
    never queued for later.

    While ZITADEL is unavailable the lock is tried again with growing pauses until it answers;
    the daemon meanwhile stops fetching (backpressure), and a shutdown cancels the wait without
    committing, so the next start carries the decision out. ``ZitadelConfigError`` is not caught:
    a daemon that cannot lock anyone must stop loudly.
    """

    def __init__(
        self,
        store: UserStore,
        *,
        max_locks_per_minute: int,
        metrics: Metrics,
        max_locks_per_minute_per_org: int | None = None,
        locks: TemporaryLocks | None = None,
        clock: Callable[[], float] = time.time,
        outage_wait_initial: float = 1.0,
        outage_wait_max: float = 30.0,
    ) -> None:
        self._store = store
        if locks is None:
            schedule = UnlockSchedule()
            locks = TemporaryLocks(store, schedule, LocalScheduleWriter(schedule), clock=clock)
        self._locks = locks
        self._cap = AsyncLimiter(max_locks_per_minute, time_period=60)
        self._org_rate = max_locks_per_minute_per_org
        self._org_caps: dict[str, AsyncLimiter] = {}
        self._metrics = metrics
        self._clock = clock
        self._outage_waits = (outage_wait_initial, outage_wait_max)
        self.in_flight = 0
        """Decisions being carried out now: during an outage, the ones that wait for ZITADEL."""

    async def carry_out(
        self, decision: Decision, *, event_time: float, action: LockAction | None = None
    ) -> Decision:
        """Lock the user of a pending ``decision``; return the decision with its outcome."""
        self.in_flight += 1
        try:
            return await self._carry_out(decision, event_time=event_time, action=action)
        finally:
            self.in_flight -= 1

    async def _carry_out(
        self, decision: Decision, *, event_time: float, action: LockAction | None
    ) -> Decision:
        user_id = decision.user_id
        try:
            if user_id is None and decision.login_name is not None:
                # Resolved before the cap is consulted: made-up login names must not be able to
                # use up the locks that real accounts under attack need.
                login_name = decision.login_name
                user_id = await self._until_available(
                    lambda: self._store.resolve_login_name(login_name, decision.org_id),
                    "resolve_retrying",
                    decision,
                )
                if user_id is None:
                    return msgspec.structs.replace(decision, outcome=Outcome.UNKNOWN_USER)
            if user_id is None:  # the decoder guarantees a user id or a login name
                raise InvalidUserId("the event named no user")
            if (over := await self._take_cap(decision.org_id)) is not None:
                return msgspec.structs.replace(
                    decision, user_id=user_id, outcome=Outcome.SUPPRESSED, error=over
                )
            target = user_id
            result = await self._until_available(
                lambda: self._locks.lock(
                    target, decision.org_id, rule=decision.rule, action=action or LockAction()
                ),
                "lock_retrying",
                decision,
                user_id=target,
            )
        except (InvalidUserId, UnexpectedAnswer) as exc:
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

    async def _take_cap(self, org_id: str | None) -> str | None:
        """Take a token from every cap that applies; the name of the one that is empty, if any."""
        org_cap = None
        if self._org_rate is not None and org_id is not None:
            org_cap = self._org_caps.get(org_id)
            if org_cap is None:
                org_cap = self._org_caps[org_id] = AsyncLimiter(self._org_rate, time_period=60)
        if not self._cap.has_capacity():
            return "safety.max_locks_per_minute reached"
        if org_cap is not None and not org_cap.has_capacity():
            return f"safety.max_locks_per_minute_per_org reached for org {org_id}"
        # Both have capacity, so acquire() returns without suspending: nothing else can take the
        # token between the check and the take.
        await self._cap.acquire()
        if org_cap is not None:
            await org_cap.acquire()
        return None

    async def _until_available(
        self,
        call: Callable[[], Awaitable[_T]],
        event: str,
        decision: Decision,
        *,
        user_id: str | None = None,
    ) -> _T:
        """``call`` again and again while ZITADEL is unavailable; one log line per retry."""
        last: ZitadelUnavailable | None = None
        async for attempt in stamina.retry_context(
            on=ZitadelUnavailable,
            attempts=None,
            timeout=None,
            wait_initial=self._outage_waits[0],
            wait_max=self._outage_waits[1],
            wait_jitter=self._outage_waits[0],
        ):
            with attempt:
                if last is not None:
                    log.warning(
                        event,
                        rule=decision.rule,
                        user_id=user_id or decision.user_id,
                        login_name=decision.login_name,
                        org_id=decision.org_id,
                        attempt=attempt.num,
                        error=str(last),
                    )
                try:
                    return await call()
                except ZitadelUnavailable as exc:
                    last = exc
                    raise
        raise AssertionError("unreachable: stamina retries until the call succeeds")
