"""Engine throughput: events per second through decoding and rule evaluation, on one core.

For 1, 5 and 20 rules and 10 thousand to 1 million distinct users, the daemon's own decoder and
engine (and ``decide`` for whatever fires) run over the generated JSON lines, read from the file
as the loop goes. The floor is the same loop with nothing but ``json.loads`` (the issue's
definition); ``msgspec.json.decode`` into plain dicts is shown beside it for orientation.

Each measurement runs the compiled windows and the pure-Python ones side by side (``--windows``),
on the same lines, and checks that both lock the same users in the same order (over the events
both got through) and that every attacked user is locked when a run reads the whole stream.

    python -m bench.engine                      # 10k, 100k and 1M users
    python -m bench.engine --users 10000 100000 --rules 5
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from bench.common import RULE_SETS, WINDOWS_CHOICES, pin_to_one_core, report, use_windows
from bench.generate import Workload, attacked_users, write
from lockoutd.decide.decision import decide
from lockoutd.decide.engine import Engine
from lockoutd.decode.event import KNOWN_TYPES
from lockoutd.decode.native import InvalidEvent, native_decoder
from lockoutd.rules import load_rules

MAX_EVENT_BYTES = 1_048_576
MAX_EVENT_AGE = 3600.0


def events_for(users: int, minimum: int) -> int:
    """Enough events for every user's share: benign users have two on average."""
    return max(minimum, math.ceil(users * 2.5))


def floor(path: Path, decode: Callable[[bytes], object]) -> tuple[int, float]:
    """Read and decode every line with ``decode`` alone: ``(lines, seconds)``."""
    count = 0
    gc.collect()
    with open(path, "rb") as handle:
        started = time.perf_counter()
        for line in handle:
            decode(line)
            count += 1
        elapsed = time.perf_counter() - started
    return count, elapsed


def _seconds(run: tuple[int, float]) -> float:
    return run[1]


def engine_run(
    path: Path, rule_paths: list[Path], budget: float, locked: list[tuple[int, str]] | None = None
) -> dict[str, float]:
    """What the daemon does per record, minus Kafka and metrics: decode (the native decoder,
    as for a native topic), evaluate, decide.

    Stops after ``budget`` seconds (checked every 4,096 lines) so that a slow engine cannot
    hold the benchmark up; the rate is then over the part of the stream it got through.
    ``locked`` receives ``(line number, user)`` of every lock decided, in order.
    """
    rules = load_rules(rule_paths)
    engine = Engine(rules)
    decode = native_decoder(max_bytes=MAX_EVENT_BYTES)
    known = KNOWN_TYPES
    now = time.time()
    count = firings = decisions = invalid = 0
    complete = True
    gc.collect()
    with open(path, "rb") as handle:
        started = time.perf_counter()
        deadline = started + budget
        for line in handle:
            count += 1
            if not count & 4095 and time.perf_counter() > deadline:
                # This line is not read: the other side's locks are compared up to `count`.
                count -= 1
                complete = False
                break
            try:
                event = decode(line)
            except InvalidEvent:
                invalid += 1
                continue
            if event.type not in known:
                continue
            for firing in engine.process(event, now):
                firings += 1
                decided = decide(firing, rules, now=now, max_event_age=MAX_EVENT_AGE, dry_run=True)
                decisions += len(decided)
                if locked is not None:
                    locked.extend((count, d.user_id) for d in decided if d.user_id is not None)
        elapsed = time.perf_counter() - started
    keys = sum(n for _, n in engine.tracked_keys())
    return {
        "events": count,
        "seconds": elapsed,
        "firings": firings,
        "decisions": decisions,
        "invalid": invalid,
        "keys": keys,
        "complete": complete,
    }


def _same_locks(runs: dict[str, tuple[dict[str, float], list[tuple[int, str]]]]) -> str:
    # The users each side locked, in order, up to the last line both got through.
    if len(runs) < 2:
        return ""
    common = min(result["events"] for result, _ in runs.values())
    sides = [[user for line, user in locked if line <= common] for _, locked in runs.values()]
    return "yes" if all(side == sides[0] for side in sides) else "NO"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__)
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--rules", type=int, nargs="+", default=[1, 5, 20], choices=RULE_SETS)
    parser.add_argument("--events", type=int, default=1_000_000, help="at least this many")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--late", type=float, default=0.0, help="fraction of events that come late (0: in order)"
    )
    parser.add_argument("--late-by", type=float, default=2.0, help="seconds late, at most")
    parser.add_argument("--name", default="engine", help="results file name")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds at most per engine run")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each measurement; the fastest counts"
    )
    parser.add_argument(
        "--windows",
        nargs="+",
        choices=WINDOWS_CHOICES,
        default=list(WINDOWS_CHOICES),
        help="the compiled windows, the pure-Python fallback, or both side by side",
    )
    args = parser.parse_args(argv)
    core = pin_to_one_core()
    rows = []
    raw = []
    for users in args.users:
        work = Workload(
            events=events_for(users, args.events),
            users=users,
            seed=args.seed,
            late=args.late,
            late_by=args.late_by,
        )
        path = write(work) / "events.jsonl"
        n, loads_s = min((floor(path, json.loads) for _ in range(args.repeat)), key=_seconds)
        _, msgspec_s = floor(path, msgspec.json.decode)
        floor_rate = n / loads_s
        attacked = attacked_users(path.parent)
        for count in args.rules:
            runs: dict[str, tuple[dict[str, float], list[tuple[int, str]]]] = {}
            for kind in args.windows:
                use_windows(kind)
                best: tuple[dict[str, float], list[tuple[int, str]]] | None = None
                for _ in range(args.repeat):
                    locked: list[tuple[int, str]] = []
                    run = engine_run(path, RULE_SETS[count], args.budget, locked)
                    if best is None or run["events"] / run["seconds"] > (
                        best[0]["events"] / best[0]["seconds"]
                    ):
                        best = (run, locked)
                assert best is not None
                runs[kind] = best
            same = _same_locks(runs)
            for kind, (result, locked) in runs.items():
                rate = result["events"] / result["seconds"]
                ratio = rate / floor_rate
                verdict = ""
                if count == 5:
                    verdict = "met" if rate >= 300_000 and ratio >= 0.6 else "missed"
                users_locked = {user for _, user in locked}
                intended = (
                    f"{len(attacked & users_locked):,}/{len(attacked):,}"
                    if result["complete"]
                    else "(cut short)"
                )
                rows.append(
                    [
                        users,
                        kind,
                        int(result["events"]),
                        count,
                        rate,
                        floor_rate,
                        round(ratio, 2),
                        n / msgspec_s,
                        int(result["firings"]),
                        len(locked),
                        intended,
                        same,
                        int(result["keys"]),
                        verdict,
                    ]
                )
                raw.append(
                    {
                        "users": users,
                        "rules": count,
                        "windows": kind,
                        **result,
                        "floor_seconds": loads_s,
                    }
                )
                print(
                    f"  {users:>9,} users {count:>2} rules {kind:>11}: {rate:>10,.0f} ev/s "
                    f"({ratio:.2f} of the json.loads floor)",
                    file=sys.stderr,
                )
    report(
        args.name,
        "Engine: decode + evaluate, one core",
        [
            "users",
            "windows",
            "events",
            "rules",
            "events/s",
            "floor json.loads ev/s",
            "ratio",
            "msgspec dict ev/s",
            "firings",
            "locks",
            "attacked locked",
            "same locks as the other",
            "keys at end",
            "target (5 rules)",
        ],
        rows,
        notes=[
            f"pinned to core {core}" if core is not None else "not pinned (no affinity support)",
            "target: >= 300,000 events/s with 5 rules and >= 0.6 of the json.loads floor",
            "floor: reading the same lines and json.loads on each, nothing else",
            f"each engine run stops after {args.budget:g}s: 'events' is how many it got through",
            f"each figure is the fastest of {args.repeat} run(s), the floor's too",
            "same locks: the users locked, in order, over the lines both runs got through",
            (
                f"{args.late:.0%} of the events come late, by up to {args.late_by:g}s"
                if args.late
                else "events in time order"
            ),
        ],
        extra={"runs": raw},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
