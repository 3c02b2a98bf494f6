"""The API contract, fuzzed: schemathesis with its default checks against a live service with
a token, every operation of /openapi.json (the streams of /watch included)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from counters.testing import Service

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
TOKEN = "contract-test-token"


@pytest.mark.timeout(300)
def test_the_service_keeps_its_contract(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    with Service(tmp_path / "storage", "--auth-token-file", str(token)) as service:
        command = [
            sys.executable, "-m", "schemathesis.cli",
            "--config-file", str(HERE / "schemathesis.toml"),
            "run", f"http://127.0.0.1:{service.port}/openapi.json",
            "--header", f"Authorization: Bearer {TOKEN}",
            "--max-examples", "30",
            "--seed", "20261201",  # the same cases every run: a failure is reproducible
        ]  # fmt: skip
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.functional.schemathesis_hooks",
            "PYTHONPATH": str(HERE.parents[1]),
        }
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        # Every operation it loads is tested, /watch's stream too.
        loaded = re.search(r"Selected: (\d+)/\1\n", result.stdout)
        assert loaded, result.stdout
        assert f"Tested: {loaded[1]}" in result.stdout, result.stdout
