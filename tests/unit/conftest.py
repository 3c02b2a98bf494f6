"""Unit tests run without Ray: starting one here is a bug in the test."""

from __future__ import annotations

from typing import Any

import pytest
import ray


@pytest.fixture(autouse=True)
def _refuse_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("unit tests must not start Ray; move this test to tests/functional")

    monkeypatch.setattr(ray, "init", refuse)
