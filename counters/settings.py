"""Configuration: one frozen value built from flags and ``COUNTERS_*`` environment variables.

A flag wins over its variable, a variable over the default. Everything is checked when the
settings are built, and an error names the flag and the variable, so a typo fails at start-up
rather than at the first request. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .applied_log import Retention
from .errors import ConfigError
from .host import HostConfig
from .placement import Layout, Placement
from .storage import Storage, StorageDir
from .storage.postgres import PostgresStorage
from .token_file import read_token_file

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "COUNTERS_"
MAX_SHARDS = 4096


@dataclass(frozen=True)
class Settings:
    """Every setting of `counters`; see `counters serve --help` for what each does."""

    host: str = "127.0.0.1"
    port: int = 8787
    storage_dir: str = ".counters"
    database: str | None = None  # a PostgreSQL address: the database, not the storage dir
    address: str | None = None
    namespace: str = "counters"
    placement: Placement = Placement.SHARDED
    shards: int | None = None  # None: the storage dir's own count, else `default_shards`
    dashboard_port: int = 8265
    host_resource: str | None = None
    max_batch: int = 4096
    max_in_flight: int = 2
    direct_channel: bool = True
    max_queue: int = 50_000
    deadline: float = 10.0
    idle_timeout: float = 60.0
    max_actors_per_node: int = 256
    max_objects_per_host: int = 10_000
    id_retention: float = 24 * 3600.0
    max_ids_per_host: int = 10_000_000
    access_log: bool = False
    max_watchers: int = 1000
    max_watch_backlog: int = 1000
    auth_token_file: str | None = None  # every HTTP request but /healthz must bear its token
    insecure: bool = False  # serve beyond loopback without a token, knowingly

    def __post_init__(self) -> None:
        _check(1 <= self.port <= 65535 or self.port == 0, "port", "a TCP port (0 to 65535)")
        _check(0 <= self.dashboard_port <= 65535, "dashboard_port", "a TCP port, 0 for none")
        shards_ok = self.shards is None or 1 <= self.shards <= MAX_SHARDS
        _check(shards_ok, "shards", f"between 1 and {MAX_SHARDS}")
        _check(bool(self.namespace.strip()), "namespace", "a non-empty Ray namespace")
        _check(bool(self.storage_dir), "storage_dir", "a directory path")
        database_ok = self.database is None or self.database.startswith(
            ("postgresql://", "postgres://")
        )
        _check(database_ok, "database", "a PostgreSQL URL (postgresql://user@host:port/db)")
        _check(self.max_batch >= 1, "max_batch", "at least 1")
        _check(self.max_queue >= 1, "max_queue", "at least 1")
        _check(self.max_in_flight >= 1, "max_in_flight", "at least 1")
        _check(self.deadline > 0, "deadline", "more than 0 seconds")
        _check(self.idle_timeout > 0, "idle_timeout", "more than 0 seconds")
        _check(self.max_actors_per_node >= 1, "max_actors_per_node", "at least 1")
        _check(self.max_objects_per_host >= 1, "max_objects_per_host", "at least 1")
        _check(
            self.id_retention >= self.id_floor,
            "id_retention",
            f"at least {self.id_floor:g} seconds (4 deadlines, and 120 s): an id must outlive "
            "every retry of its operation",
        )
        _check(self.max_ids_per_host >= 1, "max_ids_per_host", "at least 1")
        _check(self.max_watchers >= 1, "max_watchers", "at least 1")
        _check(self.max_watch_backlog >= 1, "max_watch_backlog", "at least 1")

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Settings from `flags` (None means unset), then `environ` (default os.environ)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            flag = flags.get(field.name)
            if flag is not None:
                values[field.name] = _convert(field.name, flag, f"--{_dashed(field.name)}")
                continue
            variable = ENV_PREFIX + field.name.upper()
            text = environ.get(variable)
            if text is not None and text != "":
                values[field.name] = _convert(field.name, text, variable)
        unknown = set(flags) - {field.name for field in fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        if values.get("database") and "storage_dir" in values:
            raise ConfigError(
                "--database (COUNTERS_DATABASE) and --storage-dir (COUNTERS_STORAGE_DIR) are "
                "exclusive: counters live in PostgreSQL or in SQLite files, not both"
            )
        return cls(**values)

    def auth_token(self) -> str | None:
        """The token every HTTP request must bear, read from ``auth_token_file``; None without
        one. ConfigError if the file cannot be read or holds no token."""
        return None if self.auth_token_file is None else read_token_file(self.auth_token_file)

    def refuse_open_door(self) -> None:
        """ConfigError if the gateway would listen beyond loopback with no token to ask for."""
        if self.auth_token_file is not None or self.insecure or _is_loopback(self.host):
            return
        raise ConfigError(
            f"--host {self.host} is reachable from other machines, and without a token anyone "
            "there may change any counter. Give one: --auth-token-file FILE (or "
            "COUNTERS_AUTH_TOKEN_FILE), a file holding a secret such as `python3 -c 'import "
            "secrets; print(secrets.token_urlsafe(32))'`; clients send it as `Authorization: "
            "Bearer <token>`. Or accept the risk with --insecure"
        )

    def host_config(self) -> HostConfig:
        """What every host actor is created with."""
        return HostConfig(
            retention=Retention(self.id_retention, self.max_ids_per_host, self.id_floor),
            idle_timeout=self.idle_timeout,
            max_objects=self.max_objects_per_host,
        )

    @property
    def id_floor(self) -> float:
        """Seconds every id is kept at least: a retried id must still be known when the retry
        arrives, so past any deadline."""
        return max(120.0, 4 * self.deadline)

    def layout(self, object_class: type) -> Layout:
        """How objects of `object_class` are placed on hosts under these settings.

        Needs the shard count decided: `agree_on_service` decides it when it was left unset.
        """
        if self.shards is None:
            raise ValueError("the shard count is not decided yet (see agree_on_service)")
        return Layout(object_class.__name__, self.placement, self.shards)

    def storage(self) -> Storage:
        """Where hosts keep their data: the PostgreSQL database if one is set, else the
        SQLite files of the storage dir."""
        if self.database:
            return PostgresStorage(self.database)
        return StorageDir(self.storage_path)

    @property
    def storage_path(self) -> Path:
        """The storage dir made absolute: host actors do not share the caller's working dir."""
        return Path(self.storage_dir).expanduser().resolve()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _dashed(name: str) -> str:
    return name.replace("_", "-")


def _check(ok: bool, name: str, wanted: str) -> None:
    if not ok:
        raise ConfigError(f"--{_dashed(name)} ({ENV_PREFIX}{name.upper()}) must be {wanted}")


def _convert(name: str, value: Any, source: str) -> Any:
    kind = {field.name: field.type for field in fields(Settings)}[name].removesuffix(" | None")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{source} must be true or false, got {value!r}")
    if kind in ("int", "float"):
        try:
            return int(value) if kind == "int" else float(value)
        except (TypeError, ValueError):
            wanted = "an integer" if kind == "int" else "a number"
            raise ConfigError(f"{source} must be {wanted}, got {value!r}") from None
    if name == "placement":
        try:
            return Placement(value)
        except ValueError:
            choices = ", ".join(p.value for p in Placement)
            raise ConfigError(f"{source} must be one of {choices}, got {value!r}") from None
    return str(value)
