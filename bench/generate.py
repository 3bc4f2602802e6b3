"""The workload: N login failures over U users, a fraction of them attacked, from a seed.

Every attacked user gets five or more failures within ``--burst`` seconds (five minutes by
default, so always within ten minutes); every other user one to three failures spread over the
whole span, which no five-in-ten-minutes rule can ever count to five. Events left over once every
user has its share go to the attack (an attack is what makes the volume). With ``--late``, that
fraction of the events comes late: each is written after the events up to ``--late-by`` seconds
newer than itself, as when several producers feed one partition (its time is unchanged). The
same events are written twice, in that order (time order without ``--late``):

- ``events.jsonl``: native lockoutd events (README, "Events"), one JSON object a line;
- ``auth.log``: the same failures as sshd writes them to syslog, for fail2ban and CrowdSec;
- ``attacked.txt``: the users the generator attacked, sorted: what every tool should lock;
- ``meta.json``: the parameters and counts.

    python -m bench.generate --events 1000000 --users 50000 --attacked 0.05 --seed 7

The same arguments always give the same files (byte for byte, ``--start`` included).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import DATA

DEFAULT_START = 1_793_491_200  # 2026-11-01T00:00:00Z
_USER_BASE = 280_000_000_000_000_000  # ZITADEL-like 18-digit user ids
ORG_ID = "300"


@dataclass(frozen=True)
class Workload:
    events: int = 1_000_000
    users: int = 50_000
    attacked: float = 0.05
    seed: int = 7
    span: int = 3600
    """Seconds from the first event to the last."""
    burst: int = 300
    """Seconds an attacked user's failures are spread over (at most 600)."""
    start: int = DEFAULT_START
    late: float = 0.0
    """Fraction of the events that come late (see the module's docstring)."""
    late_by: float = 2.0
    """Seconds a late event comes after its time, at most."""

    @property
    def name(self) -> str:
        late = f"-late{self.late:g}x{self.late_by:g}" if self.late else ""
        return (
            f"n{self.events}-u{self.users}-a{self.attacked:g}-s{self.seed}"
            f"-span{self.span}-t{self.start}{late}"
        )

    @property
    def directory(self) -> Path:
        return DATA / self.name


def user_id(index: int) -> str:
    return str(_USER_BASE + index)


def _ip(rng: random.Random, attacker: bool) -> str:
    # RFC 2544 benchmarking range 198.18.0.0/15: never a real address. Attackers use 198.19/16.
    if attacker:
        return f"198.19.{rng.randrange(4)}.{rng.randrange(1, 255)}"
    return f"198.18.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def plan(work: Workload) -> tuple[list[tuple[float, int, str]], list[int]]:
    """``(time, user index, ip)`` of every event in the order it is delivered, and the attacked
    users."""
    if not 0 < work.burst <= 600:
        raise ValueError("burst must be within (0, 600] seconds: five in ten minutes")
    if not (0 <= work.late <= 1 and work.late_by >= 0):
        raise ValueError("late is a fraction within [0, 1], late_by seconds >= 0")
    rng = random.Random(work.seed)  # noqa: S311 - a reproducible workload, no secret
    n_attacked = round(work.users * work.attacked)
    attacked = sorted(rng.sample(range(work.users), n_attacked))
    attacked_set = set(attacked)
    benign = [u for u in range(work.users) if u not in attacked_set]
    benign_counts = [rng.randint(1, 3) for _ in benign]
    budget = work.events - sum(benign_counts) - 5 * n_attacked
    if budget < 0:
        raise ValueError(
            f"{work.events} events are too few for {work.users} users: "
            f"at least {work.events - budget} are needed"
        )
    # The rest of the budget goes to the attack, spread evenly (some users a few more).
    attack_counts = [5 + budget // max(1, n_attacked)] * n_attacked
    for i in rng.sample(range(n_attacked), budget % n_attacked if n_attacked else 0):
        attack_counts[i] += 1
    if not n_attacked and budget:
        raise ValueError("nothing attacked: events must equal the benign users' share")
    events: list[tuple[float, int, str]] = []
    span = float(work.span)
    for user, count in zip(benign, benign_counts, strict=True):
        for _ in range(count):
            events.append((rng.uniform(0, span), user, _ip(rng, False)))
    for user, count in zip(attacked, attack_counts, strict=True):
        begin = rng.uniform(0, span - work.burst)
        source = _ip(rng, True)
        for _ in range(count):
            events.append((begin + rng.uniform(0, work.burst), user, source))
    events.sort()
    if work.late:
        # Its own generator: the events, and so the files without --late, stay as they were.
        delays = random.Random(work.seed + 2)  # noqa: S311 - as above
        delivered = [
            (t + delays.uniform(0, work.late_by) if delays.random() < work.late else t, n)
            for n, (t, _, _) in enumerate(events)
        ]
        events = [events[n] for _, n in sorted(delivered)]
    return [(work.start + t, u, ip) for t, u, ip in events], attacked


def write(work: Workload, *, quiet: bool = False) -> Path:
    """Generate ``work`` into its directory (once: an existing complete one is reused)."""
    directory = work.directory
    if (directory / "meta.json").exists():
        return directory
    started = time.monotonic()
    events, attacked = plan(work)
    directory.mkdir(parents=True, exist_ok=True)
    seconds_cache: dict[int, tuple[str, str]] = {}
    rng = random.Random(work.seed + 1)  # noqa: S311 - as above
    with (
        open(directory / "events.jsonl", "w", encoding="utf-8") as native,
        open(directory / "auth.log", "w", encoding="utf-8") as syslog,
    ):
        for number, (at, user, ip) in enumerate(events):
            second = int(at)
            stamps = seconds_cache.get(second)
            if stamps is None:
                stamps = seconds_cache[second] = (
                    time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
                    time.strftime("%b %e %H:%M:%S", time.gmtime(second)),
                )
            millis = int((at - second) * 1000)
            uid = user_id(user)
            native.write(
                f'{{"type":"auth.login.failed","occurred_at":"{stamps[0]}.{millis:03d}Z",'
                f'"user_id":"{uid}","org_id":"{ORG_ID}","ip":"{ip}","reason":"password",'
                f'"event_id":"evt-{work.seed}-{number:09d}","user_agent":"OpenSSH_9.2p1"}}\n'
            )
            syslog.write(
                f"{stamps[1]} bench sshd[{rng.randrange(1000, 65000)}]: Failed password for "
                f"{uid} from {ip} port {rng.randrange(1024, 65535)} ssh2\n"
            )
    (directory / "attacked.txt").write_text(
        "".join(f"{user_id(u)}\n" for u in attacked), encoding="utf-8"
    )
    meta = {**asdict(work), "written_events": len(events), "attacked_users": len(attacked)}
    (directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if not quiet:
        print(
            f"generated {len(events):,} events over {work.users:,} users "
            f"({len(attacked):,} attacked) in {time.monotonic() - started:.1f}s: {directory}",
            file=sys.stderr,
        )
    return directory


def attacked_users(directory: Path) -> set[str]:
    return set((directory / "attacked.txt").read_text(encoding="utf-8").split())


def arguments(parser: argparse.ArgumentParser, **defaults: int | float) -> None:
    """The workload options, shared by every benchmark that generates its own data."""
    base = Workload(**defaults)  # type: ignore[arg-type]
    parser.add_argument("--events", type=int, default=base.events)
    parser.add_argument("--users", type=int, default=base.users)
    parser.add_argument("--attacked", type=float, default=base.attacked, help="fraction")
    parser.add_argument("--seed", type=int, default=base.seed)
    parser.add_argument("--span", type=int, default=base.span, help="seconds")
    parser.add_argument("--late", type=float, default=base.late, help="fraction that comes late")
    parser.add_argument("--late-by", type=float, default=base.late_by, help="seconds, at most")


def workload(args: argparse.Namespace, **overrides: int) -> Workload:
    return Workload(
        events=args.events,
        users=args.users,
        attacked=args.attacked,
        seed=args.seed,
        span=args.span,
        late=args.late,
        late_by=args.late_by,
        **overrides,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__)
    arguments(parser)
    parser.add_argument("--start", type=int, default=DEFAULT_START, help="epoch seconds")
    args = parser.parse_args(argv)
    print(write(workload(args, start=args.start)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
