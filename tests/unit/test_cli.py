from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from counters.cli.commands import _parser, main
from counters.settings import ENV_PREFIX, Settings

README = (Path(__file__).parents[2] / "README.md").read_text()
SETTINGS = [field.name for field in dataclasses.fields(Settings)]


@pytest.mark.parametrize("name", SETTINGS)
def test_every_setting_is_a_flag_and_documented(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flag = "--" + name.replace("_", "-")
    variable = ENV_PREFIX + name.upper()
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--help"])
    assert flag in capsys.readouterr().out
    assert f"`{flag}`" in README, f"{flag} is not in the README's settings table"
    assert f"`{variable}`" in README


def test_bad_setting_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COUNTERS_SHARDS", "many")
    assert main(["serve"]) == 2
    assert "COUNTERS_SHARDS must be an integer" in capsys.readouterr().err


def test_module_entry_point_prints_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "counters", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "COUNTERS_" in result.stdout
