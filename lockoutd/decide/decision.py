"""Decisions: what lockoutd decided for one firing, and what became of it (README, "Decisions")."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import msgspec

from lockoutd.decide.engine import Firing
from lockoutd.decode.event import Event
from lockoutd.rules.model import RuleSet


class Outcome(enum.StrEnum):
    LOCKED = "locked"
    ALREADY_LOCKED = "already_locked"
    NOT_LOCKABLE = "not_lockable"
    UNLOCKED = "unlocked"
    NOT_LOCKED = "not_locked"
    DRY_RUN = "dry_run"
    SUPPRESSED = "suppressed"
    ALLOWLISTED = "allowlisted"
    STALE = "stale"
    UNKNOWN_USER = "unknown_user"
    FAILED = "failed"
    REPORTED = "reported"
    """A ``report`` action: the decision is the whole action (added to the outcomes)."""
    NOT_OURS = "not_ours"
    """An unlock left undone: the lock in place is not provably the one lockoutd made."""


class Decision(msgspec.Struct, omit_defaults=False):
    """One decision as published on the audit topic and printed by ``replay``."""

    rule: str
    key: str
    user_id: str | None
    org_id: str | None
    action: str
    mode: str
    outcome: Outcome | None
    """``None`` only between deciding and acting: a lock the executor has still to carry out."""
    count: int
    window_seconds: float
    first_event_at: str
    last_event_at: str
    decided_at: str
    unlock_at: str | None = None
    login_name: str | None = None
    error: str | None = None


def rfc3339(seconds: float) -> str:
    """UTC RFC 3339 with milliseconds, e.g. ``2026-11-29T14:03:07.123Z``."""
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def decide(
    firing: Firing, rules: RuleSet, *, now: float, max_event_age: float, dry_run: bool = False
) -> list[Decision]:
    """The decisions for ``firing`` before anything is called: one per user to act on.

    An outcome is final (``reported``, ``allowlisted``, ``stale``, ``dry_run``) or ``None`` for
    a lock that the executor must still carry out. ``dry_run`` puts every rule in shadow mode.
    """
    rule = firing.rule
    lock = rule.action.lock
    targets = (
        _distinct_users(firing.contributors)
        if lock is not None and lock.targets == "contributors"
        else [firing.event]
    )
    # The names the events carry; the executor checks again once ZITADEL has said who the user
    # is (README, "Rules"), which is what spares a user that the events name another way.
    allowed = rules.allowed_for(rule)
    decisions = []
    for target in targets:
        outcome: Outcome | None
        if lock is None:
            outcome = Outcome.REPORTED
        elif allowed.has_user(target.user_id, target.login_name):
            outcome = Outcome.ALLOWLISTED
        elif now - firing.last_event_at > max_event_age:
            # Old evidence, e.g. a backlog after an outage: counted, but it never locks anyone.
            outcome = Outcome.STALE
        elif rule.mode == "dry-run" or dry_run:
            outcome = Outcome.DRY_RUN
        else:
            outcome = None
        decisions.append(
            Decision(
                rule=rule.name,
                key=firing.key_text,
                user_id=target.user_id,
                org_id=target.org_id,
                login_name=target.login_name,
                action=rule.action.name,
                mode="dry-run" if dry_run else rule.mode,
                outcome=outcome,
                count=firing.count,
                window_seconds=rule.window,
                first_event_at=rfc3339(firing.first_event_at),
                last_event_at=rfc3339(firing.last_event_at),
                decided_at=rfc3339(now),
            )
        )
    return decisions


def _distinct_users(events: tuple[Event, ...]) -> list[Event]:
    by_user: dict[str, Event] = {}
    for event in events:
        by_user.setdefault(event.subject, event)
    return list(by_user.values())


encode_decision = msgspec.json.Encoder().encode
