"""``lockoutd replay --topic``: a stretch of a real topic, chosen by record time or by offset."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from lockoutd.cli import main
from lockoutd.testing.broker import LocalBroker

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def stamp(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def failure(user_id: str, minutes: float) -> dict[str, object]:
    """A wrong password for ``user_id``, ``minutes`` after :data:`T0`."""
    return {
        "type": "auth.login.failed",
        "occurred_at": stamp(minutes),
        "user_id": user_id,
        "reason": "password",
    }


def produce_stamped(
    bootstrap: str, topic: str, records: Sequence[tuple[float, dict[str, object]]]
) -> None:
    """Send each event with the Kafka timestamp ``T0 + minutes``, keyed by its user."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for minutes, event in records:
                at_ms = int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)
                await producer.send_and_wait(
                    topic,
                    json.dumps(event).encode(),
                    key=str(event["user_id"]).encode(),
                    timestamp_ms=at_ms,
                )
        finally:
            await producer.stop()

    asyncio.run(send())


@pytest.fixture
def topic(broker: LocalBroker, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh three-partition topic, and an environment that points replay at the broker."""
    name = f"replay-{uuid.uuid4().hex[:8]}"
    asyncio.run(broker.create_topics(name, partitions=3))
    for variable in list(os.environ):
        if variable.startswith("LOCKOUTD_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("LOCKOUTD_KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    monkeypatch.setenv("LOCKOUTD_ENGINE__RULE_PATHS", str(REPO / "rules"))
    return name


def replay(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, str]]:
    config = tmp_path / "lockoutd.yaml"
    config.write_text("{}\n", encoding="utf-8")
    assert main(["replay", "-c", str(config), *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_from_and_to_times_select_records_by_their_kafka_timestamp(
    broker: LocalBroker, topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only records stamped in ``[--from, --to)`` are replayed, merged from every partition."""
    attack = [(m, failure(user, m)) for m in range(5) for user in ("2001", "2002", "2003")]
    later = [(60 + m, failure("2004", 60 + m)) for m in range(5)]
    produce_stamped(broker.bootstrap_servers, topic, attack + later)

    everything = replay(tmp_path, capsys, "--topic", topic)
    assert sorted(d["user_id"] for d in everything) == ["2001", "2002", "2003", "2004"]

    first_hour = replay(tmp_path, capsys, "--topic", topic, "--from", stamp(0), "--to", stamp(30))
    assert sorted(d["user_id"] for d in first_hour) == ["2001", "2002", "2003"]

    # From minute 1 on, the first attack has four failures left: under the threshold of five.
    after_the_start = replay(tmp_path, capsys, "--topic", topic, "--from", stamp(1))
    assert [d["user_id"] for d in after_the_start] == ["2004"]


def test_from_and_to_offsets_bound_every_partition(
    broker: LocalBroker, topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--from 1 --to 6`` replays offsets 1 to 5 of each partition."""
    produce_stamped(broker.bootstrap_servers, topic, [(m, failure("3001", m)) for m in range(7)])
    assert replay(tmp_path, capsys, "--topic", topic, "--from", "3", "--to", "7") == []
    [decision] = replay(tmp_path, capsys, "--topic", topic, "--from", "1", "--to", "6")
    assert (decision["user_id"], decision["first_event_at"]) == ("3001", "2026-11-29T09:01:00.000Z")


def test_a_topic_that_does_not_exist_is_an_error(
    topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replaying a topic that is not there exits 1 and says so."""
    config = tmp_path / "lockoutd.yaml"
    config.write_text("{}\n", encoding="utf-8")
    assert main(["replay", "-c", str(config), "--topic", f"{topic}-missing"]) == 1
    assert f"topic {topic}-missing does not exist" in capsys.readouterr().err
