"""Unit tests run without Ray: starting one here is a bug in the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray

from counters.storage import Storage, StorageDir
from counters.storage.postgres import PostgresStorage


@pytest.fixture(autouse=True)
def _refuse_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("unit tests must not start Ray; move this test to tests/functional")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Each backend in turn, empty: a storage dir of SQLite files, a PostgreSQL database."""
    if request.param == "sqlite":
        return StorageDir(tmp_path / "storage")
    return PostgresStorage(request.getfixturevalue("postgres_dsn"))
