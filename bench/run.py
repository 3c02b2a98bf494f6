"""The benchmark: `counters` next to the ceiling of its own stack and next to Redis, in one run.

    ./dev bench                      # every scenario, 5 rounds of 5 s each; about 15 minutes
    ./dev bench --duration 3 --quick # a smoke run: one round, sharded and Python client only

Everything runs on this machine, on loopback, started and stopped by this script:

- ceiling:     bench/reference.py bare  (an aiohttp Application answering from a dict: no
  storage, no Ray; the issue's reference)
- raw ceiling: bench/reference.py raw  (the same on aiohttp's low-level server, which the
  gateway runs on: the ceiling of our own HTTP stack)
- redis:       bench/reference.py redis over a local redis-server (INCRBY, AOF, appendfsync
  always), on the low-level server too
- counters: `counters serve` (sharded; sharded on PostgreSQL, `--database`, a server of its own
  from Debian's `postgresql` in a temporary folder; sharded with a Ray call per batch,
  `--no-direct-channel`; then per-name), its own local Ray, a temporary storage dir

HTTP load comes from wrk (2 threads, 64 connections); the Python client scenario runs in this
process. Each round runs every scenario on every system back to back (the references stay up
while the sharded service runs), the project right between the ceiling and Redis, in the
opposite order every other round, so that a project's run and the reference runs it is
compared with see the same drift of the machine's speed. The table gives the medians over the
rounds of requests/s, p50 and p99, and of the project's ratio to each reference in the same
round (x ceiling, x raw, x redis); every round's ratios follow it. wrk and redis-server come
from Debian's packages; the script installs them with apt-get when missing and it runs as root.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).parent
SPREAD_NAMES = 10_000
PER_NAME_NAMES = 50

SPREAD_LUA = """
request = function()
  return wrk.format("GET", "/increment?name=n" .. math.random(1, %d))
end
"""
# Every request names a counter never seen before (in this round too): the cost of a cold start.
COLD_LUA = """
local thread_id = 0
local n = 0
setup = function(thread) thread:set("id", thread_id); thread_id = thread_id + 1 end
request = function()
  n = n + 1
  return wrk.format("GET", "/increment?name=cold%d-" .. id .. "-" .. n)
end
"""
HOT = ("hot increments", "/increment?name=hot")
READS = ("reads of one counter", "/?name=hot")
COLD = "cold start (never-seen names)"


class Run(NamedTuple):
    """One wrk run: requests/s, p50 and p99 in ms, non-2xx answers, any socket error."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    socket_errors: bool


@dataclass
class Result:
    scenario: str
    system: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    round: str = ""  # runs of one round are paired for ratios; "" in the medians


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
def process(
    command: list[str],
    ready_url: str | None,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[None]:
    with log.open("wb") as out:
        child = subprocess.Popen(command, stdout=out, stderr=out, env=env, cwd=cwd)
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
) -> Run:
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
    return Run(rps, p50, p99, int(errors.group(1)) if errors else 0, socket_errors is not None)


def warm_up(
    base: str, path: str, seconds: float, arguments: argparse.Namespace, lua: str | None = None
) -> None:
    """Load `path` until every request is answered in time: the actors it needs are up."""
    for _ in range(20):
        run = wrk(base, path, seconds, arguments.threads, arguments.connections, lua, warm_up=True)
        # A socket error here is a request that waited too long for its actor to start.
        if run.errors == 0 and not run.socket_errors:
            return


def _latency_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def spread(names: int) -> tuple[str, str, str]:
    return f"spread increments ({names:,} names)", "/", SPREAD_LUA % names


def warm_up_http(base: str, arguments: argparse.Namespace, names_for_spread: int) -> None:
    """The hot counter exists, and every host the spread names need is up."""
    seconds = min(1.0, arguments.duration)  # a smoke run warms up as briefly as it measures
    warm_up(base, HOT[1], 2 * seconds, arguments)
    warm_up(base, "/", 3 * seconds, arguments, SPREAD_LUA % names_for_spread)


def rounds(
    systems: dict[str, str],
    arguments: argparse.Namespace,
    label: str,
    names_for_spread: int = SPREAD_NAMES,
    cold: bool = False,
) -> list[Result]:
    """Every scenario on every system, back to back, `arguments.rounds` times over.

    The machine's speed drifts by a third within minutes, and it can change between one 5 s
    run and the next. So each round measures the systems one right after the other, in the
    order given (the project next to the references it is compared with) and in the opposite
    order every other round, and ratios pair the runs of one round. The medians of the rounds
    leave the outliers out.
    """
    scenarios = [(*HOT, None), spread(names_for_spread), (*READS, None)]
    plan = [(round_, scenario) for round_ in range(arguments.rounds) for scenario in scenarios]
    if cold:
        # Last: tens of thousands of new counters push the hot one out of its host's memory,
        # and what it then costs to load again is not what the other scenarios measure.
        plan += [(round_, (COLD, "/", COLD_LUA % round_)) for round_ in range(arguments.rounds)]
    results = []
    for round_, (scenario, path, lua) in plan:
        order = list(systems.items())
        if round_ % 2:
            order.reverse()
        for system, base in order:
            run = wrk(base, path, arguments.duration, arguments.threads, arguments.connections, lua)
            measured = (run.rps, run.p50_ms, run.p99_ms, run.errors)
            results.append(Result(scenario, system, *measured, round=f"{label} {round_}"))
    return results


@contextlib.contextmanager
def postgres_databases(count: int = 1) -> Iterator[list[str]]:
    """A PostgreSQL server of our own for the run (fsync on, as the server ships): the URLs of
    `count` new databases on it."""
    from counters.testing import PostgresServer

    server = PostgresServer().start()
    try:
        yield [server.create_database() for _ in range(count)]
    finally:
        server.remove()


def sharded_rounds(
    arguments: argparse.Namespace,
    references: dict[str, str],
    tmp: Path,
    system: str,
    label: str,
    flags: tuple[str, ...],
    cold: bool = False,
) -> list[Result]:
    """The sharded service (on `flags`' storage) measured between the references."""
    port = free_port()
    with counters_serve(port, tmp / label, "sharded", tmp / f"{label}.log", *flags):
        base = f"http://127.0.0.1:{port}"
        warm_up_http(base, arguments, SPREAD_NAMES)
        systems = {
            "raw ceiling": references["raw ceiling"],
            "ceiling": references["ceiling"],
            system: base,
            "redis": references["redis"],
        }
        return rounds(systems, arguments, label, cold=cold)


def counters_serve(
    port: int, storage: Path, placement: str, log: Path, *flags: str, tree: Path | None = None
) -> Any:
    """`counters serve` on a local Ray of its own; from the source in `tree` if given (with
    this virtualenv's packages), else as installed."""
    where = [] if "--database" in flags else ["--storage-dir", str(storage)]
    command = [
        sys.executable, "-m", "counters", "serve", "--port", str(port),
        *where, "--dashboard-port", "0", "--placement", placement, *flags,
    ]  # fmt: skip
    env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
    return process(command, f"http://127.0.0.1:{port}/healthz", log, env, cwd=tree)


def python_client_scenarios(arguments: argparse.Namespace, storage: Path) -> list[Result]:
    """Increments/s from one process: the async stub vs one bare Ray actor call per increment."""
    import ray

    from counters import tune_gc
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
            # Namespace.call: a future per operation, no coroutine or task per call. A window:
            # as each call returns the next leaves, so `in_flight` stay in flight throughout.
            loop = asyncio.get_running_loop()
            finished = loop.create_future()
            sent = done = 0

            def send() -> None:
                nonlocal sent
                call = namespace.call(
                    Operation(names[sent % len(names)], "increment", (1,), new_op_id())
                )
                sent += 1
                call.add_done_callback(returned)

            def returned(call: asyncio.Future[Any]) -> None:
                nonlocal done
                done += 1
                if call.exception() is not None and not finished.done():
                    finished.set_exception(call.exception())  # type: ignore[arg-type]
                elif sent < count:
                    send()
                elif done == count and not finished.done():
                    finished.set_result(None)

            started = time.perf_counter()
            for _ in range(min(in_flight, count)):
                send()
            await finished
            return time.perf_counter() - started

        def bare_run(count: int) -> float:
            # Bare calls are bound by the actors, not by how many wait; past 5,000 pending
            # calls to one actor, Ray only warns about memory.
            bare_in_flight = 4096
            started = time.perf_counter()
            for first in range(0, count, bare_in_flight):
                ray.get(
                    [
                        handles[i % len(names)].call.remote(names[i % len(names)], "increment", 1)
                        for i in range(first, min(first + bare_in_flight, count))
                    ]
                )
            return time.perf_counter() - started

        asyncio.run(stub_run(5000))  # warm: hosts created
        tune_gc()  # as the README advises bulk clients (the default's cost: its own row)
        handles: list[Any] = [namespace.handle(namespace.host_for(n)) for n in names]
        bare_total = total // 10
        results = []
        for round_ in range(arguments.rounds):
            with default_gc():
                untuned = total / asyncio.run(futures_run(total))
            rates = {
                "counters stub": total / asyncio.run(stub_run(total)),
                "counters call()": total / asyncio.run(futures_run(total)),
                "counters call() untuned": untuned,
                "bare ray calls": bare_total / bare_run(bare_total),
            }
            results += [
                Result("python client", system, rate, 0, 0, round=f"python {round_}")
                for system, rate in rates.items()
            ]
        namespace.kill_hosts()
    finally:
        ray.shutdown()
    return results


@contextmanager
def default_gc() -> Iterator[None]:
    """Python's own collector settings for a while, in a process that tuned them."""
    tuned = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    try:
        yield
    finally:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*tuned)


def medians(results: list[Result]) -> list[Result]:
    """One row per scenario and system: the median of its rounds (errors summed)."""
    runs: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        runs.setdefault((result.scenario, result.system), []).append(result)
    return [
        Result(
            scenario,
            system,
            statistics.median(r.rps for r in group),
            statistics.median(r.p50_ms for r in group),
            statistics.median(r.p99_ms for r in group),
            sum(r.errors for r in group),
        )
        for (scenario, system), group in runs.items()
    ]


def paired_ratios(results: list[Result], reference: str) -> dict[tuple[str, str], list[float]]:
    """For each scenario and project system, its ratio to `reference` in every round of both."""
    references = {(r.scenario, r.round): r for r in results if r.system == reference}
    ratios: dict[tuple[str, str], list[float]] = {}
    for r in results:
        other = references.get((r.scenario, r.round))
        if r.system.startswith("counters") and other is not None:
            ratios.setdefault((r.scenario, r.system), []).append(r.rps / other.rps)
    return ratios


def print_table(results: list[Result], footer: str) -> None:
    """The medians, the project's ratios to the references, then every round's ratios."""
    shown_first = ["ceiling", "raw ceiling", "redis"]  # then the project's systems, as measured
    summary = sorted(
        medians(results),
        key=lambda r: (r.scenario, shown_first.index(r.system) if r.system in shown_first else 3),
    )
    median_of = {(r.scenario, r.system): r for r in summary}
    paired = {
        system: paired_ratios(results, system)
        for system in ("ceiling", "raw ceiling", "redis", "bare ray calls")
    }

    def ratio(r: Result, reference: str, digits: int = 2) -> str:
        """The median of the rounds' ratios; of the medians for a system measured apart."""
        if not r.system.startswith("counters"):
            return ""
        rounds_ = paired[reference].get((r.scenario, r.system))
        if rounds_:
            return f"{statistics.median(rounds_):.{digits}f}"
        other = median_of.get((r.scenario, reference))
        return f"{r.rps / other.rps:.{digits}f}" if other else ""

    print()
    print(
        f"{'scenario':<34} {'system':<24} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'x ceiling':>9} {'x raw':>6} {'x redis':>8}"
    )
    for r in summary:
        vs_ceiling, vs_raw, vs_redis = (ratio(r, s) for s in ("ceiling", "raw ceiling", "redis"))
        if r.scenario == "python client" and r.system.startswith("counters"):
            vs_ceiling = f"{ratio(r, 'bare ray calls', 1)}x bare"
        latency = f"{r.p50_ms:>7.2f} {r.p99_ms:>7.2f}" if r.p50_ms else f"{'':>7} {'':>7}"
        errors = f"  ({r.errors} errors)" if r.errors else ""
        print(
            f"{r.scenario:<34} {r.system:<24} {r.rps:>9,.0f} {latency} "
            f"{vs_ceiling:>9} {vs_raw:>6} {vs_redis:>8}{errors}"
        )
    print(f"\n{footer}\n\nthe ratio in each round (the table gives their median):")
    for reference, by_row in paired.items():
        for (scenario, system), ratios in sorted(by_row.items()):
            if system in ("counters sharded", "counters postgres", "counters call()"):
                shown = " ".join(f"{ratio:.2f}" for ratio in ratios)
                print(f"{scenario:<34} {system:<24} x {reference:<15} {shown}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument(
        "--rounds", type=int, default=None, help="runs of every scenario (5; 1 with --quick)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="skip per-name and cold start")
    parser.add_argument(
        "--backend",
        choices=("both", "sqlite", "postgres"),
        default="both",
        help="which storage the sharded service runs on (both: one after the other)",
    )
    arguments = parser.parse_args()
    arguments.rounds = arguments.rounds or (1 if arguments.quick else 5)
    ensure_tools()
    results: list[Result] = []
    with (
        tempfile.TemporaryDirectory(prefix="counters-bench-") as tmp_name,
        contextlib.ExitStack() as references_up,
    ):
        tmp = Path(tmp_name)
        # The references stay up (idle) while the project runs, to be measured in the same rounds.
        references: dict[str, str] = {}
        for kind, system in (("bare", "ceiling"), ("raw", "raw ceiling")):
            port = free_port()
            ceiling = [sys.executable, str(HERE / "reference.py"), kind, "--port", str(port)]
            ready = f"http://127.0.0.1:{port}/?name=x"
            references_up.enter_context(process(ceiling, ready, tmp / f"{kind}.log"))
            references[system] = f"http://127.0.0.1:{port}"
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
        references_up.enter_context(process(redis, None, tmp / "redis.log"))
        ready = f"http://127.0.0.1:{port}/?name=x"
        references_up.enter_context(process(server, ready, tmp / "redis-app.log"))
        references["redis"] = f"http://127.0.0.1:{port}"
        for base in references.values():
            warm_up_http(base, arguments, SPREAD_NAMES)
        on_sqlite = arguments.backend in ("both", "sqlite")
        # The sharded service on each backend in rounds of its own, each right between the
        # references with targets (PostgreSQL on a server of its own).
        if on_sqlite:
            cold = not arguments.quick
            on_files = ("counters sharded", "sharded", ())
            results += sharded_rounds(arguments, references, tmp, *on_files, cold=cold)
        if arguments.backend in ("both", "postgres"):
            [database] = references_up.enter_context(postgres_databases())
            on_postgres = ("counters postgres", "postgres", ("--database", database))
            results += sharded_rounds(arguments, references, tmp, *on_postgres)
        references_up.close()
        if on_sqlite and not arguments.quick:
            # The same with a Ray call per batch instead of the direct channel: what it saves.
            port = free_port()
            no_channel = ("--no-direct-channel",)
            with counters_serve(port, tmp / "ray", "sharded", tmp / "ray.log", *no_channel):
                base = f"http://127.0.0.1:{port}"
                warm_up_http(base, arguments, SPREAD_NAMES)
                results += rounds({"counters ray calls": base}, arguments, "ray calls")
            port = free_port()
            with counters_serve(port, tmp / "per-name", "per-name", tmp / "per-name.log"):
                base = f"http://127.0.0.1:{port}"
                warm_up(base, "/", 10, arguments, SPREAD_LUA % PER_NAME_NAMES)  # the actors
                warm_up_http(base, arguments, PER_NAME_NAMES)
                per_name = {"counters per-name": base}
                results += rounds(per_name, arguments, "per-name", PER_NAME_NAMES)
        if on_sqlite:
            results += python_client_scenarios(arguments, tmp / "python")
    from counters.placement import default_shards
    from counters.settings import Settings

    # Each service starts on a fresh storage dir: COUNTERS_SHARDS if set, else the default.
    shards = Settings.load().shards or default_shards(os.cpu_count())
    print_table(
        results,
        f"medians of {arguments.rounds} round(s); wrk -t{arguments.threads} "
        f"-c{arguments.connections} -d{arguments.duration:g}s on loopback; {os.cpu_count()} cores"
        f"; counters sharded on {shards} shard(s)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
