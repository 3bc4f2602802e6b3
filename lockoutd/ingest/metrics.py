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
)
"""What became of a request: published, or why it was refused (``unavailable``: Kafka was)."""


class IngestMetrics:
    """``lockoutd_ingest_requests_total{result}`` and the build info, on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "lockoutd_ingest_requests",
            "Requests to the ZITADEL ingest endpoint, by what became of them.",
            ["result"],
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

    def count(self, result: str) -> None:
        self.requests.labels(result=result).inc()
