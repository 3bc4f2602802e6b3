"""Lock latency under load: from producing the event that crosses a threshold to the lock call
reaching the ZITADEL emulator, while a steady background load runs.

A producer sends background failures (one each for random users out of a million, stamped now)
at ``--rate`` events per second. Every ``--every`` seconds it attacks a fresh user: four
password failures, then after ``--gap`` seconds the fifth, which makes ``password-bruteforce``
fire; the wall-clock time just before that record is handed to the producer is the start. The
end is the arrival time the emulator (in a process of its own) records for the lock call.

The producer gathers records for ``--linger-ms`` (10) before it sends a batch, as log shippers
do; the crossing event waits that long too. The test broker (Tansu, memory storage) spends more
CPU on every fetch the more batches a partition holds, so a producer that sends a batch every
2 ms (``--linger-ms 2``) saturates it within half a minute, and then the latency measured is the
broker's: the first phase, a bare consumer, shows it.

    python -m bench.latency                     # 5,000 events/s for 60 s, an attack every 0.2 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.common import DATA, RULE_SETS, report
from bench.stack import CpuSampler, Stack
from lockoutd.source.kafka import FETCH_MAX_WAIT_MS

_ATTACKED_BASE = 290_000_000_000_000_000
_BENIGN_BASE = 270_000_000_000_000_000


def _event(user: str, at: float, number: int, *, crossing: bool = False) -> bytes:
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    event_id = f"cross-{user}" if crossing else f"lat-{number}"
    return (
        f'{{"type":"auth.login.failed","occurred_at":"{stamp.replace("+00:00", "Z")}",'
        f'"user_id":"{user}","org_id":"300","ip":"198.18.{number % 256}.{number % 253 + 1}",'
        f'"reason":"password","event_id":"{event_id}","user_agent":"OpenSSH_9.2p1"}}'
    ).encode()


async def load(
    bootstrap: str,
    topic: str,
    *,
    rate: float,
    seconds: float,
    every: float,
    gap: float,
    seed: int,
    linger_ms: int,
) -> tuple[dict[str, float], int]:
    """Run the load; return the send time of every crossing event by user, and events sent."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible load, no secret
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, acks=1, linger_ms=linger_ms
    )
    await producer.start()
    crossings: dict[str, float] = {}
    sent = 0
    attacks = 0
    try:
        started = time.monotonic()
        next_attack = started + 1.0
        pending: list[tuple[float, str]] = []  # (when, user) of fifth failures due
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(rate * elapsed) - sent
            now = time.time()
            for _ in range(max(0, due)):
                user = str(_BENIGN_BASE + rng.randrange(1_000_000))
                await producer.send(topic, _event(user, now, sent), key=user.encode())
                sent += 1
            mono = time.monotonic()
            if mono >= next_attack and elapsed < seconds - 2:
                user = str(_ATTACKED_BASE + attacks)
                attacks += 1
                for _ in range(4):
                    await producer.send(topic, _event(user, time.time(), sent), key=user.encode())
                    sent += 1
                pending.append((mono + gap, user))
                next_attack += every
            while pending and pending[0][0] <= mono:
                _, user = pending.pop(0)
                value = _event(user, time.time(), sent, crossing=True)
                crossings[user] = time.time()
                await producer.send(topic, value, key=user.encode())
                sent += 1
            await asyncio.sleep(0.002)
        await producer.flush()
    finally:
        await producer.stop()
    return crossings, sent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _floor_consumer(bootstrap: str, topic: str, seconds: float) -> dict[str, float]:
    """Consume ``topic`` as the daemon does (whole batches, decode, commit), nothing else:
    the arrival time of every crossing event, by user."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="latency-floor",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    arrivals: dict[str, float] = {}
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
            for records in batch.values():
                for record in records:
                    value = json.loads(record.value)
                    if value["event_id"].startswith("cross-"):
                        arrivals.setdefault(value["user_id"], time.time())
            if batch:
                await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batch.items()})
    finally:
        await consumer.stop()
    return arrivals


Phase = tuple[dict[str, float], dict[str, float], int, CpuSampler]
"""One phase's crossing send times and arrivals by user, events sent, and the CPU it used."""


def _measure(args: argparse.Namespace, users_file: Path, *, floor: bool) -> Phase:
    """One phase on a fresh broker."""
    with Stack(lockable_users=[users_file]) as stack:
        assert stack.emulator is not None
        with contextlib.ExitStack() as running:
            if floor:
                consumer = subprocess.Popen(  # noqa: S603 - our interpreter, our module
                    [
                        *(sys.executable, "-m", "bench.latency", "--floor-consumer"),
                        *(stack.bootstrap, stack.topics.events, str(args.seconds + 15)),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert consumer.stdout is not None
                consumer.stdout.readline()  # "ready"
                time.sleep(3.0)  # joined its group
                watched = {"consumer": consumer.pid}
            else:
                daemon = running.enter_context(stack.daemon(RULE_SETS[5]))
                daemon.wait_ready()
                watched = {"lockoutd": daemon.pid or 0}
            if stack.broker.pid is not None:  # None: an external broker, not ours to watch
                watched["broker"] = stack.broker.pid
            sampler = running.enter_context(CpuSampler(watched))
            crossings, sent = asyncio.run(
                load(
                    stack.bootstrap,
                    stack.topics.events,
                    rate=args.rate,
                    seconds=args.seconds,
                    every=args.every,
                    gap=args.gap,
                    seed=args.seed,
                    linger_ms=args.linger_ms,
                )
            )
            arrivals: dict[str, float] = {}
            if floor:
                output, _ = consumer.communicate(timeout=args.seconds + 60)
                arrivals = json.loads(output.strip().splitlines()[-1])
            else:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    arrivals = {}
                    for call in stack.emulator.lock_calls():
                        arrivals.setdefault(call["user_id"], call["at"])
                    if set(crossings) <= set(arrivals):
                        break
                    time.sleep(0.25)
    return crossings, arrivals, sent, sampler


def _row(
    name: str, crossings: dict[str, float], arrivals: dict[str, float], sent: float
) -> list[Any]:
    latencies = [arrivals[u] - t for u, t in crossings.items() if u in arrivals]
    missing = len(crossings) - len(latencies)
    cells: list[Any] = [name, f"{sent:,.0f}", len(crossings), missing]
    if not latencies:
        return [*cells, "", "", "", "missed"]
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    verdict = "met" if not missing and p99 <= 100 else "missed"
    if name.startswith("aiokafka"):
        verdict = ""  # the floor has no target of its own
    return [*cells, round(p50, 1), round(p99, 1), round(max(latencies) * 1000, 1), verdict]


def _by_slice(
    crossings: dict[str, float], arrivals: dict[str, float], cpu: CpuSampler, width: float
) -> list[str]:
    """A line per ``width`` seconds of the run: the latency of its attacks, the CPU of each
    process; shows whether a growing tail follows lockoutd's CPU or the broker's."""
    first = min(crossings.values(), default=0.0)
    last = max(crossings.values(), default=0.0)
    lines = []
    start = first
    while start <= last:
        end = start + width
        latencies = [
            (arrivals[user] - sent) * 1000
            for user, sent in crossings.items()
            if start <= sent < end and user in arrivals
        ]
        shares = ", ".join(f"{name} {share:.0%}" for name, share in cpu.share(start, end).items())
        if latencies:
            p50 = percentile(latencies, 0.5)
            lines.append(
                f"{start - first:3.0f}-{end - first:3.0f} s: p50 {p50:.0f} ms, "
                f"max {max(latencies):.0f} ms; CPU of one core: {shares}"
            )
        start = end
    return lines


def _by_send_time(crossings: dict[str, float], arrivals: dict[str, float]) -> list[Any]:
    first = min(crossings.values(), default=0.0)
    return [
        [round(t - first, 2), round((arrivals[u] - t) * 1000, 1) if u in arrivals else None]
        for u, t in sorted(crossings.items(), key=lambda item: item[1])
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    parser.add_argument("--rate", type=float, default=5000.0, help="background events per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=0.2, help="seconds between attacks")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds before the fifth")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--linger-ms", type=int, default=10, help="how long the producer gathers a batch"
    )
    parser.add_argument("--name", default="latency")
    parser.add_argument("--skip-floor", action="store_true", help="measure lockoutd only")
    args = parser.parse_args(argv)
    attacks = int(args.seconds / args.every) + 10
    DATA.mkdir(parents=True, exist_ok=True)
    users_file = DATA / f"latency-users-{attacks}.txt"
    users_file.write_text(
        "".join(f"{_ATTACKED_BASE + i}\n" for i in range(attacks)), encoding="utf-8"
    )
    phases = {}
    if not args.skip_floor:
        phases["aiokafka consumer alone (floor): produce -> consumed"] = _measure(
            args, users_file, floor=True
        )
    phases["lockoutd run, 5 rules: produce -> lock call at the emulator"] = _measure(
        args, users_file, floor=False
    )
    rows = [
        _row(name, crossings, arrivals, sent / args.seconds)
        for name, (crossings, arrivals, sent, _) in phases.items()
    ]
    slices = [
        f"{name.split(':')[0]}, {line}"
        for name, (crossings, arrivals, _, cpu) in phases.items()
        for line in _by_slice(crossings, arrivals, cpu, 10.0)
    ]
    report(
        args.name,
        "Lock latency under a steady background load",
        ["path", "events/s sent", "attacks", "missed", "p50 ms", "p99 ms", "max ms", "target"],
        rows,
        notes=[
            f"{args.seconds:g}s of load per phase, each on a fresh broker; an attack every "
            f"{args.every:g}s (four failures, the fifth {args.gap:g}s later)",
            "target: lockoutd p99 <= 100 ms at 5,000 events/s",
            "by_send_time in the JSON file: latency of each attack by when it was sent",
            "by 10 s slice of the run (CPU: share of one core, 2 cores in all):",
            *slices,
        ],
        extra={
            name: {"by_send_time": _by_send_time(crossings, arrivals), "cpu": cpu.samples}
            for name, (crossings, arrivals, _, cpu) in phases.items()
        },
    )
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--floor-consumer"]:
        bootstrap, topic, seconds = sys.argv[2], sys.argv[3], float(sys.argv[4])
        print(json.dumps(asyncio.run(_floor_consumer(bootstrap, topic, seconds))))
        sys.exit(0)
    sys.exit(main())
