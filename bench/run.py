"""The benchmark: `counters` next to the ceiling of its own stack and next to Redis, in one run.

    ./dev bench                      # every scenario, 10 s each
    ./dev bench --duration 3 --quick # a smoke run

Everything runs on this machine, on loopback, started and stopped by this script:

- ceiling:     bench/reference.py bare  (an aiohttp Application answering from a dict: no
  storage, no Ray; the issue's reference)
- raw ceiling: bench/reference.py raw  (the same on aiohttp's low-level server, which the
  gateway runs on: the ceiling of our own HTTP stack)
- redis:       bench/reference.py redis over a local redis-server (INCRBY, AOF, appendfsync
  always), on the low-level server too
- counters: `counters serve` (sharded; sharded with a Ray call per batch, `--no-direct-channel`;
  then per-name), its own local Ray, a temporary storage dir

HTTP load comes from wrk (2 threads, 64 connections); the Python client scenario runs in this
process. The table gives requests/s, p50 and p99 for each, and the project's ratio to each
reference measured in the same run (x ceiling, x raw, x redis). wrk and redis-server come
from Debian's packages; the script installs them with apt-get when missing and it runs as root.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
SPREAD_NAMES = 10_000
PER_NAME_NAMES = 50

SPREAD_LUA = """
request = function()
  return wrk.format("GET", "/increment?name=n" .. math.random(1, %d))
end
"""
# Every request names a counter never seen before: the cost of a cold start.
COLD_LUA = """
local thread_id = 0
local n = 0
setup = function(thread) thread:set("id", thread_id); thread_id = thread_id + 1 end
request = function()
  n = n + 1
  return wrk.format("GET", "/increment?name=cold-" .. id .. "-" .. n)
end
"""


@dataclass
class Result:
    scenario: str
    system: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0


def ensure_tools() -> None:
    missing = [tool for tool in ("wrk", "redis-server") if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"bench: needs {', '.join(missing)}: sudo apt-get install wrk redis-server")
    packages = ["wrk" if tool == "wrk" else "redis-server" for tool in missing]
    subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", *packages], check=True, stdout=subprocess.DEVNULL
    )


def free_port() -> int:
    from counters.testing import free_port as port

    return port()


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


@contextmanager
def process(command: list[str], ready_url: str | None, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        child = subprocess.Popen(command, stdout=out, stderr=out)
    try:
        if ready_url:
            wait_http(ready_url)
        yield
    finally:
        child.terminate()
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def wrk(
    base: str,
    path: str,
    duration: float,
    threads: int,
    connections: int,
    lua: str | None = None,
    warm_up: bool = False,
) -> tuple[float, float, float, int]:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        if lua:
            script.write(lua)
    if lua:
        command += ["-s", script.name]
    output = subprocess.run(
        [*command, base + path], capture_output=True, text=True, check=True
    ).stdout
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _latency_ms(re.search(r"50%\s+([\d.]+\w+)", output).group(1))  # type: ignore[union-attr]
    p99 = _latency_ms(re.search(r"99%\s+([\d.]+\w+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if socket_errors:
        when = " (warm-up, not measured)" if warm_up else ""
        print(
            f"  wrk socket errors on {base}{path}{when}: {socket_errors.group(1)}",
            file=sys.stderr,
        )
    return rps, p50, p99, int(errors.group(1)) if errors else 0


def _latency_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def http_scenarios(
    system: str, base: str, arguments: argparse.Namespace, names_for_spread: int
) -> list[Result]:
    run = arguments.duration
    t, c = arguments.threads, arguments.connections
    results = []
    # Warm up: the hot counter exists, and every host the spread names need is up.
    wrk(base, "/increment?name=hot", 2, t, c, warm_up=True)
    wrk(base, "/", 3, t, c, SPREAD_LUA % names_for_spread, warm_up=True)
    for scenario, path, lua in [
        ("hot increments", "/increment?name=hot", None),
        (f"spread increments ({names_for_spread:,} names)", "/", SPREAD_LUA % names_for_spread),
        ("reads of one counter", "/?name=hot", None),
    ]:
        rps, p50, p99, errors = wrk(base, path, run, t, c, lua)
        results.append(Result(scenario, system, rps, p50, p99, errors))
    return results


def cold_scenario(system: str, base: str, arguments: argparse.Namespace) -> Result:
    rps, p50, p99, errors = wrk(
        base, "/", arguments.duration, arguments.threads, arguments.connections, COLD_LUA
    )
    return Result("cold start (never-seen names)", system, rps, p50, p99, errors)


def counters_serve(port: int, storage: Path, placement: str, log: Path, *flags: str) -> Any:
    command = [
        sys.executable, "-m", "counters", "serve", "--port", str(port),
        "--storage-dir", str(storage), "--dashboard-port", "0", "--placement", placement, *flags,
    ]  # fmt: skip
    return process(command, f"http://127.0.0.1:{port}/healthz", log)


def python_client_scenarios(arguments: argparse.Namespace, storage: Path) -> list[Result]:
    """Increments/s from one process: the async stub vs one bare Ray actor call per increment."""
    import ray

    from counters.client import Namespace, new_op_id
    from counters.operations import Operation
    from counters.settings import Settings

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        namespace = Namespace(Settings.load(storage_dir=str(storage), namespace="bench"))
        names = [f"py-{i}" for i in range(1000)]
        total = 20_000 if arguments.quick else 200_000
        in_flight = 16_384

        async def stub_run(count: int) -> float:
            started = time.perf_counter()
            for first in range(0, count, in_flight):
                await asyncio.gather(
                    *(
                        namespace.get_by_name(names[i % len(names)]).increment()
                        for i in range(first, min(first + in_flight, count))
                    )
                )
            return time.perf_counter() - started

        async def futures_run(count: int) -> float:
            # Namespace.call: a future per operation, no coroutine or task per call.
            started = time.perf_counter()
            for first in range(0, count, in_flight):
                await asyncio.gather(
                    *(
                        namespace.call(
                            Operation(names[i % len(names)], "increment", (1,), new_op_id())
                        )
                        for i in range(first, min(first + in_flight, count))
                    )
                )
            return time.perf_counter() - started

        asyncio.run(stub_run(5000))  # warm: hosts created
        stub_seconds = asyncio.run(stub_run(total))
        futures_seconds = asyncio.run(futures_run(total))

        handles: list[Any] = [namespace.handle(namespace.host_for(n)) for n in names]
        bare_total = total // 10
        # Bare calls are bound by the actors, not by how many wait; past 5,000 pending calls
        # to one actor, Ray only warns about memory.
        bare_in_flight = 4096
        started = time.perf_counter()
        for first in range(0, bare_total, bare_in_flight):
            ray.get(
                [
                    handles[i % len(names)].call.remote(names[i % len(names)], "increment", 1)
                    for i in range(first, min(first + bare_in_flight, bare_total))
                ]
            )
        bare_seconds = time.perf_counter() - started
        namespace.kill_hosts()
    finally:
        ray.shutdown()
    return [
        Result("python client", "counters stub", total / stub_seconds, 0, 0),
        Result("python client", "counters call()", total / futures_seconds, 0, 0),
        Result("python client", "bare ray calls", bare_total / bare_seconds, 0, 0),
    ]


def print_table(results: list[Result]) -> None:
    reference = {(r.scenario, r.system): r for r in results}
    print()
    print(
        f"{'scenario':<34} {'system':<18} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'x ceiling':>9} {'x raw':>6} {'x redis':>8}"
    )

    def ratio(r: Result, system: str) -> str:
        other = reference.get((r.scenario, system))
        return f"{r.rps / other.rps:.2f}" if other and r.system.startswith("counters") else ""

    for r in results:
        vs_ceiling, vs_raw, vs_redis = (ratio(r, s) for s in ("ceiling", "raw ceiling", "redis"))
        if r.scenario == "python client" and r.system.startswith("counters"):
            bare = reference[("python client", "bare ray calls")]
            vs_ceiling = f"{r.rps / bare.rps:.1f}x bare"
        latency = f"{r.p50_ms:>7.2f} {r.p99_ms:>7.2f}" if r.p50_ms else f"{'':>7} {'':>7}"
        errors = f"  ({r.errors} errors)" if r.errors else ""
        print(
            f"{r.scenario:<34} {r.system:<18} {r.rps:>9,.0f} {latency} "
            f"{vs_ceiling:>9} {vs_raw:>6} {vs_redis:>8}{errors}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="skip per-name and cold start")
    arguments = parser.parse_args()
    ensure_tools()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="counters-bench-") as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        bare = [sys.executable, str(HERE / "reference.py"), "bare", "--port", str(port)]
        with process(bare, f"http://127.0.0.1:{port}/?name=x", tmp / "bare.log"):
            base = f"http://127.0.0.1:{port}"
            results += http_scenarios("ceiling", base, arguments, SPREAD_NAMES)
            if not arguments.quick:
                results.append(cold_scenario("ceiling", base, arguments))
        port = free_port()
        raw = [sys.executable, str(HERE / "reference.py"), "raw", "--port", str(port)]
        with process(raw, f"http://127.0.0.1:{port}/?name=x", tmp / "raw.log"):
            base = f"http://127.0.0.1:{port}"
            results += http_scenarios("raw ceiling", base, arguments, SPREAD_NAMES)
            if not arguments.quick:
                results.append(cold_scenario("raw ceiling", base, arguments))
        redis_port, port = free_port(), free_port()
        redis = [
            "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--dir", str(tmp), "--protected-mode", "yes",
        ]  # fmt: skip
        server = [
            sys.executable, str(HERE / "reference.py"), "redis",
            "--port", str(port), "--redis-port", str(redis_port),
        ]  # fmt: skip
        with (
            process(redis, None, tmp / "redis.log"),
            process(server, f"http://127.0.0.1:{port}/?name=x", tmp / "redis-app.log"),
        ):
            base = f"http://127.0.0.1:{port}"
            results += http_scenarios("redis", base, arguments, SPREAD_NAMES)
            if not arguments.quick:
                results.append(cold_scenario("redis", base, arguments))
        port = free_port()
        with counters_serve(port, tmp / "sharded", "sharded", tmp / "sharded.log"):
            base = f"http://127.0.0.1:{port}"
            results += http_scenarios("counters sharded", base, arguments, SPREAD_NAMES)
            if not arguments.quick:
                results.append(cold_scenario("counters sharded", base, arguments))
        if not arguments.quick:
            # The same with a Ray call per batch instead of the direct channel: what it saves.
            port = free_port()
            no_channel = ("--no-direct-channel",)
            with counters_serve(port, tmp / "ray", "sharded", tmp / "ray.log", *no_channel):
                base = f"http://127.0.0.1:{port}"
                results += http_scenarios("counters ray calls", base, arguments, SPREAD_NAMES)
            port = free_port()
            with counters_serve(port, tmp / "per-name", "per-name", tmp / "per-name.log"):
                base = f"http://127.0.0.1:{port}"
                lua = SPREAD_LUA % PER_NAME_NAMES
                # Create the actors first.
                wrk(base, "/", 10, arguments.threads, arguments.connections, lua, warm_up=True)
                results += http_scenarios("counters per-name", base, arguments, PER_NAME_NAMES)
        results += python_client_scenarios(arguments, tmp / "python")
    results.sort(key=lambda r: r.scenario)
    print_table(results)
    print(
        f"\nwrk -t{arguments.threads} -c{arguments.connections} -d{arguments.duration:g}s "
        f"on loopback; {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
