"""On a real multi-node Ray (`ray.cluster_utils.Cluster`), in a process of its own: the test
session's Ray is single-node, and a process joins one Ray at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Starting a cluster of two nodes takes most of a minute on two busy cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

# A head and a worker on this machine. A client on the worker node (a Ray task pinned there)
# creates the hosts: they must still start on the head, where the storage dir is, and start
# there again after they are killed.
SQLITE_HOSTS_STAY_WITH_THEIR_FILES = """
import json, sys
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from counters import Namespace, Settings

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
worker = cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address, namespace="pinned", log_to_driver=False)
head = ray.get_runtime_context().get_node_id()
settings = Settings.load(environ={}, namespace="pinned", storage_dir=sys.argv[1], shards=4)
service = Namespace(settings)
on_the_worker = NodeAffinitySchedulingStrategy(worker.node_id, soft=False)

@ray.remote(num_cpus=0, scheduling_strategy=on_the_worker)
def client_on_the_worker(names):
    counters = Namespace.join("pinned")
    counts = [counters.get_by_name(name).blocking.increment() for name in names]
    nodes = [ray.get(counters.handle(h).node_id.remote()) for h in counters.known_hosts()]
    return ray.get_runtime_context().get_node_id(), counts, nodes

names = [f"n{i}" for i in range(12)]
where, counts, nodes = ray.get(client_on_the_worker.remote(names))
for host in sorted({service.host_for(n) for n in names}):
    ray.kill(ray.get_actor(host, namespace="pinned"), no_restart=False)  # Ray restarts it
_, again, restarted = ray.get(client_on_the_worker.remote(names))
print("RESULT " + json.dumps({"head": head, "worker": worker.node_id, "client": where,
                  "counts": counts, "again": again, "nodes": nodes, "restarted": restarted}))
ray.shutdown()
cluster.shutdown()
"""


def test_sqlite_hosts_run_only_on_the_storage_dirs_node(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "COUNTERS_"))}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    result = subprocess.run(
        [sys.executable, "-c", SQLITE_HOSTS_STAY_WITH_THEIR_FILES, str(tmp_path / "storage")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    seen = reported(result)
    assert seen["client"] == seen["worker"]
    assert seen["counts"] == [1] * 12
    assert seen["again"] == [2] * 12  # restarted hosts found every count: same node, same files
    assert set(seen["nodes"]) == {seen["head"]}
    assert set(seen["restarted"]) == {seen["head"]}


# PostgreSQL: hosts on any node that offers the host resource. Two clients in two processes on
# two nodes change the same counters at once; then the worker that runs the hosts is removed
# without grace under load: Ray restarts its hosts on the other worker that offers the resource,
# the clients resend with their ids, and every count is exact.
POSTGRES_HOSTS_OUTLIVE_THEIR_NODE = """
import asyncio, json, sys, time, uuid
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from counters import Namespace, Settings
from counters.errors import CountersError

fast_health = {"health_check_period_ms": 200, "health_check_failure_threshold": 5,
               "health_check_timeout_ms": 200, "health_check_initial_delay_ms": 0}
cluster = Cluster(initialize_head=True,
                  head_node_args={"num_cpus": 1, "_system_config": fast_health})
worker = cluster.add_node(num_cpus=1, resources={"hosts": 1})
cluster.wait_for_nodes()
ray.init(address=cluster.address, namespace="moving", log_to_driver=False)
head = ray.get_runtime_context().get_node_id()
settings = Settings.load(environ={}, namespace="moving", database=sys.argv[1], shards=2,
                         deadline=60, host_resource="hosts")
service = Namespace(settings)
names = [f"n{i}" for i in range(8)]

def increments(counters, count, seed):
    made = {}
    for i in range(count):
        name = names[(i + seed) % len(names)]
        op_id = uuid.uuid4().hex
        while True:  # the same id until acknowledged
            try:
                counters.get_by_name(name).blocking.increment(op_id=op_id)
                break
            except CountersError:
                time.sleep(0.05)
        made[name] = made.get(name, 0) + 1
    return made

on_the_worker = NodeAffinitySchedulingStrategy(worker.node_id, soft=False)

@ray.remote(num_cpus=0, scheduling_strategy=on_the_worker)
def client_on_the_worker(count, seed):
    counters = Namespace.join("moving")
    made = increments(counters, count, seed)
    nodes = sorted({ray.get(counters.handle(h).node_id.remote()) for h in counters.known_hosts()})
    return made, nodes

# The worker's client creates the hosts (on its node), then both clients run at once.
first, hosts_at = ray.get(client_on_the_worker.remote(len(names), 0))
both = client_on_the_worker.remote(300, 1)
here = increments(service, 300, 2)
there, _ = ray.get(both)
expected = {n: first.get(n, 0) + here.get(n, 0) + there.get(n, 0) for n in names}
counts = {n: service.get_by_name(n).blocking.get_counter_value() for n in names}
two_clients_exact = counts == expected

# Now a second worker that may run hosts joins, and the first goes, without grace, while this
# client keeps changing counters.
spare = cluster.add_node(num_cpus=0, resources={"hosts": 1})
cluster.wait_for_nodes()
async def under_load(seconds):
    made = {}
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    async def one_client(seed):
        i = seed
        while loop.time() < until:
            name = names[i % len(names)]
            i += 1
            op_id = uuid.uuid4().hex
            while True:
                try:
                    await service.get_by_name(name).increment(op_id=op_id)
                    break
                except CountersError:
                    await asyncio.sleep(0.05)
            made[name] = made.get(name, 0) + 1
    async def remove_the_worker():
        await asyncio.sleep(1.0)
        await asyncio.to_thread(cluster.remove_node, worker, False)
    await asyncio.gather(remove_the_worker(), *(one_client(s) for s in range(6)))
    return made

made = asyncio.run(under_load(8.0))
after = {n: service.get_by_name(n).blocking.get_counter_value() for n in names}
moved_to = sorted({ray.get(service.handle(h).node_id.remote()) for h in service.known_hosts()})
print("RESULT " + json.dumps({
    "head": head, "worker": worker.node_id, "spare": spare.node_id, "hosts_at": hosts_at,
    "two_clients_exact": two_clients_exact, "counts": counts, "expected": expected,
    "after": after, "expected_after": {n: expected[n] + made.get(n, 0) for n in names},
    "made_under_load": sum(made.values()), "moved_to": moved_to,
}))
ray.shutdown()
cluster.shutdown()
"""


def test_postgres_hosts_serve_two_clients_and_outlive_their_node(
    tmp_path: Path, postgres_dsn: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "COUNTERS_"))}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    result = subprocess.run(
        [sys.executable, "-c", POSTGRES_HOSTS_OUTLIVE_THEIR_NODE, postgres_dsn],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    seen = reported(result)
    assert seen["hosts_at"] == [seen["worker"]]  # the node that goes held every host
    assert seen["two_clients_exact"], (seen["counts"], seen["expected"])
    assert seen["after"] == seen["expected_after"]  # nothing lost, nothing twice
    assert seen["made_under_load"] > 50
    assert seen["moved_to"] == [seen["spare"]]


def reported(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """What the script found: its RESULT line (Ray may print after it)."""
    assert result.returncode == 0, result.stderr[-4000:]
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            found: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
            return found
    raise AssertionError(result.stdout[-4000:] + result.stderr[-4000:])


# A stale host fenced out. The worker's raylet is frozen (SIGSTOP) until Ray declares the node
# dead and restarts its host on the spare node; the old host's process runs on all the while,
# and a client on the frozen node keeps sending it batches by its direct channel. Both hosts
# now serve counter x: only the epoch in every commit keeps the old one from overwriting what
# the new one stores. Every id either client sent is resent at the end until acknowledged, so
# the count must equal the ids sent, exactly.
STALE_HOST_IS_FENCED = """
import asyncio, json, os, signal, sys, time, uuid
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from counters import Namespace, Settings
from counters.errors import CountersError

journal = sys.argv[2]  # every id a client sends, one per line
fast_health = {"health_check_period_ms": 200, "health_check_failure_threshold": 5,
               "health_check_timeout_ms": 200, "health_check_initial_delay_ms": 0}
cluster = Cluster(initialize_head=True,
                  head_node_args={"num_cpus": 1, "_system_config": fast_health})
worker = cluster.add_node(num_cpus=1, resources={"hosts": 1})
cluster.wait_for_nodes()
ray.init(address=cluster.address, namespace="stale", log_to_driver=False)
settings = Settings.load(environ={}, namespace="stale", database=sys.argv[1], shards=1,
                         deadline=60, host_resource="hosts")
service = Namespace(settings)
service.get_by_name("x").blocking.increment(op_id="first")
with open(journal, "a") as out:
    out.write("first\\n")
old_host = ray.get(service.handle(service.host_for("x")).node_id.remote())

async def increments(counters, until):
    # A new id only before `until` (wall-clock time, which every process here shares): the
    # journal is read after it, so no id can be sent that it does not hold.
    sent = 0
    while time.time() < until:
        op_id = uuid.uuid4().hex
        with open(journal, "a") as out:
            out.write(op_id + "\\n")
        while time.time() < until:
            try:
                await counters.get_by_name("x").increment(op_id=op_id)
                break
            except CountersError:
                await asyncio.sleep(0.02)
        sent += 1
    return sent

on_the_worker = NodeAffinitySchedulingStrategy(worker.node_id, soft=False)

@ray.remote(num_cpus=0, scheduling_strategy=on_the_worker)
def client_on_the_frozen_node(until):
    return asyncio.run(increments(Namespace.join("stale"), until))

stop_there = time.time() + 12.0
there = client_on_the_frozen_node.remote(stop_there)
time.sleep(2.0)
spare = cluster.add_node(num_cpus=0, resources={"hosts": 1})
cluster.wait_for_nodes()
raylet = worker.all_processes["raylet"][0].process
os.kill(raylet.pid, signal.SIGSTOP)
here = asyncio.run(increments(service, time.time() + 6.0))
new_host = ray.get(service.handle(service.host_for("x")).node_id.remote())
os.kill(raylet.pid, signal.SIGCONT)
time.sleep(max(3.0, stop_there + 1.0 - time.time()))

async def resend_everything():
    with open(journal) as lines:
        ids = [line.strip() for line in lines if line.strip()]
    counters = Namespace.join("stale")
    for op_id in ids:
        await counters.get_by_name("x").increment(op_id=op_id)
    return ids

ids = asyncio.run(resend_everything())
count = service.get_by_name("x").blocking.get_counter_value()
print("RESULT " + json.dumps({"ids": len(ids), "distinct": len(set(ids)), "count": count,
                              "old_host": old_host, "new_host": new_host,
                              "worker": worker.node_id, "spare": spare.node_id, "here": here}))
ray.shutdown()
cluster.shutdown()
"""


def test_a_stale_host_cut_off_from_the_cluster_changes_nothing(
    tmp_path: Path, postgres_dsn: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "COUNTERS_"))}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    journal = tmp_path / "sent"
    result = subprocess.run(
        [sys.executable, "-c", STALE_HOST_IS_FENCED, postgres_dsn, str(journal)],
        capture_output=True,
        text=True,
        env=env,
        timeout=380,
    )
    seen = reported(result)
    assert (seen["old_host"], seen["new_host"]) == (seen["worker"], seen["spare"])
    assert seen["here"] > 20
    assert seen["ids"] == seen["distinct"]
    assert seen["count"] == seen["distinct"]  # every id applied once: none lost, none twice
