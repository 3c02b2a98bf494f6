"""The directory of per-name hosts: every new one is admitted here first, so the cap is a bound.

Per-name placement runs an actor per counter name, each a process of its own (tens of MiB).
Clients create hosts on demand, from many processes at once, so a cap that each of them checked
would be a hope, not a bound. So before a client creates a per-name host, it asks the directory
(`admit`): a Ray actor that runs one call at a time, one per service. Below the cap it admits at
once. At the cap it first makes room: it asks every live host how long it has been idle, and
asks the one idle longest to exit (`passivate_if_idle`, which Ray runs between that host's
calls, so none is cut short; a call queued behind it is resent by its client to a new actor);
if none will go, the caller gets Overloaded and nothing is created.

The directory counts the hosts it admitted. Hosts also leave by themselves (idle, killed, lost
with their node); it learns so when it next makes room, since a gone host is no longer found (one
admitted but never seen yet counts as being created, for a while).
Counting a gone host can only make it evict sooner, never admit more than the cap. A directory
that restarts counts again from Ray's list of named actors.

The cap is per service: with SQLite storage every host runs on the storage dir's node, so it is
the cap of that node.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from .errors import Overloaded

__all__ = ["HostDirectory", "directory_name"]

_ASK_TIMEOUT = 10.0  # seconds to wait for a host's answer before counting it as busy
_BEING_CREATED = 60.0  # seconds an admitted host counts before its client has created it
_WAIT_FOR_ROOM = 10.0  # seconds to keep trying while every live host is busy or being created


def directory_name(class_name: str) -> str:
    """The Ray actor name of the directory of `class_name`'s per-name hosts."""
    return f"{class_name}.directory"  # no "/": never a per-name host's name


class HostDirectory:
    """Admits per-name hosts of one class in one Ray namespace, at most `cap` live at once."""

    def __init__(self, namespace: str, class_name: str, cap: int) -> None:
        self._namespace = namespace
        self._cap = cap
        prefix = f"{class_name}/"
        # Least recently admitted first, with when. Restarted: the per-name hosts alive now.
        self._live: OrderedDict[str, float] = OrderedDict(
            (actor["name"], 0.0)
            for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor["namespace"] == namespace and actor["name"].startswith(prefix)
        )
        self._seen: set[str] = set(self._live)  # found alive once: once not found, gone

    def admit(self, host: str) -> None:
        """Let `host` be created: at once if it is counted or there is room, else after the
        longest idle host has exited. Raises Overloaded if every live host is busy."""
        if host in self._live:
            self._live.move_to_end(host)
            return
        give_up = time.monotonic() + _WAIT_FOR_ROOM
        while len(self._live) >= self._cap:
            # Hosts just admitted may still be starting, and busy ones may soon be idle: try
            # again for a while before refusing (the caller's deadline bounds the wait too).
            try:
                self._make_room()
            except Overloaded:
                if time.monotonic() >= give_up:
                    raise
                time.sleep(0.2)
        self._live[host] = time.monotonic()

    def live(self) -> int:
        """Hosts counted as live."""
        return len(self._live)

    def _forget(self, host: str) -> None:
        del self._live[host]
        self._seen.discard(host)

    def _make_room(self) -> None:
        """Stop the longest idle hosts until one more fits (after a restart of the directory,
        more than one may be over)."""
        asked: dict[str, tuple[Any, Any]] = {}
        for host, admitted in list(self._live.items()):
            try:
                handle = ray.get_actor(host, namespace=self._namespace)
            except ValueError:
                # Gone, unless just admitted and never seen: its client may be creating it.
                if host in self._seen or time.monotonic() - admitted > _BEING_CREATED:
                    self._forget(host)
                continue
            self._seen.add(host)
            asked[host] = (handle, handle.idle_for.remote())
        if len(self._live) < self._cap:
            return
        idle: list[tuple[float, str]] = []
        for host, (_, reply) in asked.items():
            try:
                idle.append((ray.get(reply, timeout=_ASK_TIMEOUT), host))
            except RayActorError:
                self._forget(host)
            except GetTimeoutError:
                continue  # busy with a long call: not the one to stop
        if len(self._live) < self._cap:
            return
        # Idle hosts nobody watches first; then watched ones, whose watchers come back to a
        # new host: watching must not make every other counter unavailable.
        for watched_too in (False, True):
            for _, host in sorted(idle, reverse=True):
                if host not in self._live:
                    continue
                handle, _ = asked[host]
                try:
                    call = handle.passivate_if_idle.remote(0.0, watched_too)
                    left = ray.get(call, timeout=_ASK_TIMEOUT)
                except RayActorError:
                    left = True  # it exited during the call, as asked
                except GetTimeoutError:
                    left = False
                if left:
                    self._forget(host)
                    if len(self._live) < self._cap:
                        return
        raise Overloaded(
            f"{len(self._live)} per-name hosts are live (--max-actors-per-node) and none "
            "would stop; retry shortly"
        )
