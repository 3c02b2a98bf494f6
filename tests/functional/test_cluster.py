"""On a real multi-node Ray (`ray.cluster_utils.Cluster`), in a process of its own: the test
session's Ray is single-node, and a process joins one Ray at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

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
print(json.dumps({"head": head, "worker": worker.node_id, "client": where, "counts": counts,
                  "again": again, "nodes": nodes, "restarted": restarted}))
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
    assert result.returncode == 0, result.stderr[-4000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["client"] == seen["worker"]
    assert seen["counts"] == [1] * 12
    assert seen["again"] == [2] * 12  # restarted hosts found every count: same node, same files
    assert set(seen["nodes"]) == {seen["head"]}
    assert set(seen["restarted"]) == {seen["head"]}
