"""The schedule of temporary locks: who lockoutd locked, until when, and how often.

One entry per user, the newest wins. The entries live in a Kafka topic (compacted where the broker
supports it) so that every instance shares them and a restart reads them back; this module is the
pure, in-memory view of that topic.

An entry moves through these states::

    locking ──lock confirmed──> locked ──unlock_at passed, unlocked──> unlocked
       │                          │ │
       └── lock refused ──> cancelled │ └── a permanent rule fired ──> kept (never unlocked)
                                  └── changed by someone else since ──> not_ours (left alone)

``locking`` is written *before* the lock call. If lockoutd dies between the call and the next
write, the replayed batch finds ZITADEL answering "already locked" and this entry saying the lock
was lockoutd's own, so the unlock is still scheduled. Without it, a crash at the wrong instant
would turn a fifteen-minute lock into a permanent one. ``locking`` also carries the version of
the user read just before the call, and ``locked`` the version the lock left: the proof that the
lock in place is still lockoutd's own (:mod:`lockoutd.act.ownership`).

Anyone who can write the topic can write an entry, so every entry read is checked before it
counts (:func:`check_entry`): known fields only, ids that are ids, times within bounds and not in
the future, strikes within bounds. A malformed entry is refused, never computed with.
"""

from __future__ import annotations

import heapq
from typing import Annotated, Literal

import msgspec

from lockoutd.act.ownership import MAX_SEQUENCE, Version, canonical_time

EntryState = Literal["locking", "locked", "unlocked", "cancelled", "kept", "not_ours"]

EARLIEST = 946_684_800.0  # 2000-01-01T00:00:00Z
LATEST = 4_102_444_800.0  # 2100-01-01T00:00:00Z: far enough for any lock, small enough to print
MAX_STRIKES = 1000
"""More repeats than any escalation needs: beyond a few dozen, every escalation is at its max."""
CLOCK_SKEW = 60.0
"""How far an entry's times may lie ahead of this instance's clock (instances' clocks differ)."""

_Id = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,64}$")]
_Time = Annotated[float, msgspec.Meta(ge=EARLIEST, le=LATEST)]
# ZITADEL counts in uint64; msgspec bounds only int64, which no user's event count comes near.
_Sequence = Annotated[int, msgspec.Meta(ge=0, le=min(MAX_SEQUENCE, 2**63 - 1))]
_ChangeDate = Annotated[str, msgspec.Meta(max_length=40)]


class ScheduleEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The newest thing lockoutd did to one user's temporary lock."""

    user_id: _Id
    org_id: _Id | None
    rule: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9-]{1,200}$")]
    state: EntryState
    strikes: Annotated[int, msgspec.Meta(ge=0, le=MAX_STRIKES)]
    """How many temporary locks this one is in a row (1 for the first within the memory)."""
    updated_at: _Time
    locked_at: _Time | None = None
    unlock_at: _Time | None = None
    before_sequence: _Sequence | None = None
    """``locking``: the user's sequence at the read just before the call (the user lockable)."""
    crossing_at: _Time | None = None
    """``locking``: when the crossing the call acts on happened (its last event). The same
    crossing, read again after a restart, takes the note for its own; a later one does not."""
    lock_sequence: _Sequence | None = None
    """``locked``: the sequence the lock left; with ``lock_changed_at``, its fingerprint."""
    lock_changed_at: _ChangeDate | None = None

    @property
    def ours(self) -> bool:
        """True while lockoutd holds (or is taking) a lock on this user that it must undo."""
        return self.state in ("locking", "locked")

    @property
    def lock_version(self) -> Version | None:
        """The fingerprint of the lock this entry records, if it has one."""
        if self.lock_sequence is None or self.lock_changed_at is None:
            return None
        return Version(self.lock_sequence, self.lock_changed_at)


class InvalidEntry(ValueError):
    """A schedule entry lockoutd refuses to act on; the message says why (never its secrets)."""


def check_entry(entry: ScheduleEntry, *, now: float) -> ScheduleEntry:
    """``entry`` if its times make sense at ``now``, else :class:`InvalidEntry`.

    The decoder has bounded every field; this checks what depends on the clock and on other
    fields. An entry from the future is refused: the newest entry of a user wins, so one dated in
    the future would outrank everything lockoutd writes for that user until then.
    """
    if entry.updated_at > now + CLOCK_SKEW:
        raise InvalidEntry("updated_at lies in the future")
    if entry.locked_at is not None and entry.locked_at > entry.updated_at + CLOCK_SKEW:
        raise InvalidEntry("locked_at lies after updated_at")
    if entry.state == "locked" and (entry.unlock_at is None or entry.locked_at is None):
        raise InvalidEntry("a locked entry needs locked_at and unlock_at")
    if (
        entry.unlock_at is not None
        and entry.locked_at is not None
        and entry.unlock_at < entry.locked_at
    ):
        raise InvalidEntry("unlock_at lies before locked_at")
    if entry.lock_changed_at is not None and canonical_time(entry.lock_changed_at) is None:
        raise InvalidEntry("lock_changed_at is not an RFC 3339 UTC time")
    return entry


encode_entry = msgspec.json.Encoder().encode
decode_entry = msgspec.json.Decoder(ScheduleEntry).decode


class UnlockSchedule:
    """Every user's newest entry, and the pending unlocks in time order."""

    def __init__(self) -> None:
        self._entries: dict[str, ScheduleEntry] = {}
        self._due: list[tuple[float, str]] = []  # (unlock_at, user_id), may hold stale items

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: str) -> ScheduleEntry | None:
        return self._entries.get(user_id)

    def apply(self, entry: ScheduleEntry) -> bool:
        """Take ``entry`` unless a newer one for the same user is known; True if taken.

        Every instance reads every entry, its own included, and may read them late: comparing
        ``updated_at`` keeps a late copy of an old entry from undoing a newer one.
        """
        current = self._entries.get(entry.user_id)
        if current is not None and (current.updated_at > entry.updated_at or current == entry):
            return False  # older, or our own write read back from the topic
        self._entries[entry.user_id] = entry
        if entry.state == "locked" and entry.unlock_at is not None:
            heapq.heappush(self._due, (entry.unlock_at, entry.user_id))
        return True

    def forget(self, user_id: str) -> None:
        """Drop a user whose entry was deleted from the topic (a tombstone)."""
        self._entries.pop(user_id, None)

    def strikes_before(self, user_id: str, now: float, memory: float | None) -> int:
        """How many temporary locks of this user in a row lie within ``memory`` before ``now``."""
        entry = self._entries.get(user_id)
        if entry is None or memory is None or entry.locked_at is None:
            return 0
        if entry.state not in ("locked", "unlocked"):
            return 0
        return entry.strikes if now - entry.locked_at <= memory else 0

    def next_due(self) -> float | None:
        """When the earliest pending unlock is due, or None."""
        self._drop_stale()
        return self._due[0][0] if self._due else None

    def due(self, now: float) -> list[ScheduleEntry]:
        """Entries whose unlock time has come; each stays until its ``unlocked`` entry arrives."""
        self._drop_stale()
        found: dict[str, ScheduleEntry] = {}
        for unlock_at, user_id in sorted(self._due):
            if unlock_at > now:
                break
            entry = self._entries.get(user_id)
            if entry is not None and entry.state == "locked" and entry.unlock_at == unlock_at:
                found[user_id] = entry
        return list(found.values())

    def _drop_stale(self) -> None:
        # Heap items whose entry has moved on (unlocked, re-locked with another time) are skipped.
        while self._due:
            unlock_at, user_id = self._due[0]
            entry = self._entries.get(user_id)
            if entry is not None and entry.state == "locked" and entry.unlock_at == unlock_at:
                return
            heapq.heappop(self._due)
