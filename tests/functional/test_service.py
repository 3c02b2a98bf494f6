"""The whole service as a user runs it: `counters serve`, stopped and started again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from counters.placement import Layout, Placement, default_shards, host_name
from counters.testing import Service

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("placement", "backend"),
    [("sharded", "sqlite"), ("per-name", "sqlite"), ("sharded", "postgres")],
)
def test_values_survive_stopping_and_starting_everything(
    tmp_path: Path, placement: str, backend: str, request: pytest.FixtureRequest
) -> None:
    storage = tmp_path / "storage"
    names = ["A", "B", "../../etc", "名前"]
    database = []
    if backend == "postgres":
        database = ["--database", request.getfixturevalue("postgres_dsn")]
    with Service(storage, "--placement", placement, *database) as service:
        for i, name in enumerate(names):
            for _ in range(i + 1):
                status, _ = service.get(f"/increment?name={quote(name)}")
                assert status == 200
        assert service.get("/decrement?name=A&amount=10", method="POST") == (
            200,
            "Durable Object 'A' count: -9",
        )
        assert service.stop(signal.SIGTERM) == 0
        assert service.leftovers() == [], "Ray processes outlived the service"
        assert "aiohttp.access" not in service.log.read_text()  # no access log by default
    with Service(storage, "--placement", placement, "--access-log", *database) as service:
        expected = {"A": -9, "B": 2, "../../etc": 3, "名前": 4}
        for name, count in expected.items():
            assert service.get(f"/?name={quote(name)}") == (
                200,
                f"Durable Object '{name}' count: {count}",
            )
        # A live-update stream stays open while the service stops: it ends, and with it the
        # gateway, long before aiohttp would give up waiting for it (60 s).
        url = f"http://127.0.0.1:{service.port}/watch?name=A"
        with urllib.request.urlopen(url, timeout=60) as stream:
            data = '{"name": "A", "count": -9, "version": 2}'
            assert stream.read(len(f"id: 2\ndata: {data}\n\n")).decode() == (
                f"id: 2\ndata: {data}\n\n"
            )
            assert service.stop(signal.SIGINT, timeout=30) == 0  # Ctrl-C
            assert stream.read() == b""
        assert service.leftovers() == []
        assert '"GET /?name=B HTTP/1.1" 200' in service.log.read_text()


def test_actors_show_in_the_ray_dashboard(tmp_path: Path) -> None:
    with Service(tmp_path / "storage", dashboard=True) as service:
        assert service.get("/increment?name=A")[0] == 200
        token = (Path.home() / ".ray" / "auth_token").read_text().strip()
        request = urllib.request.Request(
            f"http://127.0.0.1:{service.dashboard_port}/api/v0/actors?limit=100",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            actors = json.load(response)["data"]["result"]["result"]
        hosts = [a for a in actors if a["class_name"] == "CounterHost"]
        # A fresh storage dir gets the default shard count for this machine.
        layout = Layout("Counter", Placement.SHARDED, default_shards(os.cpu_count()))
        assert [(a["name"], a["state"], a["ray_namespace"]) for a in hosts] == [
            (host_name(layout, "A"), "ALIVE", "counters")
        ]


def test_a_storage_dir_refuses_another_shard_count_and_serves_with_its_own(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    with Service(storage, "--shards", "2") as service:
        assert service.get("/increment?name=A")[0] == 200
    with Service(storage, "--shards", "3") as service:
        status, body = service.get("/increment?name=A")
        assert status == 500
        assert "same placement and shard count" in body
    with Service(storage) as service:  # no count given: the storage dir's own
        assert service.get("/increment?name=A") == (200, "Durable Object 'A' count: 2")
        assert "sharded placement, 2 shards" in service.log.read_text()


SOAK = Path(__file__).parents[2] / "bench" / "soak.py"


@pytest.mark.parametrize(
    "flags",
    [
        # Hosts SIGKILLed every 0.4 s, and the whole service (Ray included) crashed under load.
        ["--placement", "sharded", "--kill-every", "0.4", "--restart-every", "5"],
        ["--placement", "per-name", "--names", "8", "--kill-every", "0.4"],
    ],
    ids=["sharded-with-ray-restarts", "per-name"],
)
def test_soak_under_kills_and_restarts_loses_and_doubles_nothing(flags: list[str]) -> None:
    result = subprocess.run(
        # At least 5 kills, however long restarts take on a slow machine (within 56 s).
        [
            sys.executable,
            str(SOAK),
            "--seconds",
            "14",
            "--clients",
            "12",
            "--min-kills",
            "5",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "soak: OK" in result.stdout
    kills = int(result.stdout.split("host kills ")[1].split(",")[0])
    assert kills >= 5, result.stdout
    if "--restart-every" in flags:
        restarts = int(result.stdout.split("service crashes and restarts ")[1].split()[0])
        assert restarts >= 1, result.stdout


def test_two_gateways_of_one_service_under_load_count_every_change_once(
    tmp_path: Path, postgres_dsn: str
) -> None:
    with Service(tmp_path / "a", "--database", postgres_dsn) as first:
        # The second gateway joins the first one's Ray, as one per node would on a cluster.
        joined = ("--database", postgres_dsn, "--address", first.ray_address())
        with Service(tmp_path / "b", *joined, env={"RAY_AUTH_MODE": "token"}) as second:
            names = [f"g{i}" for i in range(5)]
            sent: dict[str, int] = dict.fromkeys(names, 0)
            tally = threading.Lock()

            def load(service: Service, seed: int) -> None:
                for i in range(150):
                    name = names[(i + seed) % len(names)]
                    key = f"{seed}-{i}"
                    while service.post(f"/increment?name={name}", key)[0] != 200:
                        time.sleep(0.05)  # resent with its key until acknowledged
                    with tally:
                        sent[name] += 1

            threads = [
                threading.Thread(target=load, args=(service, seed))
                for seed, service in enumerate([first, second, first, second])
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for name in names:
                for service in (first, second):
                    assert service.get(f"/?name={name}") == (
                        200,
                        f"Durable Object '{name}' count: {sent[name]}",
                    )
            assert sum(sent.values()) == 600
