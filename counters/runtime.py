"""The actor runtime: host actors as named, detached Ray actors.

This is the one place `ray.remote` is applied. A host actor is synchronous with
``max_concurrency=1``: Ray runs its calls one at a time, which is what makes it the single writer
of its objects and its SQLite file (batches that come by the direct channel, `channel.py`, take
the same lock as Ray's calls). It is detached (it outlives the client that created it), named
(any client finds it by name in the namespace), and restarted by Ray after a crash
(``max_restarts=-1``). Calls are not retried by Ray (``max_task_retries=0``): a call that was in
flight when the actor died may or may not have been applied, so the client resends it itself,
with the same operation ids, which the host applies once (see `client.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, cast

import ray
from ray.actor import ActorClass, ActorHandle
from ray.experimental import internal_kv
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .applied_log import Retention
from .change_feed import FeedAnswer
from .channel import ChannelAddress, ChannelServer
from .directory import HostDirectory, directory_name
from .errors import ConfigError, CountersError
from .group_commit import GroupCommit
from .host import HostConfig, ObjectHost
from .metrics import RayHostMetrics, host_label
from .operations import Operation, Outcome
from .placement import Layout, Placement, default_shards
from .settings import Settings
from .storage import ServiceId

__all__ = [
    "agree_on_service",
    "get_or_create_directory",
    "get_or_create_host",
    "host_actor_class",
    "service_id",
    "service_layout",
    "start_ray",
    "storage_node",
    "tune_gc",
]

# What every client of one namespace must agree on, since host actors are created with it.
_SERVICE_FIELDS = ("storage", "placement", "shards", "host_resource")
_KV_NAMESPACE = "counters"


@functools.cache
def host_actor_class(object_class: type) -> ActorClass[Any]:
    """The Ray actor class hosting `object_class`; shown in the dashboard as e.g. CounterHost."""
    name = f"{object_class.__name__}Host"
    # A subclass per hosted class, so the dashboard's class column says what an actor hosts.
    host_class = type(
        name,
        (_RayHost,),
        {"__qualname__": name, "__module__": __name__},
    )
    remote: Any = ray.remote  # its typed overloads do not name concurrency_groups
    return cast(
        ActorClass[Any],
        remote(concurrency_groups={WATCH_GROUP: WATCH_THREADS, WATCH_SETUP_GROUP: 2})(host_class),
    )


WATCH_GROUP = "watch"
WATCH_SETUP_GROUP = "watch-setup"  # registrations: quick, never behind the waiting calls
# Threads of a host that watchers wait on: one per watching process (a gateway, a client) at
# once; more wait their turn.
WATCH_THREADS = 32
WATCH_WAIT = 15.0  # seconds a watcher's call waits for a change before it is answered empty


class _RayHost(ObjectHost):
    """What a host can only do as a Ray actor.

    Ray runs its calls one at a time; batches from the direct channel (`channel.py`) arrive on
    other threads, so every call that touches the host's state takes `_serial` too: one writer.
    Batches that wait for it together are applied and committed as one (`group_commit.py`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics = RayHostMetrics(host_label(self.layout, self.host_name))
        self._serial = threading.RLock()  # apply may sweep, which takes it too
        self._exiting = False
        self._channel: ChannelServer | None = None
        # Batches waiting for the writer (from several clients) are committed together.
        self._group = GroupCommit(
            functools.partial(ObjectHost.apply, self),
            self._serial,
            lambda: self._exiting or self.fenced is not None,
        )
        self._handle = ray.get_runtime_context().current_actor
        threading.Thread(target=self._maintain, name="counters-host-upkeep", daemon=True).start()
        tune_gc()

    def apply(self, operations: Sequence[Operation]) -> tuple[Outcome, ...]:
        outcomes = self._group.apply(operations)
        assert outcomes is not None  # only channel batches are refused
        if self.fenced is not None:
            # Nothing was stored. Raised rather than answered, so the client resends the whole
            # batch, with its ids, to the host that replaced us; and we leave.
            self._leave()
            raise self.fenced
        return outcomes

    def _maintain(self) -> None:
        """Upkeep on the host's own clock, whoever its clients are and whether any gateway
        runs: idle objects leave memory, ids past the window are forgotten, and a per-name
        host idle past the timeout exits (Ray runs that call between batches)."""
        idle = self.config.idle_timeout
        per_name = self.layout.placement is Placement.PER_NAME
        while True:
            time.sleep(min(30.0, max(0.5, idle / 4)))
            self.feed.expire()
            with self._serial:
                if self._exiting or self.fenced is not None:
                    return
                self.sweep()
                with contextlib.suppress(CountersError):  # tried again next round
                    self.forget_expired_ids()
            if per_name and self.idle_for() > idle:
                self._handle.passivate_if_idle.remote(idle)

    @ray.method(concurrency_group=WATCH_SETUP_GROUP)
    def watch(self, names: list[str]) -> tuple[str, int]:
        """Tell the caller about changes of `names` from now on (`change_feed.py`); on a
        thread of its own, never the writer's."""
        return self.feed.watch(names)

    @ray.method(concurrency_group=WATCH_GROUP)
    def changes(
        self, incarnation: str | None, after: int, names: list[str], watcher: str = ""
    ) -> FeedAnswer:
        """The changes after number `after`, once there is one or after a while; renews the
        registration of `names`. On a thread of its own: waiting never holds the writer. A
        newer call of the same `watcher` answers this one at once."""
        return self.feed.wait(incarnation, after, names, WATCH_WAIT, watcher)

    @ray.method(concurrency_group=WATCH_SETUP_GROUP)
    def release(self, watcher: str) -> None:
        """`watcher` stopped watching this host: its waiting call answers now."""
        self.feed.release(watcher)

    def _leave(self) -> None:
        self.feed.close()
        if not self._exiting:
            self._exiting = True
            if self._channel is not None:
                self._channel.close()
            self._handle.exit.remote()

    def exit(self) -> None:
        """Exit for good: Ray does not restart an actor that exits by itself."""
        self._metrics.flush()
        ray.actor.exit_actor()  # type: ignore[no-untyped-call]

    def sweep(self) -> int:
        with self._serial:
            return super().sweep()

    def forget_expired_ids(self) -> int:
        with self._serial:
            return super().forget_expired_ids()

    def stats(self) -> dict[str, int]:
        with self._serial:
            channel_batches = self._channel.batches if self._channel is not None else 0
            return {**super().stats(), "channel_batches": channel_batches}

    def node_id(self) -> str:
        """The Ray node this host runs on (caps on live actors count per node)."""
        return str(ray.get_runtime_context().get_node_id())

    def channel_address(self) -> ChannelAddress:
        """Where clients on this node send batches directly; the channel opens on first ask."""
        with self._serial:
            if self._channel is None:
                self._channel = ChannelServer(self.node_id(), self._apply_from_channel)
            return self._channel.address

    def passivate_if_idle(self, idle_seconds: float, watched_too: bool = False) -> bool:
        """Exit for good (no restart) if no batch came for `idle_seconds`; False if busy, or
        watched unless `watched_too` (the directory, out of room: its watchers resynchronise
        with the host that replaces it).

        Ray runs this between batches, so no call is cut short. Calls queued behind it fail
        with ActorDiedError, and channel batches are refused from here on; the client retries
        them on a new actor, which loads from disk.
        """
        with self._serial:
            if self.idle_for() < idle_seconds or (self.feed.watched and not watched_too):
                return False  # busy, or watched: a watcher waits on this process
            self._exiting = True  # no batch after this: a successor may start at once
            self._metrics.objects(0, len(self._objects))
            if self._channel is not None:
                self._channel.close()
            self.close()  # the successor need not wait for this process to end
        self._metrics.flush()
        ray.actor.exit_actor()  # type: ignore[no-untyped-call]
        return True  # not reached: exit_actor ends the actor

    def _apply_from_channel(self, operations: Sequence[Operation]) -> tuple[Outcome, ...] | None:
        outcomes = self._group.apply(operations, refusable=True)
        if self.fenced is not None:
            # As by Ray: nothing was stored, and the batch is not answered, so the client
            # resends it, with its ids, to the host that replaced us; and we leave.
            self._leave()
            return None
        return outcomes


def get_or_create_host(
    object_class: type,
    host_name: str,
    settings: Settings,
    layout: Layout,
    service: ServiceId | None = None,
) -> ActorHandle[Any]:
    """The handle of host `host_name`, creating it if it does not exist.

    Blocking (it asks Ray's GCS). Many callers creating the same host at once, in one process or
    many, all get the one actor: Ray's ``get_if_exists`` settles the race.
    """
    options = _serial_actor_options(host_name, settings.namespace)
    if settings.host_resource:
        # Only nodes with this resource run hosts (see cluster.yaml).
        options["resources"] = {settings.host_resource: 0.001}
    service_record = _running_service(settings.namespace, object_class.__name__)
    if not settings.database:
        # SQLite files live on one node's disk: a host started, or restarted, anywhere else
        # would open an empty storage dir there and serve counts from nothing. So a host runs
        # on the node of the client that started the service, or nowhere (its callers then
        # get 503 until that node is back).
        node = service_record["storage_node"]
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
    actor_class = host_actor_class(object_class)
    handle = actor_class.options(**options).remote(
        object_class,
        host_name,
        settings.storage(),
        layout,
        # The service's own, whichever client creates the host: not this client's flags.
        _host_config(service_record["host_config"]),
        service=service or service_id(settings.namespace, object_class.__name__),
    )
    return cast(ActorHandle[Any], handle)


def _serial_actor_options(name: str, namespace: str) -> dict[str, Any]:
    """A named actor that one call at a time, outlives its creator and restarts after a crash;
    Ray does not retry its calls (the client resends, with ids)."""
    return {
        "name": name,
        "namespace": namespace,
        "get_if_exists": True,
        "lifetime": "detached",
        "max_concurrency": 1,
        "max_restarts": -1,
        "max_task_retries": 0,
        # They wait on disk and network, not on CPU: a CPU each would cap a 2-core node at 2.
        "num_cpus": 0,
    }


def get_or_create_directory(object_class: type, settings: Settings) -> ActorHandle[Any]:
    """The handle of the directory that admits per-name hosts (`directory.py`), created if
    needed; like a host, it is named, detached and restarted after a crash."""
    options = _serial_actor_options(directory_name(object_class.__name__), settings.namespace)
    handle = (
        _directory_class()
        .options(**options)
        .remote(
            settings.namespace,
            object_class.__name__,
            _running_service(settings.namespace, object_class.__name__)["max_actors_per_node"],
        )
    )
    return cast(ActorHandle[Any], handle)


@functools.cache
def _directory_class() -> ActorClass[Any]:
    return ray.remote(HostDirectory)


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
        # Ray starts workers at nice 15 to favour its own daemons; here the workers are the
        # service (hosts, the single writers), and at 15 they starve behind the gateway's
        # process under load: hot increments on PostgreSQL went from 16k/s to 20k/s at 0.
        _system_config={"worker_niceness": 0},
    )
    return True


def agree_on_service(settings: Settings, object_class: type, join: bool = False) -> Settings:
    """The settings every client of this namespace uses, recorded once in the cluster.

    The first client of a namespace records its storage dir, placement, shard count and host
    resource in Ray's GCS; every later client must match them (else ConfigError), or, with
    `join`, adopts them. Without this, a client started in another working directory would
    create hosts on another storage dir, and counters would seem to reset.

    A shard count left unset is decided here: the running service's, else the one the storage
    dir was laid out with, else `default_shards` for this machine's CPUs.
    """
    key = f"{settings.namespace}/{object_class.__name__}"
    recorded = _recorded_service(key)
    unset = settings.shards is None
    if not join and recorded is None:
        if unset:
            settings = dataclasses.replace(settings, shards=_new_shards(settings, object_class))
        # internal_kv is Ray's private key-value store in the GCS; put with overwrite=False is
        # atomic, so of several first clients exactly one record wins. The id is the service's
        # own: hosts claim the storage with it (storage/).
        record = {
            **_service_fields(settings),
            "service_id": secrets.token_hex(16),
            "storage_node": ray.get_runtime_context().get_node_id(),
            # What hosts and the directory are made with, by whichever client makes them.
            "host_config": dataclasses.asdict(settings.host_config()),
            "max_actors_per_node": settings.max_actors_per_node,
            "description": (
                f"the counters service in Ray namespace {settings.namespace!r} of the Ray at "
                f"{ray.get_runtime_context().gcs_address}, started by pid {os.getpid()} on "
                f"{socket.gethostname()}"
            ),
        }
        internal_kv._internal_kv_put(
            key, json.dumps(record), overwrite=False, namespace=_KV_NAMESPACE
        )
        recorded = _recorded_service(key)
    if recorded is None:
        raise ConfigError(
            f"no counters service has run in Ray namespace {settings.namespace!r} on this "
            "cluster yet: start one (counters serve) or bind with Namespace(settings)"
        )
    if join:
        _check_deadline(settings, recorded)
        return dataclasses.replace(
            settings,
            storage_dir=recorded["storage_dir"],
            database=recorded["database"],
            placement=type(settings.placement)(recorded["placement"]),
            shards=recorded["shards"],
            host_resource=recorded["host_resource"],
        )
    if unset:  # whoever recorded the service decided it
        settings = dataclasses.replace(settings, shards=recorded["shards"])
    mine = _service_fields(settings)
    if any(recorded[name] != mine[name] for name in _SERVICE_FIELDS):
        differences = ", ".join(
            f"{name} {recorded[name]!r} (not {mine[name]!r})"
            for name in _SERVICE_FIELDS
            if recorded[name] != mine[name]
        )
        raise ConfigError(
            f"Ray namespace {settings.namespace!r} is already served with {differences}; "
            "use the same settings, or Namespace.join() to adopt them"
        )
    _check_deadline(settings, recorded)
    return settings


def _check_deadline(settings: Settings, recorded: dict[str, Any]) -> None:
    """A client retries an operation for up to its deadline: the hosts must still remember the
    id by then, as they do for four of the service's own deadlines."""
    floor: float = recorded["host_config"]["retention"]["floor"]
    if settings.deadline * 4 > floor:
        raise ConfigError(
            f"--deadline {settings.deadline:g} is too long for this service: its hosts keep "
            f"operation ids for {floor:g} s at least, four deadlines of at most "
            f"{floor / 4:g} s"
        )


def service_id(namespace: str, class_name: str) -> ServiceId:
    """The id of the service running in Ray namespace `namespace`, as it claims storage."""
    recorded = _running_service(namespace, class_name)
    return ServiceId(recorded["service_id"], recorded["description"])


def storage_node(namespace: str, class_name: str) -> str:
    """The Ray node of the client that started the service: a storage dir's node."""
    node: str = _running_service(namespace, class_name)["storage_node"]
    return node


def service_layout(namespace: str = "counters", class_name: str = "Counter") -> Layout:
    """How the service running in Ray namespace `namespace` places names on host actors.

    For callers using bare Ray: ``service_layout().host_for("A")`` is the name of the host actor
    serving ``A``. Needs a connected Ray; ConfigError if no service has run in that namespace.
    """
    recorded = _running_service(namespace, class_name)
    return Layout(class_name, Placement(recorded["placement"]), recorded["shards"])


def _host_config(recorded: dict[str, Any]) -> HostConfig:
    return HostConfig(
        retention=Retention(**recorded["retention"]),
        idle_timeout=recorded["idle_timeout"],
        max_objects=recorded["max_objects"],
    )


def _running_service(namespace: str, class_name: str) -> dict[str, Any]:
    recorded = _recorded_service(f"{namespace}/{class_name}")
    if recorded is None:
        raise ConfigError(
            f"no counters service has run in Ray namespace {namespace!r} on this cluster yet"
        )
    return recorded


def _service_fields(settings: Settings) -> dict[str, Any]:
    return {
        # What clients must agree on: where the data is (never a password).
        "storage": settings.storage().describe(),
        "storage_dir": str(settings.storage_path),
        "database": settings.database,
        "placement": settings.placement.value,
        "shards": settings.shards,
        "host_resource": settings.host_resource,
    }


def _recorded_service(key: str) -> dict[str, Any] | None:
    raw = internal_kv._internal_kv_get(key, namespace=_KV_NAMESPACE)
    return None if raw is None else cast(dict[str, Any], json.loads(raw))


def _new_shards(settings: Settings, object_class: type) -> int:
    """The shard count of a service started without one: its storage dir's, or the default."""
    recorded = settings.storage().recorded_shards(object_class.__name__)
    return recorded or default_shards(os.cpu_count())


def tune_gc() -> None:
    """Make Python's cyclic garbage collector cheap for a long-running, busy process.

    Profiles of the gateway under load showed a sixth of its time in the collector, walking the
    tens of thousands of objects Ray and aiohttp create at import. `gc.freeze` moves everything
    alive now out of its sight, and a higher first threshold runs it less often; our own objects
    rarely form cycles, so little garbage waits longer. The gateway and the hosts call it once
    started; a client process with thousands of calls in flight gains too (the bench's Python
    client: about a tenth more calls a second), called once its imports and setup are done.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
