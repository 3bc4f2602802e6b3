"""The demo: a local broker, the ZITADEL emulator and the real daemon, then a short attack.

Run with ``./scripts/demo``. It starts everything it needs on free loopback ports, uses the shipped
``rules/``, prints each decision as it is published and the metrics that changed, and stops
everything it started.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from lockoutd.testing.broker import LocalBroker, free_port
from lockoutd.testing.process import DaemonConfig, DaemonProcess, write_schedule_key
from lockoutd.testing.produce import produce
from lockoutd.testing.zitadel_emulator import UserState, ZitadelEmulator

ORG = "300"
PAT = "demo-personal-access-token"
TOPIC, DECISIONS, DEAD_LETTERS = "auth.events", "lockoutd.decisions", "auth.events.dlq"
SCHEDULE = "lockoutd.schedule"

# Who is attacked, how, and what lockoutd should do about it.
USERS = [
    ("259242039378444301", "alice@example.com", UserState.ACTIVE, 6, "password"),
    ("259242039378444302", "bob@example.com", UserState.ACTIVE, 4, "password"),
    ("259242039378444303", "carol@example.com", UserState.LOCKED, 5, "password"),
    ("259242039378444304", "dave@example.com", UserState.INACTIVE, 5, "password"),
    ("259242039378444305", "erin@example.com", UserState.ACTIVE, 3, "otp"),
]
STORY = {
    "alice@example.com": "6 wrong passwords in 6 minutes: locked",
    "bob@example.com": "4 wrong passwords: under the threshold, nothing happens",
    "carol@example.com": "already locked by an admin: already_locked, not an error",
    "dave@example.com": "deactivated: ZITADEL refuses, lockoutd says not_lockable",
    "erin@example.com": "3 wrong one-time codes in 3 minutes: locked for 15 minutes",
}
WATCHED_METRICS = (
    "lockoutd_events_total",
    "lockoutd_rule_fired_total",
    "lockoutd_actions_total",
    "lockoutd_zitadel_requests_total",
    "lockoutd_lock_latency_seconds_count",
)


def _attack(now: datetime) -> list[tuple[bytes, bytes]]:
    start = now - timedelta(minutes=8)
    records = []
    for user_id, login, _, failures, reason in USERS:
        for minute in range(failures):
            event = {
                "type": "auth.login.failed",
                "occurred_at": (start + timedelta(minutes=minute)).isoformat(),
                "user_id": user_id,
                "login_name": login,
                "org_id": ORG,
                "ip": "203.0.113.7",
                "reason": reason,
                "event_id": f"{user_id}-{minute}",
            }
            records.append((user_id.encode(), json.dumps(event).encode()))
    records.append((b"garbage", b"{this is not an event"))
    return records


async def _follow_decisions(
    bootstrap: str, expected: int, within_seconds: float
) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        DECISIONS,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + within_seconds
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    decision = json.loads(record.value)
                    seen.append(decision)
                    print(
                        f"  decision  {decision['rule']:<20} user {decision['login_name']:<18} "
                        f"-> {decision['outcome']}"
                        + (f" until {decision['unlock_at']}" if decision["unlock_at"] else "")
                    )
    finally:
        await consumer.stop()
    return seen


# Lines of the metrics output that look like trouble but are the story going as planned.
EXPLANATIONS = {
    'lockoutd_zitadel_requests_total{code="400",operation="lock"}': (
        "expected: ZITADEL's one answer for carol (already locked) and dave (deactivated); "
        "lockoutd reads their state to tell the two apart"
    ),
}


def _explained(line: str) -> str:
    note = EXPLANATIONS.get(line)
    return f"  <- {note}" if note else ""


def _metric_lines(daemon: DaemonProcess) -> dict[str, float]:
    lines = {}
    for (name, labels), value in daemon.metrics().items():
        if name.startswith(WATCHED_METRICS) and value:
            label_text = ",".join(f'{k}="{v}"' for k, v in labels)
            lines[f"{name}{{{label_text}}}" if label_text else name] = value
    return lines


def prepare(broker: LocalBroker, emulator: ZitadelEmulator, work: Path) -> DaemonConfig:
    """The demo's world: its topics, its org, users and token, and a daemon configuration for
    them written to ``work/lockoutd.yaml`` (the token in ``work/pat``)."""
    repo = Path(__file__).resolve().parents[2]
    asyncio.run(broker.create_topics(TOPIC, DECISIONS, DEAD_LETTERS, SCHEDULE))
    emulator.add_org(ORG)
    emulator.add_pat(PAT, roles={"instance": {"IAM_USER_MANAGER"}}, org_id=ORG)
    for user_id, login, state, _, _ in USERS:
        emulator.add_user(user_id, org_id=ORG, login_name=login, state=state)
    (work / "pat").write_text(PAT)
    config = DaemonConfig(
        bootstrap_servers=broker.bootstrap_servers,
        topics=[TOPIC],
        group_id="lockoutd-demo",
        zitadel_url=emulator.base_url,
        pat_file=work / "pat",
        rule_paths=[repo / "rules"],
        metrics_port=free_port(),
        dead_letter_topic=DEAD_LETTERS,
        decisions_topic=DECISIONS,
        schedule_topic=SCHEDULE,
        # The shipped rules lock temporarily, which needs a schedule signing key.
        schedule_signing_key_file=write_schedule_key(work / "schedule-signing-key"),
    )
    config.write(work / "lockoutd.yaml")
    return config


def main() -> int:
    with (
        tempfile.TemporaryDirectory(prefix="lockoutd-demo-") as tmp,
        LocalBroker() as broker,
        ZitadelEmulator() as emulator,
    ):
        work = Path(tmp)
        print(f"broker   {broker.bootstrap_servers} (Kafka protocol)")
        print(f"zitadel  {emulator.base_url} (emulator)")
        config = prepare(broker, emulator, work)
        daemon = DaemonProcess(
            work / "lockoutd.yaml",
            metrics_port=config.metrics_port,
            log_path=work / "lockoutd.log",
        )
        daemon.start()
        try:
            print(f"lockoutd {daemon.url}/metrics (joining its consumer group...)")
            daemon.wait_ready()
            before = _metric_lines(daemon)
            records = _attack(datetime.now(UTC))
            print(f"\nattack: {len(records)} records on {TOPIC}")
            for login, story in STORY.items():
                print(f"  {login:<18} {story}")
            print("  plus one record that is not JSON: dead-lettered, counted\n")
            asyncio.run(produce(TOPIC, records, bootstrap_servers=broker.bootstrap_servers))
            asyncio.run(_follow_decisions(broker.bootstrap_servers, expected=4, within_seconds=30))
            print("\nusers in ZITADEL now:")
            for user_id, login, _, _, _ in USERS:
                print(f"  {login:<18} {emulator.state_of(user_id).value}")
            time.sleep(0.5)
            print("\nmetrics that changed:")
            after = _metric_lines(daemon)
            for line, value in sorted(after.items()):
                if value != before.get(line, 0):
                    print(f"  {line} {value:g}{_explained(line)}")
        finally:
            code = daemon.terminate()
            print(
                f"\nlockoutd stopped (exit {code}); the broker and the emulator stop with the demo"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
