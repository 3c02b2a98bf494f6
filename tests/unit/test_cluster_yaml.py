"""cluster.yaml is a valid Ray cluster launcher config and starts what the README says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).parents[2] / "cluster.yaml"


@pytest.fixture
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CLUSTER_YAML.read_text())
    return loaded


def test_validates_against_rays_schema(config: dict[str, Any]) -> None:
    validate_config(prepare_config(config))  # as `ray up` does: defaults filled, then checked


def test_schema_check_is_real(config: dict[str, Any]) -> None:
    config["provider"]["no_such_option"] = True
    config["no_such_section"] = {}
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


def test_installs_the_package_and_starts_the_gateway_on_the_head(config: dict[str, Any]) -> None:
    assert config["provider"]["type"] == "local"
    assert any(
        "pip install" in command and "counters" in command for command in config["setup_commands"]
    )
    head = " ".join(config["head_start_ray_commands"])
    assert "ray start --head" in head
    assert "counters serve --address auto" in head
    assert "--host-resource counters_storage" in head
    assert '"counters_storage"' in head
    workers = " ".join(config["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in workers
    assert "counters serve" not in workers
