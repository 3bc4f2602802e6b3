"""The bound on tracked keys: at most ``engine.max_tracked_keys`` windows per instance.

Anyone who can write to the events topic can name a new key with every record (random user
ids, addresses, login names), and every new key is a window in memory. Past the bound, the
windows that matter least are forgotten, so that a flood of made-up keys can only push out other
keys like its own (README, "Operations"):

1. idle windows, whose every event has left (the idle sweep, run first);
2. windows holding one event, of a rule whose threshold is higher: all that a flood of one
   failure per made-up key leaves behind; the windows that end soonest first;
3. then by how full they are, a quarter of the threshold at a time
   (:func:`lockoutd.decide.windows.tier`), the windows that end soonest first in each;
4. fired windows last of all.

A key under attack fills its window quickly, so it leaves after every key with fewer events.
What no policy can do: the first failure of a key looks like every made-up key's only one, so
it is kept only while fewer than about ``max_tracked_keys`` (less the fuller windows) newer
one-event keys arrive; from its second failure on, one-event keys cannot push it out.

Ranks are read when a round runs, so a window whose old events left when a new one came may
rank as fuller than it is until its minute is read again.

Cost: the bound is checked once per batch (a sum of lengths). Past it, keys are forgotten down
to 1/16 below it, so a round comes at most once per ``max_tracked_keys / 16`` new keys. A round
reads the keys minute by minute from the filing the idle sweep keeps (``Windows.shed``), and
skips a minute that held nothing of the rank it looks for when last read and has not been filed
into since: rounds read the keys filed since the last one and the keys they forget, not the
fuller windows they keep. In a flood of one-event keys the whole bound costs about what the
keys it forgets would have cost to keep; with two events per made-up key, about a fifth more
per event (README, "Operations").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from lockoutd.decide.engine import Engine
from lockoutd.decide.windows import TIERS, Windows

_HEADROOM = 16
"""A round frees this fraction of the bound (1/16) beyond what it must."""


class KeyBound:
    """Keeps the windows of every engine of an instance within ``max_keys``."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._after_round = max_keys - max_keys // _HEADROOM

    def enforce(self, engines: Iterable[Engine]) -> Counter[str]:
        """Forget windows until at most ``max_keys`` are left; return how many, by rule.

        Idle keys are swept first and are not counted as evicted: they were due to go.
        """
        engines = list(engines)
        if sum(count for engine in engines for _, count in engine.tracked_keys()) <= self.max_keys:
            return Counter()
        for engine in engines:
            engine.evict_idle()
        windows: list[tuple[str, Windows[Any]]] = [
            pair for engine in engines for pair in engine.rule_windows()
        ]
        total = sum(len(w) for _, w in windows)
        if total <= self.max_keys:
            return Counter()
        return _evict(windows, total - self._after_round)


def _evict(windows: list[tuple[str, Windows[Any]]], excess: int) -> Counter[str]:
    # Rank by rank, and in each the windows that end soonest first, across every rule and
    # partition: the minutes (a few per window length) are sorted once a round.
    evicted: Counter[str] = Counter()
    minutes = sorted(
        (minute, index) for index, (_, w) in enumerate(windows) for minute in w.filed_minutes()
    )
    for rank in range(TIERS):
        for minute, index in minutes:
            rule, w = windows[index]
            if gone := w.shed(minute, rank, excess):
                evicted[rule] += gone
                excess -= gone
                if excess <= 0:
                    return evicted
    return evicted
