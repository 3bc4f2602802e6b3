"""The metrics of ``lockoutd ingest`` (a process of its own, so a registry of its own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from lockoutd import __version__

RESULTS = (
    "accepted",
    "bad_signature",
    "stale",
    "too_large",
    "malformed",
    "wrong_method",
    "unavailable",
    "too_slow",
    "error",
)
"""What became of a request: published, or why it was refused (``unavailable``: Kafka was;
``too_slow``: the body did not arrive in time; ``error``: a fault of lockoutd's own)."""

CLOSE_REASONS = ("header_timeout", "idle", "evicted", "refused")
"""Why the endpoint closed a connection itself: no complete request head in time, idle for too
long between requests, closed to make room for a new connection, or no room at all."""


class IngestMetrics:
    """The requests by result, the connections open and closed, and the build info."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "lockoutd_ingest_requests",
            "Requests to the ZITADEL ingest endpoint, by what became of them.",
            ["result"],
            registry=self.registry,
        )
        self.connections = Gauge(
            "lockoutd_ingest_connections",
            "Connections open to the ZITADEL ingest endpoint.",
            registry=self.registry,
        )
        self.connections_closed = Counter(
            "lockoutd_ingest_connections_closed",
            "Connections the ingest endpoint closed itself, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.build_info = Gauge(
            "lockoutd_build_info",
            "Always 1; the labels say which build runs.",
            ["version"],
            registry=self.registry,
        )
        self.build_info.labels(version=__version__).set(1)
        for result in RESULTS:
            self.requests.labels(result=result)
        for reason in CLOSE_REASONS:
            self.connections_closed.labels(reason=reason)

    def count(self, result: str) -> None:
        self.requests.labels(result=result).inc()
