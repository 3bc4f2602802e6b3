"""Carrying out lock decisions: outcomes, the safety cap, login names and failures."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
import structlog
import structlog.testing

from lockoutd.act.executor import LockExecutor
from lockoutd.act.zitadel import LockOutcome, ResolvedUser, UnlockOutcome, UserSnapshot, UserState
from lockoutd.decide.decision import Decision, Outcome
from lockoutd.errors import (
    EventRefused,
    InvalidUserId,
    UnexpectedAnswer,
    ZitadelConfigError,
    ZitadelUnavailable,
)
from lockoutd.report.metrics import Metrics
from lockoutd.rules.model import AllowedSet, Allowlist

EVENT_TIME = 1_795_960_987.0
CONFIRMED_AT = EVENT_TIME + 2.5


class FakeStore:
    """A user store that answers from tables and records every call."""

    def __init__(
        self,
        *,
        answers: dict[str, LockOutcome | Exception] | None = None,
        login_names: dict[str, str | ResolvedUser] | None = None,
        resolve_error: Exception | None = None,
        users: dict[str, UserSnapshot] | None = None,
    ) -> None:
        self.answers = answers or {}
        self.login_names = login_names or {}
        self.resolve_error = resolve_error
        self.users = users
        """Who ZITADEL knows (None: everyone, in org 7); a user not in it is unknown."""
        self.lock_calls: list[tuple[str, str | None]] = []
        self.resolve_calls: list[tuple[str, str | None]] = []
        self.read_calls: list[tuple[str, str | None]] = []

    async def lock(self, user_id: str, org_id: str | None) -> LockOutcome:
        self.lock_calls.append((user_id, org_id))
        answer = self.answers.get(user_id, LockOutcome.LOCKED)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def unlock(self, user_id: str, org_id: str | None) -> UnlockOutcome:
        raise AssertionError("the executor never unlocks")

    async def resolve_login_name(self, login_name: str, org_id: str | None) -> ResolvedUser | None:
        self.resolve_calls.append((login_name, org_id))
        if self.resolve_error is not None:
            raise self.resolve_error
        found = self.login_names.get(login_name)
        return ResolvedUser(found, org_id) if isinstance(found, str) else found

    async def read_user(self, user_id: str, org_id: str | None) -> UserSnapshot | None:
        self.read_calls.append((user_id, org_id))
        if self.users is None:
            return _user("7", frozenset({f"user-{user_id}"}))
        return self.users.get(user_id)


def _user(org_id: str | None, login_names: frozenset[str]) -> UserSnapshot:
    """An active user of ``org_id`` with ``login_names``, as a read of ZITADEL shows it."""
    return UserSnapshot(UserState.ACTIVE, None, org_id, login_names)


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
    store: FakeStore,
    *,
    metrics: Metrics | None = None,
    max_locks_per_minute: int = 60,
    max_locks_per_minute_per_org: int | None = None,
) -> LockExecutor:
    return LockExecutor(
        store,
        max_locks_per_minute=max_locks_per_minute,
        max_locks_per_minute_per_org=max_locks_per_minute_per_org,
        metrics=metrics or Metrics(),
        clock=lambda: CONFIRMED_AT,
    )


def _allowed(*users: str) -> AllowedSet:
    return AllowedSet.of([Allowlist(users=list(users))])


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


@pytest.mark.parametrize(
    "answer",
    [
        LockOutcome.UNKNOWN_USER,
        LockOutcome.ALREADY_LOCKED,
        LockOutcome.NOT_LOCKABLE,
        InvalidUserId("user id 'x' is not a ZITADEL id"),
    ],
)
async def test_a_lock_that_locked_nobody_gives_its_place_under_the_cap_back(
    answer: LockOutcome | Exception,
) -> None:
    """The cap counts locks made: a made-up or unknown user, or one ZITADEL already holds
    locked, leaves the place for the next real account (one token a minute here)."""
    store = FakeStore(answers={"0": answer})
    executor = _executor(store, max_locks_per_minute=1)
    for _ in range(3):
        await executor.carry_out(_pending("0"), event_time=EVENT_TIME)
    assert (await executor.carry_out(_pending("1"), event_time=EVENT_TIME)).outcome is (
        Outcome.LOCKED
    )


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


async def test_a_login_name_without_an_org_acts_in_the_users_own_org() -> None:
    """ZITADEL names the org of the user it found: the lock and the decision use that org."""
    store = FakeStore(login_names={"bob@globex.example": ResolvedUser("2002", "700")})
    pending = msgspec.structs.replace(_pending(None, login_name="bob@globex.example"), org_id=None)
    decision = await _executor(store).carry_out(pending, event_time=EVENT_TIME)
    assert store.resolve_calls == [("bob@globex.example", None)]
    assert store.lock_calls == [("2002", "700")]
    assert (decision.user_id, decision.org_id, decision.outcome) == ("2002", "700", Outcome.LOCKED)


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
        pytest.param(
            FakeStore(answers={"42": EventRefused("unknown_org", "ZITADEL knows no org 7")}),
            _pending(),
            id="the event's org refused while locking",
        ),
        pytest.param(
            FakeStore(resolve_error=EventRefused("unknown_org", "ZITADEL knows no org 7")),
            _pending(None, login_name="alice@example.com"),
            id="the event's org refused while resolving",
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


# One notion of "this user": the allowlist is matched against the user the lock acts on.


async def test_an_allowlisted_id_spares_the_user_an_event_named_by_login_name() -> None:
    """The allowlist holds 2000; the decision names admin@acme.example, which is 2000."""
    store = FakeStore(login_names={"admin@acme.example": "2000"})
    executor = _executor(store, max_locks_per_minute=1)
    decision = await executor.carry_out(
        _pending(None, login_name="admin@acme.example"),
        event_time=EVENT_TIME,
        allowed=_allowed("2000"),
    )
    assert (decision.outcome, decision.user_id) == (Outcome.ALLOWLISTED, "2000")
    assert store.lock_calls == []
    assert store.read_calls == []  # an allowlist of ids alone needs no read of the user
    # An allowlisted user takes no place under the cap.
    assert (await executor.carry_out(_pending(), event_time=EVENT_TIME)).outcome is Outcome.LOCKED


@pytest.mark.parametrize(
    "known_as",
    ["oncall@acme.example", "OnCall@Acme.Example", "oncall@acme.internal"],
)
async def test_an_allowlisted_login_name_spares_the_user_an_event_named_by_id(
    known_as: str,
) -> None:
    """ZITADEL knows user 2002 by two login names; the allowlist holds one, spelled oddly."""
    names = frozenset({known_as, "2002@legacy.example"})
    store = FakeStore(users={"2002": _user("300", names)})
    decision = await _executor(store).carry_out(
        _pending("2002"),
        event_time=EVENT_TIME,
        allowed=_allowed(" OnCall@acme.example ", "oncall@acme.internal"),
    )
    assert decision.outcome is Outcome.ALLOWLISTED
    assert store.read_calls == [("2002", "7")]
    assert store.lock_calls == []


async def test_a_user_whose_login_names_are_not_allowlisted_is_locked() -> None:
    """Reading the user spares only the users the allowlist names."""
    store = FakeStore(users={"42": _user("7", frozenset({"alice@acme.example"}))})
    decision = await _executor(store).carry_out(
        _pending(), event_time=EVENT_TIME, allowed=_allowed("oncall@acme.example")
    )
    assert decision.outcome is Outcome.LOCKED
    assert store.lock_calls == [("42", "7")]


async def test_a_user_zitadel_cannot_read_is_unknown_and_takes_no_place_under_the_cap() -> None:
    """A made-up user id ends as unknown_user before the cap is consulted."""
    store = FakeStore(users={})
    executor = _executor(store, max_locks_per_minute=1, max_locks_per_minute_per_org=1)
    assert (await executor.carry_out(_pending("999"), event_time=EVENT_TIME)).outcome is (
        Outcome.UNKNOWN_USER
    )
    assert store.lock_calls == []


# Caps that hold: the per-org cap counts the org ZITADEL reports for the user.


@pytest.mark.parametrize(
    "claimed_org",
    [
        pytest.param(lambda user: None, id="no org in the events"),
        pytest.param(lambda user: f"99{user}", id="a made-up org per event"),
    ],
)
async def test_the_per_org_cap_counts_the_org_the_users_are_in(
    claimed_org: Callable[[str], str | None],
) -> None:
    """Cap 2 per org, six users of org 300: 2 locks and 4 suppressed, whatever the events claim."""
    users = {str(n): _user("300", frozenset()) for n in range(6)}
    executor = _executor(FakeStore(users=users), max_locks_per_minute_per_org=2)
    decisions = [
        await executor.carry_out(
            msgspec.structs.replace(_pending(user), org_id=claimed_org(user)),
            event_time=EVENT_TIME,
        )
        for user in users
    ]
    assert [d.outcome for d in decisions] == [Outcome.LOCKED] * 2 + [Outcome.SUPPRESSED] * 4
    assert {d.org_id for d in decisions} == {"300"}  # the decision names the user's real org
    assert decisions[-1].error == "safety.max_locks_per_minute_per_org reached for org 300"


async def test_users_of_other_orgs_have_budgets_of_their_own() -> None:
    """The per-org cap of one org does not hold back another's locks."""
    users = {"1": "300", "2": "300", "3": "301"}
    store = FakeStore(users={u: _user(o, frozenset()) for u, o in users.items()})
    executor = _executor(store, max_locks_per_minute_per_org=1)
    outcomes = [
        (await executor.carry_out(_pending(user), event_time=EVENT_TIME)).outcome for user in users
    ]
    assert outcomes == [Outcome.LOCKED, Outcome.SUPPRESSED, Outcome.LOCKED]


async def test_without_a_per_org_cap_or_login_names_in_the_allowlist_no_user_is_read() -> None:
    """Reading the user costs a call: it is made only when a decision needs what it tells."""
    store = FakeStore()
    await _executor(store).carry_out(_pending(), event_time=EVENT_TIME, allowed=_allowed("9"))
    assert store.read_calls == []


# The group's cap: an instance locks its share of it (README, Operations: "Scaling out").


async def test_an_instance_locks_its_share_of_the_cap_and_reports_it() -> None:
    """Half the partitions under a cap of 4: 2 locks and 2 suppressed; the budget gauge says 2."""
    store, metrics = FakeStore(), Metrics()
    executor = _executor(store, metrics=metrics, max_locks_per_minute=4)
    executor.set_share(1 / 2)
    decisions = [
        await executor.carry_out(_pending(str(n)), event_time=EVENT_TIME) for n in range(4)
    ]
    assert [d.outcome for d in decisions] == [Outcome.LOCKED] * 2 + [Outcome.SUPPRESSED] * 2
    assert metrics.registry.get_sample_value("lockoutd_lock_budget_per_minute") == 2


async def test_an_instance_locks_its_share_of_each_org_cap() -> None:
    """Half the partitions under a per-org cap of 4: 2 locks in org 300, and 2 in org 301."""
    users = {str(n): _user("300" if n < 4 else "301", frozenset()) for n in range(8)}
    executor = _executor(FakeStore(users=users), max_locks_per_minute_per_org=4)
    executor.set_share(1 / 2)
    outcomes = [
        (await executor.carry_out(_pending(user), event_time=EVENT_TIME)).outcome for user in users
    ]
    twice = [Outcome.LOCKED] * 2 + [Outcome.SUPPRESSED] * 2
    assert outcomes == twice + twice


async def test_an_instance_without_partitions_locks_nobody() -> None:
    """A share of nothing: every decision is suppressed, none reaches ZITADEL."""
    store = FakeStore()
    executor = _executor(store)
    executor.set_share(0.0)
    decision = await executor.carry_out(_pending(), event_time=EVENT_TIME)
    assert decision.outcome is Outcome.SUPPRESSED
    assert store.lock_calls == []
