"""Carrying out decisions: the safety cap, login-name resolution and the lock call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
import stamina
import structlog

from lockoutd.act.group_share import ShareBucket
from lockoutd.act.org_caps import OrgCaps
from lockoutd.act.schedule import UnlockSchedule
from lockoutd.act.temporary import LocalScheduleWriter, TemporaryLocks
from lockoutd.act.zitadel import LockOutcome, UserStore
from lockoutd.decide.decision import Decision, Outcome, rfc3339
from lockoutd.errors import InvalidUserId, UnexpectedAnswer, ZitadelUnavailable
from lockoutd.report.metrics import Metrics
from lockoutd.rules.model import AllowedSet, LockAction

_T = TypeVar("_T")

log = structlog.get_logger(__name__)

_NOBODY = AllowedSet()

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
    never queued for later. The caps are the whole group's: :meth:`set_share` gives this
    instance its share of them (the whole until told otherwise, as in ``lockoutd replay``).

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
        self._cap = ShareBucket(max_locks_per_minute)
        self._org_caps = (
            OrgCaps(max_locks_per_minute_per_org)
            if max_locks_per_minute_per_org is not None
            else None
        )
        self._metrics = metrics
        self._clock = clock
        self._outage_waits = (outage_wait_initial, outage_wait_max)
        self.in_flight = 0
        """Decisions being carried out now: during an outage, the ones that wait for ZITADEL."""
        self._tokens_out = 0
        """Tokens held by lock calls under way; each comes back if its call locks nobody."""
        self._call_ended = asyncio.Event()

    def set_share(self, share: float) -> None:
        """Hold ``share`` of the group's caps from now on: the share of its partitions that
        this instance holds, set at every assignment (README, Operations: "Scaling out")."""
        self._cap.set_share(share)
        if self._org_caps is not None:
            self._org_caps.set_share(share)
        self._metrics.lock_budget.set(self._cap.per_minute)
        log.info("lock_budget_shared", share=round(share, 4), per_minute=self._cap.per_minute)

    async def carry_out(
        self,
        decision: Decision,
        *,
        event_time: float,
        action: LockAction | None = None,
        allowed: AllowedSet = _NOBODY,
    ) -> Decision:
        """Lock the user of a pending ``decision``; return the decision with its outcome.

        ``allowed`` holds the users the decision's rule never locks (the global allowlist and
        the rule's own). They are matched against the user the lock would act on, once ZITADEL
        has said who that is: its id, and each of its login names when the allowlist names
        users by login name. All of it happens before a token is taken from the safety cap, so
        neither made-up names nor allowlisted users use up the locks real accounts need.
        """
        self.in_flight += 1
        try:
            return await self._carry_out(
                decision, event_time=event_time, action=action, allowed=allowed
            )
        finally:
            self.in_flight -= 1

    async def _carry_out(
        self,
        decision: Decision,
        *,
        event_time: float,
        action: LockAction | None,
        allowed: AllowedSet,
    ) -> Decision:
        user_id = decision.user_id
        users_org: str | None = None  # as ZITADEL reports it; what the per-org cap counts
        try:
            if user_id is None and decision.login_name is not None:
                login_name = decision.login_name
                resolved = await self._until_available(
                    lambda: self._store.resolve_login_name(login_name, decision.org_id),
                    "resolve_retrying",
                    decision,
                )
                if resolved is None:
                    return msgspec.structs.replace(decision, outcome=Outcome.UNKNOWN_USER)
                user_id = resolved.user_id
                # The user's own org, which v1 must name to act on a user of another org than
                # the service account's, and which the audit should show.
                decision = msgspec.structs.replace(
                    decision, org_id=resolved.org_id or decision.org_id
                )
            if user_id is None:  # the decoder guarantees a user id or a login name
                raise InvalidUserId("the event named no user")
            target = user_id
            org_id = decision.org_id
            if allowed.has_user(target, decision.login_name):
                return msgspec.structs.replace(
                    decision, user_id=target, outcome=Outcome.ALLOWLISTED
                )
            if allowed.has_login_names or self._org_caps is not None:
                # One read says both who the user is (every login name) and which org it is in.
                facts = await self._until_available(
                    lambda: self._store.read_user(target, decision.org_id),
                    "read_user_retrying",
                    decision,
                    user_id=target,
                )
                if facts is None:
                    return msgspec.structs.replace(
                        decision, user_id=target, outcome=Outcome.UNKNOWN_USER
                    )
                users_org = facts.org_id
                org_id = users_org or org_id
                if allowed.has_any_login_name(facts.login_names):
                    return msgspec.structs.replace(
                        decision, user_id=target, org_id=org_id, outcome=Outcome.ALLOWLISTED
                    )
            if (over := await self._take_cap(users_org)) is not None:
                return msgspec.structs.replace(
                    decision, user_id=target, org_id=org_id, outcome=Outcome.SUPPRESSED, error=over
                )
            locked_nobody = False
            try:
                result = await self._until_available(
                    lambda: self._locks.lock(
                        target,
                        decision.org_id,
                        rule=decision.rule,
                        action=action or LockAction(),
                        crossing_at=event_time,
                    ),
                    "lock_retrying",
                    decision,
                    user_id=target,
                )
                # ZITADEL said so: nobody was locked. (A failed call keeps its token: it may
                # have locked someone before it failed.)
                locked_nobody = result.outcome is not LockOutcome.LOCKED
            except InvalidUserId:
                locked_nobody = True  # refused before any request
                raise
            finally:
                self._call_over(users_org, locked_nobody=locked_nobody)
        except (InvalidUserId, UnexpectedAnswer) as exc:
            return msgspec.structs.replace(
                decision, user_id=user_id, outcome=Outcome.FAILED, error=str(exc)
            )
        if result.outcome is LockOutcome.LOCKED:
            self._metrics.lock_latency.observe(max(0.0, self._clock() - event_time))
        return msgspec.structs.replace(
            decision,
            user_id=user_id,
            org_id=org_id,
            outcome=_LOCK_OUTCOMES[result.outcome],
            unlock_at=rfc3339(result.unlock_at) if result.unlock_at is not None else None,
        )

    async def _take_cap(self, org_id: str | None) -> str | None:
        """Take a token from every cap that applies; the name of the one that is empty, if any.

        A cap is found empty only once no lock call under way holds a token that may come back:
        the calls of one batch run side by side, and crossings for made-up users mixed into a
        batch must not hold the tokens a real user's crossing in the same batch needs.
        """
        while True:
            over = self._try_take(org_id)
            if over is None:
                self._tokens_out += 1
                return None
            if not self._tokens_out:
                return over
            self._call_ended.clear()
            await self._call_ended.wait()

    def _call_over(self, org_id: str | None, *, locked_nobody: bool) -> None:
        """A lock call that held tokens has ended; give them back if it locked nobody."""
        self._tokens_out -= 1
        if locked_nobody:
            self._cap.give_back()
            if self._org_caps is not None:
                self._org_caps.bucket(org_id)[1].give_back()
        self._call_ended.set()

    def _try_take(self, org_id: str | None) -> str | None:
        """Take a token from every cap that applies now; the name of the one that is empty, if
        any. ``org_id`` is the org ZITADEL reports for the user, never an event's claim."""
        org_cap = None
        if self._org_caps is not None:
            org_name, org_cap = self._org_caps.bucket(org_id)
        if not self._cap.has_token():
            return "safety.max_locks_per_minute reached"
        if org_cap is not None and not org_cap.has_token():
            return f"safety.max_locks_per_minute_per_org reached for org {org_name}"
        # Nothing awaits between the check and the take: no other lock can take the token.
        self._cap.take()
        if org_cap is not None:
            org_cap.take()
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
