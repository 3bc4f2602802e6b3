"""The token and the schedule signing key never reach the output, at any log level (README,
"Operations").

A lock at ``log.level: debug``, over HTTPS with HTTP/2 as ZITADEL serves it. HTTP/2 compresses
headers with HPACK, whose library logs the encoded header blocks at debug level; decoded, such a
block gives back ``Bearer <token>``. Every line the daemon writes (standard output and standard
error) is searched for the token in the clear, in base64 and Huffman-coded as HPACK sends it, and
for the schedule signing key, which signs the entry of the temporary lock the test also makes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

from lockoutd.testing.broker import LocalBroker
from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, PAT, start_stack, stop_stack
from .h2_front import H2Front
from .kafka_helpers import failure, produce, wait_until

pytestmark = pytest.mark.e2e

THIRD_PARTY = ("hpack", "h2", "httpcore", "httpx", "aiokafka", "aiohttp", "asyncio")


def token_forms(token: str) -> list[str]:
    """How the token could show in a log line: as is, in base64, or Huffman-coded by HPACK."""
    forms = [token, base64.b64encode(token.encode()).decode()]
    for value in (token.encode(), f"Bearer {token}".encode()):
        coded = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(value)
        forms += [repr(coded)[2:-1], coded.hex(), base64.b64encode(value).decode()]
    return forms


def strings(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON line, keys and values, at any depth."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_locks_at_debug_level_over_http2_log_no_trace_of_the_token_or_the_schedule_key(
    broker: LocalBroker, tmp_path: Path
) -> None:
    fronts: list[H2Front] = []

    def through_http2(emulator_url: str) -> str:
        fronts.append(H2Front(emulator_url, tmp_path).__enter__())
        return fronts[0].url

    stack = start_stack(
        broker,
        tmp_path,
        front=through_http2,
        extra={
            "log": {"level": "debug"},
            "zitadel": {"ca_file": str(tmp_path / "ca.pem")},
        },
    )
    try:
        stack.emulator.add_user("6001", org_id=ORG_ID)
        stack.emulator.add_user("6002", org_id=ORG_ID)
        produce(
            stack.bootstrap,
            stack.events_topic,
            [failure("6001", m, org_id=ORG_ID) for m in range(5)]
            # The shipped otp-bruteforce rule locks temporarily: its schedule entry is signed.
            + [failure("6002", m, reason="otp", org_id=ORG_ID) for m in range(3)],
        )
        for user in ("6001", "6002"):
            wait_until(
                lambda user=user: stack.emulator.state_of(user) is UserState.LOCKED,
                what=f"the lock of {user}",
            )
        assert stack.daemon.terminate() == 0
    finally:
        stop_stack(stack)
        for front in fronts:
            front.__exit__(None, None, None)

    assert "2" in fronts[0].http_versions  # the lock went over HTTP/2
    output = stack.daemon.output()
    key_file = stack.config.schedule_signing_key_file
    assert key_file is not None
    schedule_key = key_file.read_text().strip()
    forms = [*token_forms(PAT), schedule_key, base64.b64encode(schedule_key.encode()).decode()]
    lines = output.splitlines()
    shown: list[str] = []
    third_party: list[str] = []
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = line  # not a structured line: searched as it is
        texts = list(strings(entry))
        shown += [f"line {number}: {line}" for form in forms if any(form in t for t in texts)]
        if (
            isinstance(entry, dict)
            and str(entry.get("logger", "")).split(".")[0] in THIRD_PARTY
            and entry.get("level") not in ("warning", "error", "critical")
        ):
            third_party.append(line)
    assert shown == [], f"a secret shows in {len(shown)} lines"
    assert third_party == [], "libraries may log only warnings and errors"
