"""``GET /metrics``: the gateway process's own series, in Prometheus' text format.

Requests, their latency and what the client and hosts count go through Ray's metrics export
(`counters/metrics.py`), which Prometheus scrapes from each node; this page holds only what Ray
does not export for the gateway's process, so that no series is scraped twice: its CPU, memory,
open files and garbage collections (prometheus_client's standard collectors), requests in
progress and /watch streams open now.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "ProcessMetrics"]


class ProcessMetrics:
    """A registry of one gateway's series; gauges read the gateway when scraped, so serving
    requests costs nothing for them."""

    def __init__(self, in_progress: Callable[[], int], streams: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Gauge(
            "counters_gateway_requests_in_progress",
            "HTTP requests this gateway is answering now (open /watch streams included)",
            registry=self.registry,
        ).set_function(in_progress)
        Gauge(
            "counters_gateway_watch_streams",
            "live-update streams (GET /watch) this gateway serves now",
            registry=self.registry,
        ).set_function(streams)

    def text(self) -> bytes:
        return generate_latest(self.registry)
