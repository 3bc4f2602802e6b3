"""Sending events from a shell, to play with rules against a broker (the demo stack's, say).

::

    echo '{"type": "auth.login.failed", "user_id": "259242039378444301", "reason": "password"}' \\
        | python -m lockoutd.testing.produce -c lockoutd.yaml

Reads one JSON object a line from standard input and sends each to the first topic of
``kafka.topics`` (or ``--topic``) of the configuration, keyed by ``user_id`` (else
``login_name``) as producers should. An event without ``occurred_at`` gets the current time,
so that a line typed by hand is fresh. Lines that are not JSON objects are reported and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from aiokafka import AIOKafkaProducer

from lockoutd.settings import load_settings
from lockoutd.source.kafka import connection_options


async def produce(
    topic: str, records: Iterable[tuple[bytes, bytes]], **client_options: object
) -> None:
    """Send ``(key, value)`` records to ``topic`` in order, each confirmed before the next;
    ``client_options`` are aiokafka's (``bootstrap_servers``, TLS, SASL)."""
    producer = AIOKafkaProducer(enable_idempotence=False, **client_options)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def records_from(lines: TextIO, errors: TextIO) -> list[tuple[bytes, bytes]]:
    """The records for the JSON lines of ``lines``; each line that is not an object is
    reported on ``errors`` as ``line N: ...`` and skipped."""
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as exc:
            print(f"line {number}: not JSON ({exc}); skipped", file=errors)
            continue
        if not isinstance(event, dict):
            print(f"line {number}: not a JSON object; skipped", file=errors)
            continue
        event.setdefault("occurred_at", datetime.now(UTC).isoformat().replace("+00:00", "Z"))
        key = str(event.get("user_id") or event.get("login_name") or "")
        records.append((key.encode(), json.dumps(event).encode()))
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lockoutd.testing.produce",
        description="Send JSON-lines events from standard input to lockoutd's events topic.",
    )
    parser.add_argument("-c", "--config", type=Path, required=True, help="lockoutd's config")
    parser.add_argument("--topic", help="another topic than the first of kafka.topics")
    args = parser.parse_args(argv)
    kafka = load_settings(args.config).kafka
    topic = args.topic or kafka.topics[0]
    records = records_from(sys.stdin, sys.stderr)
    asyncio.run(produce(topic, records, **connection_options(kafka)))
    print(f"sent {len(records)} event(s) to {topic}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
