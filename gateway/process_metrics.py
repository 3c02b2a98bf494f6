"""``GET /metrics``: the gateway process's own series, in Prometheus' text format.

Requests and what the client and hosts count go through Ray's metrics export
(`counters/metrics.py`), which Prometheus scrapes from each node; this page holds what Ray does
not export for the gateway's process, so that no series is scraped twice: its CPU, memory, open
files and garbage collections (prometheus_client's standard collectors), requests in progress
and /watch streams open now. And request latency: a histogram observed once per request costs
about a microsecond here, where Ray's agent replays each observation in Python (`metrics.py`).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from counters.metrics import LATENCY_BOUNDARIES

__all__ = ["CONTENT_TYPE_LATEST", "ProcessMetrics"]


class ProcessMetrics:
    """A registry of one gateway's series; gauges read the gateway when scraped, so serving
    requests costs nothing for them, and each request adds its latency (`observe`)."""

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
        self._latency = Histogram(
            "counters_http_request_duration_seconds",
            "seconds from a request's arrival to its answer (a /watch stream: its life)",
            ["route"],
            buckets=LATENCY_BOUNDARIES,
            registry=self.registry,
        )
        self._latency_by_route: dict[str, Histogram] = {}  # a route's child, looked up once

    def observe(self, route: str, seconds: float) -> None:
        """A request to `route` (one the gateway serves, or ``other``) took `seconds`."""
        child = self._latency_by_route.get(route)
        if child is None:
            child = self._latency_by_route[route] = self._latency.labels(route)
        child.observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
