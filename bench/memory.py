"""Resident bytes per tracked key: a million users' windows held by the engine.

A million users, each with one to three failures (5 % of them attacked with five or more),
all within five minutes so that no window expires, go through the daemon's decoder and engine
one line at a time. The growth of the resident set divided by the keys the engine tracks is the
cost of a key, everything included (window state, key tuples, the dicts that hold them, allocator
slack). Beside it, what the windows count they hold (``held_bytes``, what
``engine.max_window_bytes`` bounds), to see how far the count is from the resident set.

    python -m bench.memory
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

from bench.common import RULE_SETS, WINDOWS_CHOICES, report, rss_bytes, use_windows
from bench.generate import Workload, write
from lockoutd.decide.engine import Engine
from lockoutd.decode.native import native_decoder
from lockoutd.rules import load_rules


def measure(path: str, rule_count: int) -> dict[str, float]:
    rules = load_rules(RULE_SETS[rule_count])
    decode = native_decoder(max_bytes=1_048_576)
    engine = Engine(rules)
    now = time.time()
    gc.collect()
    before = rss_bytes()
    with open(path, "rb") as handle:
        for line in handle:
            engine.process(decode(line), now)
    gc.collect()
    after = rss_bytes()
    keys = sum(n for _, n in engine.tracked_keys())
    counted = sum(windows.held_bytes() for _, windows in engine.rule_windows())
    return {
        "keys": keys,
        "grown": after - before,
        "per_key": (after - before) / max(1, keys),
        "counted": counted / max(1, keys),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--rules", type=int, default=1, choices=RULE_SETS)
    parser.add_argument("--name", default="memory")
    parser.add_argument(
        "--windows",
        choices=WINDOWS_CHOICES,
        default=WINDOWS_CHOICES[0],
        help="the compiled windows or the pure-Python reference (one per process: RSS is not "
        "given back)",
    )
    args = parser.parse_args(argv)
    use_windows(args.windows)
    work = Workload(events=int(args.users * 2.5), users=args.users, span=300, burst=300)
    path = write(work) / "events.jsonl"
    result = measure(str(path), args.rules)
    per_key = result["per_key"]
    report(
        args.name,
        "Memory: resident bytes per tracked key",
        [
            "windows",
            "rules",
            "events",
            "tracked keys",
            "RSS growth MiB",
            "bytes per key",
            "counted per key",
            "target",
        ],
        [
            [
                args.windows,
                args.rules,
                work.events,
                int(result["keys"]),
                result["grown"] / 2**20,
                round(per_key),
                round(result["counted"]),
                "met" if per_key <= 150 else "missed",
            ]
        ],
        notes=[
            "target: <= 150 bytes per tracked key per rule",
            "events within 5 minutes: none expires",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
