"""The ingest endpoint over loopback HTTP, publishing to an in-memory Kafka stand-in."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr

from lockoutd.errors import KafkaUnavailable
from lockoutd.ingest.metrics import IngestMetrics
from lockoutd.ingest.server import IngestServer
from lockoutd.ingest.signature import sign
from lockoutd.settings import IngestSettings
from lockoutd.source.kafka import OutgoingRecord

KEY = "signing-key-that-must-never-show"
SECRET_MARKER = "body-marker-that-must-never-show"


def body(**fields: Any) -> bytes:
    """A ZITADEL Actions v2 body of a failed password check."""
    document = {
        "aggregateID": "1001",
        "aggregateType": "user",
        "resourceOwner": "300",
        "instanceID": "1",
        "version": "v2",
        "sequence": 12,
        "event_type": "user.human.password.check.failed",
        "created_at": "2026-11-29T10:00:00.123456Z",
        "event_payload": {"userAgent": SECRET_MARKER, "remoteIP": "203.0.113.7"},
        **fields,
    }
    return json.dumps(document).encode()


def signed(payload: bytes, *, at: float | None = None, key: str = KEY) -> dict[str, str]:
    return {"ZITADEL-Signature": sign(key.encode(), payload, int(at or time.time()))}


class FakeKafka:
    """Keeps what is published; ``down`` makes it fail like an unreachable broker."""

    def __init__(self) -> None:
        self.records: list[OutgoingRecord] = []
        self.down = False

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        if self.down:
            raise KafkaUnavailable("publishing to Kafka failed: no broker")
        self.records.extend(records)


class Endpoint:
    def __init__(self, server: IngestServer, kafka: FakeKafka, metrics: IngestMetrics) -> None:
        self.server = server
        self.kafka = kafka
        self.metrics = metrics
        self.url = f"http://127.0.0.1:{server.port}/zitadel/events"

    def count(self, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "lockoutd_ingest_requests_total", {"result": result}
        )
        return value or 0.0


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    """The endpoint on a free loopback port, 4 KiB bodies at most, 300 s tolerance."""
    settings = IngestSettings(listen="127.0.0.1:0", topic="zitadel.events", max_body_bytes=4096)
    kafka, metrics = FakeKafka(), IngestMetrics()
    server = IngestServer(settings, signing_key=SecretStr(KEY), publisher=kafka, metrics=metrics)
    async with server:
        yield Endpoint(server, kafka, metrics)


async def test_a_signed_event_is_published_unchanged_keyed_by_the_user(
    endpoint: Endpoint,
) -> None:
    """A correctly signed body answers 200 and goes to the topic byte for byte, keyed by user."""
    payload = body()
    async with httpx.AsyncClient() as client:
        answer = await client.post(endpoint.url, content=payload, headers=signed(payload))
    assert answer.status_code == 200
    [record] = endpoint.kafka.records
    assert (record.topic, record.key, record.value) == ("zitadel.events", b"1001", payload)
    assert endpoint.count("accepted") == 1


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 1024):
        yield data[start : start + 1024]


@pytest.mark.parametrize(
    ("request_", "status", "result"),
    [
        ({"method": "GET"}, 405, "wrong_method"),
        ({"method": "PUT", "signed": body()}, 405, "wrong_method"),
        ({"content": body(padding="x" * 5000)}, 413, "too_large"),
        ({"stream": body(padding="x" * 5000)}, 413, "too_large"),
        ({"content": body()}, 401, "bad_signature"),
        ({"content": body(), "headers": signed(body(), key="another-key")}, 401, "bad_signature"),
        ({"content": body(), "headers": signed(body(aggregateID="2"))}, 401, "bad_signature"),
        ({"content": body(), "headers": signed(body(), at=time.time() - 301)}, 401, "stale"),
        (
            {
                "content": body(),
                "headers": {"ZITADEL-Signature": "t=\N{SUPERSCRIPT TWO},v1=00".encode()},
            },
            401,
            "bad_signature",
        ),
        ({"signed": b"{not json"}, 400, "malformed"),
        ({"signed": b"[1, 2]"}, 400, "malformed"),
        ({"signed": body(aggregateID=None)}, 400, "malformed"),
    ],
    ids=[
        "get",
        "put",
        "oversize",
        "oversize-chunked",
        "unsigned",
        "other-key",
        "other-body",
        "stale",
        "t-not-a-number",
        "not-json",
        "not-an-object",
        "no-aggregate-id",
    ],
)
async def test_a_refused_request_gets_its_status_and_is_counted(
    endpoint: Endpoint, request_: dict[str, Any], status: int, result: str
) -> None:
    """Wrong method 405, oversize 413, bad or stale signature 401, malformed 400; none published."""
    method = request_.get("method", "POST")
    headers = request_.get("headers", {})
    content: bytes | AsyncIterator[bytes] | None = request_.get("content")
    if "signed" in request_:
        content = request_["signed"]
        headers = signed(request_["signed"])
    if "stream" in request_:
        content = _chunks(request_["stream"])  # no Content-Length: the size shows while reading
        headers = signed(request_["stream"])
    async with httpx.AsyncClient() as client:
        answer = await client.request(method, endpoint.url, content=content, headers=headers)
    assert answer.status_code == status
    assert answer.json()["result"] == result
    assert endpoint.kafka.records == []
    assert endpoint.count(result) == 1
    if status == 405:
        assert answer.headers["Allow"] == "POST"


async def test_an_unreachable_broker_answers_503_and_marks_the_endpoint_not_ready(
    endpoint: Endpoint,
) -> None:
    """Kafka failing is a 503, counted as ``unavailable``, until a publish succeeds again."""
    payload = body()
    endpoint.kafka.down = True
    async with httpx.AsyncClient() as client:
        failed = await client.post(endpoint.url, content=payload, headers=signed(payload))
        assert (failed.status_code, endpoint.server.publishing) == (503, False)
        endpoint.kafka.down = False
        recovered = await client.post(endpoint.url, content=payload, headers=signed(payload))
    assert (recovered.status_code, endpoint.server.publishing) == (200, True)
    assert (endpoint.count("unavailable"), endpoint.count("accepted")) == (1, 1)


async def test_neither_the_body_nor_the_key_is_ever_logged(endpoint: Endpoint) -> None:
    """Accepted and refused requests log their result only: no body, no signature, no key."""
    payload = body()
    with structlog.testing.capture_logs() as logs:
        async with httpx.AsyncClient() as client:
            await client.post(endpoint.url, content=payload, headers=signed(payload))
            await client.post(endpoint.url, content=payload, headers=signed(payload, key="k"))
            await client.post(endpoint.url, content=b"{" + SECRET_MARKER.encode())
            bad_json = SECRET_MARKER.encode()
            await client.post(endpoint.url, content=bad_json, headers=signed(bad_json))
    assert [
        entry.get("result") for entry in logs if entry["event"] != "ingest_event_published"
    ] == [
        "bad_signature",
        "bad_signature",
        "malformed",
    ]
    text = repr(logs)
    for secret in (KEY, SECRET_MARKER, signed(payload)["ZITADEL-Signature"].split("v1=")[1]):
        assert secret not in text
