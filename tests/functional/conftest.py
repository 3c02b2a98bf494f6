"""Functional tests: one real local Ray for the whole session, real servers on loopback.

Each test gets its own Ray namespace and storage dir, so tests never see each other's actors or
files, and its host actors are killed afterwards so memory stays flat across the session.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from aiohttp.test_utils import RawTestServer, TestClient
from aiohttp.web import ServerRunner

from counters.client import Namespace
from counters.placement import Placement
from counters.settings import Settings
from gateway import Gateway
from gateway.app import SERVER_LIMITS

NamespaceFactory = Callable[..., Namespace]

# For tests that start many per-name actors at once: Ray starts actor processes two at a time on
# two cores, 20 of them in about 8.5 s on an idle machine, past the 10 s default deadline on a
# busy CI one. Such tests are about exactness or recovery, not cold-start latency.
COLD_START_DEADLINE = 60.0


async def wait_for(condition: Callable[[], bool | Awaitable[bool]], seconds: float) -> None:
    """Until `condition()` (a function or a coroutine function) holds, checked every 0.1 s;
    the test fails if it does not within `seconds`."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        assert loop.time() < give_up, f"not within {seconds} s"
        await asyncio.sleep(0.1)


@pytest.fixture(scope="session", autouse=True)
def ray_session() -> Iterator[None]:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        num_cpus=2,
        namespace="counters-tests",
        # Metrics reach Ray's export within a second (the default is ten), for test_metrics.
        _system_config={"metrics_report_interval_ms": 1000},
    )
    yield
    ray.shutdown()


@pytest.fixture
def make_namespace(tmp_path: Path) -> Iterator[NamespaceFactory]:
    """Namespace bindings on a fresh Ray namespace and storage dir; hosts killed afterwards."""
    made: list[Namespace] = []

    def make(placement: Placement = Placement.SHARDED, **overrides: Any) -> Namespace:
        if not overrides.get("database"):  # SQLite files, in the test's own folder
            overrides["storage_dir"] = str(overrides.get("storage_dir", tmp_path / "storage"))
        settings = Settings.load(
            environ={},
            namespace=overrides.pop("namespace", f"test-{uuid.uuid4().hex[:12]}"),
            placement=placement.value,
            **overrides,
        )
        namespace = Namespace(settings)
        made.append(namespace)
        return namespace

    yield make
    for namespace in made:
        namespace.close()
        namespace.kill_hosts()


@pytest.fixture(params=[Placement.SHARDED, Placement.PER_NAME], ids=["sharded", "per-name"])
def placement(request: pytest.FixtureRequest) -> Placement:
    placement: Placement = request.param
    return placement


@pytest.fixture
def namespace(make_namespace: NamespaceFactory, placement: Placement) -> Namespace:
    return make_namespace(placement)


class GatewayTestServer(RawTestServer):
    """aiohttp's test server with the gateway's limits, as `Gateway.server` sets them."""

    async def _make_runner(self, debug: bool = True, **kwargs: Any) -> ServerRunner:
        return await super()._make_runner(debug=debug, **{**SERVER_LIMITS, **kwargs})


def gateway_server(namespace: Namespace) -> RawTestServer:
    """The real gateway over `namespace`, as `counters serve` runs it, on a loopback port."""
    return GatewayTestServer(Gateway(namespace).handle)


@pytest.fixture
async def client(namespace: Namespace, aiohttp_client: Callable[..., Any]) -> TestClient[Any, Any]:
    """An HTTP client of the real gateway, served on a loopback port."""
    test_client: TestClient[Any, Any] = await aiohttp_client(gateway_server(namespace))
    return test_client


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings that put a test's counters in SQLite files, then in a PostgreSQL database."""
    if request.param == "sqlite":
        return {}
    return {"database": request.getfixturevalue("postgres_dsn")}


@pytest.fixture
async def client_on_backend(
    make_namespace: NamespaceFactory,
    placement: Placement,
    backend: dict[str, str],
    aiohttp_client: Callable[..., Any],
) -> TestClient[Any, Any]:
    """As `client`, on each storage backend in turn."""
    test_client: TestClient[Any, Any] = await aiohttp_client(
        gateway_server(make_namespace(placement, **backend))
    )
    return test_client
