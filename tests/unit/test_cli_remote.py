"""The command line's commands that use a running service, where no service is needed: what
they load, their documentation, bad usage, and a gateway that does not answer."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from counters.cli.commands import COMMANDS, EXIT_CODES, _parser

README = (Path(__file__).parents[2] / "README.md").read_text()
REMOTE = ["get", "incr", "decr", "set", "delete", "list", "watch"]


def counters(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERS_")}
    return subprocess.run(
        [sys.executable, "-m", "counters", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=inherited | {"RAY_USAGE_STATS_ENABLED": "0"} | env,
    )


def closed_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there now


@pytest.mark.parametrize("name", [command.name for command in COMMANDS])
def test_every_command_is_in_the_readme(name: str) -> None:
    assert re.search(rf"(`|\$ )counters {name}\b", README), f"`counters {name}` is undocumented"


@pytest.mark.parametrize("name", REMOTE)
def test_the_exit_codes_are_in_the_help_and_the_readme(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    codes = re.findall(r"^  (\d+) ", EXIT_CODES, re.MULTILINE)
    assert codes == ["0", "1", "2", "3", "130"]
    for code in codes:
        assert f"| `{code}` |" in README, f"exit code {code} is not in the README's table"
    with pytest.raises(SystemExit):
        _parser().parse_args([name, "--help"])
    shown = capsys.readouterr().out
    assert EXIT_CODES in shown
    for flag in ("--url", "--auth-token-file", "--json"):
        assert flag in shown


def test_commands_against_a_service_load_neither_ray_nor_aiohttp() -> None:
    probe = (
        "import sys\n"
        "from counters.cli import main\n"
        f"code = main(['get', 'A', '--url', {closed_url()!r}, '--timeout', '1'])\n"
        "heavy = sorted({'ray', 'aiohttp', 'psycopg'} & {m.split('.')[0] for m in sys.modules})\n"
        "print(code, heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.stdout == "3 []\n", result.stderr


def test_no_gateway_is_exit_3_and_a_change_says_how_to_retry_it() -> None:
    url = closed_url()
    read = counters("get", "A", "--url", url)
    assert (read.returncode, read.stdout) == (3, "")
    assert read.stderr == f"counters: cannot reach {url}: connection refused\n"
    change = counters("incr", "A", "--idempotency-key", "k-1", COUNTERS_URL=url)
    assert change.returncode == 3
    assert change.stderr == (
        f"counters: cannot reach {url}: connection refused; the change may or may not have "
        "been applied: run the same command with --idempotency-key k-1 to apply it at most "
        "once\n"
    )
    as_json = counters("set", "A", "1", "--json", "--idempotency-key", "k-2", COUNTERS_URL=url)
    assert as_json.returncode == 3
    assert json.loads(as_json.stderr) == {
        "error": "cannot_connect",
        "message": f"cannot reach {url}: connection refused",
        "idempotency_key": "k-2",
    }
    watch = counters("watch", "A", "--url", url)  # a watch that never started: no retry for ever
    assert (watch.returncode, watch.stderr) == (3, read.stderr)


def test_bad_usage_is_exit_2_and_says_why(tmp_path: Path) -> None:
    for args, message in [
        (["get", "A", "--url", "127.0.0.1:8787"], "--url (COUNTERS_URL) must be"),
        (["get", "A", "--timeout", "0"], "--timeout must be more than 0"),
        (["get", "A", "--auth-token-file", str(tmp_path / "none")], "cannot read it"),
        (["list", "--page-size", "1001"], "must be an integer from 1 to 1000"),
        (["incr", "A", "--min", "low"], "invalid int value: 'low'"),
        (["get"], "the following arguments are required: NAME"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ]:
        result = counters(*args)
        assert (result.returncode, result.stdout) == (2, ""), args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    from_environment = counters("get", "A", COUNTERS_URL="ftp://x")
    assert from_environment.returncode == 2
    assert "COUNTERS_URL" in from_environment.stderr
