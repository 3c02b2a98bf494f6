"""Every error `counters` raises, one tree.

Each error knows the HTTP status the gateway answers with and whether the caller may simply
send the same call again (``retry_safe``: the call changed nothing, so repeating it cannot
apply a change twice). All of them take a single message argument, so they pickle unchanged
across Ray's process boundaries.

    CountersError
    ├── InvalidInput         400  the request itself is wrong; nothing changed
    │   ├── InvalidName      400  empty, too long, or with control characters
    │   ├── InvalidAmount    400  not an integer, or outside the signed 64-bit range
    │   └── UnknownMethod    400  the object has no such RPC method
    ├── CountOutOfRange      422  the change would leave the signed 64-bit range; nothing changed
    ├── OutOfBounds          409  the change would leave the caller's bounds; nothing changed
    ├── VersionMismatch      412  the counter is not at the version named; nothing changed
    ├── IdempotencyKeyReused 422  an operation id sent again with another request
    ├── StorageFailed        503  the commit failed; nothing of the call was stored
    │   ├── StorageFull      507  the disk (or the file's page limit) is full
    │   ├── StorageBusy      503  another process holds the host's file; nothing was stored
    │   └── Fenced           503  a newer host took the file over; nothing was stored
    ├── Overloaded           503  too many operations wait for this host; nothing was sent
    │   └── WatcherDropped   503  a watcher fell too far behind; watch again to resume
    ├── HostUnavailable      503  no host answered within the deadline; retry with the same op id
    ├── OutcomeUnknown       503  the host died during the call: it may or may not have applied it
    └── ConfigError          500  a setting is invalid, or does not match the storage it uses
        ├── LayoutMismatch   500  the storage dir holds another placement or shard count
        └── StorageDirInUse  500  another counters service uses the storage dir
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CountOutOfRange",
    "CountersError",
    "Fenced",
    "HostUnavailable",
    "IdempotencyKeyReused",
    "InvalidAmount",
    "InvalidInput",
    "InvalidName",
    "LayoutMismatch",
    "OutOfBounds",
    "OutcomeUnknown",
    "Overloaded",
    "StorageBusy",
    "StorageDirInUse",
    "StorageFailed",
    "StorageFull",
    "UnknownMethod",
    "VersionMismatch",
    "WatcherDropped",
]


class CountersError(Exception):
    """Base of every error of `counters`."""

    http_status: int = 500
    retry_safe: bool = False
    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(CountersError):
    http_status = 400
    retry_safe = True
    code = "invalid_input"


class InvalidName(InvalidInput):
    code = "invalid_name"


class InvalidAmount(InvalidInput):
    code = "invalid_amount"


class UnknownMethod(InvalidInput):
    code = "unknown_method"


class CountOutOfRange(CountersError):
    http_status = 422
    retry_safe = True
    code = "count_out_of_range"


class OutOfBounds(CountersError):
    http_status = 409
    retry_safe = True
    code = "out_of_bounds"


class VersionMismatch(CountersError):
    http_status = 412
    retry_safe = True
    code = "version_mismatch"


class IdempotencyKeyReused(CountersError):
    http_status = 422
    retry_safe = False
    code = "idempotency_key_reused"


class StorageFailed(CountersError):
    http_status = 503
    retry_safe = True
    code = "storage_failed"


class StorageFull(StorageFailed):
    http_status = 507
    code = "storage_full"


class StorageBusy(StorageFailed):
    code = "storage_busy"


class Fenced(StorageFailed):
    code = "fenced"


class Overloaded(CountersError):
    http_status = 503
    retry_safe = True
    code = "overloaded"


class WatcherDropped(Overloaded):
    """A watcher fell too far behind the changes it watches and was let go; it may resume."""

    code = "watcher_dropped"


class HostUnavailable(CountersError):
    http_status = 503
    retry_safe = True
    code = "host_unavailable"


class OutcomeUnknown(CountersError):
    http_status = 503
    retry_safe = False
    code = "outcome_unknown"


class ConfigError(CountersError):
    code = "config_error"


class LayoutMismatch(ConfigError):
    code = "layout_mismatch"


class StorageDirInUse(ConfigError):
    code = "storage_dir_in_use"
