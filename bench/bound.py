"""The bound on tracked keys under a flood: what it costs per event, and what it keeps.

A flood of made-up users, each with one failure (or two), from addresses of their own, within
ten minutes, goes through the engine with the shipped rules in batches of 5,000 (the default
``kafka.max_batch_records``), as the pipeline runs it: once with a bound far above the flood,
once with ``--bound`` keys, enforced after each batch. Decoded events are built in memory first,
so the figures are the engine's and the bound's alone.

    python -m bench.bound                     # 400,000 made-up users, bound 50,000
    python -m bench.bound --users 1000000 --bound 100000
"""

from __future__ import annotations

import argparse
import gc
import time

from bench.common import RULE_SETS, pin_to_one_core, report
from lockoutd.decide.bound import KeyBound
from lockoutd.decide.engine import Engine
from lockoutd.decode.event import LOGIN_FAILED, Event
from lockoutd.rules import load_rules

BATCH = 5_000
START = 1_800_000_000.0
SPAN = 600.0


def flood(users: int, per_user: int) -> list[Event]:
    """``per_user`` failures for each of ``users`` made-up users, in time order."""
    events = []
    for n in range(users):
        event = Event(
            type=LOGIN_FAILED,
            occurred_at=START + SPAN * n / users,
            user_id=f"made-up-{n:08d}",
            reason="password",
            ip=f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
        )
        events.extend([event] * per_user)
    return events


def run(events: list[Event], bound: KeyBound) -> dict[str, float]:
    engine = Engine(load_rules(RULE_SETS[5]))
    now = START + SPAN + 60
    gc.collect()
    started = time.perf_counter()
    rounds = 0
    for first in range(0, len(events), BATCH):
        for event in events[first : first + BATCH]:
            engine.process(event, now)
        if bound.enforce([engine]):
            rounds += 1
    elapsed = time.perf_counter() - started
    return {
        "ns_per_event": elapsed / len(events) * 1e9,
        "keys": sum(n for _, n in engine.tracked_keys()),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=400_000)
    parser.add_argument("--bound", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest counts")
    parser.add_argument("--name", default="bound")
    args = parser.parse_args()
    core = pin_to_one_core()
    rows = []
    for per_user in (1, 2):
        events = flood(args.users // per_user, per_user)
        for label, bound in (("none", KeyBound(10**12)), (f"{args.bound:,}", KeyBound(args.bound))):
            best = min((run(events, bound) for _ in range(args.repeat)), key=_speed)
            rows.append(
                [
                    per_user,
                    len(events),
                    label,
                    best["ns_per_event"],
                    int(best["keys"]),
                    int(best["rounds"]),
                ]
            )
    report(
        args.name,
        "The bound on tracked keys under a flood of made-up users, 5 rules, one core",
        [
            "failures per user",
            "events",
            "bound",
            "ns/event",
            "keys at end",
            "rounds",
        ],
        rows,
        notes=[
            f"pinned to core {core}" if core is not None else "not pinned",
            f"batches of {BATCH:,} events, the bound enforced after each",
            f"each figure is the fastest of {args.repeat} run(s)",
        ],
    )


def _speed(result: dict[str, float]) -> float:
    return result["ns_per_event"]


if __name__ == "__main__":
    main()
