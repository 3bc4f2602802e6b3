"""The ``lockoutd ingest`` process: the endpoint, a Kafka producer and the operations server."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack

import stamina
import structlog

from lockoutd.connections import ensure_open_files
from lockoutd.errors import KafkaUnavailable
from lockoutd.ingest.metrics import IngestMetrics
from lockoutd.ingest.server import IngestServer
from lockoutd.report.http import OperationsServer
from lockoutd.secrets import ingest_signing_key
from lockoutd.settings import Settings
from lockoutd.source.kafka import KafkaSink

log = structlog.get_logger(__name__)

# Like the daemon: Kafka start-up is retried this long before the process gives up and exits
# non-zero, leaving the restart to its supervisor.
_KAFKA_RETRY_SECONDS = 120.0


class IngestService:
    """Runs until :meth:`request_stop` (SIGTERM, SIGINT); raises on what the supervisor must see."""

    def __init__(self, settings: Settings, *, metrics: IngestMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or IngestMetrics()
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("shutdown_requested")
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        settings = self.settings
        # A ConfigError here stops before anything listens.
        key = ingest_signing_key(settings.ingest)
        ensure_open_files(settings.ingest.max_connections, "ingest.max_connections")
        async with AsyncExitStack() as stack:
            sink: KafkaSink | None = None
            server: IngestServer | None = None

            def readiness() -> dict[str, bool]:
                return {"kafka": sink is not None and server is not None and server.publishing}

            await stack.enter_async_context(
                OperationsServer(
                    settings.metrics.host,
                    settings.metrics.port,
                    registry=self.metrics.registry,
                    readiness=readiness,
                )
            )
            async for attempt in stamina.retry_context(
                on=KafkaUnavailable, attempts=None, timeout=_KAFKA_RETRY_SECONDS, wait_max=10.0
            ):
                with attempt:
                    try:
                        sink = await stack.enter_async_context(KafkaSink(settings.kafka))
                    except KafkaUnavailable as exc:
                        log.warning("kafka_unavailable", attempt=attempt.num, error=str(exc))
                        raise
            assert sink is not None  # stamina raises when it gives up
            # Entered last, left first: requests in flight finish while the producer still runs.
            server = await stack.enter_async_context(
                IngestServer(settings.ingest, signing_key=key, publisher=sink, metrics=self.metrics)
            )
            log.info(
                "ingest_started",
                listen=settings.ingest.listen,
                path=settings.ingest.path,
                topic=settings.ingest.topic,
                metrics_listen=settings.metrics.listen,
            )
            await self._stop.wait()
        log.info(
            "ingest_stopped",
            requests={
                sample.labels["result"]: sample.value
                for metric in self.metrics.requests.collect()
                for sample in metric.samples
                if sample.name.endswith("_total") and sample.value
            },
        )
