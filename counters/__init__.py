"""Durable, named counters as actors on Ray.

from counters import Namespace, Settings, start_ray

settings = Settings.load()
start_ray(settings)                 # or run inside a Ray job
counters = Namespace(settings)      # like the example's env.COUNTERS
await counters.get_by_name("A").increment()
"""

from .client import BlockingCounterStub, CounterStub, CounterValue, Namespace, Replaced
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
