"""Metrics on real parts: Ray's metrics export and the gateway's /metrics, scraped by a real
Prometheus (Debian's), queried through its HTTP API; and the Grafana dashboard's queries."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray

from counters.metrics import METRICS
from counters.op_ids import new_op_id
from counters.operations import Operation
from gateway import Gateway

from .conftest import GatewayTestServer, NamespaceFactory, wait_for

DASHBOARD = Path(__file__).parents[2] / "grafana" / "counters-dashboard.json"
TOKEN = "metrics-test-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    """A real Prometheus on a loopback port, scraping every second, its data in `folder`."""

    def __init__(self, folder: Path, targets: dict[str, dict[str, Any]]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed (.ci/run installs Debian's package)")
        self.port = _free_port()
        config = folder / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {"job_name": job, **target} for job, target in targets.items()
                    ],
                }
            )
        )
        self._log = (folder / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self._wait(lambda: self._get("/-/ready") is not None, "Prometheus to start")

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                body: bytes = r.read()
                return body
        except OSError:
            return None

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of `promql` now; a query Prometheus refuses fails the test."""
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert body is not None, f"Prometheus refused {promql!r}"
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The one value of `promql`, None if it has none."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def _wait(self, done: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not done():
            if self.process.poll() is not None or time.monotonic() > end:
                pytest.fail(f"waited in vain for {what}")
            time.sleep(0.2)

    def wait_for(self, promql: str, expected: float, timeout: float = 30.0) -> None:
        self._wait(lambda: self.value(promql) == expected, f"{promql} == {expected}", timeout)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


@pytest.fixture
def prometheus_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    return folder


@pytest.mark.slow
async def test_prometheus_counts_the_requests_made_and_what_the_hosts_did(
    make_namespace: NamespaceFactory,
    aiohttp_client: Callable[..., Any],
    prometheus_folder: Path,
) -> None:
    # Seven shards: no other test's hosts bear these labels, so the hosts' sums start at none.
    namespace = make_namespace(shards=7)
    gateway = Gateway(namespace, auth_token=TOKEN)
    client = await aiohttp_client(GatewayTestServer(gateway.handle))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    token_file = prometheus_folder / "token"
    token_file.write_text(TOKEN)
    ray_port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])  # type: ignore[no-untyped-call]
    prometheus = await asyncio.to_thread(
        Prometheus,
        prometheus_folder,
        {
            "ray": {"static_configs": [{"targets": [f"127.0.0.1:{ray_port}"]}]},
            "counters-gateway": {
                "static_configs": [{"targets": [f"127.0.0.1:{client.port}"]}],
                "authorization": {"credentials_file": str(token_file)},
            },
        },
    )
    try:
        async with gateway.maintaining():  # as `counters serve` runs it: records each second
            await _counted(namespace, client, auth, prometheus)
    finally:
        await asyncio.to_thread(prometheus.stop)


async def _counted(
    namespace: Any, client: Any, auth: dict[str, str], prometheus: Prometheus
) -> None:
    me = f'WorkerId="{ray.get_runtime_context().get_worker_id()}"'  # this process: the gateway
    requests = "sum(ray_counters_http_requests_total{%s, route=%r, status=%r})"
    ok, bad, other = (
        requests % (me, "/increment", "200"),
        requests % (me, "/increment", "400"),
        requests % (me, "other", "404"),
    )
    shards = 'host=~"Counter.shard-.-of-7"'
    operations = f"sum(ray_counters_host_operations_total{{{shards}}})"

    async def scraped_both() -> bool:
        result = await asyncio.to_thread(prometheus.query, "up == 1")
        return {r["metric"]["job"] for r in result} == {"ray", "counters-gateway"}

    while not await scraped_both():
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.5)  # earlier tests' requests exported and scraped: a fixed baseline
    before: dict[str, float] = {}
    for query in (ok, bad, other):
        value = await asyncio.to_thread(prometheus.value, query)
        before[query] = value or 0.0
    assert await asyncio.to_thread(prometheus.value, operations) is None

    names = [f"metered-{i}" for i in range(37)]
    for name in names:
        response = await client.get("/increment", params={"name": name}, headers=auth)
        assert response.status == 200
    for _ in range(5):
        response = await client.get("/increment", headers=auth)  # no name
        assert response.status == 400
    secret_path = "/no-such-route-a8f3"  # a client's path must not become a label
    assert (await client.get(secret_path, headers=auth)).status == 404

    for query, made in ((ok, 37), (bad, 5), (other, 1)):
        await asyncio.to_thread(prometheus.wait_for, query, before[query] + made)
    await asyncio.to_thread(prometheus.wait_for, operations, 37)
    await asyncio.sleep(2.5)  # and no more than that
    for query, made in ((ok, 37), (bad, 5), (other, 1)):
        assert await asyncio.to_thread(prometheus.value, query) == before[query] + made
    assert await asyncio.to_thread(prometheus.value, operations) == 37
    assert await asyncio.to_thread(prometheus.query, f'{{route="{secret_path}"}}') == []
    batches = f"sum(ray_counters_host_batch_operations_count{{{shards}}})"
    commits = f"sum(ray_counters_host_commit_duration_seconds_count{{{shards}}})"
    assert await asyncio.to_thread(prometheus.value, batches) == await asyncio.to_thread(
        prometheus.value, commits
    )  # every batch here changed something, so each was committed
    in_memory = f"sum(ray_counters_host_objects_in_memory{{{shards}}})"
    assert await asyncio.to_thread(prometheus.value, in_memory) in (None, 0)  # not swept yet
    hosts = {namespace.host_for(name).rpartition(".")[2] for name in names}
    queued = await asyncio.to_thread(
        prometheus.query, f"ray_counters_client_queued_operations{{{shards}, {me}}}"
    )
    assert sorted(r["metric"]["host"].rpartition(".")[2] for r in queued) == sorted(hosts)
    assert {r["value"][1] for r in queued} == {"0"}

    # The gateway's own page, scraped with the token: its process, every request's latency,
    # and nothing Ray exports.
    gateway_job = 'job="counters-gateway"'
    latency = "counters_http_request_duration_seconds"
    for route, made in (("/increment", 42), ("other", 1)):
        count = f'{latency}_count{{{gateway_job}, route="{route}"}}'
        await asyncio.to_thread(prometheus.wait_for, count, made)
        bucket = f'{latency}_bucket{{{gateway_job}, route="{route}", le="+Inf"}}'
        assert await asyncio.to_thread(prometheus.value, bucket) == made
    took = await asyncio.to_thread(
        prometheus.value, f'{latency}_sum{{{gateway_job}, route="/increment"}}'
    )
    assert took is not None
    assert 0 < took < 42 * 5  # the seconds they took, not bucket midpoints
    assert (
        await asyncio.to_thread(
            prometheus.value, f"counters_gateway_watch_streams{{{gateway_job}}}"
        )
        == 0
    )
    memory = await asyncio.to_thread(
        prometheus.value, f"process_resident_memory_bytes{{{gateway_job}}}"
    )
    assert memory is not None
    assert memory > 10_000_000
    assert (
        await asyncio.to_thread(
            prometheus.query, f'{{{gateway_job}, __name__=~"counters_http_requests.*"}}'
        )
        == []
    )

    # Every query of the dashboard is one Prometheus takes, and its request panel shows these.
    for expr in dashboard_queries():
        promql = expr.replace("$__rate_interval", "1m").replace("$SessionName", ".+")
        await asyncio.to_thread(prometheus.query, promql)
    by_route = await asyncio.to_thread(
        prometheus.query,
        dashboard_queries()[0].replace("$__rate_interval", "1m").replace("$SessionName", ".+"),
    )
    assert "/increment" in {r["metric"].get("route") for r in by_route}


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dashboard_draws_every_series_and_only_ours() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    used = set()
    for expr in dashboard_queries():
        for series in re.findall(r"\b((?:ray_)?counters_[a-z_]+|process_[a-z_]+)", expr):
            name = re.sub(r"^ray_", "", series)
            name = re.sub(r"_(bucket|sum|count)$", "", name) if name not in METRICS else name
            if series.startswith("ray_"):
                assert name in METRICS, f"{series} is not one of ours"
            used.add(name)
    assert set(METRICS) <= used, f"not drawn: {set(METRICS) - used}"
    # Panels do not overlap on the grid (Grafana would shuffle them).
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        here = {
            (grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])
        }
        assert not cells & here, panel["title"]
        cells |= here
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "SessionName"}


async def test_the_gateways_own_page_needs_the_token_and_holds_its_process(
    make_namespace: NamespaceFactory, aiohttp_client: Callable[..., Any]
) -> None:
    client = await aiohttp_client(
        GatewayTestServer(Gateway(make_namespace(), auth_token=TOKEN).handle)
    )
    assert (await client.get("/metrics")).status == 401
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = await response.text()
    assert re.search(r"^counters_gateway_requests_in_progress 1\.0$", text, re.M)  # this one
    assert re.search(r"^counters_gateway_watch_streams 0\.0$", text, re.M)
    assert re.search(r"^process_resident_memory_bytes \d", text, re.M)
    # The refused request's latency, once; this one is not answered yet.
    assert re.search(
        r'^counters_http_request_duration_seconds_count\{route="/metrics"\} 1\.0$', text, re.M
    )
    assert "counters_http_requests" not in text  # Ray exports those: not twice


def ray_export(name: str, **labels: str) -> float:
    """The sum of `name`'s series with `labels` in this node's Ray metrics export now."""
    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])  # type: ignore[no-untyped-call]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    total = 0.0
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.startswith(name + "{") and all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


async def exported(name: str, expected: float, **labels: str) -> None:
    """Wait until Ray exports `expected` for `name` (each process reports each second)."""
    for _ in range(100):
        if ray_export(name, **labels) == expected:
            await asyncio.sleep(1.5)  # and nothing more comes
            assert ray_export(name, **labels) == expected
            return
        await asyncio.sleep(0.2)
    assert ray_export(name, **labels) == expected


async def test_refusals_and_resends_are_counted(make_namespace: NamespaceFactory) -> None:
    me = ray.get_runtime_context().get_worker_id()
    namespace = make_namespace(max_queue=20, shards=5)
    host = namespace.host_for("hot")  # a shard: its name is the label
    refusals = "ray_counters_client_overload_refusals_total"
    before = ray_export(refusals, host=host, WorkerId=me)
    futures = [namespace.call(Operation("hot", "increment", (1,), new_op_id())) for _ in range(300)]
    refused = [future for future in futures if future.done()]
    await asyncio.gather(*futures, return_exceptions=True)
    assert len(refused) == 280
    await exported(refusals, before + 280, host=host, WorkerId=me)

    # A host killed with operations in flight: the client sends them again, and says so.
    resends = "ray_counters_client_resends_total"
    before = ray_export(resends, host=host, WorkerId=me)
    stub = namespace.get_by_name("hot")
    done = 0
    stop = asyncio.Event()

    async def load() -> None:
        nonlocal done
        while not stop.is_set():
            await stub.increment()
            done += 1

    tasks = [asyncio.create_task(load()) for _ in range(8)]
    while done < 200:
        await asyncio.sleep(0.01)
    ray.kill(namespace.handle(host), no_restart=False)  # restarted by Ray, batches in flight
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks)
    assert await stub.get_counter_value() == 20 + done  # each once
    # Ray exports each second.
    await wait_for(lambda: ray_export(resends, host=host, WorkerId=me) > before, seconds=30)
    assert ray_export(resends, host=host, WorkerId=me) > before
