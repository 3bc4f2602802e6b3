"""Failover with a ``1d`` rule: from a partition's assignment to acting on its first new record,
restored from a checkpoint against today's rewind by the longest window.

``--records`` failures, produced now, with event times spread over the last 20 hours, for
``--users`` users (four each at the defaults: one short of the rule's threshold of five), go to a
3-partition topic. A first ``lockoutd run`` reads them all and checkpoints every partition at its
end; it is killed (SIGKILL). Then, twice, one new failure for a user already at four is produced
and an instance of the same group starts: first with checkpoints (it restores each partition and
replays what came after the checkpoint), then without (it rewinds each partition by the day and
replays every record). The time is from the new instance's ``partitions_assigned`` log line to
its ``user_locked`` line for that user, both by the daemon's clock.

    python -m bench.failover                          # 1,000,000 records, 250,000 users
    python -m bench.failover --records 200000 --users 50000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from bench.common import RESULTS, report
from bench.stack import PARTITIONS, Stack, produce_lines
from lockoutd.testing.process import DaemonProcess

DAY_RULE = """\
rules:
  - name: slow-bruteforce
    match: {type: auth.login.failed, reason: [password]}
    key: [user_id]
    threshold: 5
    window: 1d
    action: {lock: {}}
"""
SPREAD_SECONDS = 20 * 3600.0
FIRST_USER = 1_000_000
"""User ids are digit strings, as ZITADEL's are: the n-th user is ``FIRST_USER + n``."""
MARKERS = (str(FIRST_USER), str(FIRST_USER + 1))
"""The users whose fifth failure is the first new record: one per run."""


def _failure(user: str, at: float) -> bytes:
    stamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    event = {
        "type": "auth.login.failed",
        "occurred_at": stamp,
        "user_id": user,
        "org_id": "300",
        "reason": "password",
    }
    return json.dumps(event, separators=(",", ":")).encode()


def _partition(key: str) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def write_events(path: Path, records: int, users: int) -> list[int]:
    """The workload, in time order; returns how many records each partition gets."""
    start = time.time() - SPREAD_SECONDS
    counts = [0] * PARTITIONS
    partition_of = [_partition(str(FIRST_USER + n)) for n in range(users)]
    with path.open("wb") as out:
        for n in range(records):
            user = n % users
            counts[partition_of[user]] += 1
            out.write(
                _failure(str(FIRST_USER + user), start + SPREAD_SECONDS * n / records) + b"\n"
            )
    return counts


def _send(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for key, value in records:
                await producer.send_and_wait(topic, value, key=key.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def _lines(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    return [e for e in daemon.logs() if e.get("event") == event]


def _wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.25)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def _keep_log(daemon: DaemonProcess, name: str) -> None:
    # A copy in bench/results, kept as the run goes (the stack's folder is removed at its end).
    RESULTS.mkdir(parents=True, exist_ok=True)
    while daemon.returncode is None:
        shutil.copy(daemon.log_path, RESULTS / name)
        time.sleep(1.0)
    shutil.copy(daemon.log_path, RESULTS / name)


def _stamp(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()


def _take_over(
    stack: Stack, rules: Path, group: str, kafka: dict[str, Any], marker: str, timeout: float
) -> dict[str, Any]:
    """Start an instance of ``group`` with a new failure of ``marker`` waiting; the time from its
    assignment to the lock, and what it replayed."""
    _send(stack.bootstrap, stack.topics.events, [(marker, _failure(marker, time.time()))])
    name = f"failover-{marker}.log"
    with stack.daemon([rules], group_id=group, kafka=kafka, log_name=name) as daemon:
        keep_log = threading.Thread(target=_keep_log, args=(daemon, name), daemon=True)
        keep_log.start()
        locked = _wait(
            lambda: [e for e in _lines(daemon, "user_locked") if e.get("user_id") == marker],
            timeout,
            f"{marker} locked",
        )
        assigned = [e for e in _lines(daemon, "partitions_assigned") if e["partitions"]]
        restored = _lines(daemon, "partition_restored")
        rebuilt = _lines(daemon, "partition_rebuilding")
        result = {
            "seconds": _stamp(locked[0]) - _stamp(assigned[0]),
            "window": sum(e["rewind_would_replay"] for e in restored),
            "restored": len(restored),
            "replayed": sum(e["records_replayed"] for e in restored)
            + sum(e["committed"] - e["from_offset"] for e in rebuilt),
        }
        daemon.kill()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=250_000)
    parser.add_argument("--timeout", type=float, default=600.0, help="per step, in seconds")
    parser.add_argument("--name", default="failover")
    args = parser.parse_args()
    checkpoints = f"lockoutd-checkpoints-{uuid.uuid4().hex[:8]}"
    group = f"lockoutd-failover-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="lockoutd-failover-") as tmp:
        users_file = Path(tmp) / "markers.txt"
        users_file.write_text("\n".join(MARKERS) + "\n", encoding="utf-8")
        restored, rewound, written, lines = _run(args, users_file, checkpoints, group)
    rows = [
        ["checkpoint", restored["window"], restored["replayed"], restored["seconds"]],
        [
            "rewind by the window (today)",
            rewound["replayed"],
            rewound["replayed"],
            rewound["seconds"],
        ],
    ]
    state_bytes = sum(e["bytes"] for e in written)
    state_records = sum(e["records"] for e in written)
    write_seconds = sum(e["seconds"] for e in written)
    rate = rewound["replayed"] / rewound["seconds"] if rewound["seconds"] else 0.0
    report(
        args.name,
        "Failover with a 1d rule: assignment to acting on the first new record",
        ["rebuild", "records in the window", "records replayed", "seconds to act"],
        rows,
        notes=[
            *lines,
            f"checkpoints at the partitions' ends: {state_bytes:,} bytes compressed in "
            f"{state_records} records, written in {write_seconds:.2f}s in all",
            f"the rewind replayed {rate:,.0f} records/s: 10,000,000 records in the window would "
            f"take {10_000_000 / rate:,.0f}s to replay at that rate"
            if rate
            else "no rewind rate",
            "broker, emulator and daemon share the machine's cores (loopback only)",
        ],
        extra={"restored": restored, "rewound": rewound, "checkpoints": written},
    )


def _run(
    args: argparse.Namespace, users_file: Path, checkpoints: str, group: str
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], list[str]]:
    interval = 10.0
    with Stack(lockable_users=[users_file]) as stack:
        rules = stack.workdir / "day.yaml"
        rules.write_text(DAY_RULE, encoding="utf-8")
        events = stack.workdir / "events.jsonl"
        counts = write_events(events, args.records, args.users)
        produced, produce_seconds = asyncio.run(
            produce_lines(stack.bootstrap, stack.topics.events, events)
        )
        on = {"checkpoint_topic": checkpoints, "checkpoint_interval": f"{interval:.0f}s"}

        # The first owner: reads everything, then checkpoints each partition at its end.
        with stack.daemon([rules], group_id=group, kafka=on, log_name="first.log") as first:
            started = time.monotonic()
            first.wait_ready(timeout=args.timeout)
            _wait(
                lambda: first.metric("lockoutd_events_total", result="accepted") >= produced,
                args.timeout,
                "the first instance to read every record",
            )
            first_read = time.monotonic() - started
            time.sleep(interval)  # every partition's checkpoint is due again
            fillers = [_first_key_of(p) for p in range(PARTITIONS)]
            _send(
                stack.bootstrap,
                stack.topics.events,
                [(k, _failure(k, time.time())) for k in fillers],
            )
            ends = {p: counts[p] + 1 for p in range(PARTITIONS)}
            written = _wait(
                lambda: _at_ends(_lines(first, "checkpoint_written"), ends),
                args.timeout,
                "a checkpoint of every partition at its end",
            )
            first.kill()

        restored = _take_over(stack, rules, group, on, MARKERS[0], args.timeout)
        rewound = _take_over(
            stack, rules, group, {"checkpoint_topic": None}, MARKERS[1], args.timeout
        )

    lines = [
        f"{args.records:,} failures over {args.users:,} users ({args.records // args.users} "
        f"each, one short of the threshold), 3 partitions; produced in {produce_seconds:.1f}s",
        f"the first instance read them in {first_read:.1f}s",
    ]
    return restored, rewound, written, lines


def _first_key_of(partition: int) -> str:
    n = 0
    while _partition(f"filler-{n}") != partition:
        n += 1
    return f"filler-{n}"


def _at_ends(lines: list[dict[str, Any]], ends: dict[int, int]) -> list[dict[str, Any]] | None:
    found = []
    for partition, end in ends.items():
        match = [
            e for e in lines if e["partition"].endswith(f"[{partition}]") and e["offset"] == end
        ]
        if not match:
            return None
        found.append(match[-1])
    return found


if __name__ == "__main__":
    main()
