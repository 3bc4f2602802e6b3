"""Small builders shared by the unit tests: events, rules and rule sets with readable defaults."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from lockoutd.act.ownership import Version
from lockoutd.act.schedule import ScheduleEntry, UnlockSchedule
from lockoutd.act.temporary import LocalScheduleWriter
from lockoutd.act.zitadel import (
    LockOutcome,
    LockReceipt,
    ResolvedUser,
    UnlockOutcome,
    UserSnapshot,
    UserState,
)
from lockoutd.decide.engine import Engine, Firing
from lockoutd.decode.event import LOGIN_FAILED, Event
from lockoutd.rules.model import Rule, RuleFile, RuleSet

T0 = 1_700_000_000.0
"""2023-11-14T22:13:20Z: the origin of every test timeline; times are given relative to it."""

MINUTE = 60.0


def event(
    at_minutes: float = 0.0,
    *,
    type: str = LOGIN_FAILED,
    user_id: str | None = "42",
    reason: str | None = "password",
    **fields: Any,
) -> Event:
    """An event ``at_minutes`` after :data:`T0`; unknown keyword arguments become extra fields."""
    standard = {
        name: fields.pop(name)
        for name in ("login_name", "org_id", "ip", "event_id", "user_agent")
        if name in fields
    }
    return Event(
        type=type,
        occurred_at=T0 + at_minutes * MINUTE,
        user_id=user_id,
        reason=reason,
        extra=fields,
        **standard,
    )


def rule(name: str = "password-bruteforce", **overrides: Any) -> Rule:
    """A valid lock rule (3 password failures per user in 10m) with ``overrides`` applied."""
    data: dict[str, Any] = {
        "name": name,
        "match": {"type": LOGIN_FAILED, "reason": ["password"]},
        "key": ["user_id"],
        "threshold": 3,
        "window": "10m",
        "action": {"lock": {}},
    }
    data.update(overrides)
    return Rule.model_validate(data)


def ruleset(*rules: Rule, users: list[str] | None = None, ips: list[str] | None = None) -> RuleSet:
    """The rule set one file holding ``rules`` and the given allowlist would load into."""
    rule_file = RuleFile.model_validate(
        {"rules": [], "allowlist": {"users": users or [], "ips": ips or []}}
    )
    rule_file = rule_file.model_copy(update={"rules": list(rules)})
    return RuleSet.build([(Path("rules/test.yaml"), rule_file)])


class Clock:
    """A wall clock the test moves by hand; calling it reads the time."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeUserStore:
    """An in-memory ZITADEL: users that exist, which are locked, and every call made to it.

    Every user exists unless named in ``unknown``; ``deactivated`` users cannot be locked.
    ``failures`` queues exceptions per ``(operation, user_id)``, raised one per call.
    Each user has a version, as in ZITADEL: every change (a lock, an unlock, :meth:`change`)
    moves its sequence on by one and stamps a new change date.
    ``round_trip`` is how far a call moves ``clock``. ``yields`` holds, for each next call in turn,
    how often it lets other tasks run after ZITADEL has already changed the user (a slow answer).
    """

    def __init__(
        self,
        *,
        locked: Iterable[str] = (),
        unknown: Iterable[str] = (),
        deactivated: Iterable[str] = (),
        login_names: dict[str, str] | None = None,
        clock: Clock | None = None,
        round_trip: float = 0.0,
    ) -> None:
        self.locked = set(locked)
        self.unknown = set(unknown)
        self.deactivated = set(deactivated)
        self.login_names = login_names or {}
        self.clock = clock
        self.round_trip = round_trip
        self.calls: list[tuple[str, str]] = []
        self.failures: dict[tuple[str, str], list[Exception]] = {}
        self.yields: list[int] = []
        self.versions: dict[str, Version] = {}
        self._changes = 0

    def fail(self, operation: str, user_id: str, *errors: Exception) -> None:
        """Make the next calls of ``operation`` for ``user_id`` raise ``errors``, in order."""
        self.failures.setdefault((operation, user_id), []).extend(errors)

    def version(self, user_id: str) -> Version:
        return self.versions.get(user_id) or Version(1, "2023-11-14T22:00:00Z")

    def change(self, user_id: str, *, locked: bool | None = None) -> None:
        """Someone else changes the user (locks or unlocks it, or edits it when None)."""
        if locked is True:
            self.locked.add(user_id)
        elif locked is False:
            self.locked.discard(user_id)
        self._changes += 1
        self.versions[user_id] = Version(
            self.version(user_id).sequence + 1, f"2023-11-14T22:13:20.{self._changes:06d}Z"
        )

    async def lock(self, user_id: str, org_id: str | None) -> LockOutcome:
        return (await self.lock_user(user_id, org_id)).outcome

    async def lock_user(self, user_id: str, org_id: str | None) -> LockReceipt:
        self._call("lock", user_id)
        if user_id in self.unknown:
            receipt = LockReceipt(LockOutcome.UNKNOWN_USER)
        elif user_id in self.deactivated:
            receipt = LockReceipt(LockOutcome.NOT_LOCKABLE)
        elif user_id in self.locked:
            receipt = LockReceipt(LockOutcome.ALREADY_LOCKED, self.version(user_id))
        else:
            self.change(user_id, locked=True)
            receipt = LockReceipt(LockOutcome.LOCKED, self.version(user_id))
        await self._answer_late()
        return receipt

    async def read_user(self, user_id: str, org_id: str | None) -> UserSnapshot | None:
        self._call("read", user_id)
        if user_id in self.unknown:
            return None
        if user_id in self.locked:
            state = UserState.LOCKED
        elif user_id in self.deactivated:
            state = UserState.INACTIVE
        else:
            state = UserState.ACTIVE
        return UserSnapshot(state, self.version(user_id))

    async def unlock(self, user_id: str, org_id: str | None) -> UnlockOutcome:
        self._call("unlock", user_id)
        if user_id in self.unknown:
            outcome = UnlockOutcome.UNKNOWN_USER
        elif user_id in self.locked:
            self.change(user_id, locked=False)
            outcome = UnlockOutcome.UNLOCKED
        else:
            outcome = UnlockOutcome.NOT_LOCKED
        await self._answer_late()
        return outcome

    async def resolve_login_name(self, login_name: str, org_id: str | None) -> ResolvedUser | None:
        self._call("resolve", login_name)
        user_id = self.login_names.get(login_name)
        return ResolvedUser(user_id, org_id) if user_id is not None else None

    def calls_of(self, operation: str) -> list[str]:
        return [user for op, user in self.calls if op == operation]

    def _call(self, operation: str, user_id: str) -> None:
        self.calls.append((operation, user_id))
        if self.clock is not None:
            self.clock.advance(self.round_trip)
        if queued := self.failures.get((operation, user_id)):
            raise queued.pop(0)

    async def _answer_late(self) -> None:
        for _ in range(self.yields.pop(0) if self.yields else 0):
            await asyncio.sleep(0)


class RecordingWriter(LocalScheduleWriter):
    """Applies entries to a local schedule, like the daemon's writer, and keeps each one."""

    def __init__(self, schedule: UnlockSchedule) -> None:
        super().__init__(schedule)
        self.entries: list[ScheduleEntry] = []

    async def write(self, entry: ScheduleEntry) -> None:
        self.entries.append(entry)
        await super().write(entry)

    def states(self, user_id: str | None = None) -> list[str]:
        """The states written, in order, for ``user_id`` or for everyone."""
        return [e.state for e in self.entries if user_id is None or e.user_id == user_id]


def record(
    offset: int,
    value: bytes | None,
    *,
    partition: int = 0,
    topic: str = "auth.events",
    key: bytes | None = None,
    headers: Sequence[tuple[str, bytes]] = (),
) -> ConsumerRecord[bytes, bytes]:
    """A consumed record (of the ``auth.events`` topic unless ``topic`` says otherwise)."""
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=tuple(headers),
    )


def engines_failing_for(monkeypatch: pytest.MonkeyPatch, user_id: str, error: Exception) -> None:
    """Every engine made from now on raises ``error`` for the events of ``user_id``, as an
    unknown bug would, and counts every other event as before."""
    made = Engine.__init__

    def making(self: Engine, rules: RuleSet) -> None:
        made(self, rules)
        process = self.process

        def failing(event: Event, now: float, **kwargs: Any) -> list[Firing]:
            if event.user_id == user_id:
                raise error
            return process(event, now, **kwargs)

        self.process = failing

    monkeypatch.setattr(Engine, "__init__", making)
