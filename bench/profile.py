"""Profiles of the hot path, written to ``bench/results/``.

- ``engine``: pyinstrument over the engine loop of ``bench.engine`` (decode, 5 rules, decide),
  as text and HTML, and py-spy's sampled stacks of the same loop in a child process;
- ``daemon``: py-spy attached to a real ``lockoutd run`` while it consumes a topic of the local
  broker (the stack of ``bench.e2e``), its safety cap raised so that every attacked user is
  locked, or left at the default with ``--capped``.

Each py-spy profile is summarised as the functions with the most samples, on their own (self)
and with what they call (total).

    python -m bench.profile engine
    python -m bench.profile daemon --events 300000
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.common import RESULTS, RULE_SETS
from bench.e2e import DEFAULT_LOCK_CAP
from bench.engine import engine_run, events_for
from bench.generate import Workload, arguments, attacked_users, workload, write
from bench.stack import RAISED_LOCK_CAP, Stack, produce_lines


def summarise(raw: Path, top: int = 30) -> str:
    """The functions with the most samples in py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
            if " (" in f
            else f
            for f in stack.split(";")
        ]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples", "", "self %  function"]
    lines += [f"{100 * n / samples:6.1f}  {name}" for name, n in own.most_common(top)]
    lines += ["", "total % function"]
    lines += [f"{100 * n / samples:6.1f}  {name}" for name, n in total.most_common(top)]
    return "\n".join(lines) + "\n"


def _py_spy(args: list[str]) -> list[str]:
    return [str(Path(sys.executable).with_name("py-spy")), *args]


def profile_engine(users: int, rules: int, seconds: float, label: str) -> None:
    from pyinstrument import Profiler

    path = write(Workload(events=events_for(users, 1_000_000), users=users)) / "events.jsonl"
    profiler = Profiler(interval=0.0005)
    profiler.start()
    engine_run(path, RULE_SETS[rules], seconds)
    profiler.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    (RESULTS / f"{label}-pyinstrument.txt").write_text(text, encoding="utf-8")
    (RESULTS / f"{label}-pyinstrument.html").write_text(profiler.output_html(), encoding="utf-8")
    raw = RESULTS / f"{label}-py-spy.txt"
    subprocess.run(  # noqa: S603 - py-spy from this venv, our own module
        [
            *_py_spy(["record", "--format", "raw", "-r", "250", "-o", str(raw), "--"]),
            *(
                sys.executable,
                "-m",
                "bench.profile",
                "_engine",
                str(users),
                str(rules),
                str(seconds),
            ),
        ],
        check=True,
        capture_output=True,
    )
    summary = summarise(raw)
    (RESULTS / f"{label}-py-spy-summary.txt").write_text(summary, encoding="utf-8")
    print(text[:6000])
    print(summary)


def profile_daemon(args: argparse.Namespace, label: str) -> None:
    directory = write(workload(args))
    expected = attacked_users(directory)
    raw = RESULTS / f"{label}-py-spy.txt"
    RESULTS.mkdir(parents=True, exist_ok=True)
    with Stack(lockable_users=[directory / "attacked.txt"]) as stack:
        produced, _ = asyncio.run(
            produce_lines(stack.bootstrap, stack.topics.events, directory / "events.jsonl")
        )
        cap = DEFAULT_LOCK_CAP if args.capped else RAISED_LOCK_CAP
        with stack.daemon(RULE_SETS[5], max_locks_per_minute=cap) as daemon:
            daemon.wait_ready()
            pid = daemon._process.pid if daemon._process else 0
            spy = subprocess.Popen(  # noqa: S603 - py-spy from this venv
                _py_spy(
                    ["record", "--format", "raw", "-r", "250", "-o", str(raw), "--pid", str(pid)]
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                if daemon.metric("lockoutd_events_total", result="accepted") >= produced:
                    break
                time.sleep(0.5)
            spy.send_signal(2)  # SIGINT: py-spy writes what it has and exits
            spy.wait(timeout=60)
    summary = summarise(raw)
    (RESULTS / f"{label}-py-spy-summary.txt").write_text(summary, encoding="utf-8")
    print(f"{produced:,} events, {len(expected):,} attacked users")
    print(summary)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "_engine":  # the child py-spy samples
        users, rules, seconds = int(argv[1]), int(argv[2]), float(argv[3])
        path = write(Workload(events=events_for(users, 1_000_000), users=users)) / "events.jsonl"
        engine_run(path, RULE_SETS[rules], seconds)
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    engine = sub.add_parser("engine")
    engine.add_argument("--users", type=int, default=100_000)
    engine.add_argument("--rules", type=int, default=5, choices=RULE_SETS)
    engine.add_argument("--seconds", type=float, default=15.0)
    engine.add_argument("--label", default="profile-engine")
    daemon = sub.add_parser("daemon")
    arguments(daemon, events=300_000, users=20_000)
    daemon.add_argument("--timeout", type=float, default=300.0)
    daemon.add_argument(
        "--capped",
        action="store_true",
        help="keep the default safety cap (most locks suppressed), as the e2e target is judged",
    )
    daemon.add_argument("--label", default="profile-daemon")
    args = parser.parse_args(argv)
    if args.what == "engine":
        profile_engine(args.users, args.rules, args.seconds, args.label)
    else:
        profile_daemon(args, args.label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
