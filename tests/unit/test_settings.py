from __future__ import annotations

from pathlib import Path

import pytest

from counters.errors import ConfigError
from counters.placement import Placement
from counters.settings import Settings


def test_defaults_are_the_embedded_service() -> None:
    settings = Settings.load(environ={})
    assert (settings.host, settings.port, settings.storage_dir) == ("127.0.0.1", 8787, ".counters")
    assert settings.placement is Placement.SHARDED
    assert settings.address is None
    assert settings.namespace == "counters"
    assert settings.shards is None  # decided when the service starts (agree_on_service)


def test_a_layout_needs_the_shard_count_decided() -> None:
    with pytest.raises(ValueError, match="not decided"):
        Settings.load(environ={}).layout(object)
    layout = Settings.load(environ={}, shards=3).layout(object)
    assert (layout.class_name, layout.placement, layout.shards) == ("object", Placement.SHARDED, 3)


def test_flags_win_over_environment_over_defaults() -> None:
    environ = {"COUNTERS_PORT": "9000", "COUNTERS_PLACEMENT": "per-name", "COUNTERS_SHARDS": "8"}
    settings = Settings.load(environ=environ, port=9100, shards=None)
    assert settings.port == 9100
    assert settings.placement is Placement.PER_NAME
    assert settings.shards == 8


@pytest.mark.parametrize(
    ("environ", "flags", "message"),
    [
        ({"COUNTERS_PORT": "http"}, {}, "COUNTERS_PORT must be an integer"),
        ({"COUNTERS_PORT": "70000"}, {}, "COUNTERS_PORT"),
        ({}, {"shards": 0}, "--shards"),
        (
            {"COUNTERS_PLACEMENT": "random"},
            {},
            "COUNTERS_PLACEMENT must be one of sharded, per-name",
        ),
        ({}, {"namespace": " "}, "COUNTERS_NAMESPACE"),
        ({}, {"max_batch": 0}, "--max-batch"),
    ],
)
def test_bad_settings_name_their_variable(
    environ: dict[str, str], flags: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(environ=environ, **flags)


def test_storage_path_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings.load(environ={}).storage_path == tmp_path / ".counters"


def test_unknown_setting_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="colour"):
        Settings.load(environ={}, colour="red")


@pytest.mark.parametrize(("text", "expected"), [("1", True), ("yes", True), ("off", False)])
def test_switches_read_the_usual_words(text: str, expected: bool) -> None:
    assert Settings.load(environ={"COUNTERS_ACCESS_LOG": text}).access_log is expected


def test_a_switch_refuses_other_words() -> None:
    with pytest.raises(ConfigError, match="COUNTERS_ACCESS_LOG must be true or false"):
        Settings.load(environ={"COUNTERS_ACCESS_LOG": "maybe"})


def test_ids_are_kept_past_every_retry() -> None:
    with pytest.raises(ConfigError, match=r"COUNTERS_ID_RETENTION\) must be at least 120 seconds"):
        Settings.load(environ={"COUNTERS_ID_RETENTION": "119"})
    with pytest.raises(ConfigError, match="at least 200 seconds"):
        Settings.load(environ={}, deadline=50, id_retention=199)
    settings = Settings.load(environ={}, deadline=50, id_retention=200)
    assert settings.host_config().retention.floor == 200


def test_a_database_and_a_storage_dir_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="exclusive"):
        Settings.load(
            environ={"COUNTERS_DATABASE": "postgresql://u@127.0.0.1/db"}, storage_dir="/srv/c"
        )
    with pytest.raises(ConfigError, match="COUNTERS_DATABASE\\) must be a PostgreSQL URL"):
        Settings.load(environ={"COUNTERS_DATABASE": "mysql://u@127.0.0.1/db"})
    settings = Settings.load(environ={"COUNTERS_DATABASE": "postgresql://u:pw@127.0.0.1/db"})
    assert "pw" not in settings.storage().describe()
    assert settings.storage().describe() == "PostgreSQL database user=u dbname=db host=127.0.0.1"


def test_the_auth_token_comes_from_its_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("  abc-123_XYZ\n")
    assert Settings.load(environ={}, auth_token_file=str(token)).auth_token() == "abc-123_XYZ"
    assert Settings.load(environ={}).auth_token() is None
    for bad in ("", "\n", "two words", "nön-ascii"):
        token.write_text(bad)
        with pytest.raises(ConfigError, match="must hold one token"):
            Settings.load(environ={}, auth_token_file=str(token)).auth_token()
    with pytest.raises(ConfigError, match="cannot read it"):
        Settings.load(environ={}, auth_token_file=str(tmp_path / "missing")).auth_token()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    Settings.load(environ={}, host=host).refuse_open_door()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "gateway.example"])
def test_beyond_loopback_a_token_or_insecure_is_needed(host: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--auth-token-file"):
        Settings.load(environ={}, host=host).refuse_open_door()
    Settings.load(environ={}, host=host, insecure=True).refuse_open_door()
    Settings.load(environ={}, host=host, auth_token_file=str(tmp_path / "t")).refuse_open_door()
