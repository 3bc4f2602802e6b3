"""Telling lockoutd's own lock apart from anyone else's (README, "Temporary locks and escalation").

ZITADEL keeps every user as a stream of events. Each change answers, and each read of the user
shows, the ``details`` of the newest change that altered the user: ``sequence`` (the user's own
event counter) and ``changeDate`` (when that event was written). A lock, an unlock, a
deactivation or a profile edit each move both; a failed password check or a read moves neither.

So the pair the lock call answered is a fingerprint of that lock. As long as a read of the user
shows the same pair, nobody has changed the user since lockoutd locked it: the lock in place is
the one lockoutd made. An administrator who unlocks early and locks again leaves a different pair,
and lockoutd leaves that lock alone. Why this and not the alternatives:

- metadata that lockoutd writes on the user survives an administrator's unlock and re-lock, so it
  cannot tell the two locks apart, and costs a permission and a write per lock;
- ZITADEL's event search would name who locked, but needs ``events.read`` (instance owner);
- the sequence alone is a small counter that a forged schedule entry could guess; the change date
  has microseconds, which nobody outside ZITADEL can guess.

A lock call whose reply was lost leaves no fingerprint. Then the read made just before the call
stands in: the user was lockable at a known version then, and is locked at a later one after the
call, so the lock happened while lockoutd's own call was under way.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

MAX_SEQUENCE = 2**64 - 1  # ZITADEL's sequence is a uint64
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(\d{1,9}))?Z")


@dataclass(frozen=True, slots=True)
class Version:
    """One change of one user: its sequence and the time ZITADEL wrote it."""

    sequence: int
    changed_at: str
    """RFC 3339 in UTC, the fraction without trailing zeros (one spelling per instant)."""


def read_version(details: Any) -> Version | None:
    """The version in a ``details`` object (``{"sequence": "12", "changeDate": "..."}``).

    None when either part is missing or malformed: a lock without a fingerprint is never proven.
    """
    if not isinstance(details, dict):
        return None
    sequence, changed_at = details.get("sequence"), details.get("changeDate")
    if not isinstance(sequence, str | int) or isinstance(sequence, bool):
        return None
    sequence = str(sequence)
    if not sequence.isascii() or not sequence.isdigit() or len(sequence) > 20:
        return None
    number = int(sequence)
    if number > MAX_SEQUENCE or not isinstance(changed_at, str):
        return None
    canonical = canonical_time(changed_at)
    return Version(number, canonical) if canonical is not None else None


def canonical_time(text: str) -> str | None:
    """``text`` as a UTC RFC 3339 time whose fraction has no trailing zeros, or None."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    fraction = (match.group(1) or "").rstrip("0")
    whole = text[:19]
    return f"{whole}.{fraction}Z" if fraction else f"{whole}Z"


class Verdict(enum.StrEnum):
    """What the unlocker may do with a lock it scheduled, after reading the user."""

    UNLOCK = "unlock"
    """The user is locked at the very version lockoutd's lock produced."""
    NOT_LOCKED = "not_locked"
    """Someone unlocked (or deactivated) the user already: nothing to undo."""
    NOT_OURS = "not_ours"
    """Locked, but not provably by lockoutd: changed since, or no fingerprint to compare."""
    WAIT = "wait"
    """ZITADEL shows an older version than the lock answered: its read side lags; ask later."""


def judge_unlock(ours: Version | None, locked: bool, current: Version | None) -> Verdict:
    """Whether to undo a lock whose fingerprint is ``ours``, the user now being as read."""
    if not locked:
        return Verdict.NOT_LOCKED
    if ours is None or current is None:
        return Verdict.NOT_OURS
    if current == ours:
        return Verdict.UNLOCK
    if current.sequence < ours.sequence:
        return Verdict.WAIT
    return Verdict.NOT_OURS


def made_by_our_call(before_sequence: int | None, after: Version | None) -> bool:
    """Whether a lock found after lockoutd's call is the one that call made, its reply lost.

    ``before_sequence`` is the sequence of the user read, lockable, just before the call;
    ``after`` the version of the user found locked. A later sequence means the lock was made
    after that read, while the call was under way. (An administrator locking within those same
    moments is the one case this cannot tell apart.)
    """
    return before_sequence is not None and after is not None and after.sequence > before_sequence
