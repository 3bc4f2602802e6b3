"""``lockoutd ingest`` as its own process: signed ZITADEL webhooks in, Kafka records out.

The records are then read the way the daemon reads them (``kafka.formats: {topic: zitadel}``),
through ``lockoutd replay --topic``, which runs the daemon's pipeline.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lockoutd.cli import EXIT_FAILED, main
from lockoutd.decode.signed import ZITADEL_SIGNATURE_HEADER
from lockoutd.ingest.signature import sign, verify
from lockoutd.settings import Settings
from lockoutd.testing.broker import LocalBroker, free_port
from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, Stack, start_stack, stop_stack
from .kafka_helpers import (
    ProducerRecord,
    at,
    produce,
    produce_records,
    read_all,
    wait_committed,
    wait_until,
)
from .slow_clients import SlowClients

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SIGNING_KEY = "e2e-signing-key-never-logged"


class IngestProcess:
    def __init__(
        self, config: Path, log: Path, *, port: int, metrics_port: int, fd_limit: int | None = None
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/zitadel/events"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}"
        self.log = log
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LOCKOUTD_")},
            "LOCKOUTD_INGEST__SIGNING_KEY": SIGNING_KEY,
        }
        command = [sys.executable, "-m", "lockoutd", "ingest", "-c", str(config)]
        if fd_limit is not None:
            # The open-files limit most machines give a process (soft and hard alike).
            command = ["/bin/sh", "-c", f'ulimit -n {fd_limit} && exec "$@"', "sh", *command]
        with log.open("wb") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"lockoutd ingest exited:\n{self.log.read_text()}")
        try:
            return httpx.get(f"{self.metrics_url}/readyz", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def requests_by_result(self) -> dict[str, float]:
        text = httpx.get(f"{self.metrics_url}/metrics", timeout=5.0).text
        return {
            sample.labels["result"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "lockoutd_ingest_requests_total"
        }

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.metrics_url}/metrics", timeout=5.0).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture
def ingest(broker: LocalBroker, tmp_path: Path) -> Iterator[tuple[IngestProcess, Path, str]]:
    """A running ``lockoutd ingest`` publishing to a fresh topic, with its configuration file."""
    yield from run_ingest(broker, tmp_path)


def run_ingest(
    broker: LocalBroker, tmp_path: Path, *, fd_limit: int | None = None
) -> Iterator[tuple[IngestProcess, Path, str]]:
    process, config, topic = launch_ingest(broker, tmp_path, fd_limit=fd_limit)
    try:
        wait_until(process.ready, timeout=60, what="lockoutd ingest to be ready")
        yield process, config, topic
    finally:
        process.stop()


def launch_ingest(
    broker: LocalBroker, tmp_path: Path, *, fd_limit: int | None = None
) -> tuple[IngestProcess, Path, str]:
    """Start ``lockoutd ingest`` on a fresh topic (not yet waited for)."""
    topic = f"zitadel-events-{uuid.uuid4().hex[:8]}"
    asyncio.run(broker.create_topics(topic))
    port, metrics_port = free_port(), free_port()
    config = tmp_path / "lockoutd.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {
                    "bootstrap_servers": broker.bootstrap_servers,
                    "topics": [topic],
                    "formats": {topic: "zitadel"},
                },
                "engine": {"rule_paths": [str(REPO / "rules")]},
                "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
                "ingest": {
                    "listen": f"127.0.0.1:{port}",
                    "topic": topic,
                    "max_body_bytes": 8192,
                },
            }
        ),
        encoding="utf-8",
    )
    process = IngestProcess(
        config, tmp_path / "ingest.log", port=port, metrics_port=metrics_port, fd_limit=fd_limit
    )
    return process, config, topic


def zitadel_failure(sequence: int) -> bytes:
    """What an Actions v2 target receives for a failed password check of user 1001."""
    return json.dumps(
        {
            "aggregateID": "1001",
            "aggregateType": "user",
            "resourceOwner": "300",
            "instanceID": "270000000000000001",
            "version": "v2",
            "sequence": sequence,
            "event_type": "user.human.password.check.failed",
            "created_at": at(sequence),
            "userID": "1001",
            "event_payload": {"userAgent": "Mozilla/5.0", "remoteIP": "203.0.113.7"},
        }
    ).encode()


def zitadel_check(user: str, sequence: int, minutes: float, *, succeeded: bool = False) -> bytes:
    """What an Actions v2 target receives for a password check of ``user`` in org 300."""
    outcome = "succeeded" if succeeded else "failed"
    return json.dumps(
        {
            "aggregateID": user,
            "aggregateType": "user",
            "resourceOwner": ORG_ID,
            "instanceID": "270000000000000001",
            "version": "v2",
            "sequence": sequence,
            "event_type": f"user.human.password.check.{outcome}",
            "created_at": at(minutes),
            "userID": user,
            "event_payload": {"userAgent": "Mozilla/5.0", "remoteIP": "203.0.113.7"},
        }
    ).encode()


def as_ingest_publishes(body: bytes, *, signed_at: float | None = None) -> ProducerRecord:
    """``body`` as ``lockoutd ingest`` writes it: keyed by user, ZITADEL's signature beside it."""
    signature = sign(SIGNING_KEY.encode(), body, int(signed_at or time.time()))
    user = json.loads(body)["aggregateID"].encode()
    return ProducerRecord(body, user, [(ZITADEL_SIGNATURE_HEADER, signature.encode())])


@pytest.fixture
def signed_stack(broker: LocalBroker, tmp_path: Path) -> Iterator[Stack]:
    """A daemon reading a ``zitadel`` topic whose records must carry ZITADEL's signature."""
    key_file = tmp_path / "zitadel-signing-key"
    key_file.write_text(SIGNING_KEY + "\n", encoding="utf-8")
    stack = start_stack(
        broker,
        tmp_path,
        event_format="zitadel",
        extra={
            "kafka": {"require_zitadel_signature": True},
            "ingest": {"signing_key_file": str(key_file)},
        },
    )
    yield stack
    stop_stack(stack)


def test_a_forged_or_replayed_success_does_not_reset_a_users_failures(
    signed_stack: Stack,
) -> None:
    """Four wrong passwords of user 1101, then two successes nobody had: one written straight to
    the topic without ZITADEL's signature, and a copy, appended again, of a real success from
    before the failures. Either reset the count, and the fifth wrong password locked no one.
    The unsigned one is dead-lettered, the old one clears nothing, and 1101 is locked."""
    stack = signed_stack
    stack.emulator.add_user("1101", org_id=ORG_ID)
    earlier_success = as_ingest_publishes(zitadel_check("1101", 5, -5, succeeded=True))
    records = [earlier_success]
    records += [as_ingest_publishes(zitadel_check("1101", 10 + m, m)) for m in range(4)]
    forged = zitadel_check("1101", 14, 3.5, succeeded=True)
    records += [ProducerRecord(forged, b"1101", []), earlier_success]
    records.append(as_ingest_publishes(zitadel_check("1101", 15, 4)))
    produce_records(stack.bootstrap, stack.events_topic, records)

    wait_until(
        lambda: stack.emulator.state_of("1101") is UserState.LOCKED,
        what="1101 locked",
    )
    assert stack.daemon.metric("lockoutd_dead_lettered_total", reason="bad_signature") == 1


def test_an_unsigned_success_from_another_topic_does_not_reset_signed_failures(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """A rule keyed on user and address is counted on an internal topic, where the events of
    every source topic meet. ZITADEL's signed failures of user 1102 came from the zitadel
    topic; an unsigned success for 1102 from that address, written to the native topic, reset
    them, and the third signed failure locked no one. 1102 is locked."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "per-user-and-address.yaml").write_text(
        yaml.safe_dump(
            {
                "rules": [
                    {
                        "name": "password-per-user-and-address",
                        "match": {"reason": ["password"]},
                        "key": ["user_id", "ip"],
                        "threshold": 3,
                        "window": "10m",
                        "reset_on_success": True,
                        "action": {"lock": {}},
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    key_file = tmp_path / "zitadel-signing-key"
    key_file.write_text(SIGNING_KEY + "\n", encoding="utf-8")
    suffix = uuid.uuid4().hex[:8]
    signed_topic, native_topic = f"zitadel-events-{suffix}", f"auth-events-{suffix}"
    asyncio.run(broker.create_topics(native_topic, partitions=3))
    stack = start_stack(
        broker,
        tmp_path,
        rule_paths=[rules],
        event_format="zitadel",
        topics=[signed_topic, native_topic],
        extra={
            "kafka": {"require_zitadel_signature": True},
            "ingest": {"signing_key_file": str(key_file)},
        },
    )
    try:
        stack.emulator.add_user("1102", org_id=ORG_ID)
        produce_records(
            stack.bootstrap,
            signed_topic,
            [as_ingest_publishes(zitadel_check("1102", 20 + m, m)) for m in range(2)],
        )
        # Copied to the internal topic before the success is: a topic's offsets are committed
        # once its events are written there.
        wait_committed(stack.bootstrap, stack.config.group_id, [signed_topic])
        success = {
            "type": "auth.login.succeeded",
            "occurred_at": at(1.5),
            "user_id": "1102",
            "ip": "203.0.113.7",
        }
        produce(stack.bootstrap, native_topic, [success])
        wait_committed(stack.bootstrap, stack.config.group_id, [native_topic])
        produce_records(
            stack.bootstrap, signed_topic, [as_ingest_publishes(zitadel_check("1102", 22, 2))]
        )
        wait_until(
            lambda: stack.emulator.state_of("1102") is UserState.LOCKED,
            what="1102 locked",
        )
    finally:
        stop_stack(stack)


def test_signed_zitadel_events_reach_kafka_and_lock_decisions(
    broker: LocalBroker,
    ingest: tuple[IngestProcess, Path, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Signed bodies are published keyed by user and fire the rule; refusals are counted."""
    process, config, topic = ingest
    bodies = [zitadel_failure(n) for n in range(5)]
    with httpx.Client(timeout=10) as client:
        for body in bodies:
            signature = sign(SIGNING_KEY.encode(), body, int(time.time()))
            answer = client.post(
                process.url, content=body, headers={"ZITADEL-Signature": signature}
            )
            assert answer.status_code == 200
        forged = sign(b"not-the-key", bodies[0], int(time.time()))
        refused = client.post(process.url, content=bodies[0], headers={"ZITADEL-Signature": forged})
        assert refused.status_code == 401
        assert client.get(process.url).status_code == 405
        huge = b"{" + b" " * 9000 + b"}"
        assert client.post(process.url, content=huge).status_code == 413

    records = read_all(broker.bootstrap_servers, topic)
    assert sorted(record.value for record in records) == sorted(bodies)
    assert {record.key for record in records} == {b"1001"}
    for record in records:  # ZITADEL's signature travels with the body, for the daemon to check
        [(name, signature)] = record.headers
        assert name == ZITADEL_SIGNATURE_HEADER
        verify(signature.decode(), record.value, SIGNING_KEY.encode(), now=0, tolerance=math.inf)
    assert process.requests_by_result() == {
        "accepted": 5,
        "bad_signature": 1,
        "stale": 0,
        "too_large": 1,
        "malformed": 0,
        "wrong_method": 1,
        "unavailable": 0,
        "too_slow": 0,
        "error": 0,
    }

    for name in list(os.environ):
        if name.startswith("LOCKOUTD_"):
            monkeypatch.delenv(name)
    assert main(["replay", "--topic", topic, "-c", str(config)]) == 0
    [decision] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (decision["rule"], decision["user_id"], decision["org_id"]) == (
        "password-bruteforce",
        "1001",
        "300",
    )

    assert process.stop() == 0
    log = process.log.read_text(encoding="utf-8")
    assert SIGNING_KEY not in log
    assert "Mozilla/5.0" not in log
    events = [json.loads(line)["event"] for line in log.splitlines() if line.startswith("{")]
    assert events[0] == "ingest_started"
    assert events[-1] == "ingest_stopped"


@pytest.mark.parametrize(
    "timestamp", ["\N{SUPERSCRIPT TWO}", "9" * 5000], ids=["superscript-two", "5000-digits"]
)
def test_a_malformed_signature_time_is_refused_and_counted(
    ingest: tuple[IngestProcess, Path, str], timestamp: str
) -> None:
    """``t`` that is not a plain number of seconds is a bad signature: 401, counted, not 500."""
    process, _, _ = ingest
    body = zitadel_failure(1)
    header = f"t={timestamp},v1={'0' * 64}".encode()
    with httpx.Client(timeout=10) as client:
        answer = client.post(process.url, content=body, headers={"ZITADEL-Signature": header})
    assert answer.status_code == 401
    assert answer.json()["result"] == "bad_signature"
    assert process.requests_by_result()["bad_signature"] == 1


SLOW_CLIENTS = 1100
"""More connections than the usual limit of 1,024 open files allows a process."""


def _allow_open_files(needed: int) -> None:
    """This test process holds every slow connection: raise its soft limit when it is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"this test needs {needed} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_a_thousand_slow_clients_do_not_keep_a_signed_request_out(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """Slowloris: 1,100 connections that never finish their headers, against a process allowed
    1,024 open files. A signed request is still accepted, and the server (not the clients, who
    would hold on for 90 seconds) closes every slow connection."""
    _allow_open_files(SLOW_CLIENTS + 512)
    running = run_ingest(broker, tmp_path, fd_limit=1024)
    process, _, topic = next(running)
    try:
        with SlowClients(process.port, count=SLOW_CLIENTS, give_up_after=90) as slow:
            wait_until(
                lambda: slow.attempted == SLOW_CLIENTS, timeout=60, what="every slow connection"
            )
            body = zitadel_failure(7)
            signature = sign(SIGNING_KEY.encode(), body, int(time.time()))
            with httpx.Client(timeout=10) as client:
                answer = client.post(
                    process.url, content=body, headers={"ZITADEL-Signature": signature}
                )
            assert answer.status_code == 200
            assert (
                process.metric("lockoutd_ingest_connections") <= Settings().ingest.max_connections
            )
            wait_until(
                lambda: slow.finished == slow.connected,
                timeout=60,
                what="the server to close every slow connection",
            )
        assert slow.outcomes["gave_up"] == 0
        assert slow.outcomes["closed_by_server"] == slow.connected
        assert process.metric("lockoutd_ingest_connections_closed_total") >= slow.connected
        assert [record.value for record in read_all(broker.bootstrap_servers, topic)] == [body]
    finally:
        running.close()


def test_a_connection_cap_the_open_files_limit_cannot_hold_stops_the_start(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """512 connections and their reserve need 768 open files; with 512 allowed, ingest says so."""
    process, _, _ = launch_ingest(broker, tmp_path, fd_limit=512)
    assert process.process.wait(timeout=60) == EXIT_FAILED
    lines = [json.loads(line) for line in process.log.read_text().splitlines()]
    [failed] = [line for line in lines if line["event"] == "ingest_failed"]
    assert failed["problems"] == [
        "ingest.max_connections: 512 connections need 768 open files, and this process may open "
        "512: lower ingest.max_connections or raise the limit (LimitNOFILE= in a systemd unit, "
        "ulimit -n in a shell)"
    ]
