"""The schedule of temporary locks: who lockoutd locked, until when, and how often.

One entry per user, the newest wins. The entries live in a Kafka topic (compacted where the broker
supports it) so that every instance shares them and a restart reads them back; this module is the
pure, in-memory view of that topic.

An entry moves through these states::

    locking ──lock confirmed──> locked ──unlock_at passed, unlocked──> unlocked
       │                          │
       └── lock refused ──> cancelled   └── a permanent rule fired ──> kept (never unlocked)

``locking`` is written *before* the lock call. If lockoutd dies between the call and the next
write, the replayed batch finds ZITADEL answering "already locked" and this entry saying the lock
was lockoutd's own, so the unlock is still scheduled. Without it, a crash at the wrong instant
would turn a fifteen-minute lock into a permanent one.
"""

from __future__ import annotations

import heapq
from typing import Literal

import msgspec

EntryState = Literal["locking", "locked", "unlocked", "cancelled", "kept"]


class ScheduleEntry(msgspec.Struct, frozen=True):
    """The newest thing lockoutd did to one user's temporary lock."""

    user_id: str
    org_id: str | None
    rule: str
    state: EntryState
    strikes: int
    """How many temporary locks this one is in a row (1 for the first within the memory)."""
    updated_at: float
    locked_at: float | None = None
    unlock_at: float | None = None

    @property
    def ours(self) -> bool:
        """True while lockoutd holds (or is taking) a lock on this user that it must undo."""
        return self.state in ("locking", "locked")


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
