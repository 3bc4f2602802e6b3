"""End to end: events per second from a Kafka topic through a real lockoutd process.

The generated events are produced to a topic of the local broker (3 partitions, keyed by
user), then read by fresh consumer groups, one after another:

- the floor: a process with an aiokafka consumer that fetches whole batches (``getmany``, the
  same fetch settings as lockoutd) and ``json.loads`` each value, nothing else; measured before,
  between and after the two lockoutd runs, each of which is compared with the floors around it
  (the machine's speed drifts by a third within minutes);
- ``lockoutd run`` with the five shipped rules, locking through the ZITADEL emulator (in a process
  of its own), publishing decisions and committing after every batch;
- the same with the default safety cap of 60 locks a minute, which suppresses all but a few of
  the 2,500 locks: what the pipeline costs without the lock calls.

Every rate is measured from the first record to the last (the daemon's from its
``lockoutd_events_total`` counter, scraped every 0.25 s); the set of users locked is checked
against the generator's.

    python -m bench.e2e                    # 1M events over 50k users, 2.5k attacked
    python -m bench.e2e --events 200000 --users 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import RULE_SETS, report
from bench.generate import arguments, attacked_users, workload, write
from bench.stack import RAISED_LOCK_CAP, CpuSampler, Stack, peak_rss, produce_lines
from lockoutd.decide.decision import Outcome
from lockoutd.settings import SafetySettings
from lockoutd.source.kafka import FETCH_MAX_WAIT_MS

DEFAULT_LOCK_CAP = SafetySettings().max_locks_per_minute


async def _floor(bootstrap: str, topic: str, count: int, limit: float) -> dict[str, float]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"floor-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=1_048_576,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    seen = first_batch = 0
    first = last = cpu_first = cpu_last = 0.0
    deadline = time.monotonic() + limit
    try:
        while seen < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=1000)
            for records in batches.values():
                for record in records:
                    json.loads(record.value)
                seen += len(records)
                if not first and records:
                    first, first_batch = time.perf_counter(), len(records)
                    cpu_first = time.process_time()
            last, cpu_last = time.perf_counter(), time.process_time()
    finally:
        await consumer.stop()
    return {
        "count": seen,
        "measured": seen - first_batch,
        "seconds": last - first,
        "cpu_seconds": cpu_last - cpu_first,
    }


def consume_floor(bootstrap: str, topic: str, count: int, timeout: float) -> dict[str, float]:
    """The floor in a fresh process, like the daemon's."""
    output = subprocess.run(  # noqa: S603 - our interpreter, our module
        [sys.executable, "-m", "bench.e2e", "--floor", bootstrap, topic, str(count)],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout + 60,
    ).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


def run_daemon(
    stack: Stack,
    rule_paths: list[Path],
    count: int,
    expected: set[str],
    timeout: float,
    *,
    capped: bool = False,
) -> dict[str, Any]:
    """``lockoutd run`` over the topic. ``capped`` keeps the default safety cap (60 locks a
    minute), which suppresses most locks: the same pipeline with few lock calls."""
    assert stack.emulator is not None
    cap = DEFAULT_LOCK_CAP if capped else RAISED_LOCK_CAP
    calls_before = len(stack.emulator.lock_calls())
    running = stack.daemon(rule_paths, max_locks_per_minute=cap)
    with running as daemon, contextlib.ExitStack() as sampling:
        watched = {"lockoutd": daemon.pid or 0, "emulator": stack.emulator.pid}
        if stack.broker.pid is not None:  # None: an external broker, not ours to watch
            watched["broker"] = stack.broker.pid
        cpu = sampling.enter_context(CpuSampler(watched))
        deadline = time.monotonic() + timeout
        first = last = 0.0
        first_wall = last_wall = 0.0
        first_count = accepted = 0.0
        while time.monotonic() < deadline:
            if daemon.returncode is not None:
                raise RuntimeError(f"lockoutd exited:\n{stack.daemon_log()[-4000:]}")
            try:
                accepted = daemon.metric("lockoutd_events_total", result="accepted")
            except Exception:  # not serving yet
                accepted = 0.0
            now = time.perf_counter()
            if accepted and not first:
                first, first_count, first_wall = now, accepted, time.time()
            if accepted >= count:
                last, last_wall = now, time.time()
                break
            time.sleep(0.25)
        # Locks go out before the batch that fired them is committed; wait for the last ones.
        locked: set[str] = set()
        lock_deadline = time.monotonic() + (0 if capped else 30)
        while True:
            calls = stack.emulator.lock_calls()
            locked = {c["user_id"] for c in calls}
            if locked >= expected or time.monotonic() >= lock_deadline:
                break
            time.sleep(0.25)
        suppressed = sum(
            value
            for (name, labels), value in daemon.metrics().items()
            if name == "lockoutd_actions_total" and ("outcome", Outcome.SUPPRESSED) in labels
        )
        rss = peak_rss(daemon.pid) if daemon.pid else None
    return {
        "accepted": accepted,
        "measured": accepted - first_count,
        "seconds": (last - first) if last else 0.0,
        "locked": len(locked),
        "lock_calls": len(calls) - calls_before,
        "suppressed": suppressed,
        "same_users": locked == expected,
        "peak_rss": rss,
        "cpu": cpu.share(first_wall, last_wall) if last_wall else {},
    }


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--floor":
        bootstrap, topic, count = argv[1], argv[2], int(argv[3])
        print(json.dumps(asyncio.run(_floor(bootstrap, topic, count, 600.0))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__)
    arguments(parser)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per phase")
    parser.add_argument("--name", default="e2e")
    args = parser.parse_args(argv)
    work = workload(args)
    directory = write(work)
    expected = attacked_users(directory)
    with Stack(lockable_users=[directory / "attacked.txt"]) as stack:
        produced, produce_s = asyncio.run(
            produce_lines(stack.bootstrap, stack.topics.events, directory / "events.jsonl")
        )
        print(f"produced {produced:,} records in {produce_s:.1f}s", file=sys.stderr)

        def floor() -> dict[str, float]:
            measured = consume_floor(stack.bootstrap, stack.topics.events, produced, args.timeout)
            print(f"floor: {_events_per_second(measured):,.0f} records/s", file=sys.stderr)
            return measured

        # The machine's speed drifts by a third within minutes: each lockoutd run is compared
        # with the floors measured just before and just after it.
        floors = [floor()]
        daemon = run_daemon(stack, RULE_SETS[5], produced, expected, args.timeout)
        floors.append(floor())
        # The first run locked every attacked user, and a lock that finds its user locked gives
        # its token back to the cap: the capped run meets the users unlocked, as the first did.
        stack.fresh_emulator()
        capped = run_daemon(stack, RULE_SETS[5], produced, expected, args.timeout, capped=True)
        floors.append(floor())
    floor_rate = sum(map(_events_per_second, floors)) / len(floors)
    rate, ratio = _rate(daemon, _around(_events_per_second, floors[0], floors[1]))
    capped_rate, capped_ratio = _rate(capped, _around(_events_per_second, floors[1], floors[2]))
    # Each target on the row it is about: the rate with every attacked user locked (the lock
    # calls included), the ratio to the floor with the default safety cap.
    verdict = (
        f">= 50,000 events/s locking every attacked user: {'met' if rate >= 50_000 else 'missed'}"
        f" ({rate:,.0f}); >= 0.6 of the floor with the default safety cap: "
        f"{'met' if capped_ratio >= 0.6 else 'missed'} ({capped_ratio:.2f})"
    )
    floor_cpu = sum(map(_floor_cpu, floors)) / len(floors)
    rows = [
        [
            "aiokafka getmany + json.loads (floor, mean of 3)",
            int(floors[0]["count"]),
            floor_rate,
            1.0,
            f"{floor_cpu:.1f}",
            "",
            "",
            "",
        ],
        [
            "lockoutd run, 5 rules, locks to the emulator",
            int(float(daemon["accepted"] or 0)),
            rate,
            round(ratio, 2),
            _cpu_cell(daemon, _around(_floor_cpu, floors[0], floors[1])),
            f"{daemon['locked']:,} of {len(expected):,}",
            "yes" if daemon["same_users"] else "NO",
            _mib(daemon["peak_rss"]),
        ],
        [
            f"the same, default safety cap ({DEFAULT_LOCK_CAP} locks a minute)",
            int(float(capped["accepted"] or 0)),
            capped_rate,
            round(capped_ratio, 2),
            _cpu_cell(capped, _around(_floor_cpu, floors[1], floors[2])),
            f"{capped['lock_calls']:,} lock calls, {int(capped['suppressed']):,} suppressed",
            "n/a (capped)",
            _mib(capped["peak_rss"]),
        ],
    ]
    report(
        args.name,
        "End to end: Kafka topic -> lockoutd -> ZITADEL emulator",
        [
            "consumer",
            "events",
            "events/s",
            "ratio",
            "CPU µs/event (floor's / this)",
            "locked",
            "same users",
            "peak RSS",
        ],
        rows,
        notes=[
            f"{work.events:,} events over {work.users:,} users, "
            f"{len(expected):,} attacked; {produced:,} produced in {produce_s:.1f}s",
            f"targets: {verdict}",
            "floors, before, between and after the lockoutd runs: "
            + ", ".join(
                f"{_events_per_second(f):,.0f} ev/s ({_floor_cpu(f):.1f} µs)" for f in floors
            )
            + "; each lockoutd row's ratios are to the mean of the two floors around it",
            "the first lockoutd row raises the safety cap so that every attacked user is locked; "
            "the capped row is the same pipeline with hardly any lock calls",
            "broker, emulator, daemon and floor share the machine's cores (loopback only)",
            "CPU µs/event: the consumer's own CPU time over the measured events (the daemon's "
            "from the sampled share of a core); the floor's share of it is the work the daemon "
            "adds, whether or not either process waited",
            *(
                f"CPU while lockoutd consumed{label} (share of one core, 2 cores in all): "
                + (
                    ", ".join(f"{name} {share:.0%}" for name, share in run["cpu"].items())
                    or "not sampled, the run was too short"
                )
                for label, run in (("", daemon), (", capped", capped))
            ),
        ],
    )
    return 0


def _rate(run: dict[str, Any], floor_rate: float) -> tuple[float, float]:
    rate = _events_per_second(run)
    return rate, rate / floor_rate


def _events_per_second(run: dict[str, Any]) -> float:
    """Over the measured span of a floor's or a daemon's run; 0 for a run that never started."""
    seconds = float(run["seconds"] or 0.0)
    return float(run["measured"] or 0.0) / seconds if seconds else 0.0


def _floor_cpu(floor: dict[str, float]) -> float:
    return _cpu_per_event(floor["cpu_seconds"], floor)


def _around(
    measure: Callable[[dict[str, Any]], float],
    before: dict[str, float],
    after: dict[str, float],
) -> float:
    return (measure(before) + measure(after)) / 2


def _cpu_per_event(cpu_seconds: float, run: dict[str, Any]) -> float:
    measured = float(run["measured"] or 0.0)
    return cpu_seconds / measured * 1e6 if measured else 0.0


def _cpu_cell(run: dict[str, Any], floor_cpu: float) -> str:
    share = run["cpu"].get("lockoutd")
    if not share:
        return "?"
    cpu = _cpu_per_event(share * float(run["seconds"] or 0.0), run)
    return f"{cpu:.1f} ({floor_cpu / cpu:.2f})" if cpu else "?"


def _mib(rss: object) -> str:
    return f"{rss / 2**20:,.0f} MiB" if isinstance(rss, int) else "?"


if __name__ == "__main__":
    sys.exit(main())
