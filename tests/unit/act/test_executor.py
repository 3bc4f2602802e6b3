"""Carrying out lock decisions: outcomes, the safety cap, login names and failures."""

from __future__ import annotations

import msgspec
import pytest
import structlog
import structlog.testing

from lockoutd.act.executor import LockExecutor
from lockoutd.act.zitadel import LockOutcome, UnlockOutcome
from lockoutd.decide.decision import Decision, Outcome
from lockoutd.errors import (
    InvalidUserId,
    UnexpectedAnswer,
    ZitadelConfigError,
    ZitadelUnavailable,
)
from lockoutd.report.metrics import Metrics

EVENT_TIME = 1_795_960_987.0
CONFIRMED_AT = EVENT_TIME + 2.5


class FakeStore:
    """A user store that answers from tables and records every call."""

    def __init__(
        self,
        *,
        answers: dict[str, LockOutcome | Exception] | None = None,
        login_names: dict[str, str] | None = None,
        resolve_error: Exception | None = None,
    ) -> None:
        self.answers = answers or {}
        self.login_names = login_names or {}
        self.resolve_error = resolve_error
        self.lock_calls: list[tuple[str, str | None]] = []
        self.resolve_calls: list[tuple[str, str | None]] = []

    async def lock(self, user_id: str, org_id: str | None) -> LockOutcome:
        self.lock_calls.append((user_id, org_id))
        answer = self.answers.get(user_id, LockOutcome.LOCKED)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def unlock(self, user_id: str, org_id: str | None) -> UnlockOutcome:
        raise AssertionError("the executor never unlocks")

    async def resolve_login_name(self, login_name: str, org_id: str | None) -> str | None:
        self.resolve_calls.append((login_name, org_id))
        if self.resolve_error is not None:
            raise self.resolve_error
        return self.login_names.get(login_name)


def _pending(user_id: str | None = "42", *, login_name: str | None = None) -> Decision:
    return Decision(
        rule="password-bruteforce",
        key=user_id or login_name or "",
        user_id=user_id,
        org_id="7",
        login_name=login_name,
        action="lock",
        mode="enforce",
        outcome=None,
        count=5,
        window_seconds=600.0,
        first_event_at="2026-11-29T13:55:00.000Z",
        last_event_at="2026-11-29T14:03:07.000Z",
        decided_at="2026-11-29T14:03:07.100Z",
    )


def _executor(
    store: FakeStore, *, metrics: Metrics | None = None, max_locks_per_minute: int = 60
) -> LockExecutor:
    return LockExecutor(
        store,
        max_locks_per_minute=max_locks_per_minute,
        metrics=metrics or Metrics(),
        clock=lambda: CONFIRMED_AT,
    )


async def test_a_lock_is_carried_out_and_its_latency_observed() -> None:
    """A confirmed lock gives the outcome ``locked`` and observes event-to-lock latency."""
    store, metrics = FakeStore(), Metrics()
    decision = await _executor(store, metrics=metrics).carry_out(_pending(), event_time=EVENT_TIME)
    assert decision == msgspec.structs.replace(_pending(), outcome=Outcome.LOCKED)
    assert store.lock_calls == [("42", "7")]
    sample = metrics.registry.get_sample_value
    assert sample("lockoutd_lock_latency_seconds_count") == 1
    assert sample("lockoutd_lock_latency_seconds_sum") == 2.5


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (LockOutcome.ALREADY_LOCKED, Outcome.ALREADY_LOCKED),
        (LockOutcome.NOT_LOCKABLE, Outcome.NOT_LOCKABLE),
        (LockOutcome.UNKNOWN_USER, Outcome.UNKNOWN_USER),
    ],
)
async def test_other_answers_become_their_outcome(answer: LockOutcome, outcome: Outcome) -> None:
    """An already locked, deactivated or unknown user is an outcome, and no lock latency."""
    metrics = Metrics()
    store = FakeStore(answers={"42": answer})
    decision = await _executor(store, metrics=metrics).carry_out(_pending(), event_time=EVENT_TIME)
    assert decision.outcome is outcome
    assert decision.error is None
    assert metrics.registry.get_sample_value("lockoutd_lock_latency_seconds_count") == 0


async def test_the_safety_cap_suppresses_locks_over_the_limit() -> None:
    """With a cap of 3 a minute, 5 decisions give 3 locks and 2 suppressions, and 3 calls."""
    store = FakeStore()
    executor = _executor(store, max_locks_per_minute=3)
    decisions = [
        await executor.carry_out(_pending(str(n)), event_time=EVENT_TIME) for n in range(5)
    ]
    assert [d.outcome for d in decisions] == [Outcome.LOCKED] * 3 + [Outcome.SUPPRESSED] * 2
    assert store.lock_calls == [("0", "7"), ("1", "7"), ("2", "7")]
    assert [d.error for d in decisions[3:]] == ["safety.max_locks_per_minute reached"] * 2


async def test_unknown_login_names_do_not_use_up_the_cap() -> None:
    """Made-up login names end as unknown_user without taking a place under the cap."""
    store = FakeStore()
    executor = _executor(store, max_locks_per_minute=1)
    for n in range(3):
        unknown = msgspec.structs.replace(_pending(), user_id=None, login_name=f"nobody{n}@x")
        assert (await executor.carry_out(unknown, event_time=EVENT_TIME)).outcome is (
            Outcome.UNKNOWN_USER
        )
    assert (await executor.carry_out(_pending(), event_time=EVENT_TIME)).outcome is Outcome.LOCKED


async def test_a_failed_attempt_uses_up_a_place_under_the_cap() -> None:
    """An attempt that failed still counts against the cap: the cap bounds calls, not successes."""
    store = FakeStore(answers={"0": UnexpectedAnswer("ZITADEL answered lock with HTTP 409")})
    executor = _executor(store, max_locks_per_minute=1)
    first = await executor.carry_out(_pending("0"), event_time=EVENT_TIME)
    second = await executor.carry_out(_pending("1"), event_time=EVENT_TIME)
    assert (first.outcome, second.outcome) == (Outcome.FAILED, Outcome.SUPPRESSED)


async def test_a_login_name_is_resolved_before_locking() -> None:
    """A decision known by login name is resolved to a user id, locked, and carries the id."""
    store = FakeStore(login_names={"alice@example.com": "1001"})
    decision = await _executor(store).carry_out(
        _pending(None, login_name="alice@example.com"), event_time=EVENT_TIME
    )
    assert store.resolve_calls == [("alice@example.com", "7")]
    assert store.lock_calls == [("1001", "7")]
    assert (decision.user_id, decision.login_name, decision.outcome) == (
        "1001",
        "alice@example.com",
        Outcome.LOCKED,
    )


async def test_a_login_name_without_a_user_is_unknown() -> None:
    """A login name ZITADEL does not know gives ``unknown_user`` and no lock call."""
    store = FakeStore()
    decision = await _executor(store).carry_out(
        _pending(None, login_name="nobody@example.com"), event_time=EVENT_TIME
    )
    assert decision.outcome is Outcome.UNKNOWN_USER
    assert store.lock_calls == []


@pytest.mark.parametrize(
    ("store", "decision"),
    [
        pytest.param(
            FakeStore(answers={"42": UnexpectedAnswer("ZITADEL answered lock with HTTP 409")}),
            _pending(),
            id="unexpected answer while locking",
        ),
        pytest.param(
            FakeStore(answers={"42": InvalidUserId("user id '42' is not a ZITADEL id")}),
            _pending(),
            id="invalid user id",
        ),
        pytest.param(
            FakeStore(resolve_error=UnexpectedAnswer("ZITADEL answered find_user with 409")),
            _pending(None, login_name="alice@example.com"),
            id="unexpected answer while resolving",
        ),
        pytest.param(FakeStore(), _pending(None), id="no user at all"),
    ],
)
async def test_an_action_that_cannot_be_carried_out_fails_with_its_error(
    store: FakeStore, decision: Decision
) -> None:
    """An answer lockoutd does not know or an unusable id gives ``failed`` with ``error``."""
    result = await _executor(store).carry_out(decision, event_time=EVENT_TIME)
    assert result.outcome is Outcome.FAILED
    assert result.error


async def test_the_error_text_is_the_reason() -> None:
    """The ``error`` field holds the message of what went wrong."""
    store = FakeStore(answers={"42": UnexpectedAnswer("ZITADEL answered lock with HTTP 409")})
    result = await _executor(store).carry_out(_pending(), event_time=EVENT_TIME)
    assert result.error == "ZITADEL answered lock with HTTP 409"


class RecoveringStore(FakeStore):
    """Unavailable for the first ``outage`` calls, then locks."""

    def __init__(self, outage: int) -> None:
        super().__init__()
        self.outage = outage

    async def lock(self, user_id: str, org_id: str | None) -> LockOutcome:
        self.lock_calls.append((user_id, org_id))
        if len(self.lock_calls) <= self.outage:
            raise ZitadelUnavailable("ZITADEL answered 503 10 times")
        return LockOutcome.LOCKED


async def test_an_outage_is_waited_out_and_the_lock_happens_when_zitadel_returns() -> None:
    """ZITADEL unavailable twice, then back: the lock happens, using one place under the cap."""
    store = RecoveringStore(outage=2)
    executor = LockExecutor(
        store,
        max_locks_per_minute=1,
        metrics=Metrics(),
        clock=lambda: CONFIRMED_AT,
        outage_wait_initial=0.001,
        outage_wait_max=0.01,
    )
    result = await executor.carry_out(_pending(), event_time=EVENT_TIME)
    assert result.outcome is Outcome.LOCKED
    assert len(store.lock_calls) == 3
    assert (await executor.carry_out(_pending("43"), event_time=EVENT_TIME)).outcome is (
        Outcome.SUPPRESSED
    )


async def test_each_retry_of_an_outage_is_one_line_naming_rule_user_and_attempt() -> None:
    store = RecoveringStore(outage=2)
    executor = LockExecutor(
        store,
        max_locks_per_minute=1,
        metrics=Metrics(),
        outage_wait_initial=0.001,
        outage_wait_max=0.01,
    )
    with structlog.testing.capture_logs() as logs:
        await executor.carry_out(_pending(), event_time=EVENT_TIME)
    assert [
        (line["event"], line["rule"], line["user_id"], line["attempt"], line["log_level"])
        for line in logs
        if line["event"] == "lock_retrying"
    ] == [
        ("lock_retrying", "password-bruteforce", "42", 2, "warning"),
        ("lock_retrying", "password-bruteforce", "42", 3, "warning"),
    ]
    assert next(line["error"] for line in logs if line["event"] == "lock_retrying") == (
        "ZITADEL answered 503 10 times"
    )
    assert executor.in_flight == 0


async def test_a_configuration_error_stops_the_daemon() -> None:
    """ZITADEL refusing lockoutd itself is not an outcome: the error propagates."""
    store = FakeStore(answers={"42": ZitadelConfigError("the token was refused (401)")})
    with pytest.raises(ZitadelConfigError, match="401"):
        await _executor(store).carry_out(_pending(), event_time=EVENT_TIME)


async def test_a_lock_confirmed_before_the_event_time_observes_zero() -> None:
    """A clock behind the producer's clock never gives a negative latency."""
    metrics = Metrics()
    executor = LockExecutor(
        FakeStore(), max_locks_per_minute=60, metrics=metrics, clock=lambda: EVENT_TIME - 10
    )
    await executor.carry_out(_pending(), event_time=EVENT_TIME)
    assert metrics.registry.get_sample_value("lockoutd_lock_latency_seconds_sum") == 0
