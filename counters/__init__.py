"""Durable, named counters as actors on Ray.

from counters import Namespace, Settings, start_ray

settings = Settings.load()
start_ray(settings)                 # or run inside a Ray job
counters = Namespace(settings)      # like the example's env.COUNTERS
await counters.get_by_name("A").increment()

Names load on first use (PEP 562), so that a program which needs only a light part, such as the
command line's HTTP client, does not import Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import BlockingCounterStub, CounterStub, Namespace
    from .counter import Counter
    from .errors import (
        ConfigError,
        CountersError,
        CountOutOfRange,
        HostUnavailable,
        InvalidAmount,
        InvalidInput,
        InvalidName,
        LayoutMismatch,
        OutcomeUnknown,
        OutOfBounds,
        StorageFailed,
        UnknownMethod,
        VersionMismatch,
        WatcherDropped,
    )
    from .object_storage import ObjectStorage
    from .op_ids import new_op_id
    from .operations import Operation, Outcome
    from .placement import Layout, Placement
    from .runtime import service_layout, start_ray, tune_gc
    from .settings import Settings
    from .values import CounterValue, Replaced
    from .watching import Watch

__all__ = [
    "BlockingCounterStub",
    "ConfigError",
    "CountOutOfRange",
    "Counter",
    "CounterStub",
    "CounterValue",
    "CountersError",
    "HostUnavailable",
    "InvalidAmount",
    "InvalidInput",
    "InvalidName",
    "Layout",
    "LayoutMismatch",
    "Namespace",
    "ObjectStorage",
    "Operation",
    "OutOfBounds",
    "Outcome",
    "OutcomeUnknown",
    "Placement",
    "Replaced",
    "Settings",
    "StorageFailed",
    "UnknownMethod",
    "VersionMismatch",
    "Watch",
    "WatcherDropped",
    "new_op_id",
    "service_layout",
    "start_ray",
    "tune_gc",
]

# Where each name lives: the modules `__getattr__` imports.
_HOMES = {
    "client": ("BlockingCounterStub", "CounterStub", "Namespace"),
    "counter": ("Counter",),
    "errors": (
        "ConfigError",
        "CountOutOfRange",
        "CountersError",
        "HostUnavailable",
        "InvalidAmount",
        "InvalidInput",
        "InvalidName",
        "LayoutMismatch",
        "OutOfBounds",
        "OutcomeUnknown",
        "StorageFailed",
        "UnknownMethod",
        "VersionMismatch",
        "WatcherDropped",
    ),
    "object_storage": ("ObjectStorage",),
    "op_ids": ("new_op_id",),
    "operations": ("Operation", "Outcome"),
    "placement": ("Layout", "Placement"),
    "runtime": ("service_layout", "start_ray", "tune_gc"),
    "settings": ("Settings",),
    "values": ("CounterValue", "Replaced"),
    "watching": ("Watch",),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup finds it without us
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
