"""Decisions: what lockoutd decided for one firing, and what became of it (SPEC section 6)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import msgspec

from lockoutd.decide.engine import Firing
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
    """A ``report`` action: the decision is the whole action (an extension of SPEC section 6)."""


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


def decide(firing: Firing, rules: RuleSet, *, now: float, max_event_age: float) -> Decision:
    """The decision for ``firing`` before anything is called.

    The outcome is final (``reported``, ``allowlisted``, ``stale``, ``dry_run``) or left empty for
    a lock that the executor must still carry out.
    """
    rule, event = firing.rule, firing.event
    action = rule.action.name
    if action == "report":
        outcome = Outcome.REPORTED
    elif rules.user_allowlisted(event.user_id, event.login_name):
        outcome = Outcome.ALLOWLISTED
    elif now - firing.last_event_at > max_event_age:
        # Old evidence, e.g. a backlog after an outage: counted, but it never locks anyone.
        outcome = Outcome.STALE
    elif rule.mode == "dry-run":
        outcome = Outcome.DRY_RUN
    else:
        outcome = None
    return Decision(
        rule=rule.name,
        key=firing.key_text,
        user_id=event.user_id,
        org_id=event.org_id,
        login_name=event.login_name,
        action=action,
        mode=rule.mode,
        outcome=outcome,
        count=firing.count,
        window_seconds=rule.window,
        first_event_at=rfc3339(firing.first_event_at),
        last_event_at=rfc3339(firing.last_event_at),
        decided_at=rfc3339(now),
    )


encode_decision = msgspec.json.Encoder().encode
