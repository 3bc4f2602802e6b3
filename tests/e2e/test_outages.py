"""What an operator sees during an outage (README, "Operations"): ``/readyz`` blames the part
that is down and only that part, and the log says once that fetching paused, how many decisions
wait, and once that it resumed, with one retry line per action naming its rule and user."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lockoutd.testing.broker import LocalBroker
from lockoutd.testing.proxy import CuttableProxy
from lockoutd.testing.zitadel_emulator import Fault, UserState

from .conftest import ORG_ID, Stack, start_stack, stop_stack
from .kafka_helpers import failure, produce, wait_until

pytestmark = pytest.mark.e2e

# Longer than the time a partition may go without a fetch answer before Kafka counts as silent.
SILENCE_SECONDS = 20.0


def readiness(stack: Stack) -> dict[str, bool]:
    checks: dict[str, bool] = httpx.get(f"{stack.daemon.url}/readyz", timeout=5).json()["checks"]
    return checks


def events(stack: Stack, name: str) -> list[dict[str, Any]]:
    return [line for line in stack.daemon.logs() if line.get("event") == name]


@pytest.fixture
def own_stack(broker: LocalBroker, tmp_path: Path) -> Iterator[Stack]:
    # Two tries a call: the lock gives up on ZITADEL (and says so) within seconds, not a minute.
    stack = start_stack(broker, tmp_path, extra={"zitadel": {"retry_attempts": 2}})
    yield stack
    stop_stack(stack)


def test_a_zitadel_outage_blames_zitadel_and_says_what_waits(own_stack: Stack) -> None:
    stack = own_stack
    stack.emulator.add_user("4100", org_id=ORG_ID)
    stack.emulator.set_fault(Fault.drop_connection())  # ZITADEL is gone, Kafka is fine
    produce(
        stack.bootstrap, stack.events_topic, [failure("4100", m, org_id=ORG_ID) for m in range(5)]
    )

    wait_until(lambda: readiness(stack) == {"kafka": True, "zitadel": False}, what="zitadel false")
    # Fetching stays paused while the lock waits; that must not make Kafka look down.
    watched_until = time.monotonic() + SILENCE_SECONDS
    while time.monotonic() < watched_until:
        assert readiness(stack) == {"kafka": True, "zitadel": False}
        time.sleep(1)

    stack.emulator.clear_faults()
    wait_until(lambda: stack.emulator.state_of("4100") is UserState.LOCKED, what="the lock")
    wait_until(lambda: events(stack, "fetching_resumed"), what="fetching_resumed")
    wait_until(lambda: readiness(stack) == {"kafka": True, "zitadel": True}, what="ready again")

    paused = events(stack, "fetching_paused")
    assert len(paused) == 1
    assert paused[0]["waiting_decisions"] == 1
    assert "ZITADEL" in paused[0]["reason"]
    assert len(events(stack, "fetching_resumed")) == 1
    retries = events(stack, "lock_retrying")
    assert retries, "each retry of the lock is logged"
    for line in retries:
        assert line["rule"] == "password-bruteforce"
        assert line["user_id"] == "4100"
        assert line["attempt"] >= 2
    lines = stack.daemon.logs()
    assert not [line for line in lines if "callable" in line]  # no second library's retry line
    assert not events(stack, "zitadel_retrying")  # the client's own retries are debug detail


def test_a_kafka_outage_blames_kafka_and_no_library_cries_error(
    cuttable_stack: tuple[Stack, CuttableProxy],
) -> None:
    stack, proxy = cuttable_stack
    proxy.cut()
    wait_until(
        lambda: readiness(stack) == {"kafka": False, "zitadel": True},
        what="kafka false, zitadel true",
    )
    time.sleep(3)  # let the client libraries log what they log about the cut
    proxy.restore()
    stack.daemon.wait_ready()
    errors = [
        line
        for line in stack.daemon.logs()
        if line.get("level") == "error" and str(line.get("logger", "")).startswith("aiokafka")
    ]
    assert errors == []
    # lockoutd's own account of it: one line when Kafka went, one when it came back.
    wait_until(lambda: events(stack, "kafka_ready"), what="kafka_ready")
    assert len(events(stack, "kafka_not_ready")) == 1
    assert len(events(stack, "kafka_ready")) == 1
