"""The end-to-end stack for the benchmarks: the local broker, the emulator in its own process and
the real daemon (``lockoutd run``) in another, all on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from bench.common import REPO, RESULTS
from lockoutd.testing.broker import LocalBroker, free_port
from lockoutd.testing.process import DaemonConfig, DaemonProcess, write_schedule_key

PAT = "bench-pat-token-value"
PARTITIONS = 3
RAISED_LOCK_CAP = 10_000_000
"""The daemon's safety cap in the benchmarks: they lock thousands of users, and the cap must not
suppress them."""


class Emulator:
    """``python -m bench.emulator`` as a child process."""

    def __init__(self, workdir: Path, users: list[Path]) -> None:
        self.port = free_port()
        self.calls_path = workdir / "lock-calls.json"
        self.calls_path.unlink(missing_ok=True)  # an earlier emulator's calls
        self.pat_file = workdir / "pat"
        self.pat_file.write_text(PAT + "\n", encoding="utf-8")
        command = [sys.executable, "-m", "bench.emulator", "--port", str(self.port)]
        command += ["--pat-file", str(self.pat_file), "--calls-out", str(self.calls_path)]
        for path in users:
            command += ["--users", str(path)]
        self._process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
            command, stdout=subprocess.PIPE, cwd=REPO
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().decode()
        if not line.startswith("ready"):
            self.stop()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.base_url = line.split()[1]

    @property
    def pid(self) -> int:
        return self._process.pid

    def lock_calls(self) -> list[dict[str, Any]]:
        try:
            calls: list[dict[str, Any]] = json.loads(self.calls_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return calls

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


@dataclass
class Topics:
    events: str
    dead_letter: str
    decisions: str
    schedule: str


class Stack:
    """Broker and emulator; ``daemon()`` starts a lockoutd against them."""

    def __init__(self, *, lockable_users: list[Path]) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="lockoutd-bench-")
        self.workdir = Path(self._tmp.name)
        # One key for every daemon of the stack: they share the schedule topic.
        self.schedule_key = write_schedule_key(self.workdir / "schedule-signing-key")
        self.broker = LocalBroker()
        suffix = uuid.uuid4().hex[:8]
        self.topics = Topics(
            f"auth-events-{suffix}",
            f"auth-events-dlq-{suffix}",
            f"lockoutd-decisions-{suffix}",
            f"lockoutd-schedule-{suffix}",
        )
        self._users = lockable_users
        self.emulator: Emulator | None = None

    def __enter__(self) -> Self:
        self.broker.start()
        asyncio.run(
            self.broker.create_topics(
                self.topics.events,
                self.topics.dead_letter,
                self.topics.decisions,
                partitions=PARTITIONS,
            )
        )
        self.emulator = Emulator(self.workdir, self._users)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        log = self.workdir / "daemon.log"
        if log.exists():  # kept for a look at what the daemon said during the run
            RESULTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, RESULTS / "last-daemon.log")
        if self.emulator is not None:
            self.emulator.stop()
        self.broker.stop()
        self._tmp.cleanup()

    def fresh_emulator(self) -> None:
        """Replace the emulator with a new one whose users are all unlocked again."""
        if self.emulator is not None:
            self.emulator.stop()
        self.emulator = Emulator(self.workdir, self._users)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    @contextmanager
    def daemon(
        self,
        rule_paths: list[Path],
        *,
        log_level: str = "info",
        max_locks_per_minute: int = RAISED_LOCK_CAP,
        group_id: str | None = None,
        kafka: dict[str, Any] | None = None,
        log_name: str = "daemon.log",
    ) -> Iterator[DaemonProcess]:
        """A running ``lockoutd run`` (of a new group unless ``group_id``, with ``kafka``
        settings added); stopped with SIGTERM afterwards."""
        assert self.emulator is not None
        config = DaemonConfig(
            bootstrap_servers=self.bootstrap,
            topics=[self.topics.events],
            group_id=group_id or f"lockoutd-{uuid.uuid4().hex[:8]}",
            zitadel_url=self.emulator.base_url,
            pat_file=self.emulator.pat_file,
            rule_paths=rule_paths,
            metrics_port=free_port(),
            dead_letter_topic=self.topics.dead_letter,
            decisions_topic=self.topics.decisions,
            schedule_topic=self.topics.schedule,
            schedule_signing_key_file=self.schedule_key,
            max_locks_per_minute=max_locks_per_minute,
            extra={
                # Generated events may be weeks old: they must still act.
                "engine": {"max_event_age": "3650d"},
                "log": {"level": log_level},
                "kafka": kafka or {},
            },
        )
        process = DaemonProcess(
            config.write(self.workdir / "lockoutd.yaml"),
            metrics_port=config.metrics_port,
            log_path=self.workdir / log_name,
            env={"PYTHONUNBUFFERED": "1"},
        )
        process.start()
        try:
            yield process
        finally:
            if process.returncode is None:
                process.terminate()

    def daemon_log(self) -> str:
        path = self.workdir / "daemon.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def _user_key(line: bytes) -> bytes:
    start = line.index(b'"user_id":"') + 11
    return line[start : line.index(b'"', start)]


async def produce_lines(bootstrap: str, topic: str, path: Path) -> tuple[int, float]:
    """Every line of ``path`` as a record keyed by its user, in whole batches; (count, seconds)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, acks=1, linger_ms=20
    )
    await producer.start()
    count = 0
    started = time.perf_counter()
    try:
        batches: dict[int, Any] = {}
        pending = []
        # Blocking reads are fine here: nothing else runs on this loop while it produces.
        with open(path, "rb") as handle:  # noqa: ASYNC230
            for line in handle:
                value = line.rstrip(b"\n")
                key = _user_key(value)
                partition = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = batches[partition] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
                count += 1
        for partition, batch in batches.items():
            if batch.record_count():
                pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count, time.perf_counter() - started


def peak_rss(pid: int) -> int | None:
    """The peak resident set (VmHWM) of a live process, in bytes."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


class CpuSampler:
    """Samples the CPU time of some processes once a second, in a thread of its own.

    The latency benchmark reports each process's share of a core by slice of the run: a tail that
    grows while lockoutd's share stays flat and the broker's climbs is the broker's.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._ticks_per_second = os.sysconf("SC_CLK_TCK")
        self.samples: list[tuple[float, dict[str, float]]] = []
        """``(wall-clock time, CPU seconds used so far by name)``, oldest first."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), {n: self._cpu(p) for n, p in self._pids.items()}))
            if self._stop.wait(1.0):
                return

    def _cpu(self, pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                # The command name (field 2) may hold spaces; utime and stime follow its ')'.
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / self._ticks_per_second

    def share(self, start: float, end: float) -> dict[str, float]:
        """Each process's share of one core between two wall-clock times (nearest samples)."""
        inside = [sample for sample in self.samples if start <= sample[0] <= end]
        if len(inside) < 2:
            return {}
        (t0, first), (t1, last) = inside[0], inside[-1]
        return {name: (last[name] - first[name]) / (t1 - t0) for name in first}
