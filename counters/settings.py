"""Configuration: one frozen value built from flags and ``COUNTERS_*`` environment variables.

A flag wins over its variable, a variable over the default. Everything is checked when the
settings are built, and an error names the flag and the variable, so a typo fails at start-up
rather than at the first request. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .placement import Layout, Placement

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "COUNTERS_"
MAX_SHARDS = 4096


@dataclass(frozen=True)
class Settings:
    """Every setting of `counters`; see `counters serve --help` for what each does."""

    host: str = "127.0.0.1"
    port: int = 8787
    storage_dir: str = ".counters"
    address: str | None = None
    namespace: str = "counters"
    placement: Placement = Placement.SHARDED
    shards: int = 4
    dashboard_port: int = 8265
    host_resource: str | None = None
    max_batch: int = 1024

    def __post_init__(self) -> None:
        _check(1 <= self.port <= 65535 or self.port == 0, "port", "a TCP port (0 to 65535)")
        _check(0 <= self.dashboard_port <= 65535, "dashboard_port", "a TCP port, 0 for none")
        _check(1 <= self.shards <= MAX_SHARDS, "shards", f"between 1 and {MAX_SHARDS}")
        _check(bool(self.namespace.strip()), "namespace", "a non-empty Ray namespace")
        _check(bool(self.storage_dir), "storage_dir", "a directory path")
        _check(self.max_batch >= 1, "max_batch", "at least 1")

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
        return cls(**values)

    def layout(self, object_class: type) -> Layout:
        """How objects of `object_class` are placed on hosts under these settings."""
        return Layout(object_class.__name__, self.placement, self.shards)

    @property
    def storage_path(self) -> Path:
        """The storage dir made absolute: host actors do not share the caller's working dir."""
        return Path(self.storage_dir).expanduser().resolve()


def _dashed(name: str) -> str:
    return name.replace("_", "-")


def _check(ok: bool, name: str, wanted: str) -> None:
    if not ok:
        raise ConfigError(f"--{_dashed(name)} ({ENV_PREFIX}{name.upper()}) must be {wanted}")


_INTEGERS = {"port", "shards", "dashboard_port", "max_batch"}


def _convert(name: str, value: Any, source: str) -> Any:
    if name in _INTEGERS:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source} must be an integer, got {value!r}") from None
    if name == "placement":
        try:
            return Placement(value)
        except ValueError:
            choices = ", ".join(p.value for p in Placement)
            raise ConfigError(f"{source} must be one of {choices}, got {value!r}") from None
    return str(value)
