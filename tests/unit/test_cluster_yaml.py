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


def test_every_node_runs_a_gateway_on_the_one_database(config: dict[str, Any]) -> None:
    assert config["provider"]["type"] == "local"
    assert config["file_mounts"]["~/.counters-token"] == "~/.counters-token"
    setup = config["setup_commands"]
    assert any("pip install" in command and "counters" in command for command in setup)
    # The database's address is written in one place, and every gateway reads it from there.
    assert sum("COUNTERS_DATABASE=postgresql://" in command for command in setup) == 1
    head = config["head_start_ray_commands"]
    workers = config["worker_start_ray_commands"]
    assert "ray start --head" in " ".join(head)
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(workers)
    for commands in (head, workers):
        gateway = [command for command in commands if "counters serve" in command]
        assert len(gateway) == 1
        assert ". ~/counters.env" in gateway[0]
        assert "counters serve --address auto --host 0.0.0.0" in gateway[0]
        assert "--auth-token-file ~/.counters-token" in gateway[0]  # no open door
        assert "--storage-dir" not in gateway[0]  # PostgreSQL: no node holds the data
        assert "--host-resource" not in gateway[0]  # hosts run on any node
