"""The bound on what the windows hold: at most ``engine.max_tracked_keys`` windows and
``engine.max_window_bytes`` bytes per instance.

Anyone who can write to the events topic can name a new key with every record (random user
ids, addresses, login names), and every new key is a window in memory; a producer that fills
windows on purpose, with identity fields as long as decoding lets through, makes each of them
cost kilobytes, so a bound on keys alone is no bound on memory. Past either bound, the windows
that matter least are forgotten, so that a flood of made-up keys can only push out other keys
like its own (README, "Operations"):

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

Bytes are what the windows count as they change (``Windows.held_bytes``): the check reads a
number per rule, and a round forgets keys of a rank until enough bytes are free, estimating how
many keys that takes from what the keys of that rule hold on average.

Cost: the bounds are checked once per batch (a sum of lengths and of byte counts). Past one, keys
are forgotten down to 1/16 below it, so a round comes at most once per ``max_tracked_keys / 16``
new keys (or that fraction of the bytes). A round
reads the keys minute by minute from the filing the idle sweep keeps (``Windows.shed``), and
skips a minute that held nothing of the rank it looks for when last read and has not been filed
into since: rounds read the keys filed since the last one and the keys they forget, not the
fuller windows they keep. In a flood of one-event keys the whole bound costs about what the
keys it forgets would have cost to keep; with two events per made-up key, about a fifth more
per event (README, "Operations").
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from typing import Any

from lockoutd.decide.engine import Engine
from lockoutd.decide.windows import TIERS, Windows

_HEADROOM = 16
"""A round frees this fraction of the bound (1/16) beyond what it must."""


class KeyBound:
    """Keeps the windows of every engine of an instance within ``max_keys`` and ``max_bytes``."""

    def __init__(self, max_keys: int, max_bytes: int | None = None) -> None:
        """``max_bytes`` None: keys alone are bounded (benchmarks and tests of the keys' order)."""
        self.max_keys = max_keys
        self.max_bytes = max_bytes = sys.maxsize if max_bytes is None else max_bytes
        self._keys_after_round = max_keys - max_keys // _HEADROOM
        self._bytes_after_round = max_bytes - max_bytes // _HEADROOM

    def enforce(self, engines: Iterable[Engine]) -> Counter[str]:
        """Forget windows until at most ``max_keys`` are left, holding at most ``max_bytes``;
        return how many, by rule.

        Idle keys are swept first and are not counted as evicted: they were due to go.
        """
        engines = list(engines)
        windows: list[tuple[str, Windows[Any]]] = [
            pair for engine in engines for pair in engine.rule_windows()
        ]
        if not self._over(windows):
            return Counter()
        for engine in engines:
            engine.evict_idle()
        if not self._over(windows):
            return Counter()
        return _evict(
            windows,
            sum(len(w) for _, w in windows) - self._keys_after_round,
            held_bytes(windows) - self._bytes_after_round,
        )

    def _over(self, windows: list[tuple[str, Windows[Any]]]) -> bool:
        return (
            sum(len(w) for _, w in windows) > self.max_keys or held_bytes(windows) > self.max_bytes
        )


def held_bytes(windows: Iterable[tuple[str, Windows[Any]]]) -> int:
    """What the windows hold, in bytes (``Windows.held_bytes``), all together."""
    return sum(w.held_bytes() for _, w in windows)


def _evict(
    windows: list[tuple[str, Windows[Any]]], excess_keys: int, excess_bytes: int
) -> Counter[str]:
    # Rank by rank, and in each the windows that end soonest first, across every rule and
    # partition: the minutes (a few per window length) are sorted once a round.
    evicted: Counter[str] = Counter()
    minutes = sorted(
        (minute, index) for index, (_, w) in enumerate(windows) for minute in w.filed_minutes()
    )
    for rank in range(TIERS):
        for minute, index in minutes:
            rule, w = windows[index]
            held = w.held_bytes()
            # Past the bound on bytes alone, as many keys as the bytes wanted would take at
            # this rule's average; the next minute takes more if these held less.
            wanted = max(excess_keys, -(-excess_bytes * len(w) // held) if held else 0)
            if wanted <= 0:
                continue
            if gone := w.shed(minute, rank, wanted):
                evicted[rule] += gone
                excess_keys -= gone
                excess_bytes -= held - w.held_bytes()
                if excess_keys <= 0 and excess_bytes <= 0:
                    return evicted
    return evicted
