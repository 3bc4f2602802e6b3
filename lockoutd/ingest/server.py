"""The ingest endpoint: verify a ZITADEL Actions v2 request, publish its body to Kafka.

::

    request                                   answer   result (metric label)
    not POST                                  405      wrong_method
    body over ingest.max_body_bytes           413      too_large
    no, malformed or wrong signature          401      bad_signature
    right signature, timestamp out of range   401      stale
    body not received within body_timeout     408      too_slow
    not a JSON object with an aggregateID     400      malformed
    Kafka did not confirm in time             503      unavailable
    a fault of lockoutd's own                 500      error
    published                                 200      accepted

The body and the key never reach a log line; refusals are logged with their result only.
ZITADEL does not retry a failed delivery, so a 503 loses that event (counted, and logged).
Connections are bounded in number and time by :mod:`lockoutd.connections`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec
import structlog
from aiohttp import web
from pydantic import SecretStr

from lockoutd.connections import ConnectionGuard
from lockoutd.decode.signed import ZITADEL_SIGNATURE_HEADER
from lockoutd.errors import KafkaUnavailable
from lockoutd.ingest.metrics import IngestMetrics
from lockoutd.ingest.signature import SIGNATURE_HEADER, SignatureRefused, verify
from lockoutd.settings import IngestSettings
from lockoutd.source.kafka import OutgoingRecord
from lockoutd.webserver import WebServer

log = structlog.get_logger(__name__)

# ZITADEL waits for the target's answer (a target's timeout is typically a few seconds); Kafka
# must confirm within this or the request is answered 503.
PUBLISH_TIMEOUT_SECONDS = 10.0

# After an answer sent before the body was read (413, 405, 408), aiohttp reads and drops the
# rest of the body for this long, so that a client still sending can read the answer; a slow
# client must not hold the connection for aiohttp's default of ten seconds more.
LINGERING_SECONDS = 2.0

_decode_json = msgspec.json.Decoder().decode


class Publisher(Protocol):
    """Where verified bodies go; :class:`lockoutd.source.kafka.KafkaSink` in production."""

    async def publish(self, records: Sequence[OutgoingRecord]) -> None: ...


class IngestServer(WebServer):
    """Serves ``settings.path`` on ``settings.listen`` for as long as it is entered."""

    def __init__(
        self,
        settings: IngestSettings,
        *,
        signing_key: SecretStr,
        publisher: Publisher,
        metrics: IngestMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._key = signing_key
        self._publisher = publisher
        self._metrics = metrics
        self._clock = clock
        self.publishing = True
        """False after Kafka failed to confirm a record, until it confirms one again."""
        self.connections = ConnectionGuard(
            max_connections=settings.max_connections,
            header_timeout=settings.header_timeout,
            keepalive_timeout=settings.keepalive_timeout,
            metrics=metrics,
        )
        # aiohttp refuses a longer body itself (with 413) when the handler reads it.
        app = web.Application(client_max_size=settings.max_body_bytes)
        app.router.add_route("*", settings.path, self._receive)
        super().__init__(
            app,
            settings.host,
            settings.port,
            # aiohttp's own idle timer, the same as the guard's: a second line of defence.
            handler_args={
                "keepalive_timeout": settings.keepalive_timeout,
                "lingering_time": LINGERING_SECONDS,
            },
            guard=self.connections,
        )

    async def _receive(self, request: web.Request) -> web.Response:
        try:
            return await self._answer_request(request)
        except Exception:
            # Every request is answered and counted, whatever went wrong; the traceback carries
            # no local variables (see lockoutd.report.logging), so neither body nor key.
            log.exception("ingest_request_failed", method=request.method, remote=request.remote)
            return self._answer("error", 500, "the request could not be handled")

    async def _answer_request(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return self._refuse(request, "wrong_method", 405, "only POST", {"Allow": "POST"})
        limit = self._settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._refuse(request, "too_large", 413, f"the body exceeds {limit} bytes")
        try:
            async with asyncio.timeout(self._settings.body_timeout):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(request, "too_large", 413, f"the body exceeds {limit} bytes")
        except TimeoutError:
            seconds = self._settings.body_timeout
            response = self._refuse(
                request, "too_slow", 408, f"the body did not arrive within {seconds:g}s"
            )
            response.force_close()
            return response
        signature = request.headers.get(SIGNATURE_HEADER)
        try:
            verify(
                signature,
                body,
                self._key.get_secret_value().encode(),
                now=self._clock(),
                tolerance=self._settings.tolerance,
            )
        except SignatureRefused as refused:
            return self._refuse(request, refused.refusal.value, 401, str(refused))
        user_id = _aggregate_id(body)
        if user_id is None:
            return self._refuse(
                request, "malformed", 400, "expected a JSON object with an aggregateID string"
            )
        # The signature goes with the body, so that a daemon can tell ZITADEL's events from
        # records anyone else wrote to the topic (kafka.require_zitadel_signature).
        assert signature is not None  # verified above
        record = OutgoingRecord(
            self._settings.topic,
            body,
            key=user_id.encode(),
            headers=[(ZITADEL_SIGNATURE_HEADER, signature.encode("ascii", "replace"))],
        )
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                await self._publisher.publish([record])
        except (KafkaUnavailable, TimeoutError) as exc:
            self.publishing = False
            log.error(
                "ingest_publish_failed",
                topic=self._settings.topic,
                error=str(exc) or "no confirmation in time",
            )
            return self._answer("unavailable", 503, "Kafka did not confirm the event")
        self.publishing = True
        log.debug("ingest_event_published", topic=self._settings.topic)
        return self._answer("accepted", 200, "published")

    def _refuse(
        self,
        request: web.Request,
        result: str,
        status: int,
        reason: str,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        log.warning(
            "ingest_request_refused",
            result=result,
            status=status,
            reason=reason,
            method=request.method,
            remote=request.remote,
        )
        return self._answer(result, status, reason, headers)

    def _answer(
        self, result: str, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        self._metrics.count(result)
        return web.json_response(
            {"result": result, "message": message}, status=status, headers=headers
        )


def _aggregate_id(body: bytes) -> str | None:
    try:
        document: Any = _decode_json(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(document, dict):
        return None
    user_id = document.get("aggregateID")
    return user_id if isinstance(user_id, str) and user_id else None
