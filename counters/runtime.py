"""The actor runtime: host actors as named, detached Ray actors.

This is the one place `ray.remote` is applied. A host actor is synchronous with
``max_concurrency=1``: Ray runs its calls one at a time, which is what makes it the single writer
of its objects and its SQLite file. It is detached (it outlives the client that created it), named
(any client finds it by name in the namespace), and restarted by Ray after a crash
(``max_restarts=-1``). Calls are not retried by Ray (``max_task_retries=0``): a call that was in
flight when the actor died may or may not have been applied, and only the caller can decide.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import ray
from ray.actor import ActorClass, ActorHandle

from .host import ObjectHost
from .placement import Layout
from .settings import Settings

__all__ = ["get_or_create_host", "host_actor_class", "start_ray"]


@functools.cache
def host_actor_class(object_class: type) -> ActorClass[Any]:
    """The Ray actor class hosting `object_class`; shown in the dashboard as e.g. CounterHost."""
    name = f"{object_class.__name__}Host"
    # A subclass per hosted class, so the dashboard's class column says what an actor hosts.
    host_class = type(name, (ObjectHost,), {"__qualname__": name, "__module__": __name__})
    return ray.remote(host_class)  # type: ignore[no-any-return]


def get_or_create_host(
    object_class: type, host_name: str, settings: Settings, layout: Layout
) -> ActorHandle[Any]:
    """The handle of host `host_name`, creating it if it does not exist.

    Blocking (it asks Ray's GCS). Many callers creating the same host at once, in one process or
    many, all get the one actor: Ray's ``get_if_exists`` settles the race.
    """
    options: dict[str, Any] = {
        "name": host_name,
        "namespace": settings.namespace,
        "get_if_exists": True,
        "lifetime": "detached",
        "max_concurrency": 1,
        "max_restarts": -1,
        "max_task_retries": 0,
        # Hosts wait on disk, not on CPU: reserving a CPU each would cap a 2-core node at 2 hosts.
        "num_cpus": 0,
    }
    if settings.host_resource:
        # Keeps hosts on the nodes that have the storage dir (see cluster.yaml).
        options["resources"] = {settings.host_resource: 0.001}
    actor_class = host_actor_class(object_class)
    return actor_class.options(**options).remote(  # type: ignore[no-any-return]
        object_class, host_name, str(settings.storage_path), layout
    )


def start_ray(settings: Settings) -> bool:
    """Join the cluster at ``settings.address``, or start a local Ray. True if Ray was started.

    A local Ray starts with its dashboard on 127.0.0.1 at ``settings.dashboard_port`` (0: none).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home
    if ray.is_initialized():
        return False
    if settings.address:
        ray.init(address=settings.address, namespace=settings.namespace, log_to_driver=False)
        return False
    ray.init(
        address="local",  # our own Ray, even if another one runs on this machine
        namespace=settings.namespace,
        include_dashboard=settings.dashboard_port != 0,
        dashboard_host="127.0.0.1",
        dashboard_port=settings.dashboard_port or None,
        log_to_driver=False,
    )
    return True
