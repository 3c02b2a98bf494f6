"""The public surface is what __all__ says, and every name in it exists."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["counters", "gateway"]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_exist_and_are_public(package: str) -> None:
    module = importlib.import_module(package)
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.{name} is in __all__ but missing"
        assert not name.startswith("_")


def test_counters_surface() -> None:
    import counters

    assert {"Namespace", "Counter", "Settings", "start_ray", "CountersError"} <= set(
        counters.__all__
    )
