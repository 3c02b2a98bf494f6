"""What the service counts, recorded with `ray.util.metrics`.

Ray exports every process's series through each node's metrics agent, in Prometheus' text
format, with ``ray_`` before the name (``ray_counters_http_requests_total``, as Ray Serve's are
``ray_serve_*``) and Ray's own labels (node, worker, session); Prometheus scrapes them from
there and Grafana and the Ray dashboard's Metrics tab draw them (`docs/metrics.md`).

The series, made on first use in each process (a gateway, a client, a host):

- gateway: requests by route, method and status (their latency is on the gateway's own page,
  `gateway/process_metrics.py`, for the reason below);
- client (a gateway or a Python program): operations waiting per host, refused because too
  many waited (Overloaded), and resent after a host was lost;
- host: operations, operations per batch, commit latency, hosts fenced, objects in memory, objects
  passivated (dropped from memory, or with their per-name actor).

Ray's histograms count each bucket exactly, but their ``_sum`` adds each bucket's midpoint,
not the values: totals come from counters. And each node's metrics agent replays every
observation, one Python call each (about 5 µs of its CPU): histograms here are recorded per
committed batch, never per request (at 15,000 requests/s, a request latency histogram here
took 7 % of a core in the agent).

Labels stay few: a route is one the gateway serves (else ``other``), and a host is a shard's
name or ``per-name`` for all per-name hosts, whose names are counter names. No counter name is
ever a label: each would be a series of its own, without end.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import TYPE_CHECKING

from .placement import Layout, Placement

if TYPE_CHECKING:
    from ray.util.metrics import Counter, Gauge, Histogram

__all__ = [
    "METRICS",
    "NO_HOST_METRICS",
    "HostMetrics",
    "RayHostMetrics",
    "RequestMetrics",
    "client_metrics",
    "host_label",
]

# Seconds: a cached read takes well under a millisecond, a commit a few, a stream minutes.
LATENCY_BOUNDARIES: list[float] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
]  # fmt: skip
BATCH_BOUNDARIES: list[float] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]

# Every series: name -> (kind, description). The Grafana dashboard's test holds its queries
# to this list, and `docs/metrics.md` lists the same.
METRICS: dict[str, tuple[str, str]] = {
    "counters_http_requests_total": ("counter", "HTTP requests answered, by route and status"),
    "counters_client_queued_operations": (
        "gauge",
        "operations waiting in a client for their host (sampled each second by a gateway)",
    ),
    "counters_client_overload_refusals_total": (
        "counter",
        "operations refused at once because too many waited (Overloaded, HTTP 503)",
    ),
    "counters_client_resends_total": (
        "counter",
        "operations sent again, with their ids, after their host was lost",
    ),
    "counters_host_operations_total": ("counter", "operations a host answered"),
    "counters_host_batch_operations": ("histogram", "operations in one committed batch"),
    "counters_host_commit_duration_seconds": (
        "histogram",
        "seconds one batch's commit took in storage",
    ),
    "counters_host_fenced_total": (
        "counter",
        "hosts that found a newer writer's epoch in storage and left",
    ),
    "counters_host_objects_in_memory": ("gauge", "counters a host holds in memory"),
    "counters_host_passivations_total": (
        "counter",
        "counters dropped from memory (idle, over the cap, or their per-name actor stopped)",
    ),
}


def host_label(layout: Layout, host_name: str) -> str:
    """A host's label: its shard's name, or ``per-name`` (its name is a counter's)."""
    return "per-name" if layout.placement is Placement.PER_NAME else host_name


def _counter(name: str, *tag_keys: str) -> Counter:
    from ray.util import metrics  # Ray loads only where metrics are recorded

    return metrics.Counter(name, METRICS[name][1], tag_keys=tag_keys)


def _gauge(name: str, *tag_keys: str) -> Gauge:
    from ray.util import metrics

    return metrics.Gauge(name, METRICS[name][1], tag_keys=tag_keys)


def _histogram(name: str, boundaries: list[float], *tag_keys: str) -> Histogram:
    from ray.util import metrics

    return metrics.Histogram(name, METRICS[name][1], boundaries=boundaries, tag_keys=tag_keys)


class RequestMetrics:
    """One gateway's requests: counted here and added to Ray's counter by `flush` (a gateway
    does each second, and as it stops), since a Ray counter costs about 4 µs a call on the
    gateway's one thread."""

    def __init__(self) -> None:
        self._requests = _gateway_requests()
        self._tally: dict[tuple[str, str, int], int] = {}

    def request(self, route: str, method: str, status: int) -> None:
        key = (route, method, status)
        self._tally[key] = self._tally.get(key, 0) + 1

    def flush(self) -> None:
        """Add what was counted since the last flush to Ray's counter."""
        tally, self._tally = self._tally, {}
        for (route, method, status), count in tally.items():
            self._requests.inc(count, {"route": route, "method": method, "status": str(status)})


class ClientMetrics:
    def __init__(self) -> None:
        self.queued = _gauge("counters_client_queued_operations", "host")
        self.refused = _counter("counters_client_overload_refusals_total", "host")
        self.resent = _counter("counters_client_resends_total", "host")


@functools.cache
def _gateway_requests() -> Counter:
    return _counter("counters_http_requests_total", "route", "method", "status")


@functools.cache
def client_metrics() -> ClientMetrics:
    return ClientMetrics()


class HostMetrics:
    """What a host records; `ObjectHost` calls it and knows nothing of Ray."""

    def batch(self, operations: int, commit_seconds: float | None) -> None:
        """A batch was answered; `commit_seconds` if it was committed."""

    def objects(self, in_memory: int, passivated: int) -> None:
        """Counters in memory now, and how many just left it."""

    def fenced(self) -> None:
        """The host found a newer writer in storage."""

    def flush(self) -> None:
        """Record what waits to be recorded (the host is about to exit)."""


NO_HOST_METRICS = HostMetrics()  # hosts built outside Ray (unit tests, tools)


class RayHostMetrics(HostMetrics):
    """A host actor's series, labelled with `host_label`.

    Operations are counted here and added to Ray's counter each second by a thread of their
    own, and a batch that committed nothing (reads) records nothing else: a Ray call costs
    microseconds, and a batch of reads costs the host little more. A committed batch records
    its size and its commit's time at once; a commit costs far more."""

    def __init__(self, label: str, every: float = 1.0) -> None:
        self._tags = {"host": label}
        self._operations = _counter("counters_host_operations_total", "host")
        self._batch = _histogram("counters_host_batch_operations", BATCH_BOUNDARIES, "host")
        self._commit = _histogram(
            "counters_host_commit_duration_seconds", LATENCY_BOUNDARIES, "host"
        )
        self._fenced = _counter("counters_host_fenced_total", "host")
        self._objects = _gauge("counters_host_objects_in_memory", "host")
        self._passivated = _counter("counters_host_passivations_total", "host")
        self._lock = threading.Lock()
        self._counted = 0  # operations not yet added to Ray's counter
        threading.Thread(
            target=self._flush_every, args=(every,), name="counters-metrics", daemon=True
        ).start()

    def batch(self, operations: int, commit_seconds: float | None) -> None:
        with self._lock:
            self._counted += operations
        if commit_seconds is not None:
            self._batch.observe(operations, self._tags)
            self._commit.observe(commit_seconds, self._tags)

    def objects(self, in_memory: int, passivated: int) -> None:
        self._objects.set(in_memory, self._tags)
        if passivated:
            self._passivated.inc(passivated, self._tags)

    def fenced(self) -> None:
        self._fenced.inc(1, self._tags)

    def flush(self) -> None:
        """Add the operations counted since the last flush to Ray's counter."""
        with self._lock:
            counted, self._counted = self._counted, 0
        if counted:
            self._operations.inc(counted, self._tags)

    def _flush_every(self, seconds: float) -> None:
        while True:
            time.sleep(seconds)
            self.flush()
